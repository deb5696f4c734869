"""MLServer as a real REST peer: installed into a virtualenv of its own (its pins clash with
the gateway's), cached under ``.cache/mlserver-venv/<version>`` (git-ignored) and made on
first use with ``python3 -m venv`` and pip; started as ``mlserver start`` in one process
(``parallel_workers: 0``) serving ``mlserver_model.py``'s ``mls-profile`` on free ports."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import REPO, Process, free_port, wait_until

VERSION = "1.7.1"
VENV = REPO / ".cache" / "mlserver-venv" / VERSION
HERE = Path(__file__).parent
_DONE = VENV / ".installed"


def mlserver_venv() -> Path:
    """The virtualenv with MLServer, made once (a lock keeps two test runs from racing)."""
    if _DONE.exists():
        return VENV
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _DONE.exists():
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "--quiet", f"mlserver=={VERSION}"],
                check=True,
                timeout=900,
            )
            _DONE.write_text(VERSION)
    return VENV


@dataclass(frozen=True)
class MLServer:
    rest: str  # HOST:PORT of its REST endpoint
    grpc: str
    process: Process

    @property
    def url(self) -> str:
        return f"http://{self.rest}"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/mls-profile/ready", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_mlserver(directory: Path) -> Iterator[MLServer]:
    venv = mlserver_venv()
    root = directory / "mlserver"
    model = root / "mls-profile"
    model.mkdir(parents=True, exist_ok=True)
    for name in ("mlserver_model.py", "mlserver_data.py"):
        shutil.copy(HERE / name, model / name)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    (model / "model-settings.json").write_text(
        json.dumps({"name": "mls-profile", "implementation": "mlserver_model.PlantedProfiles"})
    )
    command = [str(venv / "bin" / "mlserver"), "start", str(root)]
    process = Process(command, directory / "mlserver.log", name="mlserver", cwd=root)
    try:
        server = MLServer(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process)

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"mlserver exited early:\n{process.tail(40)}")
            return _ready(server.url)

        wait_until(ready, 120, "mlserver's mls-profile")
        yield server
    finally:
        process.stop()
