"""Every command's error line quotes text labelgate did not write (a path from the command
line, libpq's text, a server's problem detail) as a terminal can show it: a control character
is written as its escape, so a path cannot set the terminal's title or move its cursor, and the
line still ends in the reason. One helper (``untrusted_text.error_line``) makes them all. The
commands run as real processes (the entry point's backstop included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import free_port, labelgate_command

# Sets the terminal's title (OSC 0), ends with BEL.
TITLE = "\x1b]0;pwned\x07"
SHOWN_TITLE = "\\x1b]0;pwned\\x07"


def test_error_line_escapes_each_line_and_ends_in_the_reason() -> None:
    from labelgate.untrusted_text import error_line

    # A message that lists problems one a line keeps its lines; nothing else passes raw.
    said = error_line(f"first {TITLE}\nsecond\r\u202eline", "SOME_REASON")
    assert said == f"first {SHOWN_TITLE}\nsecond\\r\\u202eline (SOME_REASON)"
    assert error_line("plain", None) == "plain"
    assert error_line("bad reason", "X\x1b[2J") == "bad reason (X\\x1b[2J)"


def test_an_internal_error_line_shows_its_message_escaped_on_one_line() -> None:
    from labelgate.cli_backstop import internal_error_line

    said = internal_error_line(ValueError(f"a {TITLE}\nb"))
    assert said == f"labelgate: internal error (ValueError): a {SHOWN_TITLE} b"


def refusal(*args: str, python_module: str | None = None) -> tuple[int, str]:
    """Run the command; its exit code and stderr's last line, after checking that no raw
    control character (but the line breaks) reached stderr."""
    command = [sys.executable, "-m", python_module, *args] if python_module else labelgate_command(*args)
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    stderr = done.stderr.decode("utf-8", "replace")
    assert b"\x1b" not in done.stderr and b"\x07" not in done.stderr, stderr
    assert "internal error" not in stderr, stderr
    return done.returncode, stderr.splitlines()[-1]


def test_sessions_quotes_a_config_path_escaped(tmp_path: Path) -> None:
    code, line = refusal("sessions", "list", "--config", str(tmp_path / f"x{TITLE}.yaml"))
    assert code == 2
    assert line.startswith(f"error: cannot read {tmp_path}/x{SHOWN_TITLE}.yaml"), line
    assert line.endswith(" (CONFIG_UNREADABLE)"), line


def test_sessions_quotes_a_dir_path_escaped(tmp_path: Path) -> None:
    code, line = refusal("sessions", "list", "--dir", str(tmp_path / f"x{TITLE}"))
    assert code == 2
    assert line == f"error: {tmp_path}/x{SHOWN_TITLE} is not a directory (OPTION_INVALID)", line


def test_sessions_quotes_libpqs_text_escaped(tmp_path: Path) -> None:
    # libpq's error names the socket path it could not reach; no server is needed.
    dsn = f"host={tmp_path}/none{TITLE} dbname=x connect_timeout=2"
    code, line = refusal("sessions", "list", "--postgres-dsn", dsn)
    assert code == 2
    assert line.startswith("error: cannot read the recordings from PostgreSQL: "), line
    assert SHOWN_TITLE in line and line.endswith(" (SESSIONS_UNREADABLE)"), line


@pytest.mark.parametrize("module", [None, "labelgate.audit.export"])
def test_the_forwarder_quotes_its_log_dir_escaped(tmp_path: Path, module: str | None) -> None:
    args = ["--log-dir", str(tmp_path / f"log{TITLE}"), "--state-dir", str(tmp_path / "state")]
    args += ["--jsonl-dir", str(tmp_path / "out"), "--once"]
    code, line = refusal(*(args if module else ["audit", "forwarder", *args]), python_module=module)
    assert code == 2
    assert f"{tmp_path}/log{SHOWN_TITLE}" in line, line
    assert line.startswith("error: ") and line.endswith(" (AUDIT_FORWARDER_CONFIG)"), line


def test_the_approvals_server_quotes_its_config_path_escaped(tmp_path: Path) -> None:
    config = str(tmp_path / f"x{TITLE}.yaml")
    code, line = refusal("approvals", "serve", "--config", config, "--listen", f"127.0.0.1:{free_port()}")
    assert code == 2
    assert line.startswith(f"error: cannot read {tmp_path}/x{SHOWN_TITLE}.yaml"), line
    assert line.endswith(" (CONFIG_UNREADABLE)"), line


def test_audit_verify_quotes_its_path_escaped(tmp_path: Path) -> None:
    code, line = refusal("audit", "verify", str(tmp_path / f"audit{TITLE}"))
    assert code == 2
    assert f"{tmp_path}/audit{SHOWN_TITLE}" in line and line.startswith("error: "), line
