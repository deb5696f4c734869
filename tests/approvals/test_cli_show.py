"""``labelgate approvals show|approve|deny``: what is being granted, and nothing else.

A review found the CLI left out what an approval releases (the fields, the query, the grant's
scope, single use, row budget and lifetime: the inbox shows them), that a justification
padded with spaces wrapped on a terminal into a line that looked like a co-approver's vote,
and that an answer without a request's fields was an internal error (``KeyError: 'id'``),
after ``approve`` had already cast the vote. Against a stub API on loopback; the terminal
case runs the real program on a pseudo-terminal 80 columns wide.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from collections.abc import Iterator
from typing import Any

import pytest

from labelgate.approvals import cli as approvals_cli
from tests.approvals.test_cli_request_checks import GOOD_ID, StubApi, approvals, item, serving
from tests.support.procs import REPO, labelgate_command

# The review's justification: 200 spaces push "vote:" to the start of a terminal row.
PADDED = (
    "ticket 4711: monthly report"
    + " " * 200
    + "vote:          approve by jwt:labelgate-dev#dana at 2026-12-07T22:00:00Z: checked with legal"
)
# A vote line (real or not) as a terminal shows it: "vote:" in the label column or left of it.
VOTE_LINE = re.compile(r"^ {0,16}vote:", re.MULTILINE)


def padded_item() -> dict[str, Any]:
    return {**item("pending", "approve"), "justification": PADDED}


def fixed(body: dict[str, Any]) -> Iterator[StubApi]:
    """The approvals API answering every GET and POST with ``body``."""
    yield from serving(StubApi(lambda _method, _path: body))


@pytest.fixture
def malformed() -> Iterator[StubApi]:
    yield from fixed({"items": [{"id": "x"}], "id": "x"})


@pytest.fixture
def padded() -> Iterator[StubApi]:
    yield from fixed(padded_item())


def test_describe_names_what_the_grant_releases() -> None:
    text = approvals_cli.describe(item("pending", "approve"))
    assert re.search(r"^  fields: +outputs\.ssn \(restricted\)$", text, re.MULTILINE), text
    assert re.search(r"^ +outputs\.name \(confidential\)$", text, re.MULTILINE), text
    assert re.search(r"^  inputs: +ids INT64 \[2\]$", text, re.MULTILINE), text
    assert re.search(r"^  outputs: +ssn, name$", text, re.MULTILINE), text
    assert re.search(r"^  rows: +2$", text, re.MULTILINE), text
    assert re.search(r"^  grant: +15 min, scope query: this query only", text, re.MULTILINE), text
    assert "single use: no" in text and "row budget: 10 row(s) in total" in text


def test_describe_of_a_grant_for_the_whole_model_says_so() -> None:
    wide = {**item("pending"), "grant_scope": "model", "single_use": True, "row_budget": None}
    wide["query"] = {"inputs": [], "requested_outputs": [], "rows": None}
    text = approvals_cli.describe(wide)
    assert "scope model: any query to the model" in text
    assert "single use: yes" in text and "row budget: none" in text
    assert re.search(r"^  outputs: +all$", text, re.MULTILINE) and re.search(
        r"^  rows: +not known$", text, re.M
    )


def test_a_padded_justification_cannot_make_a_line_of_its_own() -> None:
    text = approvals_cli.describe(padded_item())
    assert VOTE_LINE.findall(text) == ["  vote:"], text  # the one real vote
    (justification,) = [line for line in text.splitlines() if line.startswith("  justification:")]
    assert "  " not in justification.removeprefix("  justification: "), "spaces collapsed"
    assert justification.startswith("  justification: ticket 4711: monthly report vote: approve by")


def test_other_peoples_text_is_cut_to_a_bounded_length() -> None:
    long = {**item("pending", "approve"), "justification": "x" * 5000, "model": "m" * 5000}
    long["votes"][0]["reason"] = "r" * 5000
    for line in approvals_cli.describe(long).splitlines():
        assert len(line) < 400, line
    assert "x…" in approvals_cli.describe(long)


def test_on_a_terminal_a_long_value_wraps_under_its_own_column(padded: StubApi) -> None:
    # The review's case on a real terminal: the value wraps, indented under the values,
    # never back to the column where labels and votes start.
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    with subprocess.Popen(
        labelgate_command("approvals", "show", GOOD_ID, "--url", padded.url, "--token", "t"),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=environment,
    ) as process:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the program ended and closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
        stderr = process.stderr.read().decode() if process.stderr else ""
    os.close(controller)
    assert process.returncode == 0, stderr
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), shown
    assert VOTE_LINE.findall(shown) == ["  vote:"], shown
    at = next(n for n, line in enumerate(lines) if line.startswith("  justification:"))
    assert lines[at + 1].startswith(" " * 17) and lines[at + 1].strip(), shown


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["show", GOOD_ID], None),
        (["approve", GOOD_ID], "approval was recorded"),
        (["deny", GOOD_ID, "--reason", "no"], "denial was recorded"),
    ],
)
def test_an_answer_that_is_no_request_is_one_line_not_an_internal_error(
    malformed: StubApi, command: list[str], says: str | None
) -> None:
    done = approvals(*command, "--url", malformed.url, "--token", "t")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stderr and "KeyError" not in done.stderr, done.stderr
    assert "ANSWER_INVALID" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    if says is not None:
        assert says in done.stderr, done.stderr
    else:
        assert "recorded" not in done.stderr, done.stderr
