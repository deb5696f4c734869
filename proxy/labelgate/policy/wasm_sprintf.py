"""OPA's ``sprintf`` for the Wasm engine's host, exactly as OPA v1 computes it, for a subset.

OPA (topdown/strings.go ``builtinSprintf``) hands Go's ``fmt.Sprintf`` the format and each
argument converted to a Go value: a number whose text has a fraction or an exponent becomes a
float64 (its text, as a string, when it does not fit one), any other number an int64 or a
``*big.Int``, a string itself, and anything else its Rego text (``true``, ``null``,
``[1, 2]``) as a string. This module renders what Go does for:

- the verbs ``%d``, ``%s``, ``%v`` and ``%%``, without flags, width, precision or argument
  indexes (``check_format`` says which formats those are: the engine refuses to load a policy
  whose sprintf format is anything else, or not a literal);
- arguments that are numbers, strings, booleans or null, including Go's complaints for a verb
  that does not fit (``%!d(string=x)``), missing arguments (``%!d(MISSING)``) and extra ones
  (``%!(EXTRA int64=1, string=x)``).

An argument that is an array, object or set (Go would print its Rego text, which this module
does not reproduce) raises ``UnsupportedFormat``: the decision fails closed instead of differing.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

VERBS = frozenset("dsv")
# A verb, or something Go reads as flags/width/precision/index before one.
_DIRECTIVE = re.compile(r"%(?P<spec>[-+# 0]*(?:\[\d*\])?\d*(?:\.\d*)?(?:\[\d*\])?)(?P<verb>.?)", re.DOTALL)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class UnsupportedFormat(Exception):
    """A format or argument whose Go rendering this module does not reproduce exactly."""


def check_format(format: str) -> str | None:
    """None when every directive of ``format`` is rendered exactly, else the first that is not."""
    for match in _DIRECTIVE.finditer(format):
        spec, verb = match["spec"], match["verb"]
        if (verb == "%" or verb == "") and not spec:  # %% and a trailing % (Go: %!(NOVERB))
            continue
        if spec or verb not in VERBS:
            return match.group(0)
    return None


class _Float:
    """A JSON number whose text makes it a float64 in OPA's sprintf (keeps the text)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Int:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def parse_arguments(dumped: str) -> list[Any]:
    """The argument array as OPA's value dump wrote it (numbers keep their text)."""
    try:
        value = json.loads(dumped, parse_float=_Float, parse_int=_Int, parse_constant=_Float)
    except ValueError as error:  # a set (`set()`, `{1, 2}`) is Rego, not JSON
        raise UnsupportedFormat("a set argument") from error
    if not isinstance(value, list):
        raise TypeError("sprintf: operand 2 must be an array")
    return value


def _go_value(value: Any) -> tuple[str, Any]:
    """(Go type name, value) of one argument as OPA hands it to fmt.Sprintf."""
    if isinstance(value, str):
        return "string", value
    if isinstance(value, (_Int, _Float)):
        text = value.text
        if isinstance(value, _Float) or any(c in text for c in ".eE"):
            number = float(text)
            if math.isinf(number) or math.isnan(number):
                return "string", text  # ParseFloat's range error: OPA passes the text
            return "float64", number
        integer = int(text)
        return ("int64" if _INT64_MIN <= integer <= _INT64_MAX else "*big.Int"), integer
    if value is True:
        return "string", "true"
    if value is False:
        return "string", "false"
    if value is None:
        return "string", "null"
    raise UnsupportedFormat(f"a {type(value).__name__} argument")


def go_float(number: float) -> str:
    """Go's ``%v`` of a float64: strconv 'g' with the shortest digits that round-trip."""
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    sign, digits, exponent = Decimal(repr(number)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    exponent += len(digits) - len(text)  # the stripped zeros move into the exponent
    point = len(text) + exponent  # digits before the decimal point (Go's dp)
    minus = "-" if sign else ""
    x = point - 1
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{minus}{text}{'0' * (point - len(text))}"
    return f"{minus}{text[:point]}.{text[point:]}"


def _render_v(kind: str, value: Any) -> str:
    if kind == "float64":
        return go_float(value)
    return str(value)


def _render(verb: str, kind: str, value: Any) -> str:
    if verb == "v" or (verb == "d" and kind in ("int64", "*big.Int")):
        return _render_v(kind, value)
    if verb == "s" and kind in ("string", "*big.Int"):  # big.Int's own Format: %s is decimal
        return str(value)
    return f"%!{verb}({kind}={_render_v(kind, value)})"


def sprintf(format: Any, arguments: list[Any]) -> str:
    """Go's fmt.Sprintf of ``format`` with OPA's conversion of ``arguments``.

    Raises TypeError for a format that is not a string (OPA: an error, a deny under strict builtin
    errors), UnsupportedFormat for
    anything outside this module's subset.
    """
    if not isinstance(format, str):
        raise TypeError("sprintf: operand 1 must be a string")
    unsupported = check_format(format)
    if unsupported is not None:
        raise UnsupportedFormat(f"format directive {unsupported!r}")
    values = [_go_value(argument) for argument in arguments]
    out: list[str] = []
    position = used = 0
    for match in _DIRECTIVE.finditer(format):
        out.append(format[position : match.start()])
        position = match.end()
        verb = match["verb"]
        if verb == "%":
            out.append("%")
        elif verb == "":
            out.append("%!(NOVERB)")
        elif used < len(values):
            out.append(_render(verb, *values[used]))
            used += 1
        else:
            out.append(f"%!{verb}(MISSING)")
    out.append(format[position:])
    if used < len(values):
        extra = ", ".join(f"{kind}={_render_v(kind, value)}" for kind, value in values[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
