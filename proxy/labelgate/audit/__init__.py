"""The durable, tamper-evident audit log, written by its own process.

Design, and why:

- **Its own process, over a Unix domain socket** (``labelgate audit-writer``), not
  PostgreSQL. The hash chain needs one serial writer anyway (each record hashes the one
  before), which a single process gives for free, where a database would need a lock on
  the head row in every transaction. A local socket adds about as little latency as IPC
  can, needs no extra service for the quickstart, and file permissions on the socket
  (0660) and the log directory decide who may write. A crash of the gateway cannot damage
  the log, and the gateway holds no file handle to it.
- **Frames**: 4-byte length + JSON, with a request id per connection so one connection
  carries many concurrent appends (``protocol.py``).
- **Durability before the answer, with group commit**: the writer acknowledges an append
  only after ``fdatasync`` returned for the batch that holds it; everything that arrives
  while an fsync runs goes into the next batch (``writer.py``). So the cost of one fsync is
  shared by every call in flight, and nobody waits for a timer.
- **Records**: JSON lines ``{"seq", "prev", "hash", "event"}`` in append-only files
  ``audit-<first seq>.jsonl``, rotated by size with the chain running across files. The
  hash is ``SHA-256(0x01 || prev || SHA-256(0x00 || canonical(event, seq)))``: the
  leading byte keeps leaf and chain inputs apart (``records.py``).
- **Committed mark**: ``committed`` beside the segments holds the last acknowledged record's
  seq and hash (one fixed-length line with a CRC32, rewritten in place after each batch's
  ``fdatasync`` returned and before it is answered, and at start for the recovered end;
  never fsynced, so a crash leaves it behind, never ahead). Readers of a live log (the
  export) take nothing past it: complete lines beyond it may be a batch whose sync is still
  running, which the writer takes back if the sync fails (``store.py``).
- **Signed checkpoints** every N records or T seconds, and at shutdown and after
  recovery: Ed25519 over (record count, head hash, time, key id) in ``checkpoints.jsonl``
  (``checkpoints.py``). Without them, cutting the tail of a hash chain leaves a valid
  shorter chain; with them it is a checkpoint the log cannot satisfy (``verify.py``).
- **Never data values**: the gateway sends names, labels, paths, strategies, reasons and
  ids. The writer checks the shape (known top-level fields only, JSON values only, size
  limits) and, as a tripwire, refuses any key named like ``value``, ``values``,
  ``contents`` or ``payload`` anywhere in the event (``records.validate_event``).
- **Fail closed**: ``AuditClient.append`` raises ``AuditUnavailable`` (reason
  ``AUDIT_UNAVAILABLE``) whenever it has no durable acknowledgement, and the gateway
  denies the call.

Consumers de-duplicate by ``event_id`` (a UUID per event); ``seq`` is the position in the
chain.
"""

from __future__ import annotations

from labelgate.audit.client import AuditClient, AuditReceipt, AuditRejected, AuditUnavailable
from labelgate.audit.records import DECISIONS, EVENT_FIELDS, AuditEventInvalid, validate_event

__all__ = [
    "DECISIONS",
    "EVENT_FIELDS",
    "AuditClient",
    "AuditEventInvalid",
    "AuditReceipt",
    "AuditRejected",
    "AuditUnavailable",
    "validate_event",
]
