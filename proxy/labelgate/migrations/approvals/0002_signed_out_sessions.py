"""Inbox sessions signed out before their end (SQLite and PostgreSQL).

A row per signed-out session id until a while past the session's own end (then the cookie
is refused as expired anyway, and the sweep drops the row): every gateway on the store
refuses a copy of the cookie taken before the sign-out.
"""

from yoyo import step

__depends__ = {"0001_baseline"}

steps = [
    step(
        """CREATE TABLE inbox_signed_out_sessions (
            session_id TEXT PRIMARY KEY,
            ends_at DOUBLE PRECISION NOT NULL
        )""",
        "DROP TABLE inbox_signed_out_sessions",
    ),
    step(
        "CREATE INDEX inbox_signed_out_sessions_ends ON inbox_signed_out_sessions (ends_at)",
        "DROP INDEX inbox_signed_out_sessions_ends",
    ),
]
