"""Warnings logged while a command loads what ``serve`` loads, as sentences on its terminal.

A command that loads the gateway config without running the gateway (``serve
--check-config``, ``sessions show|replay``) has no logging configured, so Python would print
each warning (``dev_key_trusted``, ...) as its bare event name, the fields that explain it
dropped. ``warnings_as_notes`` collects them instead; the command prints them its own way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

# What every LogRecord carries; the rest are the fields a structured line was logged with.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def note_of(record: logging.LogRecord) -> str:
    """A structured warning as one sentence: its event, its note, then its other fields."""
    fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
    note = fields.pop("note", None)
    said = f"{record.getMessage()}: {note}" if note else record.getMessage()
    details = ", ".join(f"{key} {value}" for key, value in fields.items())
    return f"{said} ({details})" if details else said


@contextlib.contextmanager
def warnings_as_notes(on_note: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """The warnings (and errors) logged inside the block, as sentences, in the yielded list
    and, as each is logged, to ``on_note`` (so it shows before an error the block ends in);
    the root logger's handlers and level are given back after it."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(note_of(record))
            if on_note is not None:
                on_note(collected[-1])

    collected: list[str] = []
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [Collect(logging.WARNING)]
    root.setLevel(logging.WARNING)
    try:
        yield collected
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
