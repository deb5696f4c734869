"""The real forwarder process delivers a real audit log to real local receivers.

Receivers (RFC 5424 over TCP with octet counting, over UDP, and an HTTP endpoint) run on
an event loop in a background thread, so they keep receiving while the test blocks on
processes. Events are appended by the real writer process through the real client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from labelgate.audit import AuditClient
from labelgate.audit.export.forwarder import destination_name, http_destination_name
from tests.audit.conftest import make_event, read_records, writer_process
from tests.audit.test_export_formats import parse_rfc5424, split_octet_counted
from tests.support.procs import Process, free_port, running, wait_until


class Receivers:
    """Syslog TCP and UDP listeners and an HTTP endpoint, each can be taken down and brought back."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tcp_port, self.udp_port, self.http_port = free_port(), free_port(), free_port()
        self.tcp: list[dict[str, Any]] = []
        self.udp: list[dict[str, Any]] = []
        self.http: list[dict[str, Any]] = []
        self.http_batches: list[str] = []
        self.http_fail_next = 0  # answer this many POSTs with 503
        self.errors: list[str] = []
        self._tcp_server: asyncio.Server | None = None
        self._tcp_connections: set[asyncio.StreamWriter] = set()
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._http_runner: web.AppRunner | None = None

    def __enter__(self) -> Receivers:
        self.thread.start()
        self.run(self._start_tcp())
        self.run(self._start_udp())
        self.run(self._start_http())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.run(self._stop_tcp())
        self.run(self._stop_http())
        self.loop.call_soon_threadsafe(self._udp_transport.close)  # type: ignore[union-attr]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    # -- syslog over TCP, RFC 6587 octet counting -------------------------------------------
    async def _start_tcp(self) -> None:
        self._tcp_server = await asyncio.start_server(self._tcp_client, "127.0.0.1", self.tcp_port)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_connections.add(writer)
        buffer = b""
        try:
            while data := await reader.read(65536):
                frames, buffer = split_octet_counted(buffer + data)
                for frame in frames:
                    self.tcp.append(self._parse(frame))
        except (ValueError, ConnectionError) as error:
            self.errors.append(f"tcp: {error}")
        finally:
            self._tcp_connections.discard(writer)
            writer.close()

    async def _stop_tcp(self) -> None:
        assert self._tcp_server is not None
        self._tcp_server.close()
        for writer in list(self._tcp_connections):
            writer.close()
        await self._tcp_server.wait_closed()

    def tcp_down(self) -> None:
        self.run(self._stop_tcp())

    def tcp_up(self) -> None:
        self.run(self._start_tcp())

    # -- syslog over UDP ----------------------------------------------------------------------
    async def _start_udp(self) -> None:
        receivers = self

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                receivers.udp.append(receivers._parse(data))

        self._udp_transport, _ = await self.loop.create_datagram_endpoint(
            Protocol, local_addr=("127.0.0.1", self.udp_port)
        )

    # -- HTTP ---------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        async def ingest(request: web.Request) -> web.Response:
            if self.http_fail_next > 0:
                self.http_fail_next -= 1
                return web.Response(status=503)
            batch = await request.json()
            assert isinstance(batch, list) and request.content_type == "application/json"
            self.http_batches.append(request.headers["X-Labelgate-Batch"])
            self.http.extend(batch)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/ingest", ingest)
        self._http_runner = web.AppRunner(app)
        await self._http_runner.setup()
        await web.TCPSite(self._http_runner, "127.0.0.1", self.http_port).start()

    async def _stop_http(self) -> None:
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None

    def http_down(self) -> None:
        self.run(self._stop_http())

    def http_up(self) -> None:
        self.run(self._start_http())

    def _parse(self, data: bytes) -> dict[str, Any]:
        message = parse_rfc5424(data)
        document = message.document()
        assert message.sd["labelgate@32473"]["event_id"] == document["event_id"]
        return document

    # -- views ----------------------------------------------------------------------------------
    def ids(self, kind: str) -> set[str]:
        return {document["event_id"] for document in list(getattr(self, kind))}

    def counts(self, kind: str) -> collections.Counter[str]:
        return collections.Counter(document["event_id"] for document in list(getattr(self, kind)))


def forwarder_args(log_dir: Path, state: Path, receivers: Receivers, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "labelgate.audit.export",
        "--log-dir",
        str(log_dir),
        "--state-dir",
        str(state),
        "--syslog",
        f"tcp://127.0.0.1:{receivers.tcp_port}",
        "--syslog",
        f"udp://127.0.0.1:{receivers.udp_port}",
        "--http",
        f"http://127.0.0.1:{receivers.http_port}/ingest",
        "--batch-size",
        "7",
        "--poll-seconds",
        "0.05",
        "--retry-max-seconds",
        "0.3",
        "--timeout-seconds",
        "2",
        "--hostname",
        "gw-test",
        *extra,
    ]


@contextlib.contextmanager
def forwarder(log_dir: Path, state: Path, receivers: Receivers, name: str) -> Iterator[Process]:
    with running(forwarder_args(log_dir, state, receivers), log_dir.parent / f"{name}.log") as process:
        yield process


async def _append(sock: Path, count: int) -> list[str]:
    async with AuditClient(sock, timeout=10) as client:
        events = [make_event(decision="deny" if i % 3 == 0 else "mask") for i in range(count)]
        await asyncio.gather(*(client.append(event) for event in events))
    return [event["event_id"] for event in events]


def append(sock: Path, count: int) -> list[str]:
    return asyncio.run(_append(sock, count))


def log_events(process: Process, event: str) -> set[str]:
    """The destinations named by the forwarder's structured log lines of one kind."""
    found = set()
    for line in process.output().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == event:
                found.add(entry["destination"])
    return found


def wait_for(receivers: Receivers, kinds: tuple[str, ...], ids: list[str], process: Process) -> None:
    def arrived() -> bool:
        if not process.alive():
            raise RuntimeError(f"the forwarder exited:\n{process.output()}")
        return all(set(ids) <= receivers.ids(kind) for kind in kinds)

    wait_until(arrived, timeout=30, what=f"{len(ids)} events at {', '.join(kinds)}")


def test_every_event_arrives_nothing_is_lost_while_receivers_are_down_and_restarts_resume(
    tmp_path: Path,
) -> None:
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    kinds = ("tcp", "udp", "http")
    with writer_process(sock, log_dir, "--max-segment-bytes", "4000"), Receivers() as receivers:
        first = append(sock, 30)
        with forwarder(log_dir, state, receivers, "forwarder-1") as process:
            wait_for(receivers, kinds, first, process)
            # Receivers answer 503 before taking a batch: 2xx alone means delivered.
            receivers.http_fail_next = 2
            outage = append(sock, 5)
            wait_for(receivers, kinds, outage, process)

            receivers.http_down()
            receivers.tcp_down()
            during = append(sock, 40)
            wait_for(receivers, ("udp",), during, process)  # the forwarder has read them
            tcp_name = destination_name("syslog-tcp", f"127.0.0.1:{receivers.tcp_port}")
            http_name = http_destination_name(f"http://127.0.0.1:{receivers.http_port}/ingest")
            wait_until(
                lambda: {tcp_name, http_name} <= log_events(process, "audit_export_destination_down"),
                what="the forwarder to notice both outages",
            )
            assert not set(during) & (receivers.ids("http") | receivers.ids("tcp"))
            receivers.http_up()
            receivers.tcp_up()
            wait_for(receivers, kinds, during, process)
            assert {tcp_name, http_name} <= log_events(process, "audit_export_destination_back")
            before_restart = {kind: receivers.counts(kind) for kind in kinds}

        # Restarted, it resumes from each destination's cursor; then a kill -9 right after a delivery.
        killed = append(sock, 6)
        with forwarder(log_dir, state, receivers, "forwarder-2") as process:
            wait_for(receivers, kinds, killed, process)
            process.signal(signal.SIGKILL)
            process.popen.wait(5)
        later = append(sock, 12)
        with forwarder(log_dir, state, receivers, "forwarder-3") as process:
            wait_for(receivers, kinds, later, process)
        stored = read_records(log_dir)

    everything = first + outage + during + killed + later
    by_id = {record["event"]["event_id"]: record for record in stored}
    assert len(stored) == len(everything) == len(by_id)
    for kind in kinds:
        counts = receivers.counts(kind)
        assert set(counts) == set(everything), kind  # nothing lost, nothing invented
        for document in getattr(receivers, kind):
            record = by_id[document["event_id"]]
            # A duplicate is the same record: de-duplicating by event_id loses nothing.
            assert document == {**record["event"], "seq": record["seq"], "hash": record["hash"]}
        # Resumed from the cursor: the records delivered before the restart were not sent again.
        for event_id in first + outage + during:
            assert counts[event_id] == before_restart[kind][event_id], kind
        # After the kill -9, at most the batch whose cursor was not saved yet came again.
        assert sum(counts[event_id] - 1 for event_id in killed) <= 7, kind
        # Nothing duplicated beyond at-least-once: only a batch in flight at a failure repeats.
        assert sum(counts.values()) - len(counts) <= 2 * 7, kind
    assert receivers.errors == []
    assert len(receivers.http_batches) >= len(everything) // 7
    state_files = {path.name for path in state.iterdir()}
    assert len(state_files) == 3 and all(name.endswith(".cursor.json") for name in state_files)
    cursors = [json.loads(path.read_text()) for path in state.iterdir()]
    assert {c["seq"] for c in cursors} == {len(everything)}


def run_once(log_dir: Path, state: Path, *destinations: str) -> tuple[int, str]:
    args = [
        sys.executable,
        "-m",
        "labelgate.audit.export",
        "--log-dir",
        str(log_dir),
        "--state-dir",
        str(state),
    ]
    process = Process([*args, "--once", "--batch-size", "5", *destinations], log_dir.parent / "once.log")
    try:
        return process.popen.wait(timeout=30), process.output()
    finally:
        process.stop()


def test_jsonl_files_rotate_hold_each_record_once_and_keep_the_newest(tmp_path: Path) -> None:
    sock, log_dir, state, out = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state", tmp_path / "out"
    files = ("--jsonl-dir", str(out), "--jsonl-max-bytes", "3000", "--jsonl-keep", "100")
    with writer_process(sock, log_dir):
        first = append(sock, 20)
        assert run_once(log_dir, state, *files)[0] == 0
        # A lost cursor (state wiped) re-sends everything; the files still hold each record once.
        for path in state.iterdir():
            path.unlink()
        second = append(sock, 15)
        assert run_once(log_dir, state, *files)[0] == 0
        exported = sorted(out.glob("export-*.jsonl"))
        lines = [json.loads(line) for path in exported for line in path.read_text().splitlines()]
        third = append(sock, 12)
        # Past the size limit every batch (of 5) starts a new file; only the newest two are kept.
        pruning = ("--jsonl-dir", str(out), "--jsonl-max-bytes", "1", "--jsonl-keep", "2")
        assert run_once(log_dir, state, *pruning)[0] == 0
        # A new destination told to start at the end gets only what comes after.
        fresh = ("--jsonl-dir", str(tmp_path / "fresh"), "--start", "end")
        assert run_once(log_dir, state, *fresh)[0] == 0
        fourth = append(sock, 3)
        assert run_once(log_dir, state, *fresh)[0] == 0
    assert len(exported) > 2 and exported[0].name == "export-000000000001.jsonl"
    assert [line["event_id"] for line in lines] == first + second
    assert [line["seq"] for line in lines] == list(range(1, 36))
    kept = sorted(out.glob("export-*.jsonl"))
    assert [path.name for path in kept] == ["export-000000000041.jsonl", "export-000000000046.jsonl"]
    kept_ids = [json.loads(line)["event_id"] for path in kept for line in path.read_text().splitlines()]
    assert kept_ids == third[5:]
    fresh_lines = (tmp_path / "fresh" / "export-000000000048.jsonl").read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in fresh_lines] == fourth


def test_a_tampered_log_stops_the_forwarder_and_an_unreachable_destination_fails_once(tmp_path: Path) -> None:
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    with writer_process(sock, log_dir):
        append(sock, 8)
    port = free_port()  # nobody listens here
    status, output = run_once(
        log_dir, state, "--http", f"http://127.0.0.1:{port}/x", "--retry-max-seconds", "0.05"
    )
    assert status == 1 and "audit_export_gave_up" in output

    segment = next(log_dir.glob("audit-*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[4] = (
        lines[4]
        .replace(b'"decision":"mask"', b'"decision":"allow"')
        .replace(b'"decision":"deny"', b'"decision":"allow"')
    )
    segment.write_bytes(b"".join(lines))
    status, output = run_once(log_dir, state, "--jsonl-dir", str(tmp_path / "out"))
    assert status == 2 and "AUDIT_EXPORT_LOG_BROKEN" in output
    exported = (tmp_path / "out" / "export-000000000001.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in exported] == [1, 2, 3, 4]  # everything before the edit


def test_bad_settings_are_refused_with_every_problem(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "labelgate.audit.export",
        "--log-dir",
        str(tmp_path),
        "--state-dir",
        str(tmp_path),
    ]
    process = Process([*args, "--syslog", "ftp://x", "--facility", "30"], tmp_path / "bad.log")
    try:
        assert process.popen.wait(timeout=30) == 2
        output = process.output()
    finally:
        process.stop()
    assert "AUDIT_FORWARDER_CONFIG" in output and "ftp://x" in output and "facility" in output


# A JSON-lines export whose disk fills part-way through a batch (RLIMIT_FSIZE: the write stops
# mid-line), then gets room again, and the same batch delivered again, as the forwarder retries.
# In a child process: the limit applies to every file its process writes.
PARTIAL_WRITE = """
import asyncio, json, resource, sys
from pathlib import Path
from labelgate.audit.export.destinations import DeliveryFailed, JsonlFiles, json_line
from labelgate.audit.export.tail import Cursor, LogRecord

out = Path(sys.argv[1])
records = [LogRecord(n, f"{n:064x}", {"event_id": f"e-{n}", "pad": "x" * 200}, Cursor())
           for n in range(1, 11)]

async def main():
    files = JsonlFiles("jsonl-test", out, max_bytes=1 << 20, keep=10)
    await files.deliver(records[:2])
    first = (out / "export-000000000001.jsonl").stat().st_size
    batch = sum(len(json_line(r.document())) for r in records[2:])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (first + batch // 2 + 17, hard))
    try:
        await files.deliver(records[2:])
        print("the write did not fail")
    except DeliveryFailed:
        pass
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await files.deliver(records[2:])

asyncio.run(main())
"""


def test_a_jsonl_write_cut_short_is_taken_back_so_the_retry_writes_each_record_once(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", PARTIAL_WRITE, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout, done.stdout + done.stderr
    lines = (tmp_path / "export-000000000001.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 11))


@pytest.mark.parametrize("name", ["poll_seconds", "timeout_seconds", "retry_max_seconds"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_intervals_and_timeouts_are_finite_and_positive(tmp_path: Path, name: str, value: float) -> None:
    """``nan`` compares false with everything: it passed ``<= 0``, and an idle forwarder
    polling every ``nan`` seconds spun a core."""
    from labelgate.audit.export.forwarder import ForwarderSettings
    from labelgate.errors import ConfigError

    settings = ForwarderSettings(
        log_dir=tmp_path, state_dir=tmp_path, jsonl_dirs=(tmp_path,), **{name: value}
    )
    with pytest.raises(ConfigError, match="finite"):
        settings.check()


@pytest.mark.parametrize("token", ["one\ntwo\n", "a b", "tab\there", "bell\x07", ""])
def test_a_token_file_holding_more_than_one_token_is_refused(tmp_path: Path, token: str) -> None:
    from labelgate.audit.export.forwarder import ForwarderSettings, build_destinations
    from labelgate.errors import ConfigError

    path = tmp_path / "token"
    path.write_text(token)
    settings = ForwarderSettings(
        log_dir=tmp_path, state_dir=tmp_path, http=("http://127.0.0.1:1/x",), http_token_file=path
    )
    with pytest.raises(ConfigError, match="--http-token-file") as raised:
        build_destinations(settings)
    assert raised.value.reason == "AUDIT_FORWARDER_CONFIG"


def test_the_module_entry_point_stops_an_unexpected_error_at_the_backstop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import labelgate.audit.export.forwarder as forwarder
    from labelgate.audit.export.cli import forwarder_cli

    def broken(settings: Any) -> int:
        raise RuntimeError("something no command expected")

    monkeypatch.setattr(forwarder, "run_forwarder", broken)
    monkeypatch.setattr(sys, "argv", ["labelgate.audit.export", "--log-dir", str(tmp_path), "--state-dir",
                                      str(tmp_path), "--jsonl-dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        forwarder_cli()
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "labelgate: internal error (RuntimeError)" in err and "Traceback" not in err


@contextlib.contextmanager
def serving(*sites: tuple[web.Application, str, int]) -> Iterator[None]:
    """aiohttp applications on loopback, served from an event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    async def start() -> None:
        for app, host, port in sites:
            runner = web.AppRunner(app, shutdown_timeout=1)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port).start()

    async def stop() -> None:
        for runner in runners:
            await runner.cleanup()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def saved_cursors(state: Path) -> dict[str, int]:
    return {path.name: json.loads(path.read_text())["seq"] for path in state.glob("*.cursor.json")}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_not_delivered(tmp_path: Path, status: int) -> None:
    """Followed, a 301/302/303 became a GET without the batch whose 200 counted as delivered
    (the records lost, the cursor moved); a 307/308 POSTed the batch, token and all, to a host
    the operator never named."""
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    port, elsewhere_port = free_port(), free_port()
    posted: list[int] = []
    followed: list[str] = []

    async def ingest(request: web.Request) -> web.Response:
        posted.append(len(await request.read()))
        same_origin = status in (301, 302, 303)
        location = "/ok" if same_origin else f"http://127.0.0.2:{elsewhere_port}/collect"
        return web.Response(status=status, headers={"Location": location})

    async def ok(request: web.Request) -> web.Response:
        followed.append(f"{request.method} {request.path} {len(await request.read())}")
        return web.Response(status=200, text="fine")

    app = web.Application()
    app.router.add_post("/ingest", ingest)
    app.router.add_route("*", "/ok", ok)
    elsewhere = web.Application()
    elsewhere.router.add_route("*", "/collect", ok)
    (tmp_path / "token").write_text("s3cr3t-token\n")
    with (
        writer_process(sock, log_dir),
        serving((app, "127.0.0.1", port), (elsewhere, "127.0.0.2", elsewhere_port)),
    ):
        append(sock, 3)
        status_code, output = run_once(
            log_dir,
            state,
            "--http",
            f"http://127.0.0.1:{port}/ingest",
            "--http-token-file",
            str(tmp_path / "token"),
            "--retry-attempts",
            "2",
            "--retry-max-seconds",
            "0.05",
        )
    assert status_code == 1, output
    assert len(posted) == 2 and followed == []  # asked twice (a retry), nothing followed
    assert list(saved_cursors(state).values()) == [0]  # nothing counted delivered
    warnings = [json.loads(line) for line in output.splitlines() if "audit_export_destination_down" in line]
    assert len(warnings) == 1 and f"HTTP {status}" in warnings[0]["error"]
    assert "redirects are not followed" in warnings[0]["error"]


def test_a_different_log_exported_into_the_same_directory_is_refused_not_skipped(tmp_path: Path) -> None:
    """The export directory held seq 1..5 of log A; log B's seq 1..5 are other records. Skipped
    by seq alone, B's first five vanished while its cursor moved past them."""
    out = tmp_path / "out"
    for name, count in (("a", 5), ("b", 7)):
        with writer_process(tmp_path / f"{name}.sock", tmp_path / name):
            append(tmp_path / f"{name}.sock", count)
    assert run_once(tmp_path / "a", tmp_path / "state-a", "--jsonl-dir", str(out))[0] == 0
    status, output = run_once(
        tmp_path / "b",
        tmp_path / "state-b",
        "--jsonl-dir",
        str(out),
        "--retry-attempts",
        "2",
        "--retry-max-seconds",
        "0.05",
    )
    assert status == 1, output
    assert list(saved_cursors(tmp_path / "state-b").values()) == [0]
    warning = next(
        json.loads(line) for line in output.splitlines() if "audit_export_destination_down" in line
    )
    assert str(out) in warning["error"] and "record 1" in warning["error"]
    exported = [
        json.loads(line) for path in sorted(out.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]
    log_a = read_records(tmp_path / "a")
    assert [(line["seq"], line["hash"]) for line in exported] == [(r["seq"], r["hash"]) for r in log_a]


def test_a_batch_sent_again_after_a_crash_is_checked_record_by_record(tmp_path: Path) -> None:
    """The batch in flight when the forwarder died comes again: each of its records already
    written is skipped because the line for its seq has its hash; the rest is appended."""
    import asyncio as aio

    from labelgate.audit.export.destinations import DeliveryFailed, JsonlFiles
    from labelgate.audit.export.tail import Cursor, LogRecord

    def record(seq: int, tag: str = "") -> LogRecord:
        return LogRecord(seq, f"{seq:062x}{tag or '00'}", {"event_id": f"e-{seq}{tag}"}, Cursor())

    async def scenario() -> str:
        files = JsonlFiles("jsonl-test", tmp_path, max_bytes=10_000, keep=100)
        await files.deliver([record(n) for n in range(1, 9)])
        await files.deliver([record(n) for n in range(9, 11)])  # 1..10 in one file
        # Restarted (so it knows only the last seq written), with a file per batch from now on.
        again = JsonlFiles("jsonl-test", tmp_path, max_bytes=100, keep=100)
        await again.deliver([record(n) for n in range(4, 13)])  # 4..10 found mid-file: 11, 12 new
        await again.deliver([record(n) for n in range(13, 15)])
        third = JsonlFiles("jsonl-test", tmp_path, max_bytes=100, keep=100)
        await third.deliver([record(n) for n in range(10, 17)])  # across three files; 15, 16 new
        with pytest.raises(DeliveryFailed) as refused:
            await third.deliver([record(6), record(7, "ff")])
        return refused.value.message

    message = aio.run(scenario())
    assert "record 7 " in message and "another hash" in message and str(tmp_path) in message
    files = sorted(tmp_path.glob("*.jsonl"))
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert [(line["seq"], line["event_id"]) for line in lines] == [(n, f"e-{n}") for n in range(1, 17)]
    assert [path.name[7:-6] for path in files] == [
        "000000000001",
        "000000000011",
        "000000000013",
        "000000000015",
    ]


SECRET_PATH = "/services/T0AAAAAAA/B0BBBBBBB/Zx9SECRETwebhookTOKEN42"
SECRET = "Zx9SECRETwebhookTOKEN42"


def test_an_http_urls_path_is_in_no_log_line_and_no_state_file(tmp_path: Path) -> None:
    """A webhook's path is its secret: the destination is named by origin and a hash of its URL."""
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    with writer_process(sock, log_dir):
        append(sock, 1)
    port = free_port()  # nobody listens: the destination is down
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    status, output = run_once(
        log_dir, state, "--http", url, "--retry-attempts", "2", "--retry-max-seconds", "0.05"
    )
    assert status == 1 and "audit_export_destination_down" in output
    assert "services" not in output and SECRET not in output
    for path in state.iterdir():
        assert "services" not in path.name and SECRET not in path.name and SECRET not in path.read_text()
    assert list(saved_cursors(state)) == [f"{http_destination_name(url)}.cursor.json"]
    assert http_destination_name(url).startswith(f"http-127.0.0.1-{port}-")


def test_a_cursor_saved_under_the_former_http_name_is_taken_over_not_started_again(tmp_path: Path) -> None:
    """Before, an HTTP destination was named after host, port and path; its cursor file, found
    under that name, is moved to the new one, or every record would be sent again."""
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    port = free_port()
    received: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        received.extend(document["seq"] for document in await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(SECRET_PATH, hook)
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    former = destination_name("http", f"127.0.0.1:{port}{SECRET_PATH}")  # how it was named before
    with writer_process(sock, log_dir), serving((app, "127.0.0.1", port)):
        append(sock, 4)
        assert run_once(log_dir, state, "--http", url)[0] == 0
        (current,) = state.glob("*.cursor.json")
        saved = json.loads(current.read_text())
        current.unlink()
        (state / f"{former}.cursor.json").write_text(json.dumps({**saved, "destination": former}))
        append(sock, 3)
        status, output = run_once(log_dir, state, "--http", url)
    assert status == 0, output
    assert received == list(range(1, 8))  # 1..4 once, then only 5..7: the old cursor was used
    assert saved_cursors(state) == {current.name: 7}
    assert all(SECRET not in path.name and SECRET not in path.read_text() for path in state.iterdir())
    assert "audit_export_cursor_renamed" in output and SECRET not in output


def test_an_endless_answer_is_read_only_as_far_as_a_small_prefix(tmp_path: Path) -> None:
    """A 2xx answer whose body never ends (or is huge) was read whole into memory: the
    forwarder reached 642 MiB. It reads a bounded prefix and lets the connection go."""
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    port = free_port()
    sent = [0]
    chunk = b"x" * (1 << 20)
    give_up_at = 256 << 20  # the receiver stops here, so a forwarder that reads it all still ends

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            while sent[0] < give_up_at:
                await response.write(chunk)
                sent[0] += len(chunk)
        return response

    app = web.Application()
    app.router.add_post("/ingest", endless)
    with writer_process(sock, log_dir), serving((app, "127.0.0.1", port)):
        append(sock, 2)
        status, output = run_once(
            log_dir, state, "--http", f"http://127.0.0.1:{port}/ingest", "--retry-attempts", "1"
        )
    assert status == 0, output
    assert list(saved_cursors(state).values()) == [2]
    # What the loopback's socket buffers (at most tcp_rmem's 32 MiB here) held, never more.
    assert sent[0] < 64 << 20, sent[0]
