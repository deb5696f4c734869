"""``labelgate infer`` and TLS: any TLS option turns TLS on (a client pair or a server name
given without ``--tls`` made a plaintext connection, the bearer token in clear), and TLS
options with an ``http://`` REST URL are refused rather than ignored.

A raw loopback listener records the first bytes the client sends: a TLS ClientHello starts
0x16 0x03; a plaintext gRPC connection starts with the HTTP/2 preface."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelgate.cli import app
from tests.support.pki import create_ca

runner = CliRunner()
TOKEN = "tok-SECRET-0123456789"


@dataclass
class FirstBytes:
    """A listener that takes one connection, keeps what arrives first, and hangs up."""

    port: int
    received: bytes = b""
    done: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def first_bytes() -> Iterator[FirstBytes]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen = FirstBytes(listener.getsockname()[1])

    def take_one() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(10)
            try:
                while len(seen.received) < 64:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    seen.received += chunk
            except OSError:
                pass
        seen.done.set()

    thread = threading.Thread(target=take_one, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.close()
        thread.join(15)


@pytest.fixture(scope="module")
def client_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return create_ca().issue("client").write(tmp_path_factory.mktemp("client-pair"), "client")


def infer(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["infer", "--token", TOKEN, "--timeout", "10", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("option", ["client pair", "server name"])
def test_a_tls_option_without_tls_still_speaks_tls(
    first_bytes: FirstBytes, client_pair: tuple[Path, Path], option: str
) -> None:
    cert_file, key_file = client_pair
    extra = (
        ["--cert-file", str(cert_file), "--key-file", str(key_file)]
        if option == "client pair"
        else ["--server-name", "gateway.internal"]
    )
    code, output = infer("--target", f"127.0.0.1:{first_bytes.port}", *extra)
    assert first_bytes.done.wait(15), "the client never connected"
    assert code != 0, output  # the listener hung up
    assert first_bytes.received[:2] == b"\x16\x03", first_bytes.received[:24]  # a TLS ClientHello
    assert TOKEN.encode() not in first_bytes.received


def test_tls_options_with_an_http_rest_url_are_refused(client_pair: tuple[Path, Path]) -> None:
    cert_file, key_file = client_pair
    code, output = infer(
        "--rest", "http://127.0.0.1:1", "--cert-file", str(cert_file), "--key-file", str(key_file)
    )
    assert code == 2, output
    assert "OPTION_INVALID" in output and "https://" in output and "--cert-file" in output
