"""Where exported records go: syslog over TCP or UDP, an HTTP endpoint, JSON-lines files.

``await destination.deliver(records)`` returns only once the batch is delivered as far as
the transport can tell, and raises ``DeliveryFailed`` otherwise; the forwarder then sends
the same batch again. What "delivered" means per destination:

- ``http``: a 2xx answer to the POST of the batch (a JSON array). Every other status,
  4xx included, is a failure and the batch is retried: an audit event is never dropped
  because a receiver refused it; the forwarder logs the status until someone fixes it.
  A redirect (3xx) is a failure too, and is not followed: a 301/302/303 would be followed
  as a GET without the batch (whose 2xx would count as delivered), a 307/308 would send
  the batch, and the token, to an address the operator never named. Of the answer's body
  at most ``ANSWER_READ_LIMIT`` bytes are read (so a small one leaves the connection
  reusable); the rest is never read, and the connection is closed.
- ``syslog+tcp``: every byte of the batch acknowledged by the receiver's TCP stack (Linux
  ``SIOCOUTQ`` reaches 0 on a connection that is still open). That is the most plain
  syslog over TCP can tell: a receiver that dies after its kernel acknowledged but before
  it processed the data loses it. Use ``http`` where that matters.
- ``syslog+udp``: the datagram left this host. UDP has no acknowledgement: it is
  best-effort by nature, whatever the forwarder does. A refused port (ICMP) is noticed on
  the next send and that batch is retried.
- ``jsonl``: the lines written and fsynced. On start the destination reads the seq of the
  last line it wrote; a record at or below it (the batch in flight when the forwarder
  stopped, or everything again after a lost cursor) is skipped only when the line written
  for its seq has its hash, so files get each record once. A seq written there with
  another hash (a different log exported into the same directory), or one missing though
  later ones are there (rotated away), is refused: the delivery fails, naming the
  directory, rather than hide one log's records behind another's.

A host a syslog destination cannot even resolve (a name the IDNA codec refuses) is a
failed delivery of that destination like any other, never an error that stops the
forwarder's other destinations.
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
from typing import BinaryIO, Protocol

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
        except (OSError, TimeoutError, ValueError) as error:  # ValueError: a host IDNA refuses
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
        except (OSError, ValueError) as error:  # ValueError: a host IDNA refuses
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


# Of a receiver's answer at most this much is read: its content is never used, and a body
# without end (or a huge one) was read whole into memory (642 MiB before the timeout).
ANSWER_READ_LIMIT = 64 << 10


class HttpBatch:
    def __init__(
        self, name: str, url: str, *, token: str | None, timeout: float, former_names: tuple[str, ...] = ()
    ) -> None:
        self.name, self.url, self.timeout = name, url, timeout
        # Names this destination had in earlier versions: a cursor saved under one is taken over.
        self.former_names = former_names
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
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                await _read_at_most(response, ANSWER_READ_LIMIT)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            # aiohttp's text may quote the URL whole (InvalidURL does): its userinfo (sent as
            # basic auth) and a path that may be the receiver's secret are not repeated.
            raise DeliveryFailed(self.name, shown_problem(self.url, _describe(error))) from None
        if 300 <= status < 400:
            raise DeliveryFailed(
                self.name, f"HTTP {status}: redirects are not followed (give the URL that takes the POST)"
            )
        if not 200 <= status < 300:
            raise DeliveryFailed(self.name, f"HTTP {status}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> None:
    """Read and drop up to ``limit`` bytes of the body: all of a small one, so the connection
    goes back to the pool; leaving the ``async with`` releases the response, which closes a
    connection whose body was not read to its end."""
    while limit > 0 and (chunk := await response.content.read(limit)):
        limit -= len(chunk)


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
        already = [r for r in records if r.seq <= self._last_seq]
        if already:
            self._check_written(files, already)
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

    def _check_written(self, files: list[tuple[int, Path]], records: list[LogRecord]) -> None:
        """Records at or below the last seq written are skipped only if the line written for
        each seq has its hash. A seq alone says nothing: another log (a new one after an
        archive, another forwarder's) has a seq 1 too, and skipping it would hide its records."""
        try:
            written = _written_hashes(files, records[0].seq, records[-1].seq)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise DeliveryFailed(
                self.name, f"{self.directory}: an export file holds a line that is not an exported record"
            ) from None
        for record in records:
            found = written.get(record.seq)
            if found == record.hash:
                continue
            why = (
                "was written there with another hash: the files hold a different log's records"
                if found is not None
                else "is missing though later ones are there (rotated away?): cannot tell it is the same"
            )
            raise DeliveryFailed(
                self.name,
                f"{self.directory}: record {record.seq} {why}; nothing is skipped "
                "(export each log to a directory of its own)",
            )

    async def close(self) -> None:
        return None


def _written_hashes(files: list[tuple[int, Path]], first: int, last: int) -> dict[int, str]:
    """seq -> hash of the lines with ``first <= seq <= last`` in export files (in seq order,
    as they are written): each file that may hold some is bisected to the first of them."""
    found: dict[int, str] = {}
    for index, (start, path) in enumerate(files):
        next_start = files[index + 1][0] if index + 1 < len(files) else None
        if start > last or (next_start is not None and next_start <= first):
            continue
        with open(path, "rb") as handle:
            handle.seek(_first_line_from(handle, os.fstat(handle.fileno()).st_size, first))
            for line in handle:
                seq, digest = _seq_and_hash(line)
                if seq > last:
                    break
                if seq >= first:
                    found[seq] = digest
    return found


def _first_line_from(handle: BinaryIO, size: int, seq: int) -> int:
    """The offset of the first line whose seq is ``seq`` or more (the file's size if none)."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        _line_start(handle, middle)
        line = handle.readline()
        if not line or _seq_and_hash(line)[0] >= seq:
            high = middle
        else:
            low = middle + 1
    return _line_start(handle, low)


def _line_start(handle: BinaryIO, offset: int) -> int:
    """Seek to the start of the first line at or after ``offset``; return it."""
    handle.seek(max(offset - 1, 0))
    if offset > 0:
        handle.readline()  # to the end of the line holding byte offset - 1
    return handle.tell()


def _seq_and_hash(line: bytes) -> tuple[int, str]:
    document = json.loads(line)
    seq, digest = document["seq"], document["hash"]
    if type(seq) is not int or not isinstance(digest, str):
        raise TypeError("seq or hash of the wrong type")
    return seq, digest


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
