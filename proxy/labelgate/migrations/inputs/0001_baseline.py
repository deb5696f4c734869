"""The decision-input store (``audit.inputs_file``, SQLite) as it was before versioning."""

from yoyo import step

steps = [
    step(
        """CREATE TABLE IF NOT EXISTS decision_inputs (
            hash TEXT PRIMARY KEY,
            phase TEXT NOT NULL,
            input TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            seen INTEGER NOT NULL
        )"""
    ),
    step("CREATE INDEX IF NOT EXISTS decision_inputs_last_seen ON decision_inputs (last_seen)"),
]
