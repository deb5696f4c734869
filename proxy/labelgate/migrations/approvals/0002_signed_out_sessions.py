"""Inbox sign-outs (SQLite and PostgreSQL).

One row per subject that signed out of the inbox: every session of that subject issued at or
before ``signed_out_through`` (the signed-out session's ``iat``) is refused, on every gateway
on the store, until ``ends_at`` (no such session outlives it); the sweep then drops the row.
A row per subject, not per session: signing in and out in a loop rewrites one row.
"""

from yoyo import step

__depends__ = {"0001_baseline"}

steps = [
    step(
        """CREATE TABLE inbox_signed_out_sessions (
            subject_id TEXT PRIMARY KEY,
            signed_out_through DOUBLE PRECISION NOT NULL,
            ends_at DOUBLE PRECISION NOT NULL
        )""",
        "DROP TABLE inbox_signed_out_sessions",
    ),
    step(
        "CREATE INDEX inbox_signed_out_sessions_ends ON inbox_signed_out_sessions (ends_at)",
        "DROP INDEX inbox_signed_out_sessions_ends",
    ),
]
