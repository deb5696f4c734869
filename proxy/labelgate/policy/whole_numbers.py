"""Whole numbers written as floats (``1.0``, ``-0.0``, ``1e0``): OPA indexes arrays by them,
the in-process engines do not.

OPA v1.22.3 looks an array up by a number whose value is whole however it is written:
``deny if input.fields[input.i] == "secret"`` with ``"i": 1.0`` denies. rego-cpp and OPA's
Wasm target look arrays up by integers only, so there the lookup is undefined and the same
rule let the call through (review); so did ``object.get(o, ["a", input.i], d)``, ``input.i,
"secret" in input.fields`` and arrays built by comprehensions, ``array.concat`` and ``sort``.
Neither engine's answer can be corrected per lookup, so such a number never reaches them:

- the input: the only number of a gateway-built input that can arrive as a float is a
  subject attribute (a JWT's ``exp`` as ``1796490140.0``); ``Subject.to_policy`` makes whole
  floats integers once per subject, for every engine alike. Not for the in-process engines
  alone: OPA keeps a number as written (``sprintf("%v", [x])`` is ``1.0`` for ``1.0``), so
  converting only their copy would have them write other text than OPA. Whatever else hands
  an in-process engine a whole float (the CLI, a replayed input, any other caller) is denied
  unevaluated (EMBEDDED_INPUT_UNSUPPORTED); ``--engine opa`` decides it;
- the data: refused when the policy loads, naming the path (``refuse_data``). OPA's engine
  reads the bundle's own data.json, so converting the in-process engines' copy would again
  make them differ from OPA in what they write;
- the policy's literals: refused when it loads (rego_text ``whole_number_literals``).

Only magnitudes below 2^53 count: no array is that long, so a larger float indexes nothing
in any engine, and its ``int()`` is not the number OPA reads from its text (``1e300``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from labelgate.errors import ConfigError
from labelgate.policy import reasons

LIMIT = 2**53
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WHOLE_FLOAT_TEXT = re.compile(r"\.0(?:[,\]}]|$)")


def is_whole_float(value: object) -> bool:
    """Whether ``value`` is a float holding a whole number of magnitude below 2^53 (``-0.0`` too)."""
    return isinstance(value, float) and value.is_integer() and -LIMIT < value < LIMIT


def may_hold_whole_float(text: str) -> bool:
    """False when the JSON text Python's encoder wrote holds no whole float below 2^53.

    Python writes every such float as its digits and ``.0`` (it switches to an exponent only
    from 1e16), followed by ``,``, ``]``, ``}`` or the end (``, `` and ``: `` separators start
    with those too): one regular-expression pass (~0.25 µs on the 650 characters of a
    default-pack input's subject, request and context) rules it out for almost every input,
    and a hit (a string such as ``"v1.0,"`` can hold the same characters) only asks
    ``holds_whole_float`` to look at the value.
    """
    return _WHOLE_FLOAT_TEXT.search(text) is not None


def holds_whole_float(value: Any) -> bool:
    """Whether the JSON-like ``value`` holds a whole float below 2^53 (object keys are strings)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if is_whole_float(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def whole_float_at(value: Any, root: str = "data") -> tuple[str, float] | None:
    """(path, number) of a whole float below 2^53 in ``value``, or None; the path reads as
    Rego (``data.labelgate.tables.idx``, ``data.t["a b"][2]``). Iterative: data may nest deeper
    than Python's recursion limit allows a walk."""
    if not holds_whole_float(value):
        return None
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack:
        item, path = stack.pop()
        if is_whole_float(item):
            return path, item
        if isinstance(item, dict):
            for key in sorted(item, key=str, reverse=True):  # popped in sorted order
                name = str(key)
                step = f".{name}" if _IDENTIFIER.match(name) else f"[{json.dumps(name, ensure_ascii=False)}]"
                stack.append((item[key], path + step))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None


def refuse_data(data: Any, origin: str, engine: str) -> None:
    """Raise ConfigError (POLICY_DATA_INVALID) naming the first whole float of ``data``."""
    found = whole_float_at(data)
    if found is None:
        return
    path, number = found
    raise ConfigError(
        reasons.POLICY_DATA_INVALID,
        f"{origin}: data number {number!r} at {path} is a whole number written with a fraction or "
        f"an exponent: OPA indexes arrays by it, the {engine} engine does not; write it as the "
        f"integer {int(number)}, or run this policy with --engine opa",
    )
