"""Where exported records go: syslog over TCP or UDP, an HTTP endpoint, JSON-lines files.

``await destination.deliver(records)`` returns only once the batch is delivered as far as
the transport can tell, and raises ``DeliveryFailed`` otherwise; the forwarder then sends
the same batch again. What "delivered" means per destination:

- ``http``: a 2xx answer to the POST of the batch (a JSON array). Every other status,
  4xx included, is a failure and the batch is retried: an audit event is never dropped
  because a receiver refused it; the forwarder logs the status until someone fixes it.
- ``syslog+tcp``: every byte of the batch acknowledged by the receiver's TCP stack (Linux
  ``SIOCOUTQ`` reaches 0 on a connection that is still open). That is the most plain
  syslog over TCP can tell: a receiver that dies after its kernel acknowledged but before
  it processed the data loses it. Use ``http`` where that matters.
- ``syslog+udp``: the datagram left this host. UDP has no acknowledgement: it is
  best-effort by nature, whatever the forwarder does. A refused port (ICMP) is noticed on
  the next send and that batch is retried.
- ``jsonl``: the lines written and fsynced. On start the destination reads the seq of the
  last line it wrote and skips what is already there, so files get each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import struct
from pathlib import Path
from typing import Protocol

import aiohttp

from labelgate.audit.export.formats import json_line, octet_counted, syslog_message
from labelgate.audit.export.tail import LogRecord
from labelgate.errors import LabelgateError
from labelgate.shown_urls import shown_problem

try:
    from termios import TIOCOUTQ as _TIOCOUTQ

    TIOCOUTQ: int | None = _TIOCOUTQ
except ImportError:  # pragma: no cover - not Linux: the kernel cannot tell us what was acknowledged
    TIOCOUTQ = None


class DeliveryFailed(LabelgateError):
    def __init__(self, destination: str, message: str) -> None:
        super().__init__("AUDIT_EXPORT_UNDELIVERED", f"{destination}: {message}")


class Destination(Protocol):
    name: str

    async def deliver(self, records: list[LogRecord]) -> None: ...

    async def close(self) -> None: ...


class SyslogTcp:
    def __init__(
        self, name: str, host: str, port: int, *, hostname: str, facility: int, sd_id: str, timeout: float
    ) -> None:
        self.name, self.host, self.port = name, host, port
        self.hostname, self.facility, self.sd_id, self.timeout = hostname, facility, sd_id, timeout
        self._writer: asyncio.StreamWriter | None = None
        self._eof: asyncio.Task[None] | None = None

    async def deliver(self, records: list[LogRecord]) -> None:
        frames = b"".join(
            octet_counted(
                syslog_message(r.document(), hostname=self.hostname, facility=self.facility, sd_id=self.sd_id)
            )
            for r in records
        )
        try:
            async with asyncio.timeout(self.timeout):
                writer = await self._connection()
                writer.write(frames)
                await writer.drain()
                await self._acknowledged(writer)
        except (OSError, TimeoutError) as error:
            await self.close()
            raise DeliveryFailed(self.name, _describe(error)) from None

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing() and not self._closed_by_peer():
            return self._writer
        await self.close()
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        # A syslog receiver never talks back; reading notices when it closes the connection.
        self._eof = asyncio.create_task(_until_eof(reader))
        return self._writer

    def _closed_by_peer(self) -> bool:
        return self._eof is not None and self._eof.done()

    async def _acknowledged(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        pause = 0.001
        while True:
            if self._closed_by_peer() or writer.is_closing():
                raise ConnectionResetError("the receiver closed the connection")
            failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if failure:
                raise OSError(failure, os.strerror(failure))
            if TIOCOUTQ is None or _unacknowledged(sock.fileno()) == 0:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if self._eof is not None:
            self._eof.cancel()
            self._eof = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def _unacknowledged(fd: int) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged yet (Linux SIOCOUTQ)."""
    assert TIOCOUTQ is not None  # callers check it first
    queued: int = struct.unpack("i", fcntl.ioctl(fd, TIOCOUTQ, b"\0\0\0\0"))[0]
    return queued


async def _until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while await reader.read(4096):
            pass


class SyslogUdp:
    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        hostname: str,
        facility: int,
        sd_id: str,
        max_datagram: int,
    ) -> None:
        self.name, self.host, self.port = name, host, port
        self.hostname, self.facility, self.sd_id, self.max_datagram = hostname, facility, sd_id, max_datagram
        self._sock: socket.socket | None = None

    async def deliver(self, records: list[LogRecord]) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await self._socket()
            for record in records:
                datagram = syslog_message(
                    record.document(),
                    hostname=self.hostname,
                    facility=self.facility,
                    sd_id=self.sd_id,
                    max_bytes=self.max_datagram,
                )
                await loop.sock_sendall(sock, datagram)
        except OSError as error:
            await self.close()
            raise DeliveryFailed(self.name, _describe(error)) from None

    async def _socket(self) -> socket.socket:
        if self._sock is None:
            infos = await asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            # Connected, so the kernel reports an ICMP "port unreachable" on a later send.
            sock.connect(address)
            self._sock = sock
        return self._sock

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class HttpBatch:
    def __init__(self, name: str, url: str, *, token: str | None, timeout: float) -> None:
        self.name, self.url, self.timeout = name, url, timeout
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, records: list[LogRecord]) -> None:
        body = b"[" + b",".join(json_line(r.document())[:-1] for r in records) + b"]"
        # The same batch on a retry carries the same key, for receivers that de-duplicate batches.
        headers = {**self.headers, "X-Labelgate-Batch": f"{records[0].seq}-{records[-1].seq}"}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            # aiohttp's text may quote the URL whole (InvalidURL does): its userinfo (sent as
            # basic auth) and a path that may be the receiver's secret are not repeated.
            raise DeliveryFailed(self.name, shown_problem(self.url, _describe(error))) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(self.name, f"HTTP {status}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


EXPORT_FILE = re.compile(r"^export-(\d{12})\.jsonl$")


class JsonlFiles:
    """JSON-lines files ``export-<first seq>.jsonl`` in a directory, rotated by size, the newest
    ``keep`` kept: for log shippers (Filebeat, Fluent Bit, a Splunk forwarder) that tail files.

    Not the audit segments themselves: those are the evidence, never rotated away, in a
    directory only the writer may write; export files are a flat copy a shipper may read,
    with their own retention.
    """

    def __init__(self, name: str, directory: Path, *, max_bytes: int, keep: int) -> None:
        self.name, self.directory, self.max_bytes, self.keep = name, directory, max_bytes, keep
        self._last_seq: int | None = None

    async def deliver(self, records: list[LogRecord]) -> None:
        try:
            await asyncio.to_thread(self._write, records)
        except OSError as error:
            raise DeliveryFailed(self.name, _describe(error)) from None

    def _files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            if match := EXPORT_FILE.match(path.name):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _write(self, records: list[LogRecord]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        files = self._files()
        if self._last_seq is None:
            self._last_seq = _last_written_seq(files[-1][1]) if files else 0
        fresh = [r for r in records if r.seq > self._last_seq]
        if not fresh:
            return
        current = files[-1][1] if files else None
        if current is None or current.stat().st_size >= self.max_bytes:
            current = self.directory / f"export-{fresh[0].seq:012d}.jsonl"
        fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            before = os.fstat(fd).st_size
            data = b"".join(json_line(r.document()) for r in fresh)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # A disk that filled part-way: take back what was written, so that the retry of
                # this batch (the cursor did not move) neither repeats records nor glues a whole
                # line onto a torn one. Should that fail too, the next start cuts the torn tail
                # (``_last_written_seq``) and skips what it finds written.
                self._last_seq = None
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)
        self._last_seq = fresh[-1].seq
        for _, old in self._files()[: -self.keep]:
            old.unlink(missing_ok=True)

    async def close(self) -> None:
        return None


def _last_written_seq(path: Path) -> int:
    """The seq of the last complete line of an export file (a torn tail is cut: never acknowledged)."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    for line in reversed(complete.splitlines()):
        with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):
            return int(json.loads(line)["seq"])
    return 0


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.errno in (errno.ECONNREFUSED, errno.ECONNRESET):
        return os.strerror(error.errno)
    return str(error) or type(error).__name__
