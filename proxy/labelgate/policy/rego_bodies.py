"""Body expressions rego-cpp evaluates unlike OPA: ``every`` bodies and negations.

All found by differential fuzzing of random policies against OPA (docs/EMBEDDED_COMPLIANCE.md)
and refused when the policy loads, each with a rewrite both engines read alike:

- ``not`` inside an ``every`` body: rego-cpp drops the negation (``every x in xs { not x ==
  1 }`` holds when ``xs`` holds 1). ``x != 1`` is read right.
- a comprehension inside an ``every`` body (``every f in fs { count([l | some l in f.labels;
  l == 1]) == 0 }`` held where OPA's does not), or inside a ``not`` expression (a local of the
  comprehension named like a key it reads, ``name := f.name``, is read as that key there).
- a name bound in one part of an ``else`` chain and named again in a later part: rego-cpp
  keeps the binding in the later bodies, where OPA starts afresh.
- ``input`` or ``data`` bound as a name (OPA refuses the policy; rego-cpp binds it).
- ``with`` on anything but the input: OPA's rule index filters on ``startswith`` and its
  kin before a ``with`` replacing them applies, and a ``with`` on part of a rule is an
  error in OPA that rego-cpp ignores.
- ``=`` with a bare name the body has not bound before: OPA compares a rule of that name,
  rego-cpp binds a new variable (``allow if admin = true`` held for every caller).
- a negated expression whose parts OPA evaluates before the negation. OPA's compiler takes
  every call, every operand of an operator other than ``==``/``=``, and every reference used
  as an index out of a ``not``: when one is undefined, the body fails. rego-cpp evaluates them
  under the ``not``, which then holds: ``allow if not input.user.risk > 50`` allowed a user
  without a risk score, ``not startswith(input.path, "/admin")`` a request without a path.
  Such a part must be a literal, a variable the body bound before the ``not``, or a rule that
  is always defined (a partial set or object rule, or one with a ``default``); anything else
  is refused, with the rewrite: bind it first (``risk := input.user.risk; not risk > 50``),
  which fails the body in both engines when the value is undefined.

Texts here are ``rego_text.strip``'s: comments blanked and each string literal a short
placeholder, at the same offsets.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from labelgate.policy.capabilities import Finding
from labelgate.policy.rego_text import _HEAD_REF, _NAME, Outline, _closing, _line, _path, outline, strip

NOT_IN_EVERY = "`not` inside an `every` (rego-cpp drops the negation there)"
COMPREHENSION_IN_EVERY = (
    "a comprehension inside an `every` (rego-cpp evaluates it wrong there: build it in a rule "
    "or a function of the element instead)"
)
COMPREHENSION_IN_NOT = (
    "a comprehension inside a `not` (rego-cpp can read its variables wrong there: bind it "
    "first, `c := count([...])`, then `not c > 0`)"
)
LOCAL_IN_ELSE = (
    "a name bound in one part of an `else` chain and named again in a later one (rego-cpp keeps "
    "its value there, OPA starts afresh): name them apart"
)
RESERVED_NAME_BOUND = (
    "`input` or `data` bound as a name (an import alias, a local, a `some`/`every` variable, a "
    "parameter or a rule): OPA refuses the policy, rego-cpp reads the policy's own value there"
)
WITH_BEYOND_INPUT = (
    "`with` replacing something other than the input (a builtin OPA's rule index reads before "
    "the `with` applies, or part of a rule, which rego-cpp ignores): run this policy with "
    "--engine opa"
)
UNIFIED_NAME = (
    "`=` with a name the body has not bound before (rego-cpp takes a rule's name there for a new "
    "variable, so `admin = true` holds for every caller): bind with `:=`, compare with `==`"
)
VALUE_IN_NOT = (
    "a value OPA evaluates before a `not` (a call, an operand, an index) written inside it: "
    "rego-cpp holds the `not` when the value is undefined, OPA fails the body; bind it first "
    "(`v := input.x; not v > 3`)"
)

_EVERY = re.compile(rf"\bevery\s+{_NAME}(?:\s*,\s*{_NAME})?\s+in(?![\w.])\s*")
_NOT = re.compile(r"(?<![\w.])not\b")
# Infix operators (and `in`'s `,`) at the top level of an expression; `-` only after an operand.
_OPERATOR = re.compile(r"==|!=|<=|>=|:=|<|>|=|\+|\*|/|%|&|\||(?<![\w.])in(?![\w.])|,|(?<=[\w)\]}\"\s])-")
_LITERAL = re.compile(r'-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|"\d+"|true|false|null')
_CALL = re.compile(rf"{_NAME}(?:\.{_NAME})*\s*\(")
# Whether a bare name or a reference's path is defined whatever the input (bound, or a rule
# that is always defined).
Defined = Callable[[str], bool]


def body_findings(name: str, stripped: str, modules: tuple[tuple[str, str], ...]) -> list[Finding]:
    """What this module's bodies hold that rego-cpp reads unlike OPA (module docstring).
    ``modules``: the whole policy's modules, for the rules that are always defined."""
    module = outline(stripped)
    always = _always_defined(modules)
    return (
        _every_findings(name, stripped)
        + _not_findings(name, stripped, module, always)
        + _else_findings(name, stripped, module)
        + _unification_findings(name, stripped, module)
        + _with_findings(name, stripped)
        + _reserved_name_findings(name, stripped)
    )


_RESERVED = r"(?:input|data)"
_BINDS_RESERVED = re.compile(
    "|".join(
        [
            rf"\bas\s+{_RESERVED}(?![\w.\[])",  # an import alias
            rf"(?<![\w.]){_RESERVED}\s*(?::=|=(?!=))",  # a local or a rule
            rf"\b(?:some|every)\s+(?:{_NAME}\s*,\s*)*{_RESERVED}(?![\w.\[])",  # a declaration
            rf"(?<![\w.]){_RESERVED}\s+contains\b",  # a partial set rule
            rf"^\s*{_RESERVED}\s*(?:\[|\bif\b)",  # a rule head
            rf"{_NAME}\s*\([^()]*(?<![\w.]){_RESERVED}\s*[,)]\s*(?::=|=|if\b|\{{)",  # a parameter
        ]
    ),
    re.M,
)


def _reserved_name_findings(name: str, stripped: str) -> list[Finding]:
    """``input`` or ``data`` bound as a name: OPA refuses the policy (a reserved name), rego-cpp
    binds it, so ``input := {"role": "admin"}`` made every caller an admin (found by fuzzing)."""
    return [
        Finding(RESERVED_NAME_BOUND, f"{name}:{_line(stripped, match.start())}")
        for match in _BINDS_RESERVED.finditer(stripped)
    ]


_WITH_TARGET = re.compile(rf"(?<![\w.])with\s+({_NAME}(?:\.{_NAME}|\[[^\]]*\])*)\s+as(?![\w.])")


def _with_findings(name: str, stripped: str) -> list[Finding]:
    """``with`` on anything but the input: OPA's rule index filters on ``startswith`` and
    ``glob.match`` before a ``with`` replacing them applies (rego-cpp applies it), and a
    ``with`` on part of a rule is an error in OPA that rego-cpp ignores (found by fuzzing)."""
    findings = []
    for match in _WITH_TARGET.finditer(stripped):
        target = match.group(1)
        if target != "input" and not target.startswith(("input.", "input[")):
            findings.append(Finding(WITH_BEYOND_INPUT, f"{name}:{_line(stripped, match.start())}"))
    return findings


# `=` alone: not `==`, `:=`, `!=`, `<=`, `>=`.
_UNIFY = re.compile(r"(?<![=:!<>])=(?!=)")


def _unification_findings(name: str, stripped: str, module: Outline) -> list[Finding]:
    """``=`` in a body with a bare name on a side that the body has not bound before: OPA
    compares a rule of that name, rego-cpp binds a new variable (found by fuzzing)."""
    findings = []
    for start in module.starts:
        statement = module.statement(stripped, start)
        flat = _mask(statement)
        body = re.search(r"(?<![\w.])if(?![\w.])|\{", flat)
        if body is None:
            continue
        for unify in _UNIFY.finditer(statement, body.start()):
            at = start + unify.start()
            left = stripped[_expression_start(stripped, start, at) : at].strip()
            right_end = _expression_end(stripped, at + 1)
            right = stripped[at + 1 : right_end].strip()
            bound = _bound_before(stripped, start, _expression_start(stripped, start, at), module)
            for side in (left, right):
                if re.fullmatch(_NAME, side) and side not in bound and side != "_":
                    findings.append(Finding(UNIFIED_NAME, f"{name}:{_line(stripped, at)}"))
                    break
    return findings


def _expression_start(text: str, start: int, at: int) -> int:
    """Where the expression holding offset ``at`` begins: after the ``;``, line break, ``{``,
    ``[``, ``(`` or ``|`` before it at its own depth (``start``: the statement's start)."""
    depth = 0
    for index in range(at - 1, start - 1, -1):
        char = text[index]
        if char in ")]}":
            depth += 1
        elif char in "([{":
            if depth == 0:
                return index + 1
            depth -= 1
        elif depth == 0 and (
            char in ";|" or (char == "\n" and not _GOES_ON.search(text[start:index].rstrip()))
        ):
            return index + 1
    return start


def _else_findings(name: str, stripped: str, module: Outline) -> list[Finding]:
    """A name bound in one part of an ``else`` chain and named again in a later part: rego-cpp
    keeps the binding in the later bodies, where OPA starts afresh (``role := "admin"`` in the
    first body made ``role == "admin"`` in the next hold for every caller; ``x`` bound in the
    first made a later ``count([1 | input.blocked[x]])`` look up only that key)."""
    findings = []
    for start in module.starts:
        statement = module.statement(stripped, start)
        flat = _mask(statement)
        elses = [m.start() for m in re.finditer(r"(?<![\w.])else(?![\w.])", flat)]
        if not elses:
            continue
        head = _HEAD_REF.match(statement)
        edges = [0, *elses, len(statement)]
        parts = [statement[begin:end] for begin, end in itertools.pairwise(edges)]
        for index, part in enumerate(parts[:-1]):
            bound = _bound_in(part) - ({head.group(0)} if head is not None and index == 0 else set())
            for local in sorted(bound):
                for later_index in range(index + 1, len(parts)):
                    used = _first_use(parts[later_index], local)
                    if used is not None:
                        offset = start + edges[later_index] + used
                        findings.append(Finding(LOCAL_IN_ELSE, f"{name}:{_line(stripped, offset)}"))
                        break
    return findings


def _first_use(part: str, local: str) -> int | None:
    """Where ``part`` first names ``local`` other than by declaring it afresh (``local :=``,
    ``some local``, ``some ..., local in``: rego-cpp starts afresh there too); None if never."""
    name = re.escape(local)
    first = re.search(rf"(?<![\w.]){name}(?![\w])", part)
    if first is None:
        return None
    declared = re.compile(
        rf"(?<![\w.]){name}\s*:=|\bsome\s+(?:{_NAME}\s*,\s*)*{name}(?:\s*,\s*{_NAME})*(?![\w])"
    )
    found = declared.search(_top_level_only(part))
    if found is not None and found.start() <= first.start() <= found.end():
        return None
    return first.start()


def _top_level_only(part: str) -> str:
    """``part`` with what is nested in it blanked, its bodies' own text kept: a declaration in a
    comprehension or an ``every`` body is that block's, not the body's."""
    flat = list(_mask(part))
    for body in re.finditer(r"\{", "".join(flat)):
        close = _closing(part, body.start())
        if close > 0:
            flat[body.start() + 1 : close] = _without_closed_blocks(part, body.start() + 1, close)
    return "".join(flat)


def _bound_in(text: str) -> set[str]:
    """Names ``text`` binds: assigned, declared by ``some``, iterated as an index (``m[k]``)."""
    bound = {m.group(1) for m in re.finditer(rf"(?<![\w.])({_NAME})\s*(?::=|=(?!=))", text)}
    for declared in re.finditer(rf"\bsome\s+({_NAME}(?:\s*,\s*{_NAME})*)", text):
        bound.update(part.strip() for part in declared.group(1).split(","))
    bound.update(m.group(1) for m in re.finditer(rf"(?<=[\w\])])\[\s*({_NAME})\s*\]", text))
    return bound - {"_", "input", "data", "else"}


def _every_findings(name: str, stripped: str) -> list[Finding]:
    """The body of an ``every`` is the last ``{...}`` of its expression: its domain may be an
    expression with sets in it (``every x in {"a"} | {"b"} { ... }``)."""
    findings = []
    for match in _EVERY.finditer(stripped):
        where = f"{name}:{_line(stripped, match.start())}"
        end = _expression_end(stripped, match.end())
        # A `with` after the body may replace something with a `{...}` literal: cut there.
        cut = re.search(r"(?<![\w.])with(?![\w.])", _mask(stripped[match.end() : end]))
        end = match.end() + cut.start() if cut is not None else end
        groups = [m.start() for m in re.finditer(r"\{", _mask(stripped[match.end() : end]))]
        body = match.end() + groups[-1] if groups else -1
        close = _closing(stripped, body) if body >= 0 else -1
        if close < 0 or stripped[close + 1 : end].strip():
            findings.append(Finding("an `every` whose body cannot be read", where))
        elif _NOT.search(stripped, body, close):
            findings.append(Finding(NOT_IN_EVERY, where))
        elif _holds_comprehension(stripped, body + 1, close):
            findings.append(Finding(COMPREHENSION_IN_EVERY, where))
    return findings


def _not_findings(name: str, stripped: str, module: Outline, always: frozenset[str]) -> list[Finding]:
    findings = []
    for match in _NOT.finditer(stripped):
        where = f"{name}:{_line(stripped, match.start())}"
        # Rego reads on from `not` over line breaks (and blanked comments) to its expression.
        begin = match.end() + len(stripped[match.end() :]) - len(stripped[match.end() :].lstrip())
        end = _expression_end(stripped, begin)
        if _holds_comprehension(stripped, begin, end):
            findings.append(Finding(COMPREHENSION_IN_NOT, where))
            continue
        statement = max((start for start in module.starts if start <= match.start()), default=0)
        bound = _bound_before(stripped, statement, match.start(), module)
        expression = stripped[begin:end].strip()
        if not expression or not _evaluated_alike(expression, _defined_by(bound, module, always)):
            findings.append(Finding(VALUE_IN_NOT, where))
    return findings


def _defined_by(bound: set[str], module: Outline, always: frozenset[str]) -> Defined:
    return lambda ref: ref in bound or _path(ref, module) in always


def _evaluated_alike(expression: str, is_defined: Defined) -> bool:
    """Whether OPA and rego-cpp read ``not <expression>`` alike (module docstring)."""
    if re.search(r"(?<![\w.])with(?![\w.])", expression):
        return False  # what `with` replaces is evaluated first too: not read here
    operators = [m for m in _OPERATOR.finditer(_mask(expression)) if m.group(0) != ","]
    parts = _split(expression, [m.span() for m in _OPERATOR.finditer(_mask(expression))])
    if not operators:  # one term: a reference, or a call of values
        term = expression.strip()
        call = _CALL.match(term)
        if call and _closing(term, call.end() - 1) == len(term) - 1:
            arguments = _split_commas(term[call.end() : -1])
            return all(_value(argument, is_defined) for argument in arguments)
        return _reference(term, is_defined)
    if all(m.group(0) in ("==", "=") for m in operators):
        return all(not _CALL.search(part) and _reference(part.strip(), is_defined) for part in parts)
    return all(_value(part, is_defined) for part in parts)


def _value(term: str, is_defined: Defined) -> bool:
    """A literal (composites of values included), a bound variable or an always-defined rule."""
    term = term.strip()
    if not term or _LITERAL.fullmatch(term):
        return True
    if term[0] in "[{" and _closing(term, 0) == len(term) - 1:
        inner = term[1:-1]
        return all(_value(piece, is_defined) for piece in _pieces(inner))
    if term.startswith("set()"):
        return term == "set()"
    return bool(re.fullmatch(_NAME, term)) and is_defined(term)


def _reference(term: str, is_defined: Defined) -> bool:
    """A reference whose every index is a value (``input.a[k]``, ``tables.labels[label]``)."""
    head = re.match(rf"{_NAME}(?:\.{_NAME})*", term)
    if head is None:
        return _value(term, is_defined)
    index = head.end()
    while index < len(term):
        if term[index] == "[":
            close = _closing(term, index)
            if close < 0 or not _value(term[index + 1 : close], is_defined):
                return False
            index = close + 1
        elif term[index] == "." and (key := re.match(_NAME, term[index + 1 :])) is not None:
            index += 1 + key.end()
        else:
            return False  # a call, or what the scanner cannot read
    return True


def _bound_before(text: str, start: int, end: int, module: Outline) -> set[str]:
    """Names bound where ``end`` is, in the body holding it (from its ``{``, or from the ``if``
    of a body without braces) and, inside a comprehension, in its body and in the body around
    it: assigned, declared by ``some ... in``, iterated as an index (``m[k]``), or the
    function's parameters. What closed blocks before ``end`` bind (comprehensions, ``every``
    bodies, an earlier ``else`` body) is their own."""
    opening = _innermost_open(text, start, end)
    if opening is None:
        heads = [m.end() for m in re.finditer(r"(?<![\w.])if(?![\w.])", text[start:end])]
        scope = start + (heads[-1] if heads else 0)
        outer: set[str] = set()
    elif "|" in _mask(text[opening + 1 : end]):  # a comprehension's body: and what is around it
        scope = opening + 1 + _mask(text[opening + 1 : end]).index("|") + 1
        outer = _bound_before(text, start, opening, module)
    else:
        scope, outer = opening + 1, set()
    bound = _bound_in(_without_unbinding(_without_closed_blocks(text, scope, end)))
    return (bound | outer | _parameters(text, start)) - {"_", "input", "data"}


def _without_unbinding(text: str) -> str:
    """``text`` with what binds nothing when its values are undefined blanked: earlier
    negations (``not banned = "x"`` compares a rule, and holds when it is undefined) and
    templates (an undefined value in one renders as ``<undefined>``), both quoted strings and
    templates being quoted in stripped text."""
    text = re.sub(r'"[^"]*"', lambda quoted: " " * len(quoted.group(0)), text)
    for negation in reversed(list(_NOT.finditer(text))):
        begin = negation.end() + len(text[negation.end() :]) - len(text[negation.end() :].lstrip())
        end = _expression_end(text, begin)
        text = text[: negation.start()] + " " * (end - negation.start()) + text[end:]
    return text


def _innermost_open(text: str, start: int, end: int) -> int | None:
    """The bracket opened and not closed between ``start`` and ``end`` nearest to ``end``
    (parentheses left out: a ``not`` is never inside one)."""
    stack: list[int] = []
    for index in range(start, end):
        char = text[index]
        if char in "([{":
            stack.append(index)
        elif char in ")]}" and stack:
            stack.pop()
    opened = [index for index in stack if text[index] != "("]
    return opened[-1] if opened else None


def _parameters(text: str, start: int) -> set[str]:
    """A function's parameters, from its head (every body of its ``else`` chain has them)."""
    head = _HEAD_REF.match(text, start)
    if head is None or not text[head.end() :].lstrip().startswith("("):
        return set()
    opening = text.index("(", head.end())
    closing = _closing(text, opening)
    if closing < 0:
        return set()
    return {p.strip() for p in text[opening + 1 : closing].split(",") if re.fullmatch(_NAME, p.strip())}


def _always_defined(modules: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """Full paths of rules every definition of which is a partial set or object rule, or that
    have a ``default``: defined whatever the input."""
    kinds: dict[str, set[str]] = {}
    for _, raw in modules:
        text = strip(raw)[0]
        module = outline(text)
        if module.package is None:
            continue
        for head in module.heads:
            if head.function:
                continue
            statement = module.statement(text, head.start)
            written = _HEAD_REF.search(statement, len("default") if statement.startswith("default") else 0)
            after = statement[written.end() :] if written else ""
            if statement.startswith("default"):
                kind = "default"
            elif re.match(r"\s+contains\b", after) or (written and "[" in written.group(0)):
                kind = "partial"
            else:
                kind = "total" if _total(after) else "complete"
            kinds.setdefault(f"data.{module.package}.{head.path}", set()).add(kind)
    return frozenset(
        path
        for path, found in kinds.items()
        if "default" in found or found <= {"partial"} or found == {"total"}
    )


def _total(after_head: str) -> bool:
    """Whether a complete rule's ``:= value`` (no body) is defined whatever the input: comprehensions
    and literals, joined by ``|`` or ``&`` (``x := {a | ...} | {b | ...}``)."""
    value = re.match(r"\s*:=\s*", after_head)
    if value is None:
        return False
    text = after_head[value.end() :].rstrip()
    flat = _mask(text)
    if re.search(r"(?<![\w.])(?:if|else)(?![\w.])", flat):
        return False
    pieces = _split(text, [m.span() for m in re.finditer(r"[|&]", flat)])
    for piece in (piece.strip() for piece in pieces):
        comprehension = (
            piece[:1] in ("[", "{") and _closing(piece, 0) == len(piece) - 1 and "|" in _mask(piece[1:-1])
        )
        if not (comprehension or _LITERAL.fullmatch(piece)):
            return False
    return True


# Where Rego reads an expression on into the next line: one ending with an infix operator,
# `in` or `,`, or a next line starting with one (or with `|` or `with`).
_GOES_ON = re.compile(r"(?:==|!=|<=|>=|<|>|=|\+|-|\*|/|%|&|\||,|(?<![\w.])in)\s*$")
_GOES_ON_FROM = re.compile(r"\s*(?:==|!=|<=|>=|<|>|=|\+|-|\*|/|%|&|\||,|(?:in|with)(?![\w.]))")


def _goes_on(text: str, start: int, index: int) -> bool:
    """At the line break at ``index``: what came before (blank lines and blanked comments left
    out) ends in an operator, or the next line starts with one."""
    return bool(_GOES_ON.search(text[start:index].rstrip()) or _GOES_ON_FROM.match(text, index + 1))


def _expression_end(text: str, start: int) -> int:
    """Where the expression from ``start`` ends: a ``;``, or a line break outside brackets that
    Rego does not read on over (``_GOES_ON``), or the bracket closing the body it is in."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                return index
            depth -= 1
        elif depth == 0 and (char == ";" or (char == "\n" and not _goes_on(text, start, index))):
            return index
    return len(text)


def _holds_comprehension(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] holds a comprehension (a ``[``/``{`` with a ``|`` at its own level)."""
    for index in range(start, end):
        if text[index] in "[{":
            close = _closing(text, index)
            if close < 0 or close > end:
                return True  # unreadable: counted as one
            if "|" in _mask(text[index + 1 : close]):
                return True
    return False


def _mask(text: str) -> str:
    """``text`` with what is inside its brackets blanked (same length): its top level only."""
    out, depth = [], 0
    for char in text:
        if char in "([{":
            out.append(char if depth == 0 else " ")
            depth += 1
        elif char in ")]}":
            depth -= 1
            out.append(char if depth == 0 else " ")
        else:
            out.append(char if depth == 0 else " ")
    return "".join(out)


def _split(text: str, spans: list[tuple[int, int]]) -> list[str]:
    parts, position = [], 0
    for start, end in spans:
        parts.append(text[position:start])
        position = end
    return [*parts, text[position:]]


def _split_commas(text: str) -> list[str]:
    flat = _mask(text)
    return _split(text, [(m.start(), m.end()) for m in re.finditer(",", flat)])


def _pieces(inner: str) -> list[str]:
    flat = _mask(inner)
    return _split(inner, [(m.start(), m.end()) for m in re.finditer("[,:]", flat)])


def _without_closed_blocks(text: str, start: int, end: int) -> str:
    """text[start:end] with every ``{...}`` and every comprehension that closed before ``end``
    blanked: what they bind is not bound after them."""
    out, index = [], start
    while index < end:
        if text[index] in "[{":
            close = _closing(text, index)
            if 0 < close < end and (text[index] == "{" or "|" in _mask(text[index + 1 : close])):
                out.append(" " * (close + 1 - index))
                index = close + 1
                continue
        out.append(text[index])
        index += 1
    return "".join(out)
