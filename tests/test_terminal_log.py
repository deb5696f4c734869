"""The quickstart's log split (labelgate/terminal_log.py): whole JSON lines to the file, a
short line per call and per problem to the terminal, partial writes joined."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
import pytest

from labelgate.terminal_log import CallSummaryStream, summary

CALL = {
    "ts": "2026-12-05T01:02:03.456Z",
    "level": "info",
    "event": "call",
    "method": "/inference.GRPCInferenceService/ModelInfer",
    "model": "customer-profile",
    "subject": "jwt:dev#ann",
    "outcome": "deny",
    "reason": "POLICY_DENIED",
}


def test_a_call_is_one_short_line_and_quiet_events_are_not_shown() -> None:
    assert summary(json.dumps(CALL)) == (
        "01:02:03 deny              ModelInfer customer-profile subject=jwt:dev#ann reason=POLICY_DENIED"
    )
    assert summary(json.dumps({"ts": CALL["ts"], "level": "info", "event": "gateway started"})) is None
    loud = summary(json.dumps({"ts": CALL["ts"], "level": "error", "event": "opa_unavailable"}))
    assert loud == "01:02:03 error: opa_unavailable (details in the gateway log)"
    assert summary("error: the port is in use (LISTEN_IN_USE)") == "error: the port is in use (LISTEN_IN_USE)"


def test_the_file_gets_every_line_whole_and_the_terminal_the_summaries(tmp_path: Path) -> None:
    terminal = io.StringIO()
    stream = CallSummaryStream(tmp_path / "state" / "gateway.log", terminal)
    line = json.dumps(CALL)
    stream.write(line[:10])  # a handler may write a line in pieces
    stream.write(line[10:] + "\n" + json.dumps({"level": "debug", "event": "x"}) + "\n")
    stream.close()
    logged = (tmp_path / "state" / "gateway.log").read_text().splitlines()
    assert [json.loads(entry)["event"] for entry in logged] == ["call", "x"]
    assert terminal.getvalue().count("\n") == 1 and "ModelInfer customer-profile" in terminal.getvalue()


def test_a_callers_model_name_reaches_the_terminal_escaped_never_obeyed() -> None:
    # The log line drops ESC-led sequences only: a C1 CSI, a carriage return or a bidi override
    # in a model name (the caller's text) would still rewrite what the terminal shows.
    line = json.dumps(
        {
            "ts": "2026-12-06T05:00:00.000Z",
            "event": "call",
            "outcome": "allow",
            "method": "/s/ModelInfer",
            "model": "m\u009b2K\rfake\u202e",
            "subject": "ana\x07",
        }
    )
    shown = summary(line)
    assert shown is not None and shown.isprintable()
    assert "\\x9b2K\\rfake\\u202e" in shown and "subject=ana\\x07" in shown
    assert summary("plain \x1b[2J text") == "plain \\x1b[2J text"


def test_a_warning_that_quotes_a_caller_reaches_the_terminal_escaped_never_obeyed() -> None:
    # OpenTelemetry's warning names a caller's bad tracestate member; any library's could.
    event = "Member doesn't match the w3c identifiers format a=\u009b2J\x1b]0;TITLE\x07\u202e"
    loud = summary(json.dumps({"ts": CALL["ts"], "level": "warning", "event": event}))
    assert loud is not None
    assert not [char for char in loud if not char.isprintable()]
    assert "a=\\x9b2J\\x1b]0;TITLE\\x07\\u202e" in loud


def test_a_line_click_writes_reaches_the_terminal_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command line's error goes through click, which wrote bytes to a stream without an
    # encoding: "b'error: ...\\n'" never ended a line and reached neither file nor terminal.
    terminal = io.StringIO()
    stream = CallSummaryStream(tmp_path / "gateway.log", terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    click.echo("error: the policy does not compile (POLICY_COMPILE_FAILED)", err=True)
    stream.write(b"bytes: \xc3\xa9t\xc3\xa9\n")
    stream.flush()
    assert terminal.getvalue().splitlines() == [
        "error: the policy does not compile (POLICY_COMPILE_FAILED)",
        "bytes: été",
    ]
