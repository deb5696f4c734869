"""``labelgate audit verify`` and ``keygen``: readable output and exit codes 0 / 1 / 2."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelgate.audit import AuditClient
from labelgate.audit.cli import audit_app
from tests.audit.conftest import make_event, writer_process

runner = CliRunner()


@pytest.fixture
def written(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"

    async def fill() -> None:
        async with AuditClient(sock) as client:
            for _ in range(12):
                await client.append(make_event())

    with writer_process(sock, log_dir, "--signing-key", str(keys[0]), "--checkpoint-every", "5"):
        asyncio.run(fill())
    return log_dir


def test_verify_ok_names_the_last_checkpoint(written: Path, keys: tuple[Path, Path]) -> None:
    result = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(keys[1])])
    assert result.exit_code == 0, result.output
    assert "12 record(s) verified" in result.output
    assert "OK chain intact" in result.output
    assert "last verified checkpoint: #3 at seq 12" in result.output
    assert "signature and head" in result.output


def test_verify_without_key_warns_that_signatures_were_not_checked(written: Path) -> None:
    result = runner.invoke(audit_app, ["verify", str(written)])
    assert result.exit_code == 0
    assert "signatures were NOT checked" in result.output


def test_verify_tampered_exits_1_and_locates_the_record(written: Path, keys: tuple[Path, Path]) -> None:
    (segment,) = written.glob("audit-*.jsonl")
    content = segment.read_bytes().splitlines(keepends=True)
    del content[6]
    segment.write_bytes(b"".join(content))
    result = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(keys[1])])
    assert result.exit_code == 1
    assert f"TAMPERED sequence at {segment.name}, line 7, seq 8" in result.output
    assert "last verified checkpoint: #1 at seq 5" in result.output


def test_verify_reports_an_edit_no_record_can_hold_without_a_traceback(
    written: Path, keys: tuple[Path, Path]
) -> None:
    (segment,) = written.glob("audit-*.jsonl")
    content = segment.read_bytes().splitlines(keepends=True)
    content[6] = content[6].replace(b'"latency_ms":1.25', b'"latency_ms":1e400')
    content[8] = content[8].replace(b'"model":"customer-profile"', b'"model":"\\ud800"')
    segment.write_bytes(b"".join(content))
    result = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(keys[1])])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert f"TAMPERED malformed at {segment.name}, line 7, seq 7" in result.output


def test_usage_errors_exit_2(written: Path, tmp_path: Path) -> None:
    missing = runner.invoke(audit_app, ["verify", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("garbage")
    result = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(bad_key)])
    assert result.exit_code == 2 and "AUDIT_KEY_INVALID" in result.output
    absent_key = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(tmp_path / "no.pub")])
    assert absent_key.exit_code == 2


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = runner.invoke(audit_app, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert os.stat(tmp_path / "k" / "audit-signing.key").st_mode & 0o777 == 0o600
    assert "key id:" in result.output
    again = runner.invoke(audit_app, ["keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == 2 and "already exist" in again.output


def test_verify_runs_as_a_module(written: Path, keys: tuple[Path, Path]) -> None:
    args = [sys.executable, "-m", "labelgate.audit.cli", "verify", str(written), "--public-key", str(keys[1])]
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0
    (segment,) = written.glob("audit-*.jsonl")
    segment.write_bytes(segment.read_bytes().replace(b'"decision":"mask"', b'"decision":"deny"', 1))
    tampered = subprocess.run(args, capture_output=True, text=True, check=False)
    assert tampered.returncode == 1
    assert "hash_mismatch" in tampered.stdout and "line 1, seq 1" in tampered.stdout


def test_python_dash_m_labelgate_audit_runs_verify_and_still_starts_the_writer(
    written: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # ``python -m labelgate.audit verify DIR`` ran the writer: "Missing option '--socket'".
    args = [sys.executable, "-m", "labelgate.audit", "verify", str(written), "--public-key", str(keys[1])]
    verified = subprocess.run(args, capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain intact" in verified.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "labelgate.audit", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--socket" in helped.stdout and "--log-dir" in helped.stdout
    # The writer's own options as before (every deployment starts it so: tests/audit/conftest.py).
    sock, log_dir = tmp_path / "again.sock", tmp_path / "again"
    with writer_process(sock, log_dir):
        assert sock.exists()


def test_verify_does_not_say_plain_ok_for_records_no_checkpoint_signs(
    written: Path, keys: tuple[Path, Path]
) -> None:
    import json

    from labelgate.audit.records import make_line

    (segment,) = written.glob("audit-*.jsonl")
    last = json.loads(segment.read_bytes().splitlines()[-1])
    appended, _ = make_line(13, last["hash"], last["event"])
    segment.write_bytes(segment.read_bytes() + appended)
    result = runner.invoke(audit_app, ["verify", str(written), "--public-key", str(keys[1])])
    assert result.exit_code == 0, result.output
    assert "OK chain intact" not in result.output
    assert "record 13 is covered by no signed checkpoint" in result.output


def test_verify_fails_a_log_that_does_not_reach_the_outside_anchor(
    written: Path, keys: tuple[Path, Path]
) -> None:
    import json

    (segment,) = written.glob("audit-*.jsonl")
    records = segment.read_bytes().splitlines(keepends=True)
    head_12 = json.loads(records[-1])["hash"]
    checkpoints = written / "checkpoints.jsonl"
    segment.write_bytes(b"".join(records[:10]))  # the tail and its checkpoints cut
    checkpoints.write_bytes(b"".join(checkpoints.read_bytes().splitlines(keepends=True)[:2]))
    base = ["verify", str(written), "--public-key", str(keys[1])]
    assert runner.invoke(audit_app, base).exit_code == 0
    short = runner.invoke(audit_app, [*base, "--expect-seq", "12"])
    assert short.exit_code == 1 and "TAMPERED anchor" in short.output, short.output
    assert runner.invoke(audit_app, [*base, "--expect-head", head_12]).exit_code == 1
    bad = runner.invoke(audit_app, [*base, "--expect-head", "not-a-hash"])
    assert bad.exit_code == 2 and "--expect-head" in bad.output, bad.output


def test_keygen_into_a_folder_it_cannot_create_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = runner.invoke(audit_app, ["keygen", "--out", str(tmp_path / "file" / "keys")])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "cannot write" in result.output


def test_verify_of_a_file_that_is_no_audit_segment_is_a_usage_error_not_tampering(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    hostname = tmp_path / "hostname"
    hostname.write_text("build-host-7\n")
    result = runner.invoke(audit_app, ["verify", str(hostname), "--public-key", str(keys[1])])
    assert result.exit_code == 2, result.output
    assert "is not an audit log" in result.output and "AUDIT_LOG_MISSING" in result.output
    assert "TAMPERED" not in result.output


@pytest.mark.parametrize("target", ["folder", "segment"])
def test_verify_still_calls_a_segment_with_its_first_line_rewritten_tampered(
    written: Path, keys: tuple[Path, Path], target: str
) -> None:
    (segment,) = written.glob("audit-*.jsonl")
    content = segment.read_bytes().splitlines(keepends=True)
    content[0] = b"build-host-7\n"  # the first line no longer a record at all
    segment.write_bytes(b"".join(content))
    path = written if target == "folder" else segment
    result = runner.invoke(audit_app, ["verify", str(path), "--public-key", str(keys[1])])
    assert result.exit_code == 1, result.output
    assert f"TAMPERED malformed at {segment.name}, line 1" in result.output


@pytest.fixture
def unsigned(tmp_path: Path) -> Path:
    """A log whose writer had no signing key: its checkpoints' time and key_id go unchecked."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"

    async def fill() -> None:
        async with AuditClient(sock) as client:
            for _ in range(20):
                await client.append(make_event())

    with writer_process(sock, log_dir, "--checkpoint-every", "5"):
        asyncio.run(fill())
    return log_dir


def _rewrite_checkpoint(log_dir: Path, number: int, **fields: object) -> None:
    import json

    from labelgate.audit.records import canonical_json

    path = log_dir / "checkpoints.jsonl"
    checkpoints = [json.loads(line) for line in path.read_bytes().splitlines()]
    checkpoints[number - 1].update(fields)
    path.write_bytes(b"".join(canonical_json(checkpoint) + b"\n" for checkpoint in checkpoints))


@pytest.mark.parametrize("planted", ["\x1b[1A\x1b[2K[bold green]OK[/] chain intact", "[/]", "\u202e\x9b2K"])
def test_verify_shows_a_forged_checkpoint_time_as_text_not_as_terminal_commands(
    unsigned: Path, planted: str
) -> None:
    # The reviewer's tampered log: record 12 edited, and the time of unsigned checkpoint #2
    # (seq 10, the last one verified) moving the cursor up to erase the TAMPERED line and
    # print a green OK in its place; "[/]" alone was an internal error (rich's MarkupError).
    (segment,) = unsigned.glob("audit-*.jsonl")
    content = segment.read_bytes().splitlines(keepends=True)
    content[11] = content[11].replace(b'"decision":"mask"', b'"decision":"allow"', 1)
    segment.write_bytes(b"".join(content))
    _rewrite_checkpoint(unsigned, 2, time=planted, key_id="k[/]\x1b]0;title\x1b\\")
    args = [sys.executable, "-m", "labelgate.audit", "verify", str(unsigned)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "internal error" not in output and "Traceback" not in output, output
    assert "\x1b" not in output and "\u202e" not in output and "\x9b" not in output, repr(output)
    assert f"TAMPERED hash_mismatch at {segment.name}, line 12, seq 12" in result.stdout
    assert not any(line.startswith("OK") for line in result.stdout.splitlines()), result.stdout
    assert "last verified checkpoint: #2 at seq 10" in result.stdout
    assert "[/]" in result.stdout and "\\x1b" in result.stdout  # shown, as written in the file


def test_verify_refuses_a_checkpoint_key_id_that_is_no_string(unsigned: Path) -> None:
    _rewrite_checkpoint(unsigned, 2, key_id={"[bold]": "x"})
    result = runner.invoke(audit_app, ["verify", str(unsigned)])
    assert result.exit_code == 1, result.output
    assert "TAMPERED checkpoint_malformed at checkpoints.jsonl, line 2" in result.output
    assert "key_id" in result.output
