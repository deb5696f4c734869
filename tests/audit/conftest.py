"""Audit test helpers: a real writer process on a Unix socket, valid events, reading the log back."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from labelgate.audit.checkpoints import generate_keypair, load_public_key
from labelgate.audit.store import list_segments
from tests.support.procs import Process

_names = itertools.count(1)


def make_event(**overrides: Any) -> dict[str, Any]:
    """An event shaped like the gateway's: names, labels, paths and reasons, no data values."""
    event: dict[str, Any] = {
        "time": "2026-01-01T00:00:00.000Z",
        "event_id": str(uuid.uuid4()),
        "session_id": "session-1",
        "request_id": "request-1",
        "subject": {"id": "alice", "groups": ["analysts"], "auth": "jwt"},
        "peer": "ipv4:127.0.0.1:50000",
        "service": "inference.GRPCInferenceService",
        "method": "/inference.GRPCInferenceService/ModelInfer",
        "model": "customer-profile",
        "phase": "response",
        "labels": ["confidential", "internal"],
        "masked": [{"path": "outputs.ssn", "strategy": "redact", "label": "restricted"}],
        "decision": "mask",
        "reason": "restricted fields masked",
        "engine": "embedded",
        "policy_revision": "rev-1",
        "decision_id": "decision-1",
        "approval_id": None,
        "approvers": [],
        "upstream_status": "OK",
        "latency_ms": 1.25,
    }
    event.update(overrides)
    return event


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(signing key, public key) PEM files."""
    private_path, public_path, _ = generate_keypair(tmp_path / "keys")
    return private_path, public_path


@pytest.fixture
def public_key(keys: tuple[Path, Path]) -> Ed25519PublicKey:
    return load_public_key(keys[1])


def writer_args(sock: Path, log_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "labelgate.audit",
        "--socket",
        str(sock),
        "--log-dir",
        str(log_dir),
        *extra,
    ]


# Sets RLIMIT_FSIZE, then becomes the writer: writes past the limit fail with EFBIG (Python
# ignores SIGXFSZ), a real I/O error without filling a disk.
_LIMIT_FILE_SIZE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


@contextlib.contextmanager
def writer_process(
    sock: Path, log_dir: Path, *extra: str, max_file_bytes: int | None = None
) -> Iterator[Process]:
    """``python -m labelgate.audit`` as a real child process, ready when its socket accepts."""
    args = writer_args(sock, log_dir, *extra)
    if max_file_bytes is not None:
        args = [sys.executable, "-c", _LIMIT_FILE_SIZE, str(max_file_bytes), *args]
    process = Process(args, log_dir.parent / f"writer-{next(_names)}.log", name="audit writer")
    try:
        process.wait_for_socket(sock, timeout=20)
        yield process
    finally:
        process.stop()


# The writer, with a slow disk on demand: while the FIFO ``argv[1]`` exists, an append stalls
# after its write, before its acknowledgement, until the test opens that FIFO (``open_gate``),
# which is then removed. The fdatasync the reviewer delayed with strace, without a timer: the
# stall lasts exactly until the test ends it.
_STALLING_APPENDS = """
import os, runpy, sys
from labelgate.audit.store import LogStore
gate, append = sys.argv[1], LogStore.append
def stalling(self, data, first_seq):
    append(self, data, first_seq)
    if os.path.exists(gate):
        with open(gate, "rb") as fifo:
            fifo.read()
        os.unlink(gate)
LogStore.append = stalling
sys.argv = ["labelgate.audit", *sys.argv[2:]]
runpy.run_module("labelgate.audit", run_name="__main__")
"""


@contextlib.contextmanager
def stalling_writer_process(sock: Path, log_dir: Path, gate: Path, *extra: str) -> Iterator[Process]:
    """``writer_process`` whose next append stalls once ``gate`` is made a FIFO (``os.mkfifo``)."""
    args = [sys.executable, "-c", _STALLING_APPENDS, str(gate), *writer_args(sock, log_dir, *extra)[3:]]
    process = Process(args, log_dir.parent / f"writer-{next(_names)}.log", name="stalling audit writer")
    try:
        process.wait_for_socket(sock, timeout=20)
        yield process
    finally:
        process.stop()


def open_gate(gate: Path, timeout: float = 20.0) -> None:
    """End the stall: once the writer waits on ``gate`` (it has the FIFO open), open and close it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:  # ENXIO: no reader yet, the writer has not reached the stall
            if error.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        os.close(fd)
        return


def run_to_exit(sock: Path, log_dir: Path, *extra: str) -> tuple[int, str]:
    """Start a writer that is expected to refuse to start; its exit status and output."""
    process = Process(writer_args(sock, log_dir, *extra), log_dir.parent / f"writer-{next(_names)}.log")
    try:
        status = process.popen.wait(timeout=20)
        return status, process.output()
    finally:
        process.stop()


def read_records(log_dir: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for _, path in list_segments(log_dir):
        records.extend(json.loads(line) for line in path.read_bytes().splitlines())
    return records


def read_checkpoints(log_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (log_dir / "checkpoints.jsonl").read_bytes().splitlines()]
