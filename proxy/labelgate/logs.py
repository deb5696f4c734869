"""One way to log: structured JSON lines on stderr.

Log calls pass context as keyword fields (``log.info("decision", outcome="deny")``);
callers never put data values in them, only names, paths, labels and counts.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from enum import StrEnum
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({})))
# Fields libraries add for their own terminal formatters (uvicorn's ANSI-coloured copy of the
# message): never part of a JSON line.
_DROPPED = {"color_message"}
# ANSI escape sequences (CSI and OSC): a log line is data, not terminal output.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


class LogLevel(StrEnum):
    """The levels every command's ``--log-level`` accepts."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return _ANSI.sub("", value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _plain(record.getMessage()),
        }
        entry.update(
            {
                k: _plain(v)
                for k, v in vars(record).items()
                if k not in _RESERVED and k not in _DROPPED and not k.startswith("_")
            }
        )
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, separators=(",", ":"))


class StructuredLogger(logging.LoggerAdapter[logging.Logger]):
    """``log.info("event", key=value)`` instead of ``extra={...}``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("exc_info", "stack_info", "stacklevel")}
        kwargs["extra"] = fields
        return msg, kwargs


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
    # Python warnings become log lines too, so every line on stderr is one JSON object.
    logging.captureWarnings(True)
