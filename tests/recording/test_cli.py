"""``labelgate sessions list|show|replay`` over real stores (files and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner, Result

from labelgate.auth import mint_dev_token
from labelgate.calls import CallRecord
from labelgate.config import GatewaySettings
from labelgate.errors import PermissionDenied
from labelgate.oip.tensors import decode_outputs
from labelgate.recording import SessionRecorder
from labelgate.recording.cli import sessions_app
from labelgate.recording.entries import call_entry, decode_message, encode_line
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.sealing import sealed, write_key_file
from labelgate.recording.store import SessionStore
from tests.recording.conftest import (
    GLUED_SSN,
    Clock,
    delivered_response,
    key,
    make_call,
    make_outcome,
    masked_before_recording,
)
from tests.support.postgres import PostgresServer
from tests.support.procs import REPO


def invoke(*args: str) -> Result:
    return CliRunner().invoke(sessions_app, list(args), env={"COLUMNS": "200"})


def viewer(folder: Path, *groups: str) -> list[str]:
    """``--config`` (the repository's policy pack on the embedded engine, dev-key JWTs) and
    ``--token`` of a viewer in ``groups``: what ``show`` and ``replay`` need."""
    config = folder / "viewer.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
                "masking": {"hash_key": "cli-test-hash-key-0123456789"},
                "auth": {"jwt": {"trust_dev_key": True}},
            }
        )
    )
    return ["--config", str(config), "--token", mint_dev_token("ada", list(groups), 300)]


def record_sample(store: SessionStore) -> None:
    """Session "alpha": a masked call and a refused one; "beta-session": two calls, then the cap
    (the third, released with them, recorded after its marker)."""
    one_call = len(
        encode_line(
            call_entry(CallRecord.of(make_call(), make_outcome(), None, Clock()()), record_input_values=False)
        )
    )
    max_session_bytes = 2 * one_call + 300

    async def run() -> None:
        clock = Clock()
        recorder = SessionRecorder(store, clock=clock, max_session_bytes=max_session_bytes)
        await recorder.record(
            CallRecord.of(
                make_call("alpha"), make_outcome(delivered_response("***-**-4321", "Call me")), None, clock()
            )
        )
        clock.advance(seconds=5)
        refused = make_outcome()
        refused.delivered, refused.decisions, refused.upstream_status = None, refused.decisions[:1], None
        await recorder.record(
            CallRecord.of(make_call("alpha"), refused, PermissionDenied("POLICY_DENIED", "no"), clock())
        )
        clock.advance(seconds=5)
        for _ in range(3):
            await recorder.record(CallRecord.of(make_call("beta-session"), make_outcome(), None, clock()))
        await recorder.close()

    asyncio.run(run())


def test_list_show_and_replay_from_files(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path))

    listed = invoke("list", "--dir", str(tmp_path))
    assert listed.exit_code == 0, listed.output
    assert "2 recorded session(s)" in listed.output and "alpha" in listed.output
    sessions = {
        s["session_id"]: s for s in json.loads(invoke("list", "--dir", str(tmp_path), "--json").stdout)
    }
    alpha, beta = sessions[key("alpha")], sessions[key("beta-session")]
    assert alpha["calls"] == 2 and not alpha["truncated"]
    assert beta["truncated"] and beta["calls"] == 3  # all three released, so all recorded

    # an auditor who is also an analyst: sees what nora (an analyst) was delivered
    auditor = viewer(tmp_path, "auditors", "analysts")
    shown = invoke("show", "alpha", "--dir", str(tmp_path), *auditor)
    assert shown.exit_code == 0
    assert "MASK" in shown.output and "DENY" in shown.output and "ModelInfer" in shown.output
    raw = [
        json.loads(line)
        for line in invoke("show", "alpha", "--dir", str(tmp_path), "--json", *auditor).stdout.splitlines()
    ]
    assert [entry["decision"]["outcome"] for entry in raw] == ["mask", "deny"]
    assert [entry["replay"]["outcome"] for entry in raw] == ["masked", "no_response"]

    replay = invoke("replay", "alpha", "--dir", str(tmp_path), *auditor)
    assert replay.exit_code == 0, replay.output
    for expected in (
        f"session {key('alpha')}: 2 call(s)",
        "2026-01-01T09:00:00.000Z",
        "subject jwt:labelgate-dev#nora (groups: analysts; jwt)",
        "masked outputs.ssn (partial, confidential)",
        "shown to you: masked (allowed for replay; 1 field(s) masked)",
        "masked: partial",  # the ssn column is marked for the viewer...
        "*******4321",  # ...and shows the viewer's partial mask of what was delivered
        "******TED]",
        "Call me",  # internal: in clear for an analyst
        "0.25",  # FP32 shown at its precision
        "inputs customer_ids INT64 [2]",
        "POLICY_DENIED",
        "response: none shown",
    ):
        assert expected in replay.output, expected

    cut = invoke("replay", "beta", "--dir", str(tmp_path), *auditor)  # a unique prefix is enough
    assert (
        cut.exit_code == 0
        and "recording truncated" in cut.output
        and "refused" in cut.output  # the marker's note, wrapped in its panel
    )


def test_show_and_replay_go_through_policy_for_the_viewer(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path))
    for command in ("show", "replay"):
        anonymous = invoke(command, "alpha", "--dir", str(tmp_path))
        assert anonymous.exit_code == 2 and "give --config and --token" in anonymous.output
    forged = invoke("show", "alpha", "--dir", str(tmp_path), *viewer(tmp_path, "auditors")[:3], "not-a-jwt")
    assert forged.exit_code == 2 and "Traceback" not in forged.output

    def shown(*groups: str) -> list[dict[str, Any]]:
        result = invoke("show", "alpha", "--dir", str(tmp_path), "--json", *viewer(tmp_path, *groups))
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    auditor = shown("auditors")[0]  # clearance of no group: confidential and internal redacted
    message = decode_message(auditor["response"])
    assert message is not None
    values = {t.name: t.values for t in decode_outputs(message)}  # type: ignore[arg-type]
    assert values["ssn"] == [b"[REDACTED]", b"[REDACTED]"] and values["notes"] == [b"[REDACTED]"] * 2
    assert auditor["replay"]["outcome"] == "masked"
    denied = shown("ops")  # not a replay viewer in the policy pack
    assert [entry["response"] for entry in denied] == [None, None]
    assert denied[0]["replay"]["outcome"] == "denied" and "request_message" not in denied[0]


def test_replay_masks_what_the_call_found_though_the_recording_hides_it(tmp_path: Path) -> None:
    """Review (replay masks): the steward's reply, recorded after the live masks glued an SSN
    to what followed, replayed to an auditor by ``show`` and ``replay``: live, the auditor
    gets that SSN redacted; the replay must not show it either."""
    entry = masked_before_recording()
    FileSessionStore(tmp_path).append_blocking(entry["session_id"], [entry], 1 << 20)
    auditor = viewer(tmp_path, "auditors")
    replay = invoke("replay", "session-a", "--dir", str(tmp_path), *auditor)
    assert replay.exit_code == 0, replay.output
    assert "shown to you: masked" in replay.output and "masked: null" in replay.output
    assert GLUED_SSN not in replay.output and "537-33-5678" not in replay.output
    raw = invoke("show", "session-a", "--dir", str(tmp_path), "--json", *auditor)
    assert raw.exit_code == 0, raw.output
    viewed = json.loads(raw.stdout)
    message = decode_message(viewed["response"])
    assert message is not None
    assert {t.name: t.values for t in decode_outputs(message)} == {"label": [b""]}  # type: ignore[arg-type]
    assert viewed["replay"]["outcome"] == "masked"


def test_errors_are_clear(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path))
    auditor = viewer(tmp_path, "auditors")
    missing = invoke("replay", "nope", "--dir", str(tmp_path), *auditor)
    assert missing.exit_code == 1 and "no recorded session 'nope'" in missing.output
    ambiguous = invoke("show", "", "--dir", str(tmp_path), *auditor)
    assert ambiguous.exit_code == 1
    nowhere = invoke("list")
    assert nowhere.exit_code == 2 and "--dir, --postgres-dsn or --config" in nowhere.output
    both = invoke("list", "--dir", str(tmp_path), "--postgres-dsn", "postgresql://x@127.0.0.1:1/x")
    assert both.exit_code == 2
    not_a_dir = invoke("list", "--dir", str(tmp_path / "absent"))
    assert not_a_dir.exit_code == 2 and "not a directory" in not_a_dir.output


def test_the_gateway_config_names_the_store(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path / "sessions"))
    config = tmp_path / "labelgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy": {"dir": str(REPO / "rego")},
                "auth": {"jwt": {"trust_dev_key": True}},
                "recording": {"dir": "sessions"},  # relative to the config file
            }
        )
    )
    result = invoke("list", "--config", str(config))
    if "recording" in GatewaySettings.model_fields:
        assert result.exit_code == 0, result.output
        assert "alpha" in result.output
    else:  # until the gateway config has the section: refused, with the reason
        assert result.exit_code == 2 and "recording" in result.output


def test_list_and_replay_from_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres.create_database()
    record_sample(PostgresSessionStore(dsn))
    listed = json.loads(invoke("list", "--postgres-dsn", dsn, "--json").stdout)
    assert {s["session_id"]: (s["calls"], s["truncated"]) for s in listed} == {
        key("alpha"): (2, False),
        key("beta-session"): (3, True),
    }
    auditor = viewer(tmp_path, "auditors", "analysts")
    replay = invoke("replay", "alpha", "--postgres-dsn", dsn, *auditor)
    assert replay.exit_code == 0, replay.output
    assert "*******4321" in replay.output and "POLICY_DENIED" in replay.output
    cut = invoke("replay", "beta-session", "--postgres-dsn", dsn, *auditor)
    assert "recording truncated" in cut.output
    down = invoke("list", "--postgres-dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert down.exit_code == 2 and "PostgreSQL" in down.output


def test_every_refusal_is_one_line_naming_its_reason(tmp_path: Path) -> None:
    """README: every command reports a problem as one line on stderr naming its reason. Review
    (docs): `sessions show` without --config said what to give, but no reason."""
    record_sample(FileSessionStore(tmp_path))
    auditor = viewer(tmp_path, "auditors")
    for args, exit_code, reason in (
        (["show", "alpha", "--dir", str(tmp_path)], 2, "SESSIONS_NO_POLICY"),
        (["replay", "alpha", "--dir", str(tmp_path)], 2, "SESSIONS_NO_POLICY"),
        (["replay", "nope", "--dir", str(tmp_path), *auditor], 1, "SESSION_NOT_FOUND"),
        (["list"], 2, "OPTION_INVALID"),
        (["list", "--dir", str(tmp_path / "absent")], 2, "OPTION_INVALID"),
        # A PostgreSQL store nobody serves (port 1): the error names its reason too.
        (
            ["list", "--postgres-dsn", "postgresql://labelgate@127.0.0.1:1/x?connect_timeout=5"],
            2,
            "SESSIONS_UNREADABLE",
        ),
    ):
        done = invoke(*args)
        assert done.exit_code == exit_code, (args, done.output)
        lines = [line for line in done.stderr.splitlines() if "warning: dev_key_trusted" not in line]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert lines[0].endswith(f"({reason})"), (args, done.stderr)


def record_sealed(sessions: Path, key_file: Path) -> None:
    async def run() -> None:
        recorder = SessionRecorder(sealed(FileSessionStore(sessions), key_file), clock=Clock())
        outcome = make_outcome(delivered_response("***-**-4321", "Call me"))
        await recorder.record(CallRecord.of(make_call("alpha"), outcome, None, Clock()()))
        await recorder.close()

    sessions.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def test_a_sealed_session_read_without_its_key_is_said_to_be_sealed_not_damaged(tmp_path: Path) -> None:
    """Review (docs): the quickstart's sealed sessions, read with a config that names no key,
    showed every call as DAMAGED with no word on what to do. Without a key the command says
    the entries are sealed, not damaged, and how to give the key; with it they show."""
    key_file = write_key_file(tmp_path / "recording.key")
    sessions = tmp_path / "sessions"
    record_sealed(sessions, key_file)
    auditor = viewer(tmp_path, "auditors")

    without = invoke("show", "alpha", "--dir", str(sessions), *auditor)
    assert without.exit_code == 0, without.output
    notes = [line for line in without.stderr.splitlines() if "warning: dev_key_trusted" not in line]
    assert len(notes) == 1, without.stderr
    assert "1 entry of this session is sealed (encrypted at rest) and no key is configured" in notes[0]
    assert "not damaged" in notes[0] and "LABELGATE_RECORDING__ENCRYPTION_KEY_FILE" in notes[0]

    keyed = CliRunner().invoke(
        sessions_app,
        ["show", "alpha", "--dir", str(sessions), *auditor],
        env={"COLUMNS": "200", "LABELGATE_RECORDING__ENCRYPTION_KEY_FILE": str(key_file)},
    )
    assert keyed.exit_code == 0, keyed.output
    assert "ModelInfer" in keyed.stdout and "DAMAGED" not in keyed.stdout
    assert "no key is configured" not in keyed.stderr
