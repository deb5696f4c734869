"""Revisions the publish gate judged: their impact reports, holds and approvals, in SQLite.

One row per candidate revision (``revisions.sqlite3`` in the server's state folder), with
the impact report it was judged by (counts, fields, example hashes: never a data value),
why it was held, who asked for its release and the approval that decided it. The files of
the last published revision are kept too, so a restarted server serves it again and judges
the source against it: a restart never publishes a held revision without an approval.

States: ``published``; ``held`` (waiting for an approval); ``superseded`` (a newer candidate
or revision replaced it before it was released); ``denied`` / ``expired`` (its approval
was refused or ran out; the revision stays unpublished).

Blocking I/O: the publisher calls these from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelgate.bundle.build import SourceFile
from labelgate.bundle.fleet import iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    revision TEXT NOT NULL,
    state TEXT NOT NULL,
    judged_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    report TEXT NOT NULL,
    reasons TEXT NOT NULL,
    author TEXT,
    approval_id TEXT,
    approval_link TEXT,
    resolution TEXT NOT NULL DEFAULT '',
    files TEXT
);
CREATE INDEX IF NOT EXISTS revisions_by_revision ON revisions (revision, seq);
"""
SHOWN = 20  # revisions the fleet page and GET /revisions list


@dataclass(frozen=True)
class RevisionRecord:
    revision: str
    state: str
    judged_at: float
    updated_at: float
    report: dict[str, Any]
    reasons: list[str]
    author: str | None
    approval_id: str | None
    approval_link: str | None
    resolution: str

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "state": self.state,
            "judged_at": iso(self.judged_at),
            "updated_at": iso(self.updated_at),
            "impact": self.report,
            "hold_reasons": self.reasons,
            "author": self.author,
            "approval": {"id": self.approval_id, "link": self.approval_link, "resolution": self.resolution}
            if self.approval_id
            else None,
        }


_COLUMNS = (
    "revision, state, judged_at, updated_at, report, reasons, author, approval_id, approval_link, resolution"
)


class RevisionStore:
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

    def judged(
        self,
        revision: str,
        state: str,
        report: dict[str, Any],
        reasons: Sequence[str],
        files: Sequence[SourceFile] | None = None,
    ) -> None:
        """Record a judgement; an older held revision is superseded by it."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE revisions SET state = 'superseded', updated_at = ? WHERE state = 'held'", (now,)
            )
            if state == "published":
                self._db.execute("UPDATE revisions SET files = NULL WHERE files IS NOT NULL")
            self._db.execute(
                """INSERT INTO revisions (revision, state, judged_at, updated_at, report, reasons, files)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (revision, state, now, now, json.dumps(report), json.dumps(list(reasons)), _files(files)),
            )

    def supersede_held(self) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE revisions SET state = 'superseded', updated_at = ? WHERE state = 'held'",
                (time.time(),),
            )

    def released(self, revision: str, resolution: str, files: Sequence[SourceFile]) -> None:
        """The held ``revision`` was approved and is now published."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE revisions SET files = NULL WHERE files IS NOT NULL")
            self._db.execute(
                """UPDATE revisions SET state = 'published', resolution = ?, updated_at = ?, files = ?
                   WHERE seq = (SELECT MAX(seq) FROM revisions WHERE revision = ?)""",
                (resolution, now, _files(files), revision),
            )

    def asked(self, revision: str, author: str, approval_id: str, link: str) -> None:
        with self._lock:
            self._db.execute(
                """UPDATE revisions SET author = ?, approval_id = ?, approval_link = ?, resolution = '',
                       updated_at = ? WHERE seq = (SELECT MAX(seq) FROM revisions WHERE revision = ?)""",
                (author, approval_id, link, time.time(), revision),
            )

    def refused(self, revision: str, state: str, resolution: str) -> None:
        """The approval of the held ``revision`` was denied or expired."""
        with self._lock:
            self._db.execute(
                """UPDATE revisions SET state = ?, resolution = ?, updated_at = ?
                   WHERE seq = (SELECT MAX(seq) FROM revisions WHERE revision = ?) AND state = 'held'""",
                (state, resolution, time.time(), revision),
            )

    def recent(self, limit: int = SHOWN) -> list[RevisionRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM revisions ORDER BY seq DESC LIMIT ?",  # noqa: S608 - constant
                (limit,),
            ).fetchall()
        return [_record(row) for row in rows]

    def last_published_files(self) -> list[SourceFile] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT files FROM revisions WHERE files IS NOT NULL ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return [(name, base64.b64decode(content)) for name, content in json.loads(row[0])]


def _files(files: Sequence[SourceFile] | None) -> str | None:
    if files is None:
        return None
    return json.dumps([[name, base64.b64encode(content).decode()] for name, content in files])


def _record(row: tuple[Any, ...]) -> RevisionRecord:
    revision, state, judged_at, updated_at, report, reasons, author, approval_id, link, resolution = row
    return RevisionRecord(
        revision,
        state,
        judged_at,
        updated_at,
        json.loads(report),
        json.loads(reasons),
        author,
        approval_id,
        link,
        resolution,
    )
