"""A recording with one entry edited to valid JSON of the wrong shape (review s12, finding 3):
``labelgate sessions show|replay`` and the web session page show that entry as ``damaged``,
saying why, and every other entry as before; none of them fails on it (it used to end in
``internal error`` and a 500 page, hiding the intact calls too).

Real stores written by the real ``SessionRecorder``; the real CLI commands (in process) with the
repository's policy pack on the embedded engine; the real admin app for the page."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelgate.auth import Authenticator, Subject
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.calls import CallRecord
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.recording import SessionRecorder
from labelgate.recording.entries import checked
from labelgate.recording.files import FileSessionStore
from labelgate.recording.viewing import ReplayPolicy, view_entries
from tests.recording.conftest import Clock, key, make_call, make_outcome
from tests.recording.test_cli import invoke, viewer
from tests.support.procs import REPO

Edit = Callable[[dict[str, Any]], dict[str, Any]]


def _set(path: str, value: Any) -> Edit:
    def edit(entry: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node: Any = entry
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
        return entry

    return edit


def _drop(path: str) -> Edit:
    def edit(entry: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node: Any = entry
        for part in parents:
            node = node[part]
        del node[last]
        return entry

    return edit


def _marker_without_limit(entry: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "truncated", "time": entry["time"], "session_id": entry["session_id"]}


# The reviewer's edits (r3_sessions_cli_malformed.py), each of one recorded call.
EDITS: dict[str, Edit] = {
    "decision is a string": _set("decision", "x"),
    "no decision": _drop("decision"),
    "response.base64 missing": _drop("response.base64"),
    "response is a list": _set("response", [1]),
    "subject is a string": _set("subject", "x"),
    "no method": _drop("method"),
    "decision.fields item labels is a string": _set(
        "decision.fields", [{"path": "outputs.ssn", "labels": "restricted"}]
    ),
    "decision.masked is a dict": _set("decision.masked", {"a": 1}),
    "request.inputs item missing keys": _set("request.inputs", [{}]),
    "phases item missing allow": _set("decision.phases", [{"phase": "response"}]),
    "truncated marker without limit_bytes": _marker_without_limit,
    "time is a number": _set("time", 5),
    "model is a number": _set("model", 5),
}
# Each (edit, command) the reviewer saw end in "internal error" (23 runs).
CRASHED = [
    ("decision is a string", "show --json"),
    ("decision is a string", "show"),
    ("decision is a string", "replay"),
    ("no decision", "show"),
    ("no decision", "replay"),
    ("response.base64 missing", "show --json"),
    ("response.base64 missing", "show"),
    ("response.base64 missing", "replay"),
    ("response is a list", "show --json"),
    ("response is a list", "show"),
    ("response is a list", "replay"),
    ("subject is a string", "show"),
    ("subject is a string", "replay"),
    ("no method", "show"),
    ("no method", "replay"),
    ("decision.masked is a dict", "replay"),
    ("request.inputs item missing keys", "replay"),
    ("phases item missing allow", "replay"),
    ("truncated marker without limit_bytes", "show"),
    ("truncated marker without limit_bytes", "replay"),
    ("time is a number", "show"),
    ("model is a number", "show"),
    ("model is a number", "replay"),
]
SESSION = key("s")


def record_three(directory: Path) -> Path:
    """Session "s": three calls, recorded by the real recorder; the file holding them."""

    async def run() -> None:
        clock = Clock()
        recorder = SessionRecorder(FileSessionStore(directory), clock=clock)
        for _ in range(3):
            await recorder.record(CallRecord.of(make_call("s"), make_outcome(), None, clock()))
            clock.advance(seconds=1)
        await recorder.close()

    asyncio.run(run())
    (path,) = directory.glob("*.jsonl")
    return path


def edit_middle_call(path: Path, edit: Edit) -> None:
    """Line 1 is the header; line 3 the second call."""
    lines = path.read_text().splitlines()
    lines[2] = json.dumps(edit(copy.deepcopy(json.loads(lines[2]))))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("edit", "command"), CRASHED, ids=[f"{e}-{c}" for e, c in CRASHED])
def test_one_malformed_entry_shows_as_damaged_and_the_rest_still_show(
    tmp_path: Path, edit: str, command: str
) -> None:
    edit_middle_call(record_three(tmp_path / "s"), EDITS[edit])
    name, *flags = command.split()
    result = invoke(
        name, SESSION, "--dir", str(tmp_path / "s"), *flags, *viewer(tmp_path, "auditors", "analysts")
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    if flags:  # --json: the entries as the viewer sees them
        entries = [json.loads(line) for line in result.stdout.splitlines()]
        assert [entry["kind"] for entry in entries] == ["call", "damaged", "call"]
        assert "not of the recorded shape" in entries[1]["note"]
        assert [entries[0]["replay"]["outcome"], entries[2]["replay"]["outcome"]] == ["masked", "masked"]
    elif name == "show":
        assert "DAMAGED" in result.output and result.output.count("ModelInfer") == 2
    else:
        assert f"session {SESSION}: 2 call(s)" in result.output
        assert "#1  2026-01-01T09:00:00.000Z" in result.output
        assert "#2  2026-01-01T09:00:02.000Z" in result.output  # the third call, numbered on
        assert "not of the recorded shape" in result.output
        assert "6789" in result.output  # an analyst sees nora's masked ssn's last digits


@pytest.mark.parametrize("edit", list(EDITS))
def test_each_edit_is_named_in_the_damaged_note(edit: str) -> None:
    """The validator alone: what it says, and that it keeps no field of the wrong type."""
    entry = json.loads(json.dumps(_recorded_call()))
    assert checked(entry) is entry  # as written: left as it is
    damaged = checked(EDITS[edit](entry))
    assert damaged["kind"] == "damaged" and "edited?" in damaged["note"]
    assert all(isinstance(damaged[k], str) for k in ("time", "session_id", "request_id") if k in damaged)


def _recorded_call() -> dict[str, Any]:
    from labelgate.recording.entries import call_entry

    return call_entry(
        CallRecord.of(make_call("s"), make_outcome(), None, Clock()()), record_input_values=False
    )


# Stored text that rich would read as markup ("[/x]" closes nothing): shown as text, never a crash.
MARKUP = "[/x]"
MARKUP_EDITS: dict[str, Edit] = {
    "time": _set("time", MARKUP),
    "phase name": _set("decision.phases.0.phase", MARKUP),
    "subject auth": _set("subject.auth", MARKUP),
    "mask strategy": _set("decision.masked.0.strategy", MARKUP),
    "mask label": _set("decision.masked.0.label", MARKUP),
    "a damaged line's number": lambda entry: {"kind": "damaged", "line": MARKUP},
    "marker time": lambda entry: {
        "kind": "truncated",
        "time": MARKUP,
        "session_id": entry["session_id"],
        "limit_bytes": 1,
        "recorded_bytes": 2,
    },
}
# Each (edit, command) that ended in rich's MarkupError.
MARKUP_CASES = [
    ("time", "show"),
    ("time", "replay"),
    ("phase name", "replay"),
    ("subject auth", "replay"),
    ("mask strategy", "replay"),
    ("mask label", "replay"),
    ("a damaged line's number", "show"),
    ("a damaged line's number", "replay"),
    ("marker time", "show"),
]


@pytest.mark.parametrize(("edit", "command"), MARKUP_CASES, ids=[f"{e}-{c}" for e, c in MARKUP_CASES])
def test_recorded_text_that_looks_like_markup_is_shown_as_text(
    tmp_path: Path, edit: str, command: str
) -> None:
    edit_middle_call(record_three(tmp_path / "s"), MARKUP_EDITS[edit])
    result = invoke(command, SESSION, "--dir", str(tmp_path / "s"), *viewer(tmp_path, "auditors", "analysts"))
    assert result.exit_code == 0, repr(result.exception)
    assert MARKUP in result.output


@pytest.mark.parametrize("line", [0, -1], ids=["started", "last"])
def test_session_times_that_look_like_markup_are_listed_as_text(tmp_path: Path, line: int) -> None:
    path = record_three(tmp_path / "s")
    lines = path.read_text().splitlines()
    field = "started" if line == 0 else "time"
    lines[line] = json.dumps({**json.loads(lines[line]), field: MARKUP})
    path.write_text("\n".join(lines) + "\n")
    listed = invoke("list", "--dir", str(tmp_path / "s"))
    assert listed.exit_code == 0, repr(listed.exception)
    assert MARKUP in listed.output


def test_entries_from_any_store_are_checked_where_they_are_viewed() -> None:
    """The check is where every store's entries meet (``view_entries``): an entry a store opened
    (or a PostgreSQL row) is checked as a file's line is."""

    async def never(_: dict[str, Any]) -> Any:
        raise AssertionError("a damaged entry is never decided on")

    policy = ReplayPolicy(decide=never, classifier=lambda: None, hash_key=b"k" * 32, deadline_seconds=1)  # type: ignore[arg-type,return-value]
    viewer_ = Subject("ana", ("auditors",), "jwt")
    edited = EDITS["decision is a string"](_recorded_call())
    (shown,) = asyncio.run(view_entries(policy, viewer_, [{**edited, "seq": 4}]))
    assert shown["kind"] == "damaged" and shown["line"] == 4 and "decision is not an object" in shown["note"]


# -- the web session page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    ["decision is a string", "response is a list", "no method", "truncated marker without limit_bytes"],
)
async def test_the_session_page_shows_the_damaged_entry_and_every_other_call(
    tmp_path: Path, edit: str
) -> None:
    from labelgate.admin.app import build_admin_app
    from tests.approvals.test_session_page import _ready, approval_service, context, cookie, replay_policy

    path = await asyncio.to_thread(record_three, tmp_path / "s")
    edit_middle_call(path, EDITS[edit])
    engine = EmbeddedEngine(REPO / "rego", watch_interval=None)
    await engine.start()
    try:
        async with approval_service("auditors") as service:
            authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
            app = build_admin_app(_ready, context(service, authenticator))
            app.state.session_store = FileSessionStore(tmp_path / "s")
            app.state.replay_policy = replay_policy(engine)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
                page = await http.get(f"/inbox/sessions/{SESSION}", headers=cookie("ana", "auditors"))
    finally:
        await engine.close()
    assert page.status_code == 200
    html = page.text
    assert html.count('class="card request"') == 2 and 'id="call-2"' in html
    assert html.count('data-kind="damaged"') == 1 and "not of the recorded shape" in html
