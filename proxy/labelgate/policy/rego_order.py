"""Iteration order: where a policy iterates something rego-cpp orders differently from OPA
in a way the decision shows (``rego_text``'s module docstring says what is refused, and why).

OPA iterates sets and object keys in sorted order and ``walk`` depth first; rego-cpp iterates
sets and objects in insertion order and walks breadth first. Which values are sets or objects
is read from the text of the whole policy (``_Scope``), to a fixed point over the names bound
to one another.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from labelgate.policy.capabilities import Finding
from labelgate.policy.rego_text import (
    _HEAD_REF,
    _NAME,
    Outline,
    _closing,
    _line,
    _path,
    outline,
    strip,
)

# Builtins that return a set in OPA.
SET_BUILTINS = ("object.keys", "intersection", "union", "graph.reachable", "net.cidr_expand")

_SET, _OBJECT = "a set", "an object"
# An array whose elements come in a set's order: built by an array comprehension over a set
# (or over such an array), or joined to one by ``array.concat``. Kept in a rule or a local it
# reaches a string later (``_a := [s | some s in set]``, then ``concat(",", _a)``: found by
# review), so it is a kind of its own, refused where it becomes a string.
_SET_ORDERED = "an array in a set's order"
# Builtins that return an object whose keys rego-cpp keeps in the order it built them.
OBJECT_BUILTINS = (
    "object.filter",
    "object.remove",
    "object.union",
    "object.union_n",
    "json.patch",
    "json.filter",
    "json.remove",
    "json.unmarshal",
    "yaml.unmarshal",
)
# Where the order of an array comprehension's elements becomes a string: an array built
# from a set or an object is refused right there. Elsewhere it is accepted (module docstring).
_ORDER_SHOWN = re.compile(r"(?<![\w.])(?:concat\s*\([^()]*,|(?:json|yaml)\.marshal\s*\()$")
# Builtins whose value does not depend on the order of their argument's elements.
_ORDER_FREE = re.compile(r"(?<![\w.])(?:count|sort|max|min)\s*\($")
_REF = rf"{_NAME}(?:\.{_NAME})*"
# What a comprehension body iterates: `some x in REF`, `REF[var]`, a literal `{...}[var]`.
_ITERATED = re.compile(
    rf"\bin\s+({_REF})\b(?!\s*[\[(.])|(?<![\w.])({_REF})\s*\[\s*({_NAME})\s*\]|\}}\s*\[\s*({_NAME})\s*\]"
)
# Rounds of the fixed point over the policy: each finds at least one more kind, and a chain of
# names bound to one another longer than this is not seen (its last links are not refused).
_ROUNDS = 64
# `some x, y` declares variables without binding them.
_SOME_DECLARATION = re.compile(rf"\bsome\s+{_NAME}(?:\s*,\s*{_NAME})*\s*(?=[;\n}}\]]|$)")


@dataclass(frozen=True)
class _Scope:
    """What one module of the policy can refer to: its outline, the kinds ("a set", "an
    object") of the names it binds, and the kinds of rules of the whole policy by full path."""

    module: Outline
    local: dict[str, str]
    paths: dict[str, str]

    def kind(self, ref: str) -> str | None:
        if ref in self.local:
            return self.local[ref]
        path = _path(ref, self.module)
        return self.paths.get(path) if path is not None else None


def _expression_kind(text: str, start: int, scope: _Scope) -> str | None:
    """The kind ("a set", "an object", "an array in a set's order") of the expression at
    ``start``; None when not known."""
    rest = text[start:]
    if rest.startswith("set()"):
        return _SET
    if rest.startswith("["):
        end = _closing(text, start)
        bar = _top_level(text[start + 1 : end], "|") if end > 0 else -1
        if bar < 0:
            return None
        body = _flatten(text, start + 1 + bar + 1, end, -1)
        return _SET_ORDERED if _unordered(body, "", scope) in (_SET, _SET_ORDERED) else None
    if re.match(r"array\.concat\s*\(", rest):
        opening = start + rest.index("(")
        end = _closing(text, opening)
        args = text[opening + 1 : end] if end > 0 else ""
        comma = _top_level(args, ",")
        parts = [args[:comma], args[comma + 1 :]] if comma >= 0 else [args]
        ordered = any(_expression_kind(part.strip() + " ", 0, scope) == _SET_ORDERED for part in parts)
        return _SET_ORDERED if ordered else None
    if rest.startswith("{"):
        end = _closing(text, start)
        if end < 0:
            return None
        inner = text[start + 1 : end]
        # An object (literal or comprehension) has a top-level "key: value"; a set has none.
        return _OBJECT if _top_level_colon(inner) or not inner.strip() else _SET
    for builtins, kind in ((SET_BUILTINS, _SET), (OBJECT_BUILTINS, _OBJECT)):
        if any(re.match(rf"{re.escape(b)}\s*\(", rest) for b in builtins):
            return kind
    ref = re.match(rf"({_REF})\b(?!\s*[\[(.])", rest)
    return scope.kind(ref.group(1)) if ref else None


def _top_level_colon(inner: str) -> bool:
    depth = 0
    for index, char in enumerate(inner):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == ":" and depth == 0 and not inner.startswith("=", index + 1):
            return True
        elif char == "|" and depth == 0:
            return False  # a set comprehension's head ended without a colon
    return False


def _rule_kinds(text: str, module: Outline, scope: _Scope) -> dict[str, str]:
    """Full path -> kind of the rules this module defines (or makes objects of: ``a.b.c := 1``
    makes ``a`` and ``a.b`` objects, ``p[k] := v`` makes ``p`` one)."""
    found: dict[str, str] = {}
    if module.package is None:
        return found
    for head in module.heads:
        if head.function:
            continue
        statement = module.statement(text, head.start)
        written = _HEAD_REF.search(statement, len("default") if statement.startswith("default") else 0)
        if written is None:
            continue
        full = f"data.{module.package}.{head.path}"
        parts = full.split(".")
        for length in range(len(f"data.{module.package}".split(".")) + 1, len(parts)):
            found[".".join(parts[:length])] = _OBJECT
        after = statement[written.end() :]
        if re.match(r"\s+contains\b", after):
            found[full] = _SET
        elif "[" in written.group(0):
            found[full] = _OBJECT
        else:
            value = re.match(r"\s*(?::=|=(?!=))\s*", after)
            kind = _expression_kind(statement, written.end() + value.end(), scope) if value else None
            if kind is not None:
                found[full] = kind
    return found


def _local_kinds(text: str, scope: _Scope) -> dict[str, str]:
    """Names a module binds (``x := {...}``, rules and variables alike) to a set or an object."""
    found = dict(scope.local)
    for match in re.finditer(rf"(?<![\w.])({_NAME})\s*(?::=|=)(?!=)\s*", text):
        kind = _expression_kind(text, match.end(), scope)
        if kind is not None:
            found[match.group(1)] = kind
    return found


def _scopes(modules: tuple[tuple[str, str], ...]) -> list[tuple[str, str, _Scope]]:
    """(name, stripped text, scope) per module; kinds found to a fixed point over the policy."""
    stripped = [(name, strip(text)[0]) for name, text in modules]
    outlines = [outline(text) for _, text in stripped]
    paths: dict[str, str] = {}
    for module in outlines:  # a package is an object of its rules, and so is every prefix
        if module.package is not None:
            parts = f"data.{module.package}".split(".")
            paths.update({".".join(parts[:length]): _OBJECT for length in range(1, len(parts) + 1)})
    scopes = [_Scope(module, {}, paths) for module in outlines]
    for _round in range(_ROUNDS):  # a path's kind is never changed once found, so this ends
        changed = False
        for index, (_, text) in enumerate(stripped):
            scope = scopes[index]
            local = _local_kinds(text, scope)
            rules = {
                path: kind
                for path, kind in _rule_kinds(text, scope.module, scope).items()
                if path not in paths
            }
            if local != scope.local or rules:
                paths.update(rules)
                scopes[index] = _Scope(scope.module, local, paths)
                changed = True
        if not changed:
            break
    return [(name, text, scope) for (name, text), scope in zip(stripped, scopes, strict=True)]


def _comprehensions(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    """(opening, top-level "|", closing) of the outermost comprehensions in text[start:end]."""
    found = []
    index = start
    while index < end:
        if text[index] in "[{":
            close = _closing(text, index)
            bar = _top_level(text[index + 1 : close], "|") if 0 < close < end else -1
            if bar >= 0:
                found.append((index, index + 1 + bar, close))
                index = close + 1
                continue
        index += 1
    return found


def _flatten(text: str, start: int, end: int, keep: int) -> str:
    """text[start:end] with every comprehension that does not hold offset ``keep`` replaced, at
    the same length, by a placeholder of its kind (``[ ]``, ``{x }``, ``{: }``): what it
    iterates and binds is its own business."""
    out, position = [], start
    for opening, bar, close in _comprehensions(text, start, end):
        out.append(text[position:opening])
        if opening <= keep <= close:
            out.append(text[opening] + _flatten(text, opening + 1, close, keep) + text[close])
        else:
            width = close - opening - 1
            if text[opening] == "[":
                out.append("[" + " " * width + "]")
            else:
                marker = ":" if _top_level_colon(text[opening + 1 : bar]) else "x"
                out.append("{" + marker + " " * (width - 1) + "}")
        position = close + 1
    out.append(text[position:end])
    return "".join(out)


def _bound(variable: str, before: str) -> bool:
    """Whether ``variable`` already has a value where ``before`` ends (so ``x[variable]`` looks
    a key up rather than iterating): it occurs earlier, other than in a bare ``some``."""
    if variable == "_":
        return False
    return re.search(rf"(?<![\w.]){variable}\b", _SOME_DECLARATION.sub(" ", before)) is not None


def _unordered(body: str, before: str, scope: _Scope) -> str | None:
    """What a comprehension body iterates that rego-cpp orders differently from OPA: "a set",
    "an object", "walk", or None. ``before``: the statement up to the comprehension."""
    if re.search(r"(?<![\w.])walk\s*\(", body):
        return "walk"
    for match in _ITERATED.finditer(body):
        if match.group(1) is not None:
            kind = scope.kind(match.group(1))
        elif _bound(match.group(3) or match.group(4), before + body[: match.start()]):
            continue
        else:
            kind = scope.kind(match.group(2)) if match.group(2) is not None else _OBJECT
        if kind is not None:
            return kind
    for literal in re.finditer(r"\bin\s+(?=\{|set\(\))", body):
        return _expression_kind(body, literal.end(), scope) or _SET
    for builtins, kind in ((SET_BUILTINS, _SET), (OBJECT_BUILTINS, _OBJECT)):
        if any(re.search(rf"\bin\s+{re.escape(b)}\s*\(", body) for b in builtins):
            return kind
    return None


def _module_order_findings(name: str, text: str, scope: _Scope) -> list[Finding]:
    findings = []
    # Array comprehensions: `[head | body]`.
    for match in re.finditer(r"\[", text):
        end = _closing(text, match.start())
        if end < 0:
            continue
        opening = match.start()
        bar = _top_level(text[opening + 1 : end], "|")
        if bar < 0:
            continue
        statement = max((start for start in scope.module.starts if start <= opening), default=0)
        view = _flatten(text, statement, end + 1, opening)  # nested comprehensions flattened
        body = view[opening + 1 + bar + 1 - statement : end - statement]
        kind = _unordered(body, view[: opening - statement], scope)
        before = text[:opening].rstrip()
        where = f"{name}:{_line(text, match.start())}"
        if kind == "walk" and not _ORDER_FREE.search(before):
            findings.append(
                Finding(
                    "an array comprehension over walk (rego-cpp walks breadth first, OPA depth first)", where
                )
            )
        elif kind == _OBJECT and not _ORDER_FREE.search(before):
            findings.append(
                Finding(
                    "an array comprehension over an object the policy builds (rego-cpp keeps its order)",
                    where,
                )
            )
        elif kind in (_SET, _SET_ORDERED) and _ORDER_SHOWN.search(before):
            findings.append(
                Finding("an array comprehension over a set (rego-cpp keeps insertion order)", where)
            )
    # concat(sep, set) and sort(set) follow insertion order in rego-cpp.
    for match in re.finditer(r"(?<![\w.])(concat|sort)\s*\(", text):
        end = _closing(text, match.end() - 1)
        args = text[match.end() : end] if end > 0 else ""
        if match.group(1) == "concat":
            comma = _top_level(args, ",")
            args = args[comma + 1 :] if comma >= 0 else ""
        args = args.strip()
        kind = _expression_kind(args + " ", 0, scope) if args else None
        if kind == _SET or (kind == _SET_ORDERED and match.group(1) == "concat"):
            what = "a set" if kind == _SET else "an array built in a set's order"
            findings.append(
                Finding(
                    f"`{match.group(1)}` of {what} (rego-cpp keeps insertion order)",
                    f"{name}:{_line(text, match.start())}",
                )
            )
    # json.marshal / yaml.marshal of an array built in a set's order writes that order.
    for match in re.finditer(r"(?<![\w.])(?:json|yaml)\.marshal\s*\(", text):
        end = _closing(text, match.end() - 1)
        args = text[match.end() : end].strip() if end > 0 else ""
        if args and _expression_kind(args + " ", 0, scope) == _SET_ORDERED:
            findings.append(
                Finding(
                    "a marshalled array built in a set's order (rego-cpp keeps insertion order)",
                    f"{name}:{_line(text, match.start())}",
                )
            )
    return findings


def argument_key_findings(name: str, stripped: str) -> list[Finding]:
    """A comprehension in a function that indexes by one of the function's arguments
    (``f(k) := [v | v := m[k]]``): rego-cpp takes the argument for a new variable there and
    iterates every key (``[1, 2, 3]`` where OPA gives ``[1]``). Binding it first (``key := k``)
    is read right."""
    module = outline(stripped)
    findings = []
    for head in module.heads:
        if not head.function:
            continue
        statement = module.statement(stripped, head.start)
        opening = statement.find("(")
        closing = _closing(statement, opening)
        if opening < 0 or closing < 0:
            continue
        arguments = {
            argument.strip()
            for argument in _split_top_level(statement[opening + 1 : closing])
            if re.fullmatch(_NAME, argument.strip()) and argument.strip() != "_"
        }
        for _opening, bar, close in _all_comprehensions(statement, closing + 1, len(statement)):
            body = statement[bar + 1 : close]
            for argument in sorted(arguments):
                if re.search(rf"\[\s*{argument}\s*\]", body):
                    where = f"{name}:{_line(stripped, head.start + bar)}"
                    findings.append(
                        Finding(
                            f"a comprehension indexing by the function argument `{argument}` (rego-cpp "
                            f"iterates every key there; bind it first: `key := {argument}`)",
                            where,
                        )
                    )
    return findings


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    return [*parts, text[start:]]


def _all_comprehensions(text: str, start: int, end: int) -> list[tuple[int, int, int]]:
    """Every comprehension in text[start:end], nested ones included."""
    found = []
    for opening, bar, close in _comprehensions(text, start, end):
        found.append((opening, bar, close))
        found += _all_comprehensions(text, opening + 1, close)
    return found


def order_findings(modules: tuple[tuple[str, str], ...]) -> list[Finding]:
    """Where the policy's ``(name, text)`` modules iterate something rego-cpp orders differently
    from OPA in a way the decision shows (module docstring): sets and objects the policy
    builds, known across the whole policy (a ``contains`` rule of another module of the
    package, ``data.pkg.rule``, an import alias), joined into a string by an array
    comprehension, ``concat`` or ``sort``; and ``walk`` in an array comprehension."""
    return list(_order_findings(modules))


@functools.lru_cache(maxsize=16)
def _order_findings(modules: tuple[tuple[str, str], ...]) -> tuple[Finding, ...]:
    found: list[Finding] = []
    try:
        for name, text, scope in _scopes(modules):
            found += _module_order_findings(name, text, scope)
    except RecursionError:
        # Expressions nested deeper than Python's stack reads (review: ~330 nested
        # array.concat): what the check cannot read is refused, as a finding, not a traceback.
        where = modules[0][0] if modules else "the policy"
        return (Finding("expressions nested too deeply for the load-time order check", f"{where}:1"),)
    return tuple(found)


def _top_level(text: str, separator: str) -> int:
    """The index of the first ``separator`` outside any bracket, or -1."""
    depth = 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            return index
    return -1
