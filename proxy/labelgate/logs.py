"""One way to log: structured JSON lines on stderr.

Log calls pass context as keyword fields (``log.info("decision", outcome="deny")``);
callers never put data values in them, only names, paths, labels and counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from enum import StrEnum
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))
# Fields libraries add for their own terminal formatters (uvicorn's ANSI-coloured copy of the
# message): never part of a JSON line.
_DROPPED = {"color_message"}
_NOT_FIELDS = frozenset(_RESERVED | _DROPPED)
_SCALARS = frozenset({int, float, bool})  # nothing in them to make plain
# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))
_ESCAPED_ESC = "\\u001b"  # how the encoder writes ESC (ensure_ascii or not)
# ANSI escape sequences (CSI and OSC): a log line is data, not terminal output.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


# Untrusted text (an upstream's error, the names it lists) is logged only as a keyed digest
# (same text, same digest, within one process), so operators can group and match it without
# the text, which may name data, or a plain hash of it, which a short value like an SSN
# would not survive.
_DIGEST_KEY = secrets.token_bytes(32)


def text_digest(text: str) -> str:
    """A keyed digest of ``text`` for a log line (see ``_DIGEST_KEY``)."""
    return hmac.new(_DIGEST_KEY, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


class LogLevel(StrEnum):
    """The levels every command's ``--log-level`` accepts."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        # Every sequence _ANSI matches starts with ESC: a string without one is already plain.
        return _ANSI.sub("", value) if "\x1b" in value else value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    # (whole second, its text): lines come many to a second, strftime once per second.
    _second: tuple[int, str] = (-1, "")

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        text = _ENCODER.encode(self._entry(record, plain=False))
        # The encoder writes an ESC in any string as \u001b, so a line without that text has
        # no control sequence to drop (and strings that merely spell it take the slow way).
        if _ESCAPED_ESC in text:
            text = _ENCODER.encode(self._entry(record, plain=True))
        return text

    def _entry(self, record: logging.LogRecord, *, plain: bool) -> dict[str, Any]:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _plain(message) if plain else message,
        }
        for key, value in vars(record).items():
            if key in _NOT_FIELDS or key.startswith("_"):
                continue
            if plain and value is not None and type(value) not in _SCALARS:
                value = _plain(value)
            entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return entry


_LOGGING_KWARGS = ("exc_info", "stack_info", "stacklevel")


class StructuredLogger(logging.LoggerAdapter[logging.Logger]):
    """``log.info("event", key=value)`` instead of ``extra={...}``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in _LOGGING_KWARGS}
        kwargs["extra"] = fields
        return msg, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        if any(k in kwargs for k in _LOGGING_KWARGS):
            super().log(level, msg, *args, **kwargs)
            return
        # The record the standard path makes, less the caller's file and line: finding them
        # walks the stack on every line, and no line labelgate writes shows them.
        record = logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args, None, None)
        fields = record.__dict__
        if "message" in kwargs or "asctime" in kwargs or not fields.keys().isdisjoint(kwargs):
            # A field that would overwrite the record's own: makeRecord refuses it (KeyError).
            record = logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args, None, None, kwargs)
        else:
            fields.update(kwargs)  # what makeRecord does with ``extra``, without a check per key
        logger.handle(record)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name), {})


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the line, not at configure time:
    a test runner or a daemoniser that swaps stderr must not leave logging on a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure(level: str = LogLevel.info, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(level).upper())
    # httpx logs each request's status line at INFO, reason phrase and all: text the upstream
    # chooses (8 KB of it, values included, found by review). Its warnings and errors only.
    for library in _UPSTREAM_QUOTING:
        logging.getLogger(library).setLevel(logging.WARNING)
    # Python warnings become log lines too, so every line on stderr is one JSON object.
    logging.captureWarnings(True)


# Libraries whose informational lines quote what a peer sent.
_UPSTREAM_QUOTING = ("httpx", "httpcore")
