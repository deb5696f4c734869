"""How the gateway starts (``gateway/server.py``): every listener is up before gRPC serves and
its health says SERVING; a failed start stops what had started; a signal during start-up
stops the start cleanly (no traceback, no gRPC server left to a closed event loop).

In process on loopback, and one child process for the signal (a stand-in gateway whose start
signals itself: no timing)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from labelgate.config import GatewaySettings
from labelgate.errors import ConfigError
from labelgate.gateway import server
from labelgate.gateway.server import Gateway, serve_forever
from tests.support.procs import REPO, free_port, port_open

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"


def settings(**changes: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "upstream": {"address": f"127.0.0.1:{free_port()}"},  # nothing there: start does not need it
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "start-test-hash-key-0123456789"},
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        "approvals": {"enabled": False},
        **changes,
    }
    return GatewaySettings(**values)


@pytest.fixture
def not_pem(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-cert.pem"
    path.write_text("not a pem\n")
    return path


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_an_admin_tls_file_that_is_not_pem_fails_the_start_before_grpc_serves(
    not_pem: Path,
) -> None:
    gateway = Gateway(settings(admin={"tls": {"cert_file": str(not_pem), "key_file": str(not_pem)}}))
    served: list[str] = []
    statuses: list[int] = []
    grpc_start, health_set = gateway.server.start, gateway.health.set

    async def start() -> None:
        served.append("grpc")
        await grpc_start()

    async def set_status(name: str, status: int) -> None:
        statuses.append(status)
        await health_set(name, status)

    gateway.server.start = start  # type: ignore[method-assign]
    gateway.health.set = set_status  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(ConfigError) as failed:
            await gateway.start()
    finally:
        await gateway.stop(grace=0)
    assert failed.value.reason == "TLS_FILE_UNREADABLE"
    assert "admin.tls" in failed.value.message and str(not_pem) in failed.value.message
    assert served == []  # gRPC never served a call ...
    assert health_pb2.HealthCheckResponse.SERVING not in statuses  # ... nor said SERVING


async def test_a_failed_start_stops_what_had_started(held_port: int) -> None:
    # The REST port is held by another program: the REST listener fails after the admin one
    # started, and nothing of the gateway may go on listening.
    configured = settings(rest_listen=f"127.0.0.1:{held_port}")
    admin_port = int(configured.admin_listen.rpartition(":")[2])  # type: ignore[union-attr]
    with pytest.raises(OSError):
        await serve_forever(configured)
    assert not port_open(admin_port)


async def test_a_start_that_raises_is_followed_by_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class FailingGateway:
        def __init__(self, _: GatewaySettings) -> None:
            pass

        async def start(self) -> None:
            calls.append("start")
            raise ConfigError("POLICY_COMPILE_FAILED", "the policy does not compile")

        async def stop(self, grace: float = 5.0) -> None:
            calls.append("stop")

    monkeypatch.setattr(server, "Gateway", FailingGateway)
    with pytest.raises(ConfigError, match="does not compile"):
        await serve_forever(settings())
    assert calls == ["start", "stop"]


# A stand-in gateway whose start has a gRPC server running when Ctrl-C arrives, and then waits
# (as a start waiting on a slow bundle server or upstream would).
SIGNAL_DURING_START = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import grpc
    from labelgate.config import GatewaySettings
    from labelgate.gateway import server

    class StartingGateway:
        def __init__(self, settings):
            self.grpc = grpc.aio.server()

        async def start(self):
            self.grpc.add_insecure_port("127.0.0.1:0")
            await self.grpc.start()
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, the start still under way
            await asyncio.Event().wait()

        async def stop(self, grace=5.0):
            await self.grpc.stop(0)
            print("stopped", flush=True)

    server.Gateway = StartingGateway
    server.run(GatewaySettings(**{settings}))
    print("returned", flush=True)
    """
)


def test_ctrl_c_during_start_up_stops_the_start_cleanly(tmp_path: Path) -> None:
    values = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": None,
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    }
    script = tmp_path / "signal_during_start.py"
    script.write_text(SIGNAL_DURING_START.replace("{settings}", repr(values)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "returned"], done.stdout + done.stderr
    for noise in ("Traceback", "Exception ignored", "Event loop is closed", "never awaited"):
        assert noise not in done.stderr, done.stderr
