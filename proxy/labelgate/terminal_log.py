"""The quickstart's log split: every JSON line to a file, a short line per call on the terminal.

``make run`` is read by a person: the gateway's full structured log (one JSON object per
line) goes to ``.labelgate/gateway.log``, and the terminal gets one short line per call
(time, outcome, method, model, subject, reason) plus any warning or error by its event
name, so the log stays complete and the terminal stays readable.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any, TextIO

from labelgate.untrusted_text import shown

_LOUD = frozenset({"warning", "error", "critical"})


def summary(line: str) -> str | None:
    """The terminal's line for one JSON log line: calls and problems; None for the rest."""
    try:
        entry = json.loads(line)
    except ValueError:
        return shown(line)  # not ours (a library printing directly): shown, never obeyed
    if not isinstance(entry, dict):
        return None
    clock = str(entry.get("ts", ""))[11:19]
    if entry.get("event") == "call":
        method = str(entry.get("method") or "").rsplit("/", 1)[-1]
        parts = [clock, f"{entry.get('outcome', '?'):<17}", method, entry.get("model") or ""]
        parts.append(f"subject={entry['subject']}" if entry.get("subject") else "")
        parts.append(f"reason={entry['reason']}" if entry.get("reason") else "")
        # Model and subject are callers' text: a control or format character in them is shown
        # as its escape (the log line's own cleaning drops only escape sequences).
        return shown(" ".join(str(part) for part in parts if part))
    if entry.get("level") in _LOUD:
        # An event name may quote what a library was sent (OpenTelemetry names a caller's bad
        # header): shown, like the call lines, so it cannot drive the terminal.
        return shown(f"{clock} {entry.get('level')}: {entry.get('event')} (details in the gateway log)")
    return None


class CallSummaryStream(io.TextIOBase):
    """A text stream for a logging handler: whole lines to ``path``, summaries to ``terminal``."""

    def __init__(self, path: Path, terminal: TextIO) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8", buffering=1)
        self._terminal = terminal
        self._pending = ""
        self._lock = threading.Lock()  # the admin listener logs from its own thread

    @property
    def encoding(self) -> str:  # type: ignore[override]
        # Named, so click writes text here: given a stream without an encoding it writes bytes.
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def write(self, text: Any) -> int:
        # Bytes are decoded, not turned into "b'...'" (whose escaped newline never ended a line:
        # the CLI's error line, written so, reached neither the file nor the terminal).
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        with self._lock:
            self._pending += str(text)
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._file.write(line + "\n")
                short = summary(line) if line.strip() else None
                if short is not None:
                    self._terminal.write(short + "\n")
            self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()
            self._terminal.flush()

    def close(self) -> None:
        with self._lock:
            if self._pending:
                self._file.write(self._pending + "\n")
                self._pending = ""
        super().close()  # flushes first
        self._file.close()
