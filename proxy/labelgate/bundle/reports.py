"""What OPA posts, read strictly: JSON without surprises, then the shape of each report.

``parse_json`` accepts only what every JSON reader agrees on: UTF-8 without a BOM, no
``NaN``/``Infinity`` (nor numbers that overflow to them), no duplicate keys, no lone
surrogates, at most ``max_depth`` levels of nesting. Anything else is ``InvalidInput`` (a
``400`` problem), never a value stored and never a crash on a later read.

``status_report`` and ``decision_events`` then check the fields the server stores or shows:
scalars where OPA sends scalars, bounded counts and lengths. Fields the server ignores are
only bounded by the body size and depth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from labelgate.bundle import reasons
from labelgate.errors import InvalidInput, ResourceExhausted

DECISION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
MAX_BUNDLES = 64
MAX_PLUGINS = 64
MAX_ERRORS_KEPT = 10
MAX_TEXT = 4096  # longer messages are cut (OPA's compile errors can be long), not refused
MAX_NAME = 128
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _Refused(f"{name} is not JSON (no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key[:60]!r}")
            seen.add(key)
    return result


def parse_json(body: bytes, max_depth: int, max_items: int | None = None) -> Any:
    """Strict JSON from ``body``; ``InvalidInput`` (reason ``BODY_NOT_JSON`` / ``JSON_TOO_DEEP``).

    ``max_items`` bounds a top-level array (``TOO_MANY_EVENTS``) before its elements are walked.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInput(
            reasons.BODY_NOT_JSON, f"the body is not UTF-8: {error.reason} at byte {error.start}"
        ) from None
    if text.startswith("\ufeff"):
        raise InvalidInput(reasons.BODY_NOT_JSON, "the body starts with a byte order mark")
    try:
        value = json.loads(
            text,
            parse_constant=_no_constants,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
    except RecursionError:
        raise InvalidInput(reasons.JSON_TOO_DEEP, f"the JSON nests deeper than {max_depth} levels") from None
    except ValueError as error:  # JSONDecodeError, _Refused, int digit limits
        raise InvalidInput(reasons.BODY_NOT_JSON, f"the body is not valid JSON: {error}") from None
    if max_items is not None and isinstance(value, list) and len(value) > max_items:
        raise ResourceExhausted(
            reasons.TOO_MANY_EVENTS, f"a batch holds at most {max_items} events, got {len(value)}"
        )
    check_tree(value, max_depth, surrogates=bool(_LONE_SURROGATE_ESCAPE.search(text)))
    return value


def check_tree(value: Any, max_depth: int, *, surrogates: bool = True) -> None:
    """Depth at most ``max_depth``; with ``surrogates``, every string encodable as UTF-8."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise InvalidInput(reasons.JSON_TOO_DEEP, f"the JSON nests deeper than {max_depth} levels")
            for key, child in node.items():
                if surrogates:
                    _utf8(key)
                if isinstance(child, (dict, list)) or (surrogates and isinstance(child, str)):
                    stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise InvalidInput(reasons.JSON_TOO_DEEP, f"the JSON nests deeper than {max_depth} levels")
            for child in node:
                if isinstance(child, (dict, list)) or (surrogates and isinstance(child, str)):
                    stack.append((child, depth + 1))
        elif isinstance(node, str) and surrogates:
            _utf8(node)


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            reasons.BODY_NOT_JSON, "the JSON holds a lone surrogate (\\ud800-\\udfff)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Shapes


def _where(path: str) -> str:
    return path or "the body"


def _text(value: Any, path: str, reason: str, *, limit: int = MAX_TEXT, cut: bool = True) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(reason, f"{path} must be a string, got {_type(value)}")
    if len(value) > limit:
        if not cut:
            raise InvalidInput(reason, f"{path} is longer than {limit} characters")
        return value[:limit] + "…"
    return value


def _object(value: Any, path: str, reason: str, *, most: int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(reason, f"{_where(path)} must be an object, got {_type(value)}")
    if len(value) > most:
        raise InvalidInput(reason, f"{path} has more than {most} entries")
    for key in value:
        if len(key) > MAX_NAME:
            raise InvalidInput(reason, f"{path} has a key longer than {MAX_NAME} characters")
    return value


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def labels_of(value: Any, path: str, reason: str) -> dict[str, str]:
    labels = _object(value, path, reason, most=MAX_LABELS)
    for key, item in labels.items():
        if len(key) > MAX_LABEL_KEY:
            raise InvalidInput(reason, f"{path} key longer than {MAX_LABEL_KEY} characters")
        _text(item, f"{path}.{key}", reason, limit=MAX_LABEL_VALUE, cut=False)
    return labels


@dataclass(frozen=True)
class StatusReport:
    labels: dict[str, str]
    reported_id: str | None
    bundles: dict[str, dict[str, Any]]
    plugins: dict[str, str | None]


_BUNDLE_TEXT_FIELDS = (
    "active_revision",
    "last_successful_activation",
    "last_successful_download",
    "last_successful_request",
    "last_request",
    "code",
    "message",
)


def status_report(report: Any) -> StatusReport:
    """The parts of an OPA status report the fleet view keeps, checked; ``STATUS_REPORT_INVALID``."""
    reason = "STATUS_REPORT_INVALID"
    if not isinstance(report, dict):
        raise InvalidInput(reason, "a status report is a JSON object")
    labels = labels_of(report.get("labels"), "labels", reason)
    reported_id = _text(labels.get("id"), "labels.id", reason, limit=MAX_NAME, cut=False)
    bundles = {}
    for name, entry in _object(report.get("bundles"), "bundles", reason, most=MAX_BUNDLES).items():
        where = f"bundles.{name}"
        entry = _object(entry, where, reason, most=256)
        summary: dict[str, Any] = {
            field: _text(entry.get(field), f"{where}.{field}", reason) for field in _BUNDLE_TEXT_FIELDS
        }
        summary["errors"] = _errors(entry.get("errors"), f"{where}.errors", reason)
        bundles[name] = summary
    plugins = {}
    for name, entry in _object(report.get("plugins"), "plugins", reason, most=MAX_PLUGINS).items():
        entry = _object(entry, f"plugins.{name}", reason, most=256)
        plugins[name] = _text(entry.get("state"), f"plugins.{name}.state", reason, limit=64, cut=False)
    return StatusReport(labels=labels, reported_id=reported_id, bundles=bundles, plugins=plugins)


def _errors(value: Any, path: str, reason: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput(reason, f"{path} must be an array, got {_type(value)}")
    kept = []
    for index, error in enumerate(value[:MAX_ERRORS_KEPT]):
        where = f"{path}[{index}]"
        error = _object(error, where, reason, most=64)
        item: dict[str, Any] = {
            "code": _text(error.get("code"), f"{where}.code", reason),
            "message": _text(error.get("message"), f"{where}.message", reason),
        }
        location = error.get("location")
        if location is not None:
            location = _object(location, f"{where}.location", reason, most=16)
            item["location"] = {
                "file": _text(location.get("file"), f"{where}.location.file", reason),
                "row": _integer(location.get("row"), f"{where}.location.row", reason),
                "col": _integer(location.get("col"), f"{where}.location.col", reason),
            }
        kept.append(item)
    return kept


def _integer(value: Any, path: str, reason: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(reason, f"{path} must be an integer, got {_type(value)}")
    if abs(value) > 2**53:
        raise InvalidInput(reason, f"{path} is out of range")
    return value


@dataclass(frozen=True)
class DecisionEvent:
    decision_id: str
    reported_id: str | None
    path: str | None
    timestamp: str | None
    event: dict[str, Any]


_EVENT_TEXT_FIELDS = ("path", "query", "timestamp", "requested_by", "revision", "trace_id", "span_id")


def decision_events(events: Any, most: int) -> list[DecisionEvent]:
    """A batch of OPA decision-log events, checked; ``DECISION_LOGS_INVALID`` / ``TOO_MANY_EVENTS``."""
    reason = "DECISION_LOGS_INVALID"
    if not isinstance(events, list):
        raise InvalidInput(reason, "decision logs are a JSON array of events")
    if len(events) > most:
        raise ResourceExhausted(
            reasons.TOO_MANY_EVENTS, f"a batch holds at most {most} events, got {len(events)}"
        )
    checked = []
    for index, event in enumerate(events):
        where = f"event {index}"
        if not isinstance(event, dict):
            raise InvalidInput(reason, f"{where} is not an object")
        decision_id = event.get("decision_id")
        if not isinstance(decision_id, str) or not DECISION_ID.match(decision_id):
            raise InvalidInput(reason, f"{where}: decision_id must be 1-128 of [A-Za-z0-9._:-]")
        labels = labels_of(event.get("labels"), f"{where}: labels", reason)
        texts = {
            field: _text(event.get(field), f"{where}: {field}", reason, limit=MAX_TEXT, cut=False)
            for field in _EVENT_TEXT_FIELDS
        }
        _integer(event.get("req_id"), f"{where}: req_id", reason)
        for name, bundle in _object(
            event.get("bundles"), f"{where}: bundles", reason, most=MAX_BUNDLES
        ).items():
            bundle = _object(bundle, f"{where}: bundles.{name}", reason, most=16)
            _text(bundle.get("revision"), f"{where}: bundles.{name}.revision", reason, cut=False)
        for field in ("erased", "masked"):
            listed = event.get(field)
            if listed is None:
                continue
            if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
                raise InvalidInput(reason, f"{where}: {field} must be an array of strings")
        metrics = _object(event.get("metrics"), f"{where}: metrics", reason, most=256)
        for name, number in metrics.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise InvalidInput(reason, f"{where}: metrics.{name} must be a number, got {_type(number)}")
        checked.append(
            DecisionEvent(
                decision_id=decision_id,
                reported_id=_text(labels.get("id"), f"{where}: labels.id", reason, limit=MAX_NAME, cut=False),
                path=texts["path"],
                timestamp=texts["timestamp"],
                event=event,
            )
        )
    return checked
