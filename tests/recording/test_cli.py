"""``labelgate sessions list|show|replay`` over real stores (files and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner, Result

from labelgate.calls import CallRecord
from labelgate.config import GatewaySettings
from labelgate.errors import PermissionDenied
from labelgate.recording import SessionRecorder
from labelgate.recording.cli import sessions_app
from labelgate.recording.entries import call_entry, encode_line
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.store import SessionStore
from tests.recording.conftest import Clock, delivered_response, key, make_call, make_outcome
from tests.support.postgres import PostgresServer
from tests.support.procs import REPO


def invoke(*args: str) -> Result:
    return CliRunner().invoke(sessions_app, list(args), env={"COLUMNS": "200"})


def record_sample(store: SessionStore) -> None:
    """Session "alpha": a masked call and a refused one; "beta-session": two calls, then the cap."""
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
        s["session_id"]: s for s in json.loads(invoke("list", "--dir", str(tmp_path), "--json").output)
    }
    alpha, beta = sessions[key("alpha")], sessions[key("beta-session")]
    assert alpha["calls"] == 2 and not alpha["truncated"]
    assert beta["truncated"] and beta["calls"] == 2

    shown = invoke("show", "alpha", "--dir", str(tmp_path))
    assert shown.exit_code == 0
    assert "MASK" in shown.output and "DENY" in shown.output and "ModelInfer" in shown.output
    raw = [
        json.loads(line)
        for line in invoke("show", "alpha", "--dir", str(tmp_path), "--json").output.splitlines()
    ]
    assert [entry["decision"]["outcome"] for entry in raw] == ["mask", "deny"]

    replay = invoke("replay", "alpha", "--dir", str(tmp_path))
    assert replay.exit_code == 0, replay.output
    for expected in (
        f"session {key('alpha')}: 2 call(s)",
        "2026-01-01T09:00:00.000Z",
        "subject jwt:labelgate-dev#nora (groups: analysts; jwt)",
        "masked outputs.ssn (partial, confidential)",
        "masked: partial",  # the ssn column is marked...
        "***-**-4321",  # ...and shows the value as delivered
        "[REDACTED]",
        "Call me",
        "0.25",  # FP32 shown at its precision
        "inputs customer_ids INT64 [2]",
        "POLICY_DENIED",
        "response: none delivered",
    ):
        assert expected in replay.output, expected

    cut = invoke("replay", "beta", "--dir", str(tmp_path))  # a unique prefix is enough
    assert cut.exit_code == 0 and "recording truncated" in cut.output and "every later call" in cut.output


def test_errors_are_clear(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path))
    missing = invoke("replay", "nope", "--dir", str(tmp_path))
    assert missing.exit_code == 1 and "no recorded session 'nope'" in missing.output
    ambiguous = invoke("show", "", "--dir", str(tmp_path))
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


def test_list_and_replay_from_postgres(postgres: PostgresServer) -> None:
    dsn = postgres.create_database()
    record_sample(PostgresSessionStore(dsn))
    listed = json.loads(invoke("list", "--postgres-dsn", dsn, "--json").output)
    assert {s["session_id"]: (s["calls"], s["truncated"]) for s in listed} == {
        key("alpha"): (2, False),
        key("beta-session"): (2, True),
    }
    replay = invoke("replay", "alpha", "--postgres-dsn", dsn)
    assert replay.exit_code == 0, replay.output
    assert "***-**-4321" in replay.output and "POLICY_DENIED" in replay.output
    cut = invoke("replay", "beta-session", "--postgres-dsn", dsn)
    assert "recording truncated" in cut.output
    down = invoke("list", "--postgres-dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert down.exit_code == 2 and "PostgreSQL" in down.output
