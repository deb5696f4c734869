"""How the admin listener starts (``admin/listener.py``): TLS files that do not load are a
``ConfigError`` naming the file before anything is bound; a listener that fails on its thread
raises what failed it (never "timed out"); a failed or cancelled start leaves nothing serving
and the port free. In process, on loopback ports."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from labelgate.admin import listener as listener_module
from labelgate.admin.listener import AdminListener
from labelgate.errors import ConfigError
from tests.support.pki import create_ca
from tests.support.procs import free_port


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # pragma: no cover - never called
    raise AssertionError("nothing is served in these tests")


def test_tls_files_that_are_not_pem_are_named_and_nothing_is_bound(tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("not a pem\n")
    cert_file, key_file = create_ca().server_cert().write(tmp_path, "server")
    _, other_key = create_ca().server_cert().write(tmp_path, "other")
    port = free_port()
    cases = {
        (not_pem, key_file): f"cert_file {not_pem} holds no PEM certificate",
        (cert_file, not_pem): f"key_file {not_pem} holds no PEM private key",
        (cert_file, other_key): f"the private key in {other_key} is not the one of the certificate",
        (tmp_path / "missing.pem", key_file): "cannot read",
    }
    for (cert, key), says in cases.items():
        with pytest.raises(ConfigError) as refused:
            AdminListener(app, f"127.0.0.1:{port}", cert_file=cert, key_file=key)
        assert refused.value.reason == "TLS_FILE_UNREADABLE"
        assert refused.value.message.startswith("admin.tls: ") and says in refused.value.message
        assert bindable(port)
    AdminListener(app, f"127.0.0.1:{port}", cert_file=cert_file, key_file=key_file)._socket.close()


async def test_a_listener_that_fails_on_its_thread_raises_its_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def failing(self: Any, sockets: Any = None) -> None:
        raise OSError("the listener's own failure")

    monkeypatch.setattr(listener_module._ThreadServer, "serve", failing)
    port = free_port()
    listener = AdminListener(app, f"127.0.0.1:{port}")
    with pytest.raises(RuntimeError) as failed:
        await listener.start()
    assert "the listener's own failure" in str(failed.value) and "timed out" not in str(failed.value)
    assert bindable(port)


async def test_a_cancelled_start_leaves_nothing_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    serving = threading.Event()

    async def never_ready(self: Any, sockets: Any = None) -> None:
        serving.set()
        while not self.should_exit:  # noqa: ASYNC110 - uvicorn's own way to be told to stop
            await asyncio.sleep(0.01)

    monkeypatch.setattr(listener_module._ThreadServer, "serve", never_ready)
    port = free_port()
    listener = AdminListener(app, f"127.0.0.1:{port}")
    starting = asyncio.ensure_future(listener.start())
    assert await asyncio.to_thread(serving.wait, 30)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not listener._thread.is_alive()
    assert bindable(port)
