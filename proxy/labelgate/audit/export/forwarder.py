"""``labelgate audit-forwarder``: follow the audit log and deliver every record to each destination.

Each destination has its own loop and its own cursor file in the state directory, so a
receiver that is down holds up only itself:

    read the batch after the cursor  ->  deliver it (retry the same batch with backoff until
    it is delivered)  ->  save the cursor (atomically)  ->  next batch

The cursor moves only after a delivery, and is saved before the next batch is read, so a
crash or kill at any point re-sends at most the batch in flight: at-least-once, never a
gap. While a destination is down, the backlog is simply the part of the log after its
cursor: the audit log is the on-disk spool, already durable and hash-chained, and the
forwarder holds no more than one batch in memory however long the outage lasts.

Destination names (in every log line, and the cursor file's name) show no secret: an HTTP
destination is ``<scheme>-<host>-<port>-<hash of its URL>``, as a webhook's path (and a
query) may be its token. A cursor saved under the name earlier versions gave it (host, port
and path) is taken over on start and its file removed, rather than every record sent again.

Settings are checked before anything starts (``ForwarderSettings.check``), each problem
named: a syslog address is ``tcp://HOST[:PORT]`` or ``udp://HOST[:PORT]`` (``syslog+`` in
front allowed; PORT 514 when not given), nothing else (no path, no credentials: a typo such
as ``tcp:host:6514`` was sent to 127.0.0.1:514); a host must be an IP address or a valid DNS
name (labels of at most 63 characters); an HTTP URL's ``user:password@`` is sent as basic
auth, and refused together with ``--http-token-file`` (a request has one Authorization
header); ``--hostname`` (syslog) is 1-255 printable ASCII characters; ``--max-datagram`` is
480..65507 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import re
import signal
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from labelgate import retry
from labelgate.audit import reasons
from labelgate.audit.export.destinations import (
    DeliveryFailed,
    Destination,
    HttpBatch,
    JsonlFiles,
    SyslogTcp,
    SyslogUdp,
)
from labelgate.audit.export.formats import DEFAULT_FACILITY, DEFAULT_SD_ID, check_sd_id, header_field
from labelgate.audit.export.tail import (
    CommittedMark,
    Cursor,
    CursorFile,
    ExportLogBroken,
    Leftover,
    LogRecord,
    end_cursor,
    left_behind,
    read_batch,
)
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger
from labelgate.retry import RetrySettings
from labelgate.shown_urls import credentials_problem, shown_url

log = get_logger(__name__)
FIRST_RETRY_SECONDS = 0.2
# --once: a destination that still fails after this many attempts makes the run fail.
ONCE_ATTEMPTS = 5
SYSLOG_SCHEMES = ("tcp", "udp", "syslog+tcp", "syslog+udp")
SYSLOG_DEFAULT_PORT = 514
SYSLOG_FORM = f"use tcp://HOST[:PORT] or udp://HOST[:PORT] (PORT {SYSLOG_DEFAULT_PORT} if not given)"
# RFC 5426's smallest limit a receiver must take; the largest payload of a UDP datagram (IPv4).
DATAGRAM_BYTES = (480, 65507)


class ExportIncomplete(LabelgateError):
    """``--once`` delivered everything it could, and yet left records of the log unexported:
    no committed mark vouched for them (missing, unreadable, or behind the last checkpoint),
    so the export stopped at the last checkpoint. Exit 1, as for a destination that could not
    be reached: not everything was delivered, and the log itself is not broken (that is 2)."""

    exit_code = 1

    def __init__(self, leftover: Leftover) -> None:
        super().__init__(
            reasons.AUDIT_EXPORT_INCOMPLETE,
            f"{leftover.records} records in the log after seq {leftover.after_seq} were not exported: "
            f"{leftover.why}",
        )
        self.leftover = leftover


@dataclass(frozen=True)
class ForwarderSettings:
    log_dir: Path
    state_dir: Path
    syslog: tuple[str, ...] = ()  # tcp://host:port or udp://host:port
    http: tuple[str, ...] = ()  # http(s)://host:port/path
    jsonl_dirs: tuple[Path, ...] = ()
    http_token_file: Path | None = None
    batch_size: int = 500
    poll_seconds: float = 0.25
    retry_max_seconds: float = 30.0
    timeout_seconds: float = 10.0
    start: Literal["beginning", "end"] = "beginning"  # where a destination without a cursor starts
    hostname: str = field(default_factory=socket.gethostname)
    facility: int = DEFAULT_FACILITY
    sd_id: str = DEFAULT_SD_ID
    max_datagram: int = 8192
    jsonl_max_bytes: int = 64 << 20
    jsonl_keep: int = 10
    once: bool = False  # deliver what the log holds now, then exit
    # The one retry policy (labelgate/retry.py); its max_attempts counts only with --once.
    retry: RetrySettings | None = None

    def check(self) -> None:
        problems = []
        if not (self.syslog or self.http or self.jsonl_dirs):
            problems.append("no destination: give --syslog, --http or --jsonl-dir")
        for url in self.syslog:
            if problem := _syslog_problem(url):
                problems.append(f"--syslog {shown_url(url)!r}: {problem}")
        for url in self.http:
            parts = _url_parts(url)
            if (
                parts is None
                or parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.port == 0
            ):
                problems.append(f"--http {shown_url(url)!r}: use http(s)://HOST[:PORT]/PATH")
            elif problem := _host_problem(parts.hostname):
                problems.append(f"--http {shown_url(url)!r}: {problem}")
            elif self.http_token_file is not None and (
                problem := credentials_problem(
                    url,
                    why="--http-token-file sends the token, and a request carries one Authorization header",
                )
            ):
                problems.append(f"--http {problem}")
        if self.syslog and header_field(self.hostname, 255) != self.hostname:
            problems.append(
                f"--hostname {self.hostname!r} is not an RFC 5424 HOSTNAME: 1-255 printable ASCII "
                "characters without spaces"
            )
        if self.batch_size < 1:
            problems.append("batch size must be positive")
        # ``nan`` compares false with everything: ``<= 0`` let it through, and waiting ``nan``
        # seconds returns at once (an idle forwarder spun a core).
        for option, seconds in (
            ("--poll-seconds", self.poll_seconds),
            ("--retry-max-seconds", self.retry_max_seconds),
            ("--timeout-seconds", self.timeout_seconds),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                problems.append(f"{option} {seconds} must be a finite positive number of seconds")
        if not 0 <= self.facility <= 23:
            problems.append("the syslog facility is 0..23")
        if not DATAGRAM_BYTES[0] <= self.max_datagram <= DATAGRAM_BYTES[1]:
            problems.append(
                f"--max-datagram is {DATAGRAM_BYTES[0]}..{DATAGRAM_BYTES[1]} bytes "
                "(RFC 5426's smallest limit, UDP's largest payload)"
            )
        if self.jsonl_keep < 1 or self.jsonl_max_bytes < 1:
            problems.append("jsonl keep and max bytes must be positive")
        try:
            check_sd_id(self.sd_id)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ConfigError(reasons.AUDIT_FORWARDER_CONFIG, "; ".join(problems))


def _url_parts(url: str) -> SplitResult | None:
    """urlsplit, or None for a URL it (or its port) cannot parse: ``http://[::1``, port 99999."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return None
    return parts


def _syslog_problem(url: str) -> str | None:
    """What is wrong with a ``--syslog`` address, or None. Every part but a port must be
    there: ``urlsplit`` reads ``tcp:host:6514`` or ``udp://`` without complaint, and a
    missing host became 127.0.0.1."""
    parts = _url_parts(url)
    if parts is None or parts.scheme not in SYSLOG_SCHEMES or not parts.hostname or parts.port == 0:
        return SYSLOG_FORM
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"a syslog address has no path or query: {SYSLOG_FORM}"
    if shown_url(url) != url:
        return "carries credentials (user:password@), which syslog never sends: remove them"
    return _host_problem(parts.hostname)


_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _host_problem(host: str) -> str | None:
    """None for an IP address or a name DNS can carry (IDNA-encoded labels of 1-63 letters,
    digits, ``-`` or ``_``); a name the IDNA codec refuses failed at connect time, as an
    internal error that ended the forwarder."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    labels = name.removesuffix(".").split(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a valid host name (an IP address, or labels of at most 63 characters)"
    return None


def _read_token(path: Path) -> str:
    """The one bearer token the file holds (surrounding whitespace and a final newline
    dropped). Whitespace or a control character inside is refused here: a header cannot carry
    it, and the delivery would fail with an error of the HTTP client, not a word about the file."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            reasons.AUDIT_FORWARDER_CONFIG, f"--http-token-file {path} is not UTF-8 text"
        ) from None
    except OSError as error:
        raise ConfigError(
            reasons.AUDIT_FORWARDER_CONFIG, f"--http-token-file {path}: {error.strerror or error}"
        ) from None
    if not token:
        raise ConfigError(reasons.AUDIT_FORWARDER_CONFIG, f"--http-token-file {path} holds no token")
    if any(char.isspace() or not char.isprintable() for char in token):
        raise ConfigError(
            reasons.AUDIT_FORWARDER_CONFIG,
            f"--http-token-file {path} holds more than one token: whitespace or a control character "
            "inside it (one token, on one line)",
        )
    return token


def destination_name(kind: str, target: str, identity: str | None = None) -> str:
    """A stable file-name-safe id for a destination: its cursor file is ``<name>.cursor.json``.
    ``target`` is shown (so never a secret); the hash is of ``identity`` (default ``target``)."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", target).strip("-")[:60]
    digest = hashlib.sha256(f"{kind} {target if identity is None else identity}".encode()).hexdigest()[:8]
    return f"{kind}-{slug}-{digest}"


def http_destination_name(url: str) -> str:
    """``<scheme>-<host>-<port>-<hash>``: the path and query may be the receiver's secret (a
    webhook's token) and are only hashed, with the origin; userinfo is left out of both, so a
    changed password keeps the destination's cursor."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    origin = f"{parts.scheme}://{parts.hostname}:{port}"
    identity = origin + parts.path + (f"?{parts.query}" if parts.query else "")
    return destination_name(parts.scheme, f"{parts.hostname}:{port}", identity)


def _former_http_name(url: str) -> str:
    """The name versions before gave an HTTP destination (its path shown): its cursor is taken over."""
    parts = urlsplit(url)
    return destination_name("http", f"{parts.hostname}:{parts.port or ''}{parts.path}")


def build_destinations(settings: ForwarderSettings) -> list[Destination]:
    destinations: list[Destination] = []
    token = _read_token(settings.http_token_file) if settings.http_token_file else None
    for url in settings.syslog:
        parts = urlsplit(url)  # check() made sure the host is there
        host, port = parts.hostname or "", parts.port or SYSLOG_DEFAULT_PORT
        common: dict[str, Any] = {
            "hostname": settings.hostname,
            "facility": settings.facility,
            "sd_id": settings.sd_id,
        }
        if parts.scheme.endswith("udp"):
            name = destination_name("syslog-udp", f"{host}:{port}")
            destinations.append(SyslogUdp(name, host, port, max_datagram=settings.max_datagram, **common))
        else:
            name = destination_name("syslog-tcp", f"{host}:{port}")
            destinations.append(SyslogTcp(name, host, port, timeout=settings.timeout_seconds, **common))
    for url in settings.http:
        destinations.append(
            HttpBatch(
                http_destination_name(url),
                url,
                token=token,
                timeout=settings.timeout_seconds,
                former_names=(_former_http_name(url),),
            )
        )
    for directory in settings.jsonl_dirs:
        directory = directory.resolve()
        name = destination_name("jsonl", str(directory))
        destinations.append(
            JsonlFiles(name, directory, max_bytes=settings.jsonl_max_bytes, keep=settings.jsonl_keep)
        )
    names = [d.name for d in destinations]
    if len(set(names)) != len(names):
        raise ConfigError(reasons.AUDIT_FORWARDER_CONFIG, "the same destination is given twice")
    return destinations


class Forwarder:
    def __init__(self, settings: ForwarderSettings, destinations: list[Destination] | None = None) -> None:
        settings.check()
        self.settings = settings
        self.destinations = destinations if destinations is not None else build_destinations(settings)
        self.stopping = asyncio.Event()
        self.delivered: dict[str, int] = {d.name: 0 for d in self.destinations}
        # One reader of the committed mark for the run: its warnings are per run, not per poll.
        self.marks = CommittedMark(settings.log_dir)
        # With ``once``: what each destination left in the log that no committed mark vouched for.
        self.left_behind: dict[str, Leftover] = {}

    def request_stop(self) -> None:
        self.stopping.set()

    async def run(self) -> int:
        """0: stopped (or, with ``once``, everything delivered); 1: undelivered; 2: the log is broken.

        With ``once``, records left in the log because no committed mark vouched for them
        raise ``ExportIncomplete`` (exit 1) once every destination has finished."""
        if not self.settings.log_dir.is_dir():
            what = "is not a directory" if self.settings.log_dir.exists() else "does not exist"
            raise ConfigError(
                reasons.AUDIT_FORWARDER_CONFIG, f"the audit log directory {self.settings.log_dir} {what}"
            )
        # One at a time, before any destination starts: two may share a former name.
        for destination in self.destinations:
            await asyncio.to_thread(_take_over_former_cursor, self.settings.state_dir, destination)
        tasks = [asyncio.create_task(self._follow(d), name=d.name) for d in self.destinations]
        stopper = asyncio.create_task(self.stopping.wait())
        try:
            remaining: set[asyncio.Task[Any]] = set(tasks)
            while remaining and not self.stopping.is_set():
                done, remaining = await asyncio.wait(
                    remaining | {stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                remaining.discard(stopper)
                for task in done - {stopper}:
                    if (failure := task.exception()) is not None:
                        raise failure
            if not self.settings.once:
                return 0
            finished = all(t.done() and not t.cancelled() and t.result() for t in tasks)
            if finished and self.left_behind:
                # All stopped at the same bound, so they left the same records (the largest count,
                # should the log have grown between their looks).
                raise ExportIncomplete(max(self.left_behind.values(), key=lambda left: left.records))
            return 0 if finished else 1
        except ExportLogBroken as error:
            log.error("audit_export_stopped", reason=error.reason, error=error.message)
            return 2
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for destination in self.destinations:
                with contextlib.suppress(Exception):
                    await destination.close()

    async def _follow(self, destination: Destination) -> bool:
        """Deliver batches to one destination until stopped (or, with ``once``, the log's end)."""
        settings = self.settings
        cursor_file = CursorFile(settings.state_dir / f"{destination.name}.cursor.json")
        cursor = await asyncio.to_thread(cursor_file.load)
        if cursor is None:
            cursor = (
                Cursor()
                if settings.start == "beginning"
                else await asyncio.to_thread(end_cursor, settings.log_dir, self.marks)
            )
            await asyncio.to_thread(cursor_file.save, cursor, destination=destination.name)
            log.info("audit_export_cursor_created", destination=destination.name, seq=cursor.seq)
        while not self.stopping.is_set():
            batch = await asyncio.to_thread(
                read_batch, settings.log_dir, cursor, settings.batch_size, marks=self.marks
            )
            if not batch:
                if settings.once:
                    leftover = await asyncio.to_thread(left_behind, settings.log_dir, cursor, self.marks)
                    if leftover is not None:
                        self.left_behind[destination.name] = leftover
                    return True
                await self._pause(settings.poll_seconds)
                continue
            if not await self._deliver(destination, batch):
                return False
            cursor = batch[-1].after
            self.delivered[destination.name] += len(batch)
            await asyncio.to_thread(
                cursor_file.save,
                cursor,
                destination=destination.name,
                updated=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
            log.debug(
                "audit_export_delivered", destination=destination.name, records=len(batch), seq=cursor.seq
            )
        return True

    async def _deliver(self, destination: Destination, batch: list[LogRecord]) -> bool:
        """Send the same batch until it is delivered; False only when stopping or out of attempts."""
        failures = 0

        async def attempt() -> None:
            nonlocal failures
            try:
                await destination.deliver(batch)
            except DeliveryFailed as error:
                failures += 1
                if failures == 1:
                    log.warning(
                        "audit_export_destination_down",
                        destination=destination.name,
                        error=error.message,
                        waiting_from_seq=batch[0].seq,
                    )
                raise

        # Until delivered (nothing is dropped), or out of attempts with --once, or stopping.
        settings = self.retry_settings()
        try:
            await retry.policy(
                settings,
                DeliveryFailed,
                forever=not self.settings.once,
                stopping=self.stopping.is_set,
                sleep=self._pause,
            )(attempt)
        except DeliveryFailed:
            if not self.stopping.is_set():
                log.error("audit_export_gave_up", destination=destination.name, attempts=failures)
            return False
        if failures:
            log.info("audit_export_destination_back", destination=destination.name, failed_attempts=failures)
        return True

    def retry_settings(self) -> RetrySettings:
        """``retry``, else the older ``retry_max_seconds`` with the first wait of 0.2 s."""
        if self.settings.retry is not None:
            return self.settings.retry
        longest = self.settings.retry_max_seconds
        first = min(FIRST_RETRY_SECONDS, longest)
        return RetrySettings(
            max_attempts=ONCE_ATTEMPTS, initial_seconds=first, max_seconds=longest, jitter_seconds=first
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def _take_over_former_cursor(state_dir: Path, destination: Destination) -> None:
    """A cursor saved under a name the destination had before becomes its cursor (unless it has
    one already), and the former file, whose name shows the URL's path, is removed."""
    current = CursorFile(state_dir / f"{destination.name}.cursor.json")
    for former_name in getattr(destination, "former_names", ()):
        if former_name == destination.name:
            continue
        former = CursorFile(state_dir / f"{former_name}.cursor.json")
        try:
            cursor = former.load()
        except ConfigError:
            # Its own message would name the file, and so the path.
            raise ConfigError(
                reasons.AUDIT_EXPORT_CURSOR_INVALID,
                f"the cursor {destination.name} has under its former name in {state_dir} (a file named "
                "after the URL's path) cannot be read: remove that file to start this destination anew",
            ) from None
        if cursor is None:
            continue
        if current.load() is None:
            current.save(cursor, destination=destination.name)
            # The former name is not logged: it holds the path this renaming hides.
            log.info("audit_export_cursor_renamed", destination=destination.name, seq=cursor.seq)
        former.remove()


async def serve(settings: ForwarderSettings) -> int:
    forwarder = Forwarder(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, forwarder.request_stop)
    log.info(
        "audit_forwarder_started",
        log_dir=str(settings.log_dir),
        destinations=[d.name for d in forwarder.destinations],
    )
    return await forwarder.run()


def run_forwarder(settings: ForwarderSettings) -> int:
    """Blocking entry point; the exit status for the process."""
    return asyncio.run(serve(settings))
