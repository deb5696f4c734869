"""Export of the audit log to SIEMs: ``labelgate audit-forwarder``.

A separate process follows the audit log directory the writer appends to and delivers
every record, in order, to each configured destination:

    labelgate audit-forwarder --log-dir /var/lib/labelgate/audit --state-dir /var/lib/labelgate/export \\
        --syslog tcp://siem.example:6514 --syslog udp://127.0.0.1:514 \\
        --http https://collector.example/labelgate --http-token-file /etc/labelgate/collector.token \\
        --jsonl-dir /var/log/labelgate/export

Destinations (``destinations.py``): syslog RFC 5424 over TCP with RFC 6587 octet counting
and over UDP (``formats.py``), an HTTP endpoint receiving batches as a JSON array (2xx =
delivered; a redirect is a failure, never followed), and JSON-lines files
``export-<first seq>.jsonl`` rotated by size for log shippers. Each exported record is the
audit event's fields plus ``seq`` and ``hash``.

**At least once, with the log as the spool.** Each destination has a cursor file in the
state directory (last delivered seq and hash, file and byte offset of the next record),
saved atomically after each delivered batch and never before. While a destination is
down the forwarder retries the same batch with capped exponential backoff; the backlog
is the part of the audit log after the cursor, already durable and hash-chained, so no
second copy is needed and nothing is lost however long the outage. When the destination
returns, delivery resumes at the cursor; when the forwarder restarts, likewise. The cost
is duplicates: a batch whose delivery was in flight when the destination or forwarder
failed is sent again (at most one batch per destination per failure).

**Consumers de-duplicate by ``event_id``.** Every record has a UUID ``event_id`` (in the
JSON body, and in syslog structured data ``[labelgate@32473 event_id="..."]``); a
re-delivered record is byte-for-byte the same record, with the same ``event_id``, ``seq``
and ``hash``. A SIEM keeps the first record per ``event_id`` (Splunk: ``dedup event_id``;
Elastic: use ``event_id`` as the document ``_id`` so a duplicate overwrites itself;
SQL: a unique key on ``event_id`` with ``ON CONFLICT DO NOTHING``). ``seq`` is contiguous
per log, so a consumer can also detect a gap: ``max(seq) - min(seq) + 1`` distinct
records means none is missing. HTTP batches carry ``X-Labelgate-Batch: <first>-<last>``
(the same on a retry of the same batch).

**Only what the writer acknowledged leaves.** The forwarder exports records up to the
writer's committed mark (``committed`` in the log directory: the seq and hash of the last
record whose ``fdatasync`` returned, published before the writer answers), never a complete
line past it: that may be a batch whose sync then fails, which the writer takes back and
refuses, and whose seqs then go to other records. A log without the mark (written by an
older writer) is exported up to its last checkpoint, so up to a checkpoint interval late
(``tail.py``).

**Nothing unverified leaves.** The forwarder checks each record's hash and its link to the
one before, across files and restarts, and stops (exit 2) rather than skip records or
ship a chain it cannot vouch for; ``labelgate audit verify`` says what is wrong.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelgate.audit.export.destinations import (
        DeliveryFailed,
        HttpBatch,
        JsonlFiles,
        SyslogTcp,
        SyslogUdp,
    )
    from labelgate.audit.export.forwarder import Forwarder, ForwarderSettings, run_forwarder
    from labelgate.audit.export.tail import Cursor, CursorFile, ExportLogBroken, LogRecord, read_batch

# Imported on first use, so that `labelgate --help` (which registers `audit-forwarder`) stays fast.
_EXPORTS = {
    **dict.fromkeys(
        ("DeliveryFailed", "HttpBatch", "JsonlFiles", "SyslogTcp", "SyslogUdp"),
        "labelgate.audit.export.destinations",
    ),
    **dict.fromkeys(("Forwarder", "ForwarderSettings", "run_forwarder"), "labelgate.audit.export.forwarder"),
    **dict.fromkeys(
        ("Cursor", "CursorFile", "ExportLogBroken", "LogRecord", "read_batch"), "labelgate.audit.export.tail"
    ),
}
__all__ = [
    "Cursor",
    "CursorFile",
    "DeliveryFailed",
    "ExportLogBroken",
    "Forwarder",
    "ForwarderSettings",
    "HttpBatch",
    "JsonlFiles",
    "LogRecord",
    "SyslogTcp",
    "SyslogUdp",
    "read_batch",
    "run_forwarder",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
