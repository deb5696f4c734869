"""Stage: record. Every call's outcome becomes a structured log line, metrics and, when
configured, a durable audit record written by the separate audit-writer process.

The pipeline awaits the recorders before it releases a response, so with auditing on a
caller never receives data whose audit record is not yet durable. Records carry names,
labels, paths and reasons, never a data value.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from labelgate import tracing
from labelgate.audit import AuditClient
from labelgate.calls import CallRecord
from labelgate.errors import LabelgateError
from labelgate.gateway import metrics
from labelgate.logs import get_logger
from labelgate.migrations import upgrade_sqlite
from labelgate.policy.cache import cached_from, canonical_part
from labelgate.timestamps import format_time
from labelgate.untrusted_text import BOUNDED_TEXT, bounded

if TYPE_CHECKING:
    from labelgate.classify.catalog import Catalog
    from labelgate.config import GatewaySettings

log = get_logger("labelgate.decision")
T = TypeVar("T")


# Set, in the task that writes it, for the record of a call refused because its release's audit
# record went unacknowledged (``Pipeline.recording``): that record may still be written late (a
# slow fsync), so this one goes without the writer's deadline, to land after it whenever the
# writer gets to it (``AuditClient.append(..., after_unacknowledged=True)``).
AFTER_UNACKNOWLEDGED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "labelgate_after_unacknowledged", default=False
)


class Recorder(Protocol):
    async def record(self, entry: CallRecord) -> None: ...


@runtime_checkable
class Closing(Protocol):
    """A recorder that holds something to finish when the gateway stops (a writer thread's
    queue, a connection)."""

    async def aclose(self) -> None: ...


@runtime_checkable
class Reserving(Protocol):
    """A recorder that must promise room before the call's other records are written."""

    def reserve(self, entry: CallRecord) -> None: ...
    def unreserve(self, entry: CallRecord) -> None: ...
    async def record(self, entry: CallRecord) -> None: ...


def recorded_text(value: str) -> str:
    """``value`` as a record holds it: past ``BOUNDED_TEXT`` characters, its length and a
    digest instead (no prefix: a long name may be data). The writer refuses strings longer
    than ``audit.records.MAX_STRING``; a record must never be refused for what a caller chose
    to send, or the call's refusal would go unrecorded."""
    return bounded(value)


def audit_event(entry: CallRecord) -> dict[str, Any]:
    """The audit record of one call (or one streamed message): names and labels only. The
    texts a caller or its token chose are bounded (``recorded_text``)."""
    last = entry.last_decision
    call = entry.call
    subject = entry.subject_json()
    if subject is not None:
        subject = {
            **subject,
            "id": recorded_text(subject["id"]),
            "name": recorded_text(subject["name"]),
            "groups": [recorded_text(group) for group in subject["groups"]],
        }
    event: dict[str, Any] = {
        "time": format_time(entry.time),
        "event_id": entry.event_id,
        "session_id": recorded_text(call.session_id),
        "request_id": recorded_text(call.request_id),
        "subject": subject,
        "peer": recorded_text(call.peer),
        "service": recorded_text(call.service),
        "method": recorded_text(call.method),
        "model": recorded_text(entry.model),
        "phase": last[0] if last else "",
        "labels": list(entry.labels),
        "masked": recorded_masks(entry.masked),
        "decision": entry.outcome,
        "reason": entry.reason,
        "engine": last[1].engine if last else None,
        "policy_revision": last[1].revision if last else None,
        "decision_id": last[1].decision_id if last else None,
        "decision_inputs": decision_inputs(entry),
        "upstream_status": entry.upstream_status,
        "latency_ms": entry.latency_ms,
    }
    details: dict[str, Any] = {}
    omitted = len(entry.decision_inputs) - len(event["decision_inputs"])
    if omitted:
        details["decision_inputs_omitted"] = omitted
    omitted = len(entry.masked) - len(event["masked"])
    if omitted:
        details["masked_omitted"] = omitted
    grants, approvers = released_under(entry)
    if grants or approvers:
        # In the release record itself, durable before anything is delivered: the approval
        # records go through a background sink, and may be lost (a writer restart).
        # Bounded as masks are, in count and in bytes (the writer refuses a longer list, and a
        # frame past its size): a grant needs a few approvers.
        event["approvers"] = _bounded_texts(approvers)
        if grants:
            details["grant_ids"] = _bounded_texts(grants)
            # The approval requests the grants answered (``apr-...``), as the inbox names them.
            event["approval_id"] = recorded_text(entry.released_under[-1][1])
            if len(entry.released_under) > 1:
                details["approval_ids"] = _bounded_texts([approval for _, approval in entry.released_under])
    if details:
        event["details"] = details
    if last is not None and last[1].cached:
        # Not evaluated for this call: ``decision_id`` is None, the evaluation it came from is
        # named as such (OPA's decision log has it under that id, with another call's input).
        event["cached"], event["cached_from"] = True, cached_from(last[1])
    return event


# An index call names a decision per model it lists (up to ``limits.max_index_models``), and
# the writer refuses a list longer than ``audit.records.MAX_ITEMS``: past this many, the
# record names the first and the call's last, and counts the others (the input store keeps all).
_RECORDED_INPUTS = 256


def decision_inputs(entry: CallRecord) -> list[dict[str, Any]]:
    """``[{"phase", "hash"}]`` of each decision made for the call, in order (at most
    ``_RECORDED_INPUTS``); an input whose decision was not the one enforced (the held call
    re-decided under its approval) is marked ``"superseded": true``."""
    inputs: list[dict[str, Any]] = [
        {"phase": phase, "hash": digest} for phase, digest, _ in entry.decision_inputs
    ]
    for position in entry.superseded_inputs:
        inputs[position]["superseded"] = True
    if len(inputs) > _RECORDED_INPUTS:
        inputs = [*inputs[: _RECORDED_INPUTS - 1], inputs[-1]]
    return inputs


# ``limits.max_fields`` lets a call mask up to a million fields, at paths of up to
# ``limits.max_path_bytes``, and the writer refuses a list longer than
# ``audit.records.MAX_ITEMS``, a string past ``MAX_STRING`` and a frame past
# ``protocol.MAX_FRAME``: past this many masks, or this many bytes of them, the record names the
# first ones and counts the others (``details.masked_omitted``; the log line keeps them all).
_RECORDED_MASKS = 256
_RECORDED_MASK_BYTES = 64 * 1024
# Approvers and grant ids, each list: the writer's frame holds the masks' and these with room to spare.
_RECORDED_TEXT_BYTES = 16 * 1024


def recorded_masks(masked: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The first of ``masked`` a record holds, their texts bounded (``recorded_text``: a path
    holds names an upstream or a caller chose). A record must never be refused for how much a
    call masked: its refusal's record, made from the same outcome, would be refused too."""
    if _fits_as_is(masked):
        return list(masked)  # the usual call: a few short paths, nothing to bound or measure
    return _first_within(
        [{key: recorded_text(text) for key, text in mask.items()} for mask in masked[:_RECORDED_MASKS]],
        _RECORDED_MASK_BYTES,
    )


def _fits_as_is(masked: Sequence[dict[str, str]]) -> bool:
    """Whether ``masked`` is within the record's bounds however its texts are escaped (at most
    six characters a character, ``\\uXXXX``, and room for each mask's keys)."""
    if len(masked) > _RECORDED_MASKS:
        return False
    chars = 0
    for mask in masked:
        for text in mask.values():
            if len(text) > BOUNDED_TEXT:
                return False
            chars += len(text)
    return chars * 6 + len(masked) * 64 <= _RECORDED_MASK_BYTES


def _bounded_texts(texts: Sequence[str]) -> list[str]:
    """The first of ``texts`` a record holds: each bounded as chosen text, at most
    ``_RECORDED_MASKS`` of them within ``_RECORDED_TEXT_BYTES``."""
    return _first_within([recorded_text(text) for text in texts[:_RECORDED_MASKS]], _RECORDED_TEXT_BYTES)


def _first_within(items: list[T], limit: int) -> list[T]:
    """The first of ``items`` whose JSON, ASCII-escaped (never shorter than the frame's UTF-8:
    escaped controls count in full), fits in ``limit`` bytes together."""
    kept: list[T] = []
    size = 0
    for item in items:
        size += len(json.dumps(item)) + 1
        if size > limit:
            break
        kept.append(item)
    return kept


def released_under(entry: CallRecord) -> tuple[list[str], list[str]]:
    """(grant ids, approver ids) of the approval grants a released call was released under.
    Grants: those the approval stage used together to release it, every round's
    (``Outcome.released_under``: an input names only its last grant, and a superseded one a
    grant that may have gone to another call: review, eighth round). Approvers: of each
    decision input whose decision was enforced (``superseded_inputs`` marks the others), where
    ``approvals.model.policy_approval`` put every grant's. A refused call names none: what it
    was last decided under is not what refused it."""
    if entry.refusal is not None:
        return [], []
    superseded = set(entry.superseded_inputs)
    approvers: set[str] = set()
    for position, (_, _, doc) in enumerate(entry.decision_inputs):
        approval = doc.get("approval")
        if position in superseded or not isinstance(approval, dict) or approval.get("state") != "granted":
            continue
        people = approval.get("approved_by") or ()
        approvers.update(person for person in people if isinstance(person, str))
    return [grant for grant, _ in entry.released_under], sorted(approvers)


_GLOB_CHARACTERS = frozenset("*?[")  # fnmatch's, as ``upstreams[].models`` globs use them


class KnownModels:
    """The model names the gateway knows without a caller's word for it: those the
    classification catalog names (the catalog in force: a reload or a new bundle changes it)
    and those configuration lists by name (``upstreams[].models`` entries that are no glob).

    An upstream's answer is no such word: Triton answers ``ModelReady`` for a model it does not
    have with ``ready=false`` and status OK, so any caller could make up names that pass."""

    def __init__(self, configured: Iterable[str] = (), catalog: Callable[[], Catalog] | None = None) -> None:
        self.configured = frozenset(configured)
        self._catalog = catalog
        self._catalogued: tuple[Catalog | None, frozenset[str]] = (None, frozenset())

    @classmethod
    def from_settings(cls, settings: GatewaySettings, catalog: Callable[[], Catalog] | None) -> KnownModels:
        named = (
            name
            for upstream in settings.upstreams
            for name in upstream.models
            if not _GLOB_CHARACTERS & set(name)
        )
        return cls(named, catalog)

    def __contains__(self, model: str) -> bool:
        return model in self.configured or model in self._catalogued_names()

    def _catalogued_names(self) -> frozenset[str]:
        if self._catalog is None:
            return frozenset()
        catalog = self._catalog()
        seen, names = self._catalogued
        if seen is not catalog:  # worked out once per catalog (entries never change in one)
            names = frozenset(entry.model for entry in catalog.entries if entry.model)
            self._catalogued = (catalog, names)
        return names


class LogAndMetricsRecorder:
    """The log line and the metrics of each call.

    The method label names only methods the gateway has a descriptor for
    (``metrics.method_label``); the log line carries the method as called.
    The model label comes from the caller's request, so its values are bounded: a name gets
    its own series only when the gateway knows the model independently of the caller
    (``KnownModels``: the catalog names it, or configuration does), for the first
    ``max_models`` such names of up to 128 characters; any other is counted as ``other``.
    """

    def __init__(self, known: KnownModels | None = None, max_models: int = 64) -> None:
        self.known = known if known is not None else KnownModels()
        self.max_models = max_models
        self._models: set[str] = set()

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(model) > 128 or len(self._models) >= self.max_models or model not in self.known:
            return "other"
        self._models.add(model)
        return model

    async def record(self, entry: CallRecord) -> None:
        call = entry.call
        method = metrics.method_label(call.method)  # the log line below keeps the real name
        metrics.child(metrics.CALLS, method, entry.outcome, entry.status_code).inc()
        model = self._model_label(entry.model)
        metrics.child(metrics.CALL_SECONDS, method, model, entry.outcome).observe(entry.latency_ms / 1000)
        if entry.masked:  # one increment per label, by the number of its masked fields
            per_label: dict[str, int] = {}
            for masked in entry.masked:
                label = masked["label"]
                per_label[label] = per_label.get(label, 0) + 1
            for label, count in per_label.items():
                metrics.child(metrics.MASKED_FIELDS, label).inc(count)
        if entry.error_kind is not None:
            metrics.child(metrics.ERRORS, entry.error_kind).inc()
        last = entry.last_decision
        subject = entry.subject
        # The texts a caller or its token chose, bounded as in the audit record.
        log.info(
            "call",
            method=recorded_text(call.method),
            model=recorded_text(entry.model),
            peer=recorded_text(call.peer),
            session_id=recorded_text(call.session_id),
            request_id=recorded_text(call.request_id),
            subject=recorded_text(subject.id) if subject else None,
            groups=[recorded_text(group) for group in subject.groups] if subject else None,
            outcome=entry.outcome,
            code=entry.status_code,
            reason=entry.refusal,
            labels=list(entry.labels),
            masked=list(entry.masked),
            phases=[phase for phase, _ in entry.decisions],
            engine=last[1].engine if last else None,
            policy_revision=last[1].revision if last else None,
            decision_id=last[1].decision_id if last else None,
            cached=last[1].cached if last else False,
            cached_from=cached_from(last[1]) if last else None,
        )


class AuditRecorder:
    """Durable audit records; without a durable acknowledgement the call fails (closed).

    ``fail_open`` lets calls through when the writer is unreachable: an operator's
    explicit choice, logged at error level on every such call.
    """

    def __init__(self, client: AuditClient, fail_open: bool = False) -> None:
        self.client = client
        self.fail_open = fail_open

    async def aclose(self) -> None:
        await self.client.close()

    async def record(self, entry: CallRecord) -> None:
        try:
            await self.client.append(audit_event(entry), after_unacknowledged=AFTER_UNACKNOWLEDGED.get())
        except LabelgateError as failure:
            metrics.ERRORS.labels(kind=failure.reason).inc()
            if not self.fail_open:
                raise
            log.error(
                "audit record lost: fail_open is set", reason=failure.reason, request_id=entry.call.request_id
            )


# -- the decision-input store (for ``labelgate policy impact``) ----------------------------
def replayable_input(doc: dict[str, Any]) -> dict[str, Any]:
    """The decision-relevant part of an input, exactly what ``policy.cache.cache_key`` hashes:
    the store keeps one input per such content. Left out: what differs from call to call,
    session to session or token to token (request and session ids, the clock, the token's
    ``jti``, ``iat``, ``exp`` and ``nbf``; review, thirteenth round: the token's claims were
    kept at rest though the docstring said otherwise), and ``digest``, a hash of the request's
    values, which has no place at rest here. A policy that decides on the session or the token
    is replayed without them (``policy impact``)."""
    return canonical_part(doc)


class InputStore:
    """Distinct decision inputs in one SQLite file, keyed by their hash, with how often and
    when they were seen; inputs not seen for ``retention_days`` are deleted, and so are the
    least recently seen ones while the inputs' text passes ``max_bytes`` (a caller can make
    every call a new input: 82 KiB each, refused calls too, found by review). The file keeps
    SQLite's own overhead and the pages freed by deletes, which later inputs reuse."""

    def __init__(self, path: Path, retention_days: int = 30, max_bytes: int = 1 << 30) -> None:
        self.path = Path(path)
        self.retention_seconds = retention_days * 86400
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by its owner and group only, as recordings are (review: 0644); SQLite
        # gives its WAL files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        upgrade_sqlite(self._db, "inputs")  # versioned schema: labelgate/migrations/inputs
        self._stored_bytes = self._text_bytes()  # an upper bound between exact counts

    @classmethod
    def open_readonly(cls, path: Path) -> InputStore:
        """For readers (``policy impact``): no schema change, no retention, no writes."""
        store = cls.__new__(cls)
        store.path, store.retention_seconds, store.max_bytes = Path(path), 0, 0
        store._db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        return store

    def close(self) -> None:
        self._db.close()

    def add(
        self, new: list[tuple[str, str, dict[str, Any], float]], seen: dict[str, tuple[int, float]]
    ) -> int:
        """Insert ``new`` inputs (hash, phase, input, time) and count ``seen`` ones (hash -> (n,
        last)); the number of inputs deleted to stay within ``max_bytes``."""
        rows = [
            (digest, phase, json.dumps(doc, sort_keys=True, separators=(",", ":")), at, at)
            for digest, phase, doc, at in new
        ]
        with self._transaction():
            self._db.executemany(
                "INSERT INTO decision_inputs (hash, phase, input, first_seen, last_seen, seen)"
                " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(hash) DO UPDATE SET"
                " seen = seen + 1, last_seen = max(last_seen, excluded.last_seen)",
                rows,
            )
            self._db.executemany(
                "UPDATE decision_inputs SET seen = seen + ?, last_seen = max(last_seen, ?) WHERE hash = ?",
                [(count, at, digest) for digest, (count, at) in seen.items()],
            )
            # Counted as if every row were new (a known hash adds nothing): exact only when it
            # may be over, so a store within its bound is not summed on every batch.
            self._stored_bytes += sum(len(row[2]) for row in rows)
            return self._trim() if self._stored_bytes > self.max_bytes else 0

    def _text_bytes(self) -> int:
        found = self._db.execute("SELECT COALESCE(SUM(LENGTH(input)), 0) FROM decision_inputs").fetchone()
        return int(found[0])

    def _trim(self) -> int:
        """Delete the least recently seen inputs down to 90% of ``max_bytes`` (so that the next
        few batches do not each trim again); how many were deleted."""
        self._stored_bytes = self._text_bytes()
        deleted, target = 0, self.max_bytes * 9 // 10
        while self._stored_bytes > target:
            oldest = self._db.execute(
                "SELECT hash, LENGTH(input) FROM decision_inputs ORDER BY last_seen, hash LIMIT 256"
            ).fetchall()
            if not oldest:
                break
            for digest, size in oldest:
                if self._stored_bytes <= target:
                    break
                self._db.execute("DELETE FROM decision_inputs WHERE hash = ?", (digest,))
                self._stored_bytes -= size
                deleted += 1
        return deleted

    def expire(self, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        with self._transaction():
            deleted: int = self._db.execute(
                "DELETE FROM decision_inputs WHERE last_seen < ?", (cutoff,)
            ).rowcount
            self._stored_bytes = self._text_bytes()
            return deleted

    def read(self, since: float | None = None) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(hash, times seen, input) of every input seen at or after ``since`` (unix time), by hash."""
        rows = self._db.execute(
            "SELECT hash, seen, input FROM decision_inputs WHERE last_seen >= ? ORDER BY hash",
            (since if since is not None else 0.0,),
        )
        for digest, seen, text in rows:
            yield digest, seen, json.loads(text)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


class InputStoreRecorder:
    """Keeps each distinct decision input in an ``InputStore``, off the hot path.

    ``record`` only hands inputs to a writer thread through a bounded queue (a full queue
    drops the input and counts ``INPUT_STORE_DROPPED``; the call is never held up or failed
    for it); inputs whose hash was recently handed over are only counted. What is kept is
    ``replayable_input``: names, labels, paths and the subject, never a data value.
    """

    def __init__(
        self,
        store: InputStore,
        *,
        queue_size: int = 1024,
        known_size: int = 50_000,
        flush_seconds: float = 0.2,
        expire_seconds: float = 3600.0,
    ) -> None:
        self.store = store
        self._queue: queue.Queue[tuple[str, str, dict[str, Any], float]] = queue.Queue(queue_size)
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._known_size = known_size
        self._seen: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._flush_seconds = flush_seconds
        self._expire_seconds = expire_seconds
        self._stop = threading.Event()
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="labelgate-input-store", daemon=True)
        self._thread.start()

    async def record(self, entry: CallRecord) -> None:
        now = time.time()
        for phase, digest, doc in entry.decision_inputs:
            if digest in self._known:
                self._known.move_to_end(digest)
                with self._lock:
                    count, _ = self._seen.get(digest, (0, now))
                    self._seen[digest] = (count + 1, now)
                continue
            try:
                self._queue.put_nowait((digest, phase, replayable_input(doc), now))
            except queue.Full:
                self.dropped += 1
                metrics.ERRORS.labels(kind="INPUT_STORE_DROPPED").inc()
                continue
            self._known[digest] = None
            while len(self._known) > self._known_size:
                self._known.popitem(last=False)

    def close(self) -> None:
        """Write what is pending and stop the writer thread."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive():  # still writing: closing the store under it would lose that
            log.error("decision input store still writing at stop: its last inputs may be lost")
            return
        self.store.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)  # the join and the last write block

    def _run(self) -> None:
        next_expiry = 0.0
        while True:
            stopping = self._stop.wait(self._flush_seconds)
            try:
                if time.monotonic() >= next_expiry:
                    self.store.expire()
                    next_expiry = time.monotonic() + self._expire_seconds
                self._flush()
            except sqlite3.Error as error:  # the data path goes on; the store catches up later
                metrics.ERRORS.labels(kind="INPUT_STORE_ERROR").inc()
                log.error("decision input store write failed", error=type(error).__name__)
            if stopping:
                return

    def _flush(self) -> None:
        new = []
        with contextlib.suppress(queue.Empty):
            while True:
                new.append(self._queue.get_nowait())
        with self._lock:
            seen, self._seen = self._seen, {}
        if new or seen:
            trimmed = self.store.add(new, seen)
            if trimmed:
                metrics.ERRORS.labels(kind="INPUT_STORE_TRIMMED").inc(trimmed)
                log.warning("decision input store full: least recently seen inputs deleted", count=trimmed)


class Recorders:
    """Several recorders in order; the first failure stops the call."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders
        # Found once: a runtime_checkable isinstance inspects every member on every call.
        self._reserving = tuple(r for r in recorders if isinstance(r, Reserving))

    async def aclose(self) -> None:
        """Once no call is left to record: what the recorders were handed is written, and
        their threads and connections are stopped (each, even if another fails)."""
        failures = []
        for recorder in self.recorders:
            if isinstance(recorder, Closing):
                try:
                    await recorder.aclose()
                except Exception as error:  # the others still close; the first is raised after
                    failures.append(error)
        if failures:
            raise failures[0]

    async def record(self, entry: CallRecord) -> None:
        if tracing.enabled():  # on the call's span: names and the stable reason, never a value
            tracing.annotate(**{"labelgate.outcome": entry.outcome, "labelgate.reason": entry.refusal or ""})
            tracing.annotate(**{"labelgate.labels": list(entry.labels), "rpc.grpc.status": entry.status_code})
        with tracing.stage("record"):
            # Recorders that queue (the session recorder) promise their room first, so a later
            # "no room" cannot follow a durable audit record of a delivery that never happened.
            # A refused call released nothing: a queue with no room for its entry goes without
            # it (logged, counted by that recorder), and its audit record is still written.
            reserved: list[Reserving] = []
            skipped: list[Reserving] = []
            for reserver in self._reserving:
                try:
                    reserver.reserve(entry)
                except LabelgateError as full:
                    if entry.refusal is None:
                        for earlier in reserved:
                            earlier.unreserve(entry)
                        raise
                    log.warning("a refused call's entry was left out", reason=full.reason)
                    skipped.append(reserver)
                    continue
                except BaseException:
                    for earlier in reserved:
                        earlier.unreserve(entry)
                    raise
                reserved.append(reserver)
            try:
                for recorder in self.recorders:
                    if recorder in skipped:
                        continue
                    if recorder in reserved:
                        reserved.remove(recorder)
                    await recorder.record(entry)
            finally:
                for left in reserved:
                    left.unreserve(entry)
