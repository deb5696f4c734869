"""``labelgate audit-writer``: the one process that appends to the audit log.

Group commit: connections put validated events on one pending list; one commit takes
everything pending, chains it (seq, prev, hash), writes it with one ``write`` and one
``fdatasync``, and only then answers each request (one write per connection). With one
client connected the commit runs as soon as its receive is handled; with more, one loop
callback later, so that every frame one wake-up of the loop read (from any connection)
joins the batch. The sync runs on the event loop's own thread: handing it to a worker
thread and back cost about as much CPU as the sync itself. Events that arrive while it
runs wait in the socket buffers and are all read as the next batch, so under load one
fsync covers many records, and a lone event is still written at once (no timer to wait for).

After the fsync, and before the answers, the store rewrites the committed mark (the last
record's seq and hash in ``committed`` beside the log, one ``pwrite``, no fsync): the export
ships nothing past it, so never a line of a batch whose fsync has not returned.

If a write or fsync fails the file's state is unknown (a failed fsync may have dropped
dirty pages), so the store cuts the file back to where the batch began (no line of a
refused append stays to say its call was released), the writer answers every waiting
request with an error and exits non-zero; recovery on the next start cuts off any torn line.

Run it as ``python -m labelgate.audit --socket PATH --log-dir DIR ...`` or, once
registered, ``labelgate audit-writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labelgate.audit import reasons
from labelgate.audit.checkpoints import CheckpointSigner, load_private_key
from labelgate.audit.protocol import HEADER, FrameError, FrameProtocol, encode
from labelgate.audit.records import make_line, validate_event
from labelgate.audit.store import LogStore
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger

log = get_logger(__name__)
# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class WriterSettings:
    socket_path: Path
    log_dir: Path
    signing_key: Path | None = None
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 10.0
    max_segment_bytes: int = 64 << 20
    max_batch: int = 4096
    # Benchmarks only: acknowledge after write() without fsync, so a crash can lose acked records.
    fsync: bool = True
    # Processes (by user id) that may append: the socket's file mode is one fence, the peer's
    # credentials (SO_PEERCRED) the second. None: only the writer's own user (the gateway
    # runs as the same user in every shipped deployment).
    allowed_uids: frozenset[int] | None = None

    def peer_allowed(self, uid: int) -> bool:
        return uid in (self.allowed_uids if self.allowed_uids is not None else {os.getuid()})

    def check(self) -> None:
        problems = []
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            problems.append(f"socket path is longer than {MAX_SOCKET_PATH} bytes: {self.socket_path}")
        if self.checkpoint_every < 1:
            problems.append("checkpoint_every must be at least 1")
        # NaN passes every comparison (the ticker would spin and never checkpoint); inf never ticks.
        if not math.isfinite(self.checkpoint_seconds) or self.checkpoint_seconds <= 0:
            problems.append("checkpoint_seconds must be a positive number")
        if self.allowed_uids is not None and any(uid < 0 for uid in self.allowed_uids):
            problems.append("allowed user ids must be 0 or more")
        if self.log_dir.exists() and not self.log_dir.is_dir():
            problems.append(f"log_dir {self.log_dir} is a file, not a folder")
        if self.max_batch < 1 or self.max_segment_bytes < 1:
            problems.append("max_batch and max_segment_bytes must be positive")
        if problems:
            raise ConfigError(reasons.AUDIT_WRITER_CONFIG, "; ".join(problems))


class _Connection(FrameProtocol):
    """One client's connection: frames in, replies out."""

    def __init__(self, owner: AuditWriter) -> None:
        super().__init__()
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connection_made(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def message_received(self, message: dict[str, Any]) -> None:
        self.owner.handle(message, self)

    def read_done(self) -> None:
        self.owner.read_done()

    def frame_error(self, error: FrameError) -> None:
        log.warning("audit_frame_error", error=str(error))
        self.close()

    def send(self, message: dict[str, Any]) -> None:
        try:
            data = encode(message)
        except (TypeError, ValueError) as error:
            # Never raised into the read callback or a failure path: this peer gets no
            # answer but a closed connection (fail closed); every other one is unaffected.
            log.warning("audit_reply_unencodable", error=str(error)[:200])
            self.close()
            return
        self.send_bytes(data)

    def send_bytes(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# (event, connection, request id) of an append waiting for its batch.
_Pending = tuple[dict[str, Any], _Connection, Any]

# Request ids are the client's per-connection counter: a plain int in this range (what a
# signed 64-bit integer holds). Anything else (a float, ``1e400`` parsed as inf, a string,
# a bool) is refused before it can reach a reply that would then fail to encode.
MAX_REQUEST_ID = (1 << 63) - 1


def _valid_request_id(request_id: Any) -> bool:
    return type(request_id) is int and 0 <= request_id <= MAX_REQUEST_ID


def _acknowledgement(request_id: Any, seq: int, digest: str) -> bytes:
    """The frame of ``{"id", "ok": true, "seq", "hash"}``: the one reply sent per record."""
    if type(request_id) is not int:  # the client's ids are ints; anything else takes the general path
        return encode({"id": request_id, "ok": True, "seq": seq, "hash": digest})
    body = b'{"id":%d,"ok":true,"seq":%d,"hash":"%s"}' % (request_id, seq, digest.encode("ascii"))
    return HEADER.pack(len(body)) + body


@dataclass
class _Stats:
    records: int = 0
    batches: int = 0
    largest_batch: int = 0
    checkpoints: int = 0
    connections: int = 0
    rejected: int = 0
    expired: int = 0  # appends read after their deadline (``not_after``): refused unwritten
    refused_peers: int = 0
    started: float = field(default_factory=time.monotonic)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditWriter:
    def __init__(self, settings: WriterSettings) -> None:
        settings.check()
        self.settings = settings
        key = load_private_key(settings.signing_key) if settings.signing_key else None
        self.signer = CheckpointSigner(key)
        self.store = LogStore(settings.log_dir, settings.max_segment_bytes, settings.fsync)
        self.stats = _Stats()
        self.failed: BaseException | None = None
        self.connections: set[_Connection] = set()
        self._pending: list[_Pending] = []
        self._commit_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # set on start()
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None
        self._server: asyncio.Server | None = None
        self._last_checkpoint_at = time.monotonic()
        self.seq, self.head = 0, ""  # set from the log on start()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        await asyncio.to_thread(self.store.open)
        self.seq, self.head = self.store.recovered_seq, self.store.recovered_hash
        for repair in self.store.repairs:
            log.warning(
                "audit_torn_tail_removed", file=str(repair.path), offset=repair.offset, length=repair.length
            )
        if self.signer.private_key is None:
            log.warning("audit_checkpoints_unsigned", hint="pass a signing key so truncation can be proven")
        if not self.settings.fsync:
            log.warning("audit_fsync_disabled", hint="benchmark mode: acknowledged records can be lost")
        if self.seq > self._covered_seq:
            # Records acknowledged before a crash but not yet covered: cover them now.
            self._checkpoint()
        path = self._claim_socket()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path=str(path))
        os.chmod(self.settings.socket_path, 0o660)
        log.info("audit_writer_ready", socket=str(self.settings.socket_path), seq=self.seq, head=self.head)

    def _claim_socket(self) -> Path:
        path = self.settings.socket_path
        if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.stat().st_mode)):
            raise ConfigError(
                reasons.AUDIT_SOCKET_INVALID, f"{path} exists and is not a socket: not replacing it"
            )
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # left behind by a writer that died: nobody listens on it
                else:
                    raise ConfigError(reasons.AUDIT_SOCKET_IN_USE, f"another process is listening on {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def request_stop(self) -> None:
        self._stopping = True
        self._schedule_commit()

    async def run(self) -> None:
        """Serve until ``request_stop``; then finish pending work, checkpoint and close."""
        await self.start()
        assert self._stopped is not None
        ticker = asyncio.create_task(self._checkpoint_ticker())
        try:
            if self._stopping:  # asked to stop before the server was up
                self._schedule_commit()
            await self._stopped
        finally:
            ticker.cancel()
            if self._server is not None:
                self._server.close()
            connections = list(self.connections)
            for connection in connections:
                connection.close()  # sends what is buffered (the last replies), then closes
            if connections:
                await asyncio.wait([connection.lost for connection in connections], timeout=2)
            with contextlib.suppress(OSError):
                self.settings.socket_path.unlink()
            self.store.close()
            log.info("audit_writer_stopped", seq=self.seq, records=self.stats.records)

    # -- connections -------------------------------------------------------------------
    def connection_made(self, connection: _Connection) -> None:
        assert connection.transport is not None
        pid, uid, _ = peer_credentials(connection.transport)
        if not self.settings.peer_allowed(uid):
            # Whoever can open the socket could otherwise add records (a forged approval)
            # that the hash chain would then vouch for.
            self.stats.refused_peers += 1
            log.warning("audit_peer_refused", pid=pid, uid=uid)
            connection.transport.pause_reading()  # not one frame of theirs is read
            connection.close()
            return
        self.connections.add(connection)
        self.stats.connections += 1

    def handle(self, message: dict[str, Any], connection: _Connection) -> None:
        if connection not in self.connections:  # refused peer: its frames are never handled
            return
        request_id, op = message.get("id"), message.get("op")
        if not _valid_request_id(request_id):
            # Not echoed back: it may be what cannot be encoded (inf). The peer cannot match
            # this reply to a request, but it is told what is wrong; nothing is queued.
            self.stats.rejected += 1
            message_text = f"request id must be an integer from 0 to {MAX_REQUEST_ID}"
            connection.send(_error(None, "AUDIT_PROTOCOL", message_text))
            return
        if op == "stats":
            connection.send({"id": request_id, "ok": True, "stats": self.snapshot()})
            return
        if op != "append":
            connection.send(_error(request_id, "AUDIT_PROTOCOL", f"unknown op {str(op)[:40]!r}"))
            return
        if self._stopping:
            connection.send(_error(request_id, "AUDIT_UNAVAILABLE", "the audit writer is shutting down"))
            return
        not_after = message.get("not_after")
        if not_after is not None and (type(not_after) is not int or not_after < 0):
            self.stats.rejected += 1
            connection.send(_error(request_id, "AUDIT_PROTOCOL", "not_after must be a non-negative integer"))
            return
        if not_after is not None and time.time_ns() > not_after:
            # The gateway has given up on this append and denied its call: written now, the
            # record would say a refused call was released.
            self.stats.expired += 1
            connection.send(_error(request_id, reasons.AUDIT_EXPIRED, "the append's deadline passed unread"))
            return
        try:
            event = validate_event(message.get("event"))
        except LabelgateError as error:
            self.stats.rejected += 1
            connection.send(_error(request_id, error.reason, error.message))
            return
        # Committed once the read is done, in the order read: a call's refusal record, sent after
        # its release's (``after_unacknowledged``, no deadline), is written after it.
        self._pending.append((event, connection, request_id))

    def read_done(self) -> None:
        """A connection's receive has been handled: commit what it added."""
        if not self._pending or self._commit_scheduled:
            return
        if len(self.connections) <= 1:
            # Nothing else can join this batch before the loop's next turn (no other client's
            # read is due): commit now instead of one more turn of the loop later.
            self._commit_pending()
        else:
            self._schedule_commit()

    def snapshot(self) -> dict[str, Any]:
        last = self.store.last_checkpoint
        return {
            "records": self.stats.records,
            "fsyncs": self.store.fsyncs,
            "batches": self.stats.batches,
            "largest_batch": self.stats.largest_batch,
            "rejected": self.stats.rejected,
            "expired": self.stats.expired,
            "checkpoints": self.stats.checkpoints,
            "connections": self.stats.connections,
            "refused_peers": self.stats.refused_peers,
            "pending": len(self._pending),
            "seq": self.seq,
            "head": self.head,
            "last_checkpoint_seq": last.seq if last else 0,
            "fsync": self.settings.fsync,
            "uptime_s": round(time.monotonic() - self.stats.started, 3),
        }

    # -- group commit ------------------------------------------------------------------
    def _schedule_commit(self) -> None:
        # After the callbacks already due: every frame that one wake-up of the loop read
        # (from any connection) joins the same batch.
        if not self._commit_scheduled:
            self._commit_scheduled = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._commit_pending)

    def _commit_pending(self) -> None:
        self._commit_scheduled = False
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch = self._pending[: self.settings.max_batch]
                del self._pending[: len(batch)]
                if not self._commit(batch):
                    break
                batch = []
            if self.failed is None and self._checkpoint_due():
                self._checkpoint()
            if self._stopping and not self._pending:
                if self.seq > self._covered_seq and self.failed is None:
                    self._checkpoint()
                self._set_stopped(None)
        except Exception as error:
            # A bug, not an I/O error: answer everyone with an error and let run() raise it.
            self.failed = error
            self._stopping = True
            # ``batch`` left ``_pending`` before the failure: its callers are answered too.
            try:
                self._refuse_pending(batch, "AUDIT_WRITE_FAILED", "the writer failed")
            finally:
                self._set_stopped(error)  # always: a writer that failed must exit, never linger

    def _set_stopped(self, error: BaseException | None) -> None:
        if self._stopped is None or self._stopped.done():
            return
        if error is None:
            self._stopped.set_result(None)
        else:
            self._stopped.set_exception(error)

    def _commit(self, batch: list[_Pending]) -> bool:
        lines, replies, seq, head = [], [], self.seq, self.head
        for event, connection, request_id in batch:
            seq += 1
            line, head = make_line(seq, head, event)
            lines.append(line)
            replies.append((connection, _acknowledgement(request_id, seq, head)))
        try:
            # Blocks the loop for the write and the fsync; see the module's docstring.
            self.store.append(b"".join(lines), self.seq + 1)
        except OSError as error:
            self._fail(error, batch)
            return False
        self.seq, self.head = seq, head
        # Before the answers: once a caller holds its acknowledgement, the export may ship it.
        self._publish_committed()
        stats, size = self.stats, len(batch)
        stats.records += size
        stats.batches += 1
        if size > stats.largest_batch:
            stats.largest_batch = size
        # Durable now: answer, one write per connection.
        if size == 1:
            connection, reply = replies[0]
            connection.send_bytes(reply)
        else:
            by_connection: dict[_Connection, list[bytes]] = {}
            for connection, reply in replies:
                by_connection.setdefault(connection, []).append(reply)
            for connection, frames in by_connection.items():
                connection.send_bytes(b"".join(frames))
        if self.seq - self._covered_seq >= self.settings.checkpoint_every:
            self._checkpoint()
        return True

    def _publish_committed(self) -> None:
        try:
            self.store.publish_committed(self.seq, self.head)
        except OSError as error:
            # The batch is durable and is answered; but the export cannot pass a mark it cannot
            # move, so stop (as for a checkpoint), and the next start publishes the log's end.
            log.error("audit_commit_mark_failed", error=str(error), seq=self.seq)
            self.failed = error
            self.request_stop()

    def _fail(self, error: OSError, batch: list[_Pending]) -> None:
        log.error("audit_write_failed", error=str(error), lost_requests=len(batch) + len(self._pending))
        self.failed = error
        self._stopping = True
        self._refuse_pending(batch, "AUDIT_WRITE_FAILED", "the writer cannot write")

    def _refuse_pending(self, batch: list[_Pending], reason: str, message: str) -> None:
        waiting = [*batch, *self._pending]
        self._pending.clear()
        for _, connection, request_id in waiting:
            # ``send`` never raises: a reply that cannot be encoded closes that connection.
            connection.send(_error(request_id, reason, message))

    @property
    def _covered_seq(self) -> int:
        """How many records the last checkpoint covers."""
        last = self.store.last_checkpoint
        return last.seq if last else 0

    def _checkpoint_due(self) -> bool:
        covered = self._covered_seq
        elapsed = time.monotonic() - self._last_checkpoint_at
        return self.seq > covered and elapsed >= self.settings.checkpoint_seconds

    def _checkpoint(self) -> None:
        checkpoint = self.signer.checkpoint(self.seq, self.head, _utc_now())
        try:
            self.store.append_checkpoint(checkpoint)
        except OSError as error:
            # The records are durable, but the checkpoint file may now end in a torn line that
            # the next append would bury mid-file: stop, and let recovery cut it on restart.
            log.error("audit_checkpoint_failed", error=str(error), seq=self.seq)
            self.failed = error
            self.request_stop()
            return
        self._last_checkpoint_at = time.monotonic()
        self.stats.checkpoints += 1

    async def _checkpoint_ticker(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_seconds / 2)
            if self._checkpoint_due():
                self._schedule_commit()


def _error(request_id: Any, reason: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "reason": reason, "message": message}


async def serve(settings: WriterSettings) -> int:
    writer = AuditWriter(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, writer.request_stop)
    await writer.run()
    return 1 if writer.failed else 0


def run_writer(settings: WriterSettings) -> int:
    """Blocking entry point: serve until SIGTERM/SIGINT; the exit status for the process."""
    return asyncio.run(serve(settings))


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(transport: asyncio.BaseTransport) -> tuple[int, int, int]:
    """The connecting process's (pid, uid, gid), as the kernel saw it at connect time."""
    sock = transport.get_extra_info("socket")
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(data)
