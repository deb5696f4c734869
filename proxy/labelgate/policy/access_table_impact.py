"""Whom a candidate's tables let call a method, or view recorded calls, that the served ones do not.

Besides how labels are shown (``table_impact``), the tables say who may do what at all, and the
rules read three of them (``rego/labelgate/decision/requests.rego``, ``replay.rego``):

- ``opaque_methods[method]``: the groups that may call an opaque method; ``"*"`` among them
  lets in any authenticated subject;
- ``model_admin_methods[method]``: the groups that may call a model admin method
  (``RepositoryModelLoad``/``Unload``); ``"*"`` is no wildcard there, it names a group;
- ``replay.viewer_groups``: the groups that may view recorded calls.

A replay shows such a widening only when its window holds a call of that method, or a replay,
by a member of the new group, so the tables are compared as data (``access_changes``): per table,
key and group, who is let in that was not. A key only the served table has lets in no one now;
a table the candidate lacks lets in no one (the rules deny).

The comparison reads a grant as a list of strings. The rules read other shapes too (the values
of an object, nothing of a string), and engines may differ there, so a changed grant of any
other shape, on either side, is a change (``UNREADABLE``), unless the candidate's lets in no one
(absent, or an empty list): failing closed. Pure: the caller loads the tables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The report's kinds for these tables (the gate reads any kind: ``gate.table_reasons``). The
# changes name no labels: who may call or replay is not a matter of one label, so the gate holds
# them whatever labels its rule watches.
METHOD_OPENED = "tables open a method"
REPLAY_OPENED = "tables let a group view recorded calls"
UNREADABLE = "tables change a grant the gate cannot read"

ANY_CALLER = "* (any authenticated caller)"
WHOEVER = "(whoever it lets in)"
# How many characters of a value the gate cannot read a change quotes.
QUOTED = 80


class _Absent:
    """A key the tables lack (the rules' undefined)."""


class _Unreadable:
    """A key of a table the comparison cannot read: what it let in is unknown."""


_ABSENT, _UNREADABLE = _Absent(), _Unreadable()


@dataclass(frozen=True)
class _Grant:
    """Who a grant lets in: its groups, or anyone authenticated."""

    groups: frozenset[str] = frozenset()
    everyone: bool = False


_NO_ONE = _Grant()


@dataclass(frozen=True)
class _AccessTable:
    name: str
    kind: str
    # ``"*"`` in a grant lets in any authenticated subject (opaque_methods only).
    wildcard: bool
    # The keys the rules read; None: any key (a method).
    keys: tuple[str, ...] | None
    denied: str
    allowed: str

    def where(self, key: str) -> str:
        return f"{self.name}.{key}" if self.keys is not None else f"{self.name}[{json.dumps(key)}]"


_TABLES = (
    _AccessTable("opaque_methods", METHOD_OPENED, True, None, "may not call it", "may call it"),
    _AccessTable("model_admin_methods", METHOD_OPENED, False, None, "may not call it", "may call it"),
    _AccessTable(
        "replay",
        REPLAY_OPENED,
        False,
        ("viewer_groups",),
        "may not view recorded calls",
        "may view recorded calls",
    ),
)


def access_changes(served: Mapping[str, Any], proposed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per table, key and group: whom ``proposed`` lets call a method or view recorded calls
    that ``served`` does not, and every changed grant the comparison cannot read."""
    changes: list[dict[str, Any]] = []
    for table in _TABLES:
        was_raw, now_raw = served.get(table.name, _ABSENT), proposed.get(table.name, _ABSENT)
        was, now = _entries(was_raw), _entries(now_raw)
        if now is None:
            if not same_json(was_raw, now_raw):
                changes.append(_unreadable(table.name, None, table.name, was_raw, now_raw))
            continue
        for key in sorted(now) if table.keys is None else table.keys:
            before = _UNREADABLE if was is None else was.get(key, _ABSENT)
            changes += _grant_changes(table, key, before, now.get(key, _ABSENT))
    return changes


def _grant_changes(table: _AccessTable, key: str, was_raw: Any, now_raw: Any) -> list[dict[str, Any]]:
    now = _grant(now_raw, table.wildcard)
    if now == _NO_ONE:  # lets in no one: nothing widened, whatever it was
        return []
    was = _grant(was_raw, table.wildcard)
    if was is None or now is None:
        return (
            []
            if same_json(was_raw, now_raw)
            else [_unreadable(table.name, key, table.where(key), was_raw, now_raw)]
        )
    if was.everyone:
        return []
    added = [ANY_CALLER] if now.everyone else sorted(now.groups - was.groups)
    return [
        {
            "kind": table.kind,
            "table": table.name,
            "key": key,
            # ``gate.describe_table_change`` names a change by its ``label`` and ``group``.
            "label": table.where(key),
            "group": group,
            "was": table.denied,
            "now": table.allowed,
            "how": [],
        }
        for group in added
    ]


def same_json(a: Any, b: Any) -> bool:
    """The same JSON value: Python's ``==`` takes ``1`` for ``true``, which the rules do not."""
    if isinstance(a, _Absent | _Unreadable) or isinstance(b, _Absent | _Unreadable):
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _grant(value: Any, wildcard: bool) -> _Grant | None:
    """Who ``value`` lets in; None for a shape this comparison does not read."""
    if isinstance(value, _Absent):
        return _NO_ONE
    if not isinstance(value, list) or not all(isinstance(group, str) for group in value):
        return None
    return _Grant(frozenset(value), everyone=wildcard and "*" in value)


def _entries(value: Any) -> Mapping[str, Any] | None:
    """A table's entries; none for a missing table; None for a table that is no object."""
    if isinstance(value, _Absent):
        return {}
    return value if isinstance(value, Mapping) else None


def _unreadable(table: str, key: str | None, where: str, was: Any, now: Any) -> dict[str, Any]:
    return {
        "kind": UNREADABLE,
        "table": table,
        "key": key,
        "label": where,
        "group": WHOEVER,
        "was": _quoted(was),
        "now": _quoted(now),
        "how": ["a grant of this shape is not compared, so it holds"],
    }


def _quoted(value: Any) -> str:
    if isinstance(value, _Absent):
        return "absent"
    if isinstance(value, _Unreadable):
        return "(in a table the gate cannot read)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= QUOTED else text[: QUOTED - 3] + "..."
