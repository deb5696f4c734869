"""The fleet view: which OPA runs which revision, and the decisions they logged.

OPA instances report to the bundle server (status API, ``POST /status``) and ship their
decision logs (``POST /logs``). Both land in one SQLite file in the server's state folder:
a reply is only sent after the transaction committed with ``synchronous=FULL`` (the WAL is
fsynced), so a ``2xx`` means the data survives a crash; OPA re-sends anything else.
Decision events are keyed by ``decision_id``, the id the gateway writes into its audit
records, so a re-sent batch stores nothing twice and an audit record links to its event.

Blocking I/O: the server calls these methods from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from labelgate.errors import InvalidInput

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
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    instance_id TEXT,
    path TEXT,
    timestamp TEXT,
    received_at REAL NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_instance ON decisions (instance_id);
"""
MAX_ERRORS_KEPT = 10


class FleetStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_status(self, report: Any) -> str:
        """Store one OPA status report; returns the instance id (``labels.id``)."""
        if not isinstance(report, dict):
            raise InvalidInput("STATUS_REPORT_INVALID", "a status report is a JSON object")
        labels = report.get("labels")
        instance = labels.get("id") if isinstance(labels, dict) else None
        if not isinstance(instance, str) or not instance:
            raise InvalidInput(
                "STATUS_REPORT_INVALID", "a status report needs labels.id (the OPA instance id)"
            )
        bundles = report.get("bundles") or {}
        if not isinstance(bundles, dict):
            raise InvalidInput("STATUS_REPORT_INVALID", "bundles must be an object")
        plugins = report.get("plugins") or {}
        summary = {name: _bundle_summary(entry) for name, entry in bundles.items() if isinstance(entry, dict)}
        states = {name: p.get("state") for name, p in plugins.items() if isinstance(p, dict)}
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                """INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, 1)
                   ON CONFLICT(id) DO UPDATE SET labels=excluded.labels, bundles=excluded.bundles,
                   plugins=excluded.plugins, last_checkin=excluded.last_checkin, reports=reports + 1""",
                (instance, json.dumps(labels), json.dumps(summary), json.dumps(states), now, now),
            )
        return instance

    def store_decisions(self, events: Any) -> int:
        """Store a batch of decision events atomically; returns how many were new."""
        if not isinstance(events, list):
            raise InvalidInput("DECISION_LOGS_INVALID", "decision logs are a JSON array of events")
        rows = []
        now = time.time()
        for index, event in enumerate(events):
            decision_id = event.get("decision_id") if isinstance(event, dict) else None
            if not isinstance(decision_id, str) or not decision_id:
                raise InvalidInput("DECISION_LOGS_INVALID", f"event {index} has no decision_id")
            labels = event.get("labels")
            instance = labels.get("id") if isinstance(labels, dict) else None
            rows.append(
                (decision_id, instance, event.get("path"), event.get("timestamp"), now, json.dumps(event))
            )
        with self._lock, self._db:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?)", rows)
            return self._db.total_changes - before

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT event, received_at FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        if row is None:
            return None
        return {"event": json.loads(row[0]), "received_at": iso(row[1])}

    def instances(self, bundle_name: str, revision: str | None) -> list[dict[str, Any]]:
        """Every instance seen, with the revision it runs and how many decisions it logged."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, labels, bundles, plugins, first_seen, last_checkin, reports FROM instances"
            ).fetchall()
            counts = {
                instance: (count, last)
                for instance, count, last in self._db.execute(
                    "SELECT instance_id, COUNT(*), MAX(received_at) FROM decisions GROUP BY instance_id"
                )
            }
        result = []
        for instance, labels, bundles, plugins, first_seen, last_checkin, reports in rows:
            bundles_seen = json.loads(bundles)
            ours = bundles_seen.get(bundle_name, {})
            count, last = counts.pop(instance, (0, None))
            result.append(
                {
                    "id": instance,
                    "labels": json.loads(labels),
                    "revision": ours.get("active_revision"),
                    "up_to_date": revision is not None and ours.get("active_revision") == revision,
                    "bundles": bundles_seen,
                    "plugins": json.loads(plugins),
                    "first_seen": iso(first_seen),
                    "last_checkin": iso(last_checkin),
                    "status_reports": reports,
                    "decision_logs": {"count": count, "last_received": iso(last)},
                }
            )
        for instance, (count, last) in counts.items():  # logging but never reported status
            result.append(
                {
                    "id": instance,
                    "revision": None,
                    "up_to_date": False,
                    "last_checkin": None,
                    "decision_logs": {"count": count, "last_received": iso(last)},
                }
            )
        return sorted(result, key=lambda item: str(item["id"]))


def _bundle_summary(entry: dict[str, Any]) -> dict[str, Any]:
    errors = entry.get("errors")
    return {
        "active_revision": entry.get("active_revision"),
        "last_successful_activation": entry.get("last_successful_activation"),
        "last_successful_download": entry.get("last_successful_download"),
        "last_request": entry.get("last_request"),
        "code": entry.get("code"),
        "message": entry.get("message"),
        "errors": errors[:MAX_ERRORS_KEPT] if isinstance(errors, list) else None,
    }


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}Z"
