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
from labelgate.recording.entries import call_entry, file_name
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.sealing import RecordingKeys, SealedStore, sealed, write_key_file
from labelgate.recording.store import SessionStore
from labelgate.recording.web import timeline
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
    # --dir names the store; the config's key opens it there too.
    keyed = CliRunner().invoke(
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
    assert keyed.exit_code == 0, keyed.output
    # Log lines may share the output when an earlier test configured logging to stdout.
    shown = [json.loads(line) for line in keyed.output.splitlines() if line.startswith("{")]
    assert [entry["replay"]["outcome"] for entry in shown if "logger" not in entry] == ["masked"]
    # Without the key, a reader sees that entries are sealed, never their contents, and is not
    # told that no response was delivered.
    keyless = yaml.safe_load(config.read_text())
    del keyless["recording"]["encryption_key_file"]
    config.write_text(yaml.safe_dump(keyless))
    for command in ("show", "replay"):
        blind = CliRunner().invoke(
            sessions_app,
            [command, "sealed-session", "--dir", str(sessions), "--config", str(config), "--token", viewer],
        )
        assert blind.exit_code == 0 and SSN not in blind.output, blind.output
        assert "no key" in blind.output and "no response was delivered" not in blind.output, blind.output


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


# -- what someone with write access to the store, but no key, can do ------------------------
MALLORY = Subject.proven("jwt", "mallory", issuer="labelgate-dev", groups=("analysts",))


def record_calls(store: SessionStore, session: str, count: int, subject: Subject | None = None) -> None:
    async def run() -> None:
        recorder = SessionRecorder(store, clock=Clock())
        for number in range(count):
            outcome = make_outcome(delivered_response(notes=f"call {number + 1}"))
            if subject is not None:
                outcome.subject = subject
            await recorder.record(CallRecord.of(make_call(session), outcome, None, Clock()()))
        await recorder.close()

    asyncio.run(run())


class Backend:
    """Sealed recordings on files or PostgreSQL, and raw access to what is stored, as someone
    with write access to the store (and no key) has it."""

    def __init__(self, kind: str, tmp_path: Path, postgres: PostgresServer | None) -> None:
        self.kind = kind
        self.key = write_key_file(tmp_path / "recording.key")
        self.directory = tmp_path / "sessions"
        self.dsn = postgres.create_database() if postgres is not None else ""

    def plain(self) -> SessionStore:
        return FileSessionStore(self.directory) if self.kind == "files" else PostgresSessionStore(self.dsn)

    def store(self) -> SessionStore:
        return sealed(self.plain(), self.key)

    def session_id(self, prefix: str) -> str:
        async def run() -> str:
            store = self.plain()
            await store.open()
            try:
                (found,) = [i.session_id for i in await store.sessions() if i.session_id.startswith(prefix)]
                return found
            finally:
                await store.close()

        return asyncio.run(run())

    def stored(self, prefix: str) -> list[dict]:
        """The session's stored entries (header left out), as they are at rest."""
        session = self.session_id(prefix)
        if self.kind == "files":
            lines = (self.directory / file_name(session)).read_bytes().splitlines()
            return [json.loads(line) for line in lines[1:]]
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "SELECT entry FROM labelgate_recording_entries WHERE session_id = %s ORDER BY seq", (session,)
            ).fetchall()
        return [row[0] for row in rows]

    def rewrite(self, prefix: str, entries: list[dict]) -> None:
        """Replace the session's stored entries (as an editor of the store would)."""
        session = self.session_id(prefix)
        if self.kind == "files":
            path = self.directory / file_name(session)
            header = path.read_bytes().splitlines(keepends=True)[0]
            path.write_bytes(header + b"".join(json.dumps(e).encode() + b"\n" for e in entries))
            return
        with psycopg.connect(self.dsn) as conn:
            conn.execute("DELETE FROM labelgate_recording_entries WHERE session_id = %s", (session,))
            for seq, entry in enumerate(entries, 1):
                conn.execute(
                    "INSERT INTO labelgate_recording_entries (session_id, seq, at, entry) "
                    "VALUES (%s, %s, now(), %s)",
                    (session, seq, psycopg.types.json.Jsonb(entry)),
                )


@pytest.fixture(params=["files", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    postgres = request.getfixturevalue("postgres") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, postgres)


def shown(backend: Backend, prefix: str) -> list[tuple[str, str]]:
    """(kind, request id or note) of each entry a reader gets."""
    return [
        (e["kind"], e.get("request_id") if e["kind"] == "call" else e.get("note", ""))
        for e in entries(backend.store(), prefix)
    ]


def test_an_entry_copied_as_it_is_from_another_session_reads_as_damaged(backend: Backend) -> None:
    record_calls(backend.store(), "nora-session", 2)
    record_calls(backend.store(), "mallory-session", 1, MALLORY)
    (moved,) = backend.stored("mallory-session")
    backend.rewrite("nora-session", [*backend.stored("nora-session"), moved])
    kinds = [kind for kind, _ in shown(backend, "nora-session")]
    assert kinds == ["call", "call", "damaged"]
    assert "another session" in entries(backend.store(), "nora-session")[2]["note"]


def test_with_a_key_an_entry_stored_in_clear_reads_as_damaged(backend: Backend) -> None:
    record_calls(backend.store(), "nora-session", 1)
    (first,) = entries(backend.store(), "nora-session")
    forged = {**first, "request_id": "forged-1", "subject": {"id": "jwt:labelgate-dev#ciso", "groups": []}}
    backend.rewrite("nora-session", [*backend.stored("nora-session"), forged])
    (call, damaged) = entries(backend.store(), "nora-session")
    assert call["kind"] == "call" and damaged["kind"] == "damaged"
    assert "not sealed" in damaged["note"] and "ciso" not in json.dumps(damaged)


def test_deleted_repeated_and_reordered_entries_are_shown(backend: Backend) -> None:
    record_calls(backend.store(), "nora-session", 5)
    stored = backend.stored("nora-session")
    ids = [e["request_id"] for e in stored]
    original = list(stored)

    backend.rewrite("nora-session", [original[0], *original[2:]])  # the second call deleted
    assert shown(backend, "nora-session") == [
        ("call", ids[0]),
        ("damaged", "1 entry missing here (seq 2): deleted, or moved elsewhere"),
        *[("call", i) for i in ids[2:]],
    ]

    backend.rewrite("nora-session", [*original[:3], original[2], *original[3:]])  # the third, twice
    assert [k for k, _ in shown(backend, "nora-session")] == ["call"] * 3 + ["damaged"] + ["call"] * 2
    assert "repeats or is out of order" in shown(backend, "nora-session")[3][1]

    backend.rewrite("nora-session", [*original[:2], original[3], original[2], original[4]])  # swapped
    kinds = [k for k, _ in shown(backend, "nora-session")]
    assert kinds == ["call", "call", "damaged", "call", "damaged", "call"]
    # The timeline of the session page shows each of them, with what is wrong.
    items = timeline(entries(backend.store(), "nora-session"))
    assert [i["kind"] for i in items].count("damaged") == 2
    assert all(i.get("note") for i in items if i["kind"] == "damaged")


def test_several_gateways_sealing_one_session_number_its_entries_without_gaps(backend: Backend) -> None:
    async def run() -> None:
        stores = [backend.store(), backend.store()]
        for store in stores:
            await store.open()
        # Some entries longer than the tail a file store reads to find the last position.
        entries_ = [
            call_entry(
                CallRecord.of(
                    make_call("shared"),
                    make_outcome(delivered_response(notes="n" * 5000 * (i % 3))),
                    None,
                    Clock()(),
                ),
                record_input_values=False,
            )
            for i in range(30)
        ]

        async def gateway(store: SessionStore, mine: list[dict]) -> None:
            for entry in mine:
                await store.append(entry["session_id"], [entry], 1 << 24)

        await asyncio.gather(gateway(stores[0], entries_[::2]), gateway(stores[1], entries_[1::2]))
        for store in stores:
            await store.close()

    asyncio.run(run())
    read = entries(backend.store(), "shared")
    assert [e["kind"] for e in read] == ["call"] * 30
    assert [e["seq"] for e in backend.stored("shared")] == list(range(1, 31))


def test_the_truncation_marker_is_sealed_too(backend: Backend) -> None:
    async def run() -> None:
        store = backend.store()
        await store.open()
        made = [
            call_entry(
                CallRecord.of(make_call("capped"), make_outcome(), None, Clock()()), record_input_values=False
            )
            for _ in range(3)
        ]
        for entry in made:
            await store.append(entry["session_id"], [entry], 6000)
        await store.close()

    asyncio.run(run())
    at_rest = backend.stored("capped")
    (marker,) = [e for e in at_rest if e["kind"] == "truncated"]
    assert "sealed" in marker and at_rest[-1]["kind"] == "call", "the call after its marker is stored"
    assert [e["seq"] for e in at_rest] == list(range(1, len(at_rest) + 1))
    (read,) = [e for e in entries(backend.store(), "capped") if e["kind"] == "truncated"]
    assert read["limit_bytes"] == 6000


def legacy_envelope(key: bytes, entry: dict) -> dict:
    """An entry as sealed before entries carried a sequence number (its AAD without ``seq``)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from labelgate.recording.sealing import CLEAR_KEYS, key_id

    clear = {name: entry[name] for name in CLEAR_KEYS if name in entry and name != "seq"}
    kid = key_id(key)
    aad = json.dumps({**clear, "kid": kid}, sort_keys=True, separators=(",", ":")).encode()
    nonce = b"\x01" * 12
    ct = AESGCM(key).encrypt(nonce, json.dumps(entry).encode(), aad)
    return {**clear, "sealed": {"alg": "A256GCM", "kid": kid, "nonce": base64.b64encode(nonce).decode(),
                                "ct": base64.b64encode(ct).decode()}}  # fmt: skip


def test_entries_sealed_before_sequence_numbers_still_open_and_later_ones_continue(backend: Backend) -> None:
    from labelgate.recording.sealing import read_key

    record_calls(backend.plain(), "old-session", 2)  # in clear, then sealed the old way
    old = backend.stored("old-session")
    backend.rewrite("old-session", [legacy_envelope(read_key(backend.key), e) for e in old])
    record_calls(backend.store(), "old-session", 1)
    assert [kind for kind, _ in shown(backend, "old-session")] == ["call", "call", "call"]
    assert [e.get("seq") for e in backend.stored("old-session")] == [None, None, 3]
    # A deleted old entry still shows, by the gap before the first numbered one.
    backend.rewrite("old-session", backend.stored("old-session")[1:])
    assert [kind for kind, _ in shown(backend, "old-session")] == ["call", "damaged", "call"]


def test_a_stored_entry_that_is_not_an_object_reads_as_damaged(backend: Backend) -> None:
    record_calls(backend.store(), "nora-session", 2)
    first, second = backend.stored("nora-session")
    backend.rewrite("nora-session", [first, [], second])  # type: ignore[list-item]
    assert [kind for kind, _ in shown(backend, "nora-session")] == ["call", "damaged", "call"]
