"""Only the gateway's user may append: a forged record from another process is refused.

The client that tries runs as a real process of another user (``nobody``); the socket is
opened to everyone on purpose, so the peer-credential check is the only fence left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labelgate.audit import AuditClient
from labelgate.audit.verify import verify_log
from tests.audit.conftest import make_event, read_records, writer_process

NOBODY = 65534
# Connects, sends one append of a forged approval, prints what came back (or the error).
# Everything is imported before it drops to the other user, who cannot read root's Python.
FORGER = """
import asyncio, os, sys
from labelgate.audit import AuditClient
os.setgid({uid}); os.setuid({uid})
async def main():
    try:
        receipt = await AuditClient(sys.argv[1], 30).append({event})  # loaded CI: not a speed test
        print("APPENDED", receipt)
    except Exception as error:
        print("REFUSED", type(error).__name__, getattr(error, "reason", ""))
asyncio.run(main())
"""


@pytest.fixture
def open_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pytest's own temporary folders are private to root: the other user must reach the socket.
    folder = tmp_path_factory.mktemp("peers")
    for path in (folder, *folder.parents):
        if str(path).startswith("/tmp/pytest-of-"):
            os.chmod(path, 0o755)  # noqa: S103 - the test needs another user to reach it
    return folder


def forge(sock: Path, uid: int) -> str:
    event = make_event(decision="approval_granted", reason="approved by ciso")
    script = FORGER.format(uid=uid, event=repr(event))
    result = subprocess.run(
        [sys.executable, "-c", script, str(sock)], capture_output=True, timeout=60, text=True
    )
    return result.stdout + result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_a_process_of_another_user_cannot_append(open_folder: Path) -> None:
    sock, log_dir = open_folder / "audit.sock", open_folder / "log"
    with writer_process(sock, log_dir):
        os.chmod(sock, 0o666)  # noqa: S103 - a misconfigured mode: the peer check must still hold
        output = forge(sock, NOBODY)
        assert "APPENDED" not in output and "REFUSED" in output, output
        client = AuditClient(sock, 5)
        await client.append(make_event())  # the gateway's own user still appends
        stats = await client.stats()
        assert stats["refused_peers"] == 1
    records = read_records(log_dir)
    assert len(records) == 1 and "approved by ciso" not in json.dumps(records)
    assert verify_log(log_dir).ok


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_a_configured_user_may_append(open_folder: Path) -> None:
    sock, log_dir = open_folder / "audit.sock", open_folder / "log"
    with writer_process(sock, log_dir, "--allow-uid", "0", "--allow-uid", str(NOBODY)):
        os.chmod(sock, 0o666)  # noqa: S103
        output = forge(sock, NOBODY)
        assert "APPENDED" in output, output
