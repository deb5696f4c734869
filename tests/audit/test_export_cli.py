"""The forwarder's settings: each bad one refused before anything starts, by a clean ``error:``
line (exit 2), never sent somewhere the operator did not name, never an internal error. And
``--once`` on a log whose committed mark is missing or unreadable: exit 1 and one ``error:``
line when records were left past the last checkpoint, never 0 as if all were delivered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labelgate.audit import AuditClient
from labelgate.audit.export.destinations import DeliveryFailed, SyslogTcp, SyslogUdp
from labelgate.audit.export.forwarder import ForwarderSettings, build_destinations
from labelgate.audit.export.tail import Cursor, LogRecord
from labelgate.audit.store import CHECKPOINTS_NAME, COMMITTED_NAME
from labelgate.errors import ConfigError
from tests.audit.conftest import make_event, writer_process

LONG_LABEL = "a" * 70 + ".example"  # a DNS label is at most 63 characters: IDNA refuses it


def settings(tmp_path: Path, **overrides: object) -> ForwarderSettings:
    return ForwarderSettings(log_dir=tmp_path, state_dir=tmp_path / "state", **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "tcp:siem.example.com:6514",  # no "//": was 127.0.0.1:514
        "tcp:/siem.example.com:6514",
        "udp://",
        "tcp://:6514",
        "tcp://siem.example.com:0",
        "tcp://siem.example.com:6514/path",
        "tcp://collector:pw@siem.example.com:6514",  # syslog sends no credentials
        "tls://siem.example.com:6514",  # not supported: refused rather than sent in the clear
        f"tcp://{LONG_LABEL}:514",
        "udp://exa mple.com:514",
    ],
)
def test_a_syslog_address_that_names_no_usable_host_and_port_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, syslog=(url,)).check()
    assert refused.value.reason == "AUDIT_FORWARDER_CONFIG" and "--syslog" in refused.value.message
    assert "pw@" not in refused.value.message


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("tcp://siem.example.com:6514", "siem.example.com", 6514),
        ("udp://siem.example.com", "siem.example.com", 514),  # the documented default port
        ("syslog+tcp://[::1]:601", "::1", 601),
        ("udp://bücher.example:514", "bücher.example", 514),
    ],
)
def test_a_good_syslog_address_is_sent_to_where_it_says(
    tmp_path: Path, url: str, host: str, port: int
) -> None:
    configured = settings(tmp_path, syslog=(url,))
    configured.check()
    (destination,) = build_destinations(configured)
    assert (destination.host, destination.port) == (host, port)  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", ["http://exa mple.com/x", f"https://{LONG_LABEL}/x", "http://127.0.0.1:0/x"])
def test_an_http_url_without_a_usable_host_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="--http"):
        settings(tmp_path, http=(url,)).check()


def test_http_userinfo_is_basic_auth_alone_and_refused_with_a_token_file(tmp_path: Path) -> None:
    """A request carries one Authorization header: aiohttp refused the pair with a ValueError
    on the first delivery, which ended the forwarder as an internal error."""
    url = "http://collector:Pa55w0rd-SECRET@127.0.0.1:9/ingest"
    settings(tmp_path, http=(url,)).check()  # sent as basic auth, as before
    token = tmp_path / "token"
    token.write_text("tok\n")
    with pytest.raises(ConfigError, match="--http-token-file") as refused:
        settings(tmp_path, http=(url,), http_token_file=token).check()
    assert "Pa55w0rd" not in refused.value.message


async def test_a_syslog_host_idna_refuses_is_a_failed_delivery_not_an_error_that_stops_the_rest() -> None:
    common = {"hostname": "gw", "facility": 13, "sd_id": "labelgate@32473"}
    records = [LogRecord(1, "0" * 64, make_event(), Cursor())]
    for destination in (
        SyslogTcp("syslog-tcp-test", LONG_LABEL, 514, timeout=2, **common),  # type: ignore[arg-type]
        SyslogUdp("syslog-udp-test", LONG_LABEL, 514, max_datagram=8192, **common),  # type: ignore[arg-type]
    ):
        try:
            with pytest.raises(DeliveryFailed):
                await destination.deliver(records)
        finally:
            await destination.close()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    log_dir = tmp_path / "log"
    log_dir.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "labelgate.audit.export", "--log-dir", str(log_dir)]
    command += ["--state-dir", str(tmp_path / "state"), "--once", "--retry-attempts", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("case", "args", "said"),
    [
        ("syslog typo", ["--syslog", "tcp:siem.example.com:6514"], "--syslog"),
        ("syslog host label over 63", ["--syslog", f"tcp://{LONG_LABEL}:514"], "not a valid host name"),
        ("http host with a space", ["--http", "http://exa mple.com/x"], "not a valid host name"),
        (
            "userinfo and token",
            ["--http", "http://u:Pa55w0rd@127.0.0.1:9/x", "--http-token-file", "TOKEN"],
            "--http",
        ),
        (
            "token file missing",
            ["--http", "http://127.0.0.1:9/x", "--http-token-file", "MISSING"],
            "--http-token-file",
        ),
        (
            "datagram above UDP's largest",
            ["--syslog", "udp://127.0.0.1:9", "--max-datagram", "1000000"],
            "65507",
        ),
        ("hostname not ASCII", ["--syslog", "udp://127.0.0.1:9", "--hostname", "h\u00e9"], "--hostname"),
        ("log dir a file", ["--jsonl-dir", "OUT", "--log-dir", "AFILE"], "not a directory"),
    ],
)
def test_bad_settings_end_in_one_clean_error_line(
    tmp_path: Path, case: str, args: list[str], said: str
) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "afile").write_text("x")
    names = {"TOKEN": tmp_path / "token", "MISSING": tmp_path / "missing", "OUT": tmp_path / "out"}
    names["AFILE"] = tmp_path / "afile"
    done = run_cli(tmp_path, *(str(names.get(arg, arg)) for arg in args))
    assert done.returncode == 2, (case, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and said in last, (case, done.stderr)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, case
    assert "Pa55w0rd" not in done.stderr, case


async def append(sock: Path, count: int) -> list[str]:
    async with AuditClient(sock, timeout=10) as client:
        events = [make_event() for _ in range(count)]
        for event in events:
            await client.append(event)
    return [event["event_id"] for event in events]


def log_past_its_last_checkpoint(tmp_path: Path) -> tuple[Path, list[str], bytes]:
    """Six records whose last checkpoint is record 4, and no committed mark: the copy of an
    older writer's log (or of any log without ``committed``) whose writer died (no checkpoint
    at shutdown). Also the checkpoint line of record 6 the writer wrote at stop, taken out."""
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    with writer_process(sock, log_dir, "--checkpoint-every", "4"):
        ids = asyncio.run(append(sock, 6))
    (log_dir / COMMITTED_NAME).unlink()
    checkpoints = (log_dir / CHECKPOINTS_NAME).read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["seq"] for line in checkpoints] == [4, 6]  # every 4, and at stop
    (log_dir / CHECKPOINTS_NAME).write_bytes(checkpoints[0])
    return log_dir, ids, checkpoints[1]


def run_once_into_files(log_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "labelgate.audit.export", "--log-dir", str(log_dir), "--once"]
    command += ["--state-dir", str(tmp_path / "state"), "--jsonl-dir", str(tmp_path / "out")]
    command += ["--batch-size", "1"]  # a read of the log per record: warnings come once, not per read
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def exported_seqs(out: Path) -> list[int]:
    return [
        json.loads(line)["seq"]
        for path in sorted(out.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def log_lines(stderr: str, event: str) -> list[dict[str, object]]:
    lines = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                lines.append(entry)
    return lines


def test_once_on_a_log_without_the_mark_fails_saying_how_many_records_past_the_checkpoint_it_left(
    tmp_path: Path,
) -> None:
    """The reviewer's copy of a log without ``committed``: 1,500 records, 1,000 exported, exit 0
    and no warning, as if everything had been delivered."""
    log_dir, _, later_checkpoint = log_past_its_last_checkpoint(tmp_path)
    done = run_once_into_files(log_dir, tmp_path)
    assert done.returncode == 1, done.stderr
    assert exported_seqs(tmp_path / "out") == [1, 2, 3, 4]  # up to the checkpoint, as documented
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 records") and "no committed mark" in last, last
    assert last.endswith("(AUDIT_EXPORT_INCOMPLETE)"), last
    (missing,) = log_lines(done.stderr, "audit_export_committed_mark_missing")
    assert missing["level"] == "warning" and missing["path"] == str(log_dir / "committed")

    # Once a checkpoint covers them (here: the writer's own at stop), they go, and the run succeeds.
    with (log_dir / "checkpoints.jsonl").open("ab") as checkpoints:
        checkpoints.write(later_checkpoint)
    done = run_once_into_files(log_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert exported_seqs(tmp_path / "out") == [1, 2, 3, 4, 5, 6]


def test_once_with_a_mark_it_cannot_read_warns_naming_it_and_its_errno_and_fails(tmp_path: Path) -> None:
    log_dir, _, _ = log_past_its_last_checkpoint(tmp_path)
    (log_dir / "committed").mkdir()  # read() fails with EISDIR, even for root (chmod 000 would not)
    done = run_once_into_files(log_dir, tmp_path)
    assert done.returncode == 1, done.stderr
    assert exported_seqs(tmp_path / "out") == [1, 2, 3, 4]
    warnings = log_lines(done.stderr, "audit_export_committed_mark_unreadable")
    assert warnings and all(w["level"] == "warning" for w in warnings)
    assert (warnings[0]["path"], warnings[0]["errno"]) == (str(log_dir / "committed"), "EISDIR")
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 records") and "EISDIR" in last, last
