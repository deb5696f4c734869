"""JSON objects that name a key once: ``json.loads(text, object_pairs_hook=unique_keys)``.

``json.loads`` keeps the last value of a key written twice, so a document would not mean what
its reviewer read (a catalog entry labelled ``restricted`` and then ``public`` is public).
Every JSON file labelgate takes from an operator (the catalog file, a bundle's data, a policy
folder's data) is read with this hook. Pure.
"""

from __future__ import annotations

from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` object hook refusing a key twice in one object (``DuplicateKeyError``)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result
