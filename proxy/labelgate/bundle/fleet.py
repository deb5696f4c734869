"""The fleet view: which OPA runs which revision, and the decisions they logged.

OPA instances report to the bundle server (status API, ``POST /status``) and ship their
decision logs (``POST /logs``). Both land in one SQLite file in the server's state folder:
a reply is only sent after the transaction committed with ``synchronous=FULL`` (the WAL is
fsynced), so a ``2xx`` means the data survives a crash; OPA re-sends anything else.

Everything is stored under the *instance* the credential that posted it names (see
``access.py``), never under a name taken from the body; the id OPA reports (``labels.id``) is
kept beside it as ``reported_id``. Without authentication (``--insecure-no-auth``) the
reported id is all there is, and rows are marked ``authenticated: false``.

Decision events are keyed by ``(instance, decision_id)`` (the gateway writes ``decision_id``
into its audit records). A re-sent identical event is stored once; a *different* event under a
key already held is stored too and flagged as a conflict, as is the same ``decision_id``
arriving from two instances: the first event never silently wins over a later one, and a
reader sees every version (``decision``).

Retention (``prune``): decision events and status history older than their retention are
deleted, as are instances that have not reported within the status retention. Reads never
fail on what is stored: rows are validated before they are written, and rows written by older
versions are cleaned when read (non-finite numbers become null, broken strings are repaired).

Blocking I/O: the server calls these methods from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelgate.bundle import reasons
from labelgate.bundle.reports import DecisionEvent, StatusReport
from labelgate.errors import LabelgateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    bundles TEXT NOT NULL,
    plugins TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_checkin REAL NOT NULL,
    reports INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS status_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    received_at REAL NOT NULL,
    reported_id TEXT,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_by_time ON status_history (received_at);
CREATE INDEX IF NOT EXISTS status_history_by_instance ON status_history (instance, seq);
CREATE TABLE IF NOT EXISTS decision_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    authenticated INTEGER NOT NULL,
    reported_id TEXT,
    path TEXT,
    timestamp TEXT,
    received_at REAL NOT NULL,
    event TEXT NOT NULL,
    conflict INTEGER NOT NULL DEFAULT 0,
    UNIQUE (instance, decision_id, digest)
);
CREATE INDEX IF NOT EXISTS decision_events_conflicts ON decision_events (conflict);
CREATE INDEX IF NOT EXISTS decision_events_by_id ON decision_events (decision_id);
CREATE INDEX IF NOT EXISTS decision_events_by_time ON decision_events (received_at);
"""
# Columns added to ``instances`` since the first version (old state folders are migrated).
_INSTANCE_COLUMNS = {"authenticated": "INTEGER NOT NULL DEFAULT 0", "reported_id": "TEXT"}
MAX_HISTORY_PER_INSTANCE = 1000
DAY = 86400.0


class DecisionQuotaExceeded(LabelgateError):
    """An instance holds as many decision events as it may: it must wait for retention."""

    http_status = 507


@dataclass(frozen=True)
class StoreOutcome:
    received: int
    stored: int
    duplicates: int
    conflicts: int

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
        }


@dataclass(frozen=True)
class Retention:
    decisions_seconds: float = 30 * DAY
    status_seconds: float = 30 * DAY
    max_decisions_per_instance: int = 5_000_000


class FleetStore:
    def __init__(self, path: Path, retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._counts = self._count_events()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ------------------------------------------------------------------------------

    def record_status(
        self, report: StatusReport, instance: str, *, authenticated: bool, now: float | None = None
    ) -> str:
        """Store one checked status report under ``instance``; returns the instance."""
        now = time.time() if now is None else now
        summary = {"bundles": report.bundles, "plugins": report.plugins}
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                """INSERT INTO instances (id, labels, bundles, plugins, first_seen, last_checkin, reports,
                       authenticated, reported_id)
                   VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET labels=excluded.labels, bundles=excluded.bundles,
                   plugins=excluded.plugins, last_checkin=excluded.last_checkin, reports=reports + 1,
                   authenticated=excluded.authenticated, reported_id=excluded.reported_id""",
                (
                    instance,
                    _dump(report.labels),
                    _dump(report.bundles),
                    _dump(report.plugins),
                    now,
                    now,
                    int(authenticated),
                    report.reported_id,
                ),
            )
            self._db.execute(
                """INSERT INTO status_history (instance, received_at, reported_id, summary)
                   VALUES (?, ?, ?, ?)""",
                (instance, now, report.reported_id, _dump(summary)),
            )
            self._db.execute(
                """DELETE FROM status_history WHERE instance = ? AND seq <= (
                       SELECT seq FROM status_history WHERE instance = ?
                       ORDER BY seq DESC LIMIT 1 OFFSET ?)""",
                (instance, instance, MAX_HISTORY_PER_INSTANCE),
            )
        return instance

    def store_decisions(
        self,
        events: list[DecisionEvent],
        instance: str | None,
        *,
        authenticated: bool,
        now: float | None = None,
    ) -> StoreOutcome:
        """Store a checked batch atomically under ``instance`` (None: each event's reported id)."""
        now = time.time() if now is None else now
        rows = []
        for item in events:
            owner = instance if instance is not None else (item.reported_id or "")
            text = _dump(item.event)
            digest = hashlib.sha256(text.encode()).hexdigest()
            rows.append((owner, item.decision_id, digest, item, text))
        owners = {row[0] for row in rows}
        stored = duplicates = conflicts = 0
        with self._lock, self._db:
            self._db.execute("BEGIN")
            limit = self.retention.max_decisions_per_instance
            for owner in owners:
                incoming = sum(1 for row in rows if row[0] == owner)
                if limit and self._counts.get(owner, 0) + incoming > limit:
                    raise DecisionQuotaExceeded(
                        reasons.DECISION_QUOTA_EXCEEDED,
                        f"instance {owner!r} holds {self._counts.get(owner, 0)} decision events, "
                        f"the most kept per instance is {limit}: older ones expire with retention",
                    )
            added: dict[str, int] = {}
            for owner, decision_id, digest, item, text in rows:
                seen = self._db.execute(
                    "SELECT instance, digest FROM decision_events WHERE decision_id = ?", (decision_id,)
                ).fetchall()
                if (owner, digest) in seen:
                    duplicates += 1
                    continue
                self._db.execute(
                    """INSERT INTO decision_events (instance, decision_id, digest, authenticated, reported_id,
                           path, timestamp, received_at, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        owner,
                        decision_id,
                        digest,
                        int(authenticated),
                        item.reported_id,
                        item.path,
                        item.timestamp,
                        now,
                        text,
                    ),
                )
                stored += 1
                added[owner] = added.get(owner, 0) + 1
                if seen:  # another version of this decision is held: keep both, flag every version
                    conflicts += 1
                    self._db.execute(
                        "UPDATE decision_events SET conflict = 1 WHERE decision_id = ?", (decision_id,)
                    )
            for owner, count in added.items():
                self._counts[owner] = self._counts.get(owner, 0) + count
        return StoreOutcome(len(events), stored, duplicates, conflicts)

    def prune(self, now: float | None = None) -> dict[str, int]:
        """Delete what is past retention; returns how many rows of each kind went."""
        now = time.time() if now is None else now
        decisions_before = now - self.retention.decisions_seconds
        status_before = now - self.retention.status_seconds
        with self._lock, self._db:
            self._db.execute("BEGIN")
            decisions = self._db.execute(
                "DELETE FROM decision_events WHERE received_at < ?", (decisions_before,)
            ).rowcount
            history = self._db.execute(
                "DELETE FROM status_history WHERE received_at < ?", (status_before,)
            ).rowcount
            instances = self._db.execute(
                "DELETE FROM instances WHERE last_checkin < ?", (status_before,)
            ).rowcount
        with self._lock:
            self._counts = self._count_events()
        return {"decisions": decisions, "status_history": history, "instances": instances}

    # -- reads -------------------------------------------------------------------------------

    def decision(self, decision_id: str, instance: str | None = None) -> dict[str, Any] | None:
        """Every stored version of a decision, oldest first; ``conflict`` when there are several."""
        query = """SELECT instance, authenticated, reported_id, received_at, event FROM decision_events
                   WHERE decision_id = ?"""
        params: tuple[Any, ...] = (decision_id,)
        with self._lock:
            all_rows = self._db.execute(query + " ORDER BY seq", params).fetchall()
        if not all_rows:
            return None
        versions = [
            {
                "instance": owner or None,
                "authenticated": bool(authenticated),
                "reported_id": reported_id,
                "received_at": iso(received_at),
                "event": _load(event),
            }
            for owner, authenticated, reported_id, received_at, event in all_rows
        ]
        conflict = len(versions) > 1
        if instance is not None:
            versions = [v for v in versions if v["instance"] == instance]
            if not versions:
                return None
        result: dict[str, Any] = {"conflict": conflict, "events": versions}
        if len(versions) == 1:
            result.update({k: versions[0][k] for k in ("event", "instance", "received_at", "authenticated")})
        return result

    def history(self, instance: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                """SELECT received_at, reported_id, summary FROM status_history WHERE instance = ?
                   ORDER BY seq DESC LIMIT ?""",
                (instance, limit),
            ).fetchall()
        return [
            {"received_at": iso(received_at), "reported_id": reported_id, **_as_dict(_load(summary))}
            for received_at, reported_id, summary in rows
        ]

    def instances(self, bundle_name: str, revision: str | None) -> list[dict[str, Any]]:
        """Every instance seen, with the revision it runs and how many decisions it logged."""
        with self._lock:
            rows = self._db.execute(
                """SELECT id, labels, bundles, plugins, first_seen, last_checkin, reports, authenticated,
                       reported_id FROM instances"""
            ).fetchall()
            counts = {
                instance: (count, last, authenticated)
                for instance, count, last, authenticated in self._db.execute(
                    """SELECT instance, COUNT(DISTINCT decision_id), MAX(received_at), MIN(authenticated)
                       FROM decision_events GROUP BY instance"""
                )
            }
            conflicted = dict(
                self._db.execute(
                    """SELECT instance, COUNT(DISTINCT decision_id) FROM decision_events WHERE conflict = 1
                       GROUP BY instance"""
                ).fetchall()
            )
        result = []
        for row in rows:
            instance, labels, bundles, plugins, first_seen, last_checkin, reports, authenticated, reported = (
                row
            )
            bundles_seen = _as_dict(_load(bundles))
            ours = _as_dict(bundles_seen.get(bundle_name))
            active = ours.get("active_revision")
            count, last, _ = counts.pop(instance, (0, None, 0))
            result.append(
                {
                    "id": instance,
                    "authenticated": bool(authenticated),
                    "reported_id": reported,
                    "labels": _as_dict(_load(labels)),
                    "revision": active,
                    "up_to_date": revision is not None and active == revision,
                    "bundles": bundles_seen,
                    "plugins": _as_dict(_load(plugins)),
                    "first_seen": iso(first_seen),
                    "last_checkin": iso(last_checkin),
                    "status_reports": reports,
                    "decision_logs": _logs(count, last, conflicted.get(instance, 0)),
                }
            )
        for instance, (count, last, authenticated) in counts.items():  # logging, never reported status
            result.append(
                {
                    "id": instance,
                    "authenticated": bool(authenticated),
                    "revision": None,
                    "up_to_date": False,
                    "last_checkin": None,
                    "decision_logs": _logs(count, last, conflicted.get(instance, 0)),
                }
            )
        return sorted(result, key=lambda item: str(item["id"]))

    def logged_inputs(self, since_seconds: float | None = None) -> list[tuple[Any, int]]:
        """The distinct decision inputs OPA logged (see ``distinct_inputs``)."""
        with self._lock:
            return distinct_inputs(self._db, since_seconds)

    # -- internals ---------------------------------------------------------------------------

    def _count_events(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT instance, COUNT(*) FROM decision_events GROUP BY instance"))

    def _migrate(self) -> None:
        """State folders of earlier versions: new ``instances`` columns; ``decisions`` moved over."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(instances)")}
        for name, spec in _INSTANCE_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE instances ADD COLUMN {name} {spec}")
        old = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='decisions'"
        ).fetchone()
        if old is None:
            return
        with self._db:
            self._db.execute("BEGIN")
            for decision_id, instance, path, timestamp, received_at, event in self._db.execute(
                "SELECT decision_id, instance_id, path, timestamp, received_at, event FROM decisions"
            ).fetchall():
                self._db.execute(
                    """INSERT OR IGNORE INTO decision_events (instance, decision_id, digest, authenticated,
                           reported_id, path, timestamp, received_at, event)
                       VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)""",
                    (
                        instance if isinstance(instance, str) else "",
                        decision_id,
                        hashlib.sha256(str(event).encode()).hexdigest(),
                        instance if isinstance(instance, str) else None,
                        path if isinstance(path, str) else None,
                        timestamp if isinstance(timestamp, str) else None,
                        received_at,
                        event,
                    ),
                )
            self._db.execute("DROP TABLE decisions")


# The decisions the gateway asks OPA for (``/v1/data/labelgate/decision/result``).
DECISION_PATH = "labelgate/decision/result"


def distinct_inputs(
    db: sqlite3.Connection, since_seconds: float | None, path: str = DECISION_PATH
) -> list[tuple[Any, int]]:
    """(input, times logged) of every distinct input of ``path`` decisions received within
    ``since_seconds`` (None: all kept), deduplicated by the canonical JSON of the input as
    logged; ``labelgate policy impact --from`` drops per-call values and deduplicates again
    by the decision-cache key. Inputs hold names, labels and paths, never data values."""
    since = 0.0 if since_seconds is None else time.time() - since_seconds
    counted: dict[str, list[Any]] = {}
    rows = db.execute(
        "SELECT event FROM decision_events WHERE path = ? AND received_at >= ? ORDER BY seq", (path, since)
    )
    for (text,) in rows:
        event = _load(text)
        if not isinstance(event, dict) or not isinstance(event.get("input"), dict):
            continue
        key = hashlib.sha256(_dump(event["input"]).encode()).hexdigest()
        entry = counted.setdefault(key, [event["input"], 0])
        entry[1] += 1
    return [(doc, seen) for doc, seen in counted.values()]


def logged_inputs(path: Path, since_seconds: float | None) -> list[tuple[Any, int]]:
    """``distinct_inputs`` of a bundle server's ``fleet.sqlite3`` (or a copy), opened read-only."""
    db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        return distinct_inputs(db, since_seconds)
    finally:
        db.close()


def _logs(count: int, last: float | None, conflicts: int) -> dict[str, Any]:
    return {"count": count, "conflicts": conflicts, "last_received": iso(last)}


def _dump(value: Any) -> str:
    """Canonical JSON: the same event always has the same text (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _load(text: Any) -> Any:
    """A stored value, readable whatever an older version wrote (see ``clean``)."""
    try:
        return clean(json.loads(text))
    except (TypeError, ValueError, RecursionError):
        return {"unreadable": True}


def clean(value: Any) -> Any:
    """``value`` that any JSON writer accepts: non-finite numbers -> null, lone surrogates -> U+FFFD."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def iso(timestamp: float | None) -> str | None:
    if timestamp is None or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
