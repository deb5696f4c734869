"""Recordings encrypted at rest (issue 13), on files and PostgreSQL.

Planted values (a clear SSN and a note delivered to a cleared caller, the subject's name)
must not be found at rest, neither as text nor inside any base64 string of the stored
entries, while the readers (``labelgate sessions``, the store's ``entries``) show them
again. Keys rotate: entries sealed with an old key open while it is listed; entries moved
to another session do not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
from pathlib import Path

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from labelgate.auth import Subject, mint_dev_token
from labelgate.calls import CallRecord
from labelgate.recording import SessionRecorder
from labelgate.recording.cli import sessions_app
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.sealing import RecordingKeys, SealedStore, sealed, write_key_file
from labelgate.recording.store import SessionStore
from tests.recording.conftest import Clock, delivered_response, make_call, make_outcome
from tests.support.postgres import PostgresServer
from tests.support.procs import REPO

SSN = "123-45-6789"
NOTE = "PLANTED-NOTE-zq81"
PERSON = "planted-person-x7"
PLANTED = (SSN, NOTE, PERSON)
_BASE64 = re.compile(rb"[A-Za-z0-9+/=_-]{12,}")


def found_at_rest(data: bytes) -> set[str]:
    """Planted values in ``data``, as text or inside any base64 run (how responses are kept)."""
    layers = [data]
    for run in _BASE64.findall(data):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError, binascii.Error):
                layers.append(decode(run + b"=" * (-len(run) % 4)))
    return {value for value in PLANTED if any(value.encode() in layer for layer in layers)}


def record(store: SessionStore, session: str = "sealed-session") -> None:
    async def run() -> None:
        recorder = SessionRecorder(store, clock=Clock())
        outcome = make_outcome(
            delivered_response(SSN, NOTE),
            subject=Subject.proven("jwt", PERSON, issuer="labelgate-dev", groups=("break-glass",)),
        )
        await recorder.record(CallRecord.of(make_call(session), outcome, None, Clock()()))
        await recorder.close()

    asyncio.run(run())


def entries(store: SessionStore, session: str = "sealed-session") -> list[dict]:
    async def run() -> list[dict] | None:
        await store.open()
        try:  # recordings are kept under <session id>~<digest of the subject>
            (stored,) = [i.session_id for i in await store.sessions() if i.session_id.startswith(session)]
            return await store.entries(stored)
        finally:
            await store.close()

    found = asyncio.run(run())
    assert found is not None
    return found


def test_the_scanner_finds_planted_values_in_a_clear_recording(tmp_path: Path) -> None:
    record(FileSessionStore(tmp_path))  # the control: without a key, they are there
    data = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert found_at_rest(data) == set(PLANTED)


def test_files_at_rest_hold_no_planted_value_and_the_readers_decrypt(tmp_path: Path) -> None:
    key = write_key_file(tmp_path / "keys" / "recording.key")
    assert key.stat().st_mode & 0o777 == 0o600
    sessions = tmp_path / "sessions"
    record(sealed(FileSessionStore(sessions), key))
    data = b"".join(path.read_bytes() for path in sessions.iterdir())
    assert found_at_rest(data) == set()
    stored = [json.loads(line) for line in data.splitlines()]
    assert [e["kind"] for e in stored] == ["session", "call"]
    assert stored[1]["sealed"]["kid"] == RecordingKeys.from_files(key).kid

    (opened,) = entries(sealed(FileSessionStore(sessions), key))
    assert opened["subject"]["name"] == PERSON
    # The CLI opens them with the key the gateway config names.
    config = tmp_path / "labelgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
                "auth": {"jwt": {"trust_dev_key": True}},
                "recording": {"dir": str(sessions), "encryption_key_file": str(key)},
            }
        )
    )
    # Shown to an auditor who is an analyst: the note (internal) in clear, the SSN as the
    # policy's partial mask for that viewer.
    viewer = mint_dev_token("ada", ["auditors", "analysts"], 300)
    replay = CliRunner().invoke(
        sessions_app, ["replay", "sealed-session", "--config", str(config), "--token", viewer]
    )
    assert replay.exit_code == 0, replay.output
    assert NOTE in replay.output and PERSON in replay.output
    assert SSN not in replay.output and "*******6789" in replay.output
    # Without the key, a reader sees that entries are sealed, never their contents.
    # (--dir names the store, so the config lends only its policy and auth, not its key.)
    blind = CliRunner().invoke(
        sessions_app,
        [
            "show",
            "sealed-session",
            "--dir",
            str(sessions),
            "--json",
            "--config",
            str(config),
            "--token",
            viewer,
        ],
    )
    assert blind.exit_code == 0 and SSN not in blind.output and '"sealed"' in blind.output


def test_postgres_at_rest_holds_no_planted_value(tmp_path: Path, postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    key = write_key_file(tmp_path / "recording.key")
    record(SealedStore(PostgresSessionStore(dsn), RecordingKeys.from_files(key)))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT entry::text FROM labelgate_recording_entries").fetchall()
        sessions = conn.execute("SELECT * FROM labelgate_recording_sessions").fetchall()
    assert rows
    assert found_at_rest("\n".join(row[0] for row in rows).encode() + repr(sessions).encode()) == set()
    (opened,) = entries(sealed(PostgresSessionStore(dsn), key))
    assert opened["subject"]["name"] == PERSON


def test_keys_rotate_and_a_moved_entry_does_not_open(tmp_path: Path) -> None:
    old, new = write_key_file(tmp_path / "old.key"), write_key_file(tmp_path / "new.key")
    sessions = tmp_path / "sessions"
    record(sealed(FileSessionStore(sessions), old), "first")
    record(sealed(FileSessionStore(sessions), new, [old]), "second")
    both = sealed(FileSessionStore(sessions), new, [old])
    assert entries(both, "first")[0]["kind"] == "call"
    assert entries(both, "second")[0]["kind"] == "call"
    # The old key dropped (after retention): its entries say so, nothing more.
    (gone,) = entries(sealed(FileSessionStore(sessions), new), "first")
    assert gone["kind"] == "damaged" and "not configured" in gone["note"]
    # An entry copied into another session's file fails its authentication.
    files = {p.name: p for p in sessions.iterdir()}
    first = next(p for n, p in files.items() if n.startswith("first"))
    second = next(p for n, p in files.items() if n.startswith("second"))
    line = first.read_bytes().splitlines()[1]
    moved = json.loads(line)
    moved["session_id"] = json.loads(second.read_bytes().splitlines()[1])["session_id"]  # same AAD keys
    second.write_bytes(second.read_bytes() + json.dumps(moved).encode() + b"\n")
    kinds = [e["kind"] for e in entries(both, "second")]
    assert kinds == ["call", "damaged"]


def test_a_bad_key_file_is_refused(tmp_path: Path) -> None:
    from labelgate.errors import ConfigError

    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(ConfigError, match="32 bytes"):
        RecordingKeys.from_files(short)
