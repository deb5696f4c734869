"""Session recording with replay: every call of a session, as the caller experienced it.

Each call (or streamed message) is recorded under its recording key: the session id (the
client's ``x-labelgate-session``, else one per connection) bound to the caller, ``<session
id>~<digest of the qualified subject and the session id>`` (``entries.recording_key``), so a
caller naming another subject's session id starts a session of its own and can never append
to theirs. Each entry holds: time, request id, method, model,
subject, the request summary (input names, datatypes and shapes; values only if
``recording.record_input_values`` is set and the pipeline exposes the request), the
decision (outcome, reason, per-phase results, masked paths, labels) and the response
**exactly as delivered**, after masking: the protobuf bytes, base64, with the type name
(``entries.py``). ``labelgate sessions list|show|replay`` and the inbox's session pages
(``cli.py``, ``replay.py``, ``web.py``) show them back only through the policy's replay phase
for the viewer (``viewing.py``): the policy's masks for the viewer are applied to the recorded
response, and a deny or an engine error shows none of its values. A mask on part of a field (a
detector span, a JSON node) masks that whole field (``null``) in a replay: the recorded bytes
are the reply after the caller's masks, and today's detectors may differ, so a scan of them now
can miss values the call's classification found.

Decisions, and why:

- **Fail closed, off the hot path.** A call is released only with room for its entry;
  while the store is behind (the bounded queue is full) or failing (a write failed, its
  entries are kept and retried with backoff) new calls are refused ``RECORDING_BACKLOG``
  (``recorder.py``). Entries of calls already released are kept until written, and counted
  as lost only if the gateway stops first. Place the ``SessionRecorder`` *after* the
  ``AuditRecorder`` in ``Recorders(...)``: a call whose audit record failed was not
  delivered, and its recording would claim a response nobody received.
- **Off the event loop.** ``record`` only builds the entry and queues it (bounded); a
  writer task appends batches (files in a worker thread, PostgreSQL async).
- **Storage**: files by default, one JSONL file per session with a safe name derived from
  the session id (``files.py``); PostgreSQL when ``recording.postgres_dsn`` is set
  (``postgres.py``). Both lock per session so several gateways can share a store.
- **Size cap per session** (``max_session_bytes``): one explicit ``truncated`` marker is
  written before the call that takes the session past it, and the session's later calls are
  refused (``RECORDING_SESSION_FULL``); that call, and those released before the store said
  so, are recorded after the marker: a released call is never left unrecorded.
- **Bounded pages.** Session ids and reply sizes are the callers' and upstreams' to choose,
  so what a viewer's page costs is bounded (``web.py``): the session list comes a page at a
  time (``sessions_page``, a cursor; the file store reads only the files it shows, PostgreSQL
  cuts the page in SQL), a session page shows at most 100 calls, 1,000 elements of a tensor and
  20,000 cells (the rest counted, never built), and rows and HTML are built in a worker thread,
  off the admin loop that answers ``/healthz``. ``labelgate sessions list`` pages the same way
  (``--limit``, ``--cursor``).
- **Retention** (``retention_days``): a sweeper deletes sessions whose latest entry is
  older than that, every ``sweep_interval_seconds`` (``SessionRecorder.sweep(now)``).
- **What is at rest.** The masked response, as delivered: a caller without clearance has
  no confidential or restricted value in it. A cleared caller (e.g. break-glass) received
  real values, and the recording holds them, because it must show what was delivered; the
  recording store is therefore sensitive (files 0640 in a 0750 directory, database
  access control) and its retention should be short.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelgate.recording.recorder import SessionRecorder, build_session_recorder
    from labelgate.recording.settings import RecordingSettings
    from labelgate.recording.store import SessionInfo, SessionStore

# Imported on first use, so that `labelgate --help` (which registers `sessions`) stays fast.
_EXPORTS = {
    "RecordingSettings": "labelgate.recording.settings",
    "SessionInfo": "labelgate.recording.store",
    "SessionRecorder": "labelgate.recording.recorder",
    "SessionStore": "labelgate.recording.store",
    "build_session_recorder": "labelgate.recording.recorder",
}
__all__ = [
    "RecordingSettings",
    "SessionInfo",
    "SessionRecorder",
    "SessionStore",
    "build_session_recorder",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
