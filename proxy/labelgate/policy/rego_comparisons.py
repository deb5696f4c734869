"""Orderings the embedded engine does not share with OPA, refused when a policy loads.

Found by the review of issue 12 (a fail-open each), and refused unless the text shows that
OPA and rego-cpp read them alike:

- an ordering comparison (``<``, ``>``, ``<=``, ``>=``, and ``lt``, ``gt``, ``lte``, ``gte``
  called by name) unless both sides are shown to be numbers. OPA orders any two values (a
  string above every number, strings by code point, arrays element by element); rego-cpp
  holds a comparison across types false and orders strings and arrays by their JSON text
  (``"a" < "a!"`` is false there). ``deny if input.subject.attributes.risk_score > 50`` with
  the claim ``"risk_score": "90"`` (a string) denied in OPA and allowed in rego-cpp. Numbers
  compare alike (docs/EMBEDDED_COMPLIANCE.md has the one caveat, beyond 2^53). A side is a
  number when it is:

  - a number literal (any side is read inside its parentheses);
  - a call of a ``NUMBER_BUILTINS`` builtin (resolved as Rego resolves it: not the
    policy's own function, not through an import alias);
  - a sum, product or quotient (``+``, ``*``, ``/`` take numbers only: on anything else OPA
    has no value and rego-cpp an error, a deny), or a difference one side of which is a
    number (``-`` of two sets is their difference): ``count(s) - input.n >= 0``;
  - a name the same body bound once before, by ``name := <such a side>``;
  - a complete rule every definition of which (``default`` included, and every ``else``
    value) is ``name := <such a side>`` or ``name = ...``, with or without a body:
    ``n := count(input.fields)``, then ``n >= 0``. It is read where it is referred to by its
    bare name in its own package (when the statement binds no local of that name: a ``:=``,
    ``some``, ``every``, a parameter or an index), by ``data.<package>.<rule>`` or through an
    import alias; not when the rule has partial or function definitions, rules or a package
    below it (it would be an object), or a value naming a local (``n := x if { x := ... }``).
    A ``with`` on anything but the input, which could put a string in its place, is refused
    anyway (rego_bodies.WITH_BEYOND_INPUT), and data at the rule's path is a conflict OPA's
    compiler refuses (opa_check.py);
  - a term the same body checked before with ``is_number(term)``, written as an expression
    of its own (not negated, not part of another expression, no ``with``), when the
    comparison's expression has no ``with`` and the term no ``_``: a non-number fails the
    body in both engines before the comparison is reached.

  "The same body" is the innermost rule body, ``else`` body, ``every`` body or comprehension
  body holding the comparison (a comprehension's head: its body), or, without braces, what
  follows the last ``if``. A ``{`` that is not a body (an object or set literal) counts as
  one, which only refuses more. The rewrite the refusal names: ``is_number(x); x > 50``
  (the wasm engine loads it too), or a difference, as the default pack writes it
  (rego/labelgate/decision/approval.rego).

- an array comprehension over a set the policy builds, unless it is the argument of
  ``count``, ``sort``, ``max`` or ``min`` or the right side of a membership ``x in [...]``:
  OPA iterates a set sorted, rego-cpp in the order it was built, so
  ``[g | some g in {g | some g in input.subject.groups}][0]`` was another group there (a
  deny in OPA, an allow in rego-cpp). Which values are sets is read as ``rego_order`` reads
  it; where the array is joined into a string ``rego_order`` refuses it already. The rewrite:
  ``sort([...])``. OPA's wasm runtime iterates sets in its own hash order too: the wasm
  engine refuses the same forms (wasm_checks.set_order_findings).

Texts here are ``rego_text.strip``'s: comments blanked, string literals short placeholders.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from labelgate.policy import rego_order
from labelgate.policy.capabilities import Finding
from labelgate.policy.rego_bodies import (
    _EVERY,
    _GOES_ON,
    _GOES_ON_FROM,
    _bound_in,
    _expression_end,
    _expression_start,
    _mask,
    _parameters,
    _without_closed_blocks,
    _without_unbinding,
)
from labelgate.policy.rego_text import (
    _DOTTED,
    _HEAD_REF,
    _NAME,
    Definitions,
    Outline,
    _closing,
    _line,
    _path,
    _resolve,
    definitions,
    outline,
    strip,
)

# Builtins whose value, when they have one, is a number in OPA and in rego-cpp, whatever
# their arguments (a wrong argument is an error in both: the engine runs rego-cpp with
# strict builtin errors). Only builtins the embedded engine loads (SUPPORTED_BUILTINS):
# `sum` and `product` are out (rego-cpp returns false for non-numbers), `max`/`min` return
# whatever the collection holds, `abs`, `ceil`, `floor`, `round`, `to_number` and the time
# and units parsers are refused by name anyway (capabilities.INEXACT_BUILTINS).
NUMBER_BUILTINS = frozenset({"count", "strings.count"})

# The ordering builtins by name, and the operators they are written as.
ORDERING_CALLS = {"lt": "<", "gt": ">", "lte": "<=", "gte": ">="}

UNPROVEN_COMPARISON = (
    "an ordering comparison (`<`, `>`, `<=`, `>=`) of a value not shown to be a number (OPA "
    "orders any two values, a string above every number; rego-cpp holds a comparison across "
    "types false and orders strings and arrays by their JSON text): check it first, "
    "`is_number(x); x > 50`, or run this policy with --engine wasm or --engine opa"
)
SET_ORDER = (
    "an array comprehension over a set, used other than by `count`, `sort`, `max`, `min` or "
    "`in` (rego-cpp keeps the order the set was built in, OPA sorts it, so its elements come "
    "in another order: `[g | some g in s][0]` is another element); wrap it in `sort(...)`, or "
    "run this policy with --engine opa"
)

_ORDERING = re.compile(r"<=|>=|<|>")
# What ends an operand of an ordering comparison: what binds less tightly than a comparison.
_SEPARATOR = re.compile(
    r":=|==|!=|<=|>=|<|>|=|,|:|(?<![\w.])(?:in|if|else|not|some|every|with|as|contains|default)(?![\w.])"
)
_RELATIONS = frozenset({"==", "!=", "<=", ">=", "<", ">"})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WITH = re.compile(r"(?<![\w.])with(?![\w.])")
# Words after which Rego reads on into the next line.
_CONTINUING = re.compile(r"(?<![\w.])(?:if|else|in|not|some|every|with|as|contains|default)$")
_DEPTH = 8  # names bound to names bound to ...: deeper chains are not followed (refused)


def comparison_findings(
    name: str, stripped: str, defined: Definitions, modules: tuple[tuple[str, str], ...] = ()
) -> list[Finding]:
    """Every ordering comparison of this module whose sides are not both shown to be numbers;
    ``modules``: the whole policy (its rules whose value is a number count), this one alone
    when empty."""
    module = outline(stripped)
    numbers = number_rules(modules or ((name, stripped),))
    findings = []
    for site in _comparisons(stripped, module, defined):
        reader = _Reader(stripped, module, defined, site.statement, numbers)
        if not all(reader.is_number(side, site.position, site.with_) for side in site.sides):
            findings.append(Finding(UNPROVEN_COMPARISON, f"{name}:{site.line}"))
    return findings


@dataclass(frozen=True)
class _Site:
    sides: tuple[str | None, ...]  # None: a side the scanner cannot take for a term
    position: int  # where the comparison's expression starts: what the body did before counts
    statement: int
    with_: bool  # the expression has a `with`: what a guard checked may not be what it compares
    line: int


def _comparisons(text: str, module: Outline, defined: Definitions) -> list[_Site]:
    """Every ordering comparison of ``text``: the operators, and the builtins called by name."""
    sites = []
    for operator in _ORDERING.finditer(text):
        statement = max((s for s in module.starts if s <= operator.start()), default=0)
        begin = _expression_start(text, statement, operator.start())
        end = _expression_end(text, operator.end())
        sides: tuple[str | None, str | None] = (
            _left_side(text, statement, begin, operator.start()),
            _right_side(text, statement, operator.end(), end),
        )
        with_ = bool(_WITH.search(_mask(text[begin:end])))
        sites.append(_Site(sides, begin, statement, with_, _line(text, operator.start())))
    for call in re.finditer(rf"(?<![\w.])({_DOTTED})\(", text):
        called, own = _resolve(call.group(1), module, defined)
        if own or called not in ORDERING_CALLS:
            continue
        closing = _closing(text, call.end() - 1)
        statement = max((s for s in module.starts if s <= call.start()), default=0)
        begin = _expression_start(text, statement, call.start())
        arguments = _top_level_split(text[call.end() : closing]) if closing > 0 else []
        sides = (arguments[0], arguments[1]) if len(arguments) >= 2 else (None, None)
        with_ = bool(_WITH.search(_mask(text[begin : _expression_end(text, call.start())])))
        sites.append(_Site(sides, begin, statement, with_, _line(text, call.start())))
    return sites


def _left_side(text: str, statement: int, begin: int, operator: int) -> str | None:
    """The left side of the comparison whose operator starts at ``operator``, in the expression
    starting at ``begin``; None when it is not a term: another comparison (Rego reads
    ``a < b < c`` as ``(a < b) < c``), a union cut at the expression's start (``s | t > 1``), a
    line going on from the one before (``x := a`` then ``-2 > 3`` is ``x := (a - 2) > 3``)."""
    before = text[:begin].rstrip(" \t")
    if before.endswith("|") and not _is_bar(text, statement, len(before) - 1):
        return None
    if before.endswith("\n") and re.match(r"[ \t]*(?:[-+*/%&|<>=!]|in\b|with\b)", text[begin:]):
        return None
    separators = list(_SEPARATOR.finditer(_mask(text[begin:operator])))
    if not separators:
        return text[begin:operator]
    last = separators[-1]
    return None if last.group(0) in _RELATIONS else text[begin + last.end() : operator]


def _right_side(text: str, statement: int, operator_end: int, end: int) -> str:
    """The right side: up to the first separator, or to the bar of the comprehension it is in."""
    flat = _mask(text[operator_end:end])
    found = _SEPARATOR.search(flat)
    cut = operator_end + found.start() if found is not None else end
    for bar in re.finditer(r"\|", flat[: cut - operator_end]):
        if _is_bar(text, statement, operator_end + bar.start()):
            return text[operator_end : operator_end + bar.start()]
    return text[operator_end:cut]


def _is_bar(text: str, statement: int, at: int) -> bool:
    """Whether the ``|`` at ``at`` is the bar of the comprehension it is in (the first ``|``
    at the top level of the innermost bracket around it), not a union."""
    stack: list[int] = []
    for index in range(statement, at):
        if text[index] in "([{":
            stack.append(index)
        elif text[index] in ")]}" and stack:
            stack.pop()
    if not stack or text[stack[-1]] == "(" or _rule_body(text, stack[-1]):
        return False
    opening = stack[-1]
    return _mask(text[opening + 1 : at + 1]).find("|") == at - opening - 1


def _top_level_split(text: str) -> list[str]:
    flat = _mask(text)
    edges = [m.start() for m in re.finditer(",", flat)]
    starts = [0, *(edge + 1 for edge in edges)]
    ends = [*edges, len(text)]
    return [text[start:stop] for start, stop in zip(starts, ends, strict=True)]


def _rule_body(text: str, opening: int) -> bool:
    """Whether the ``{`` at ``opening`` opens a body (a rule's, after ``if`` or ``else``, or an
    ``every``'s): a ``|`` at its top level is a union, not a comprehension's bar."""
    return opening in _bodies(text)


@functools.lru_cache(maxsize=8)
def _bodies(text: str) -> frozenset[int]:
    found = {m.end() - 1 for m in re.finditer(r"(?<![\w.])(?:if|else)\s*\{", text)}
    for every in _EVERY.finditer(text):
        # As rego_bodies reads it: the body is the last `{...}` of the expression, before a `with`.
        end = _expression_end(text, every.end())
        cut = _WITH.search(_mask(text[every.end() : end]))
        end = every.end() + cut.start() if cut is not None else end
        groups = [m.start() for m in re.finditer(r"\{", _mask(text[every.end() : end]))]
        if groups:
            found.add(every.end() + groups[-1])
    return frozenset(found)


class _Reader:
    """Reads whether a side is a number, in the body holding a position (module docstring)."""

    def __init__(
        self,
        text: str,
        module: Outline,
        defined: Definitions,
        statement: int,
        numbers: frozenset[str] = frozenset(),
    ) -> None:
        self.text = text
        self.module = module
        self.defined = defined
        self.statement = statement
        self.numbers = numbers  # full paths of the rules whose value is a number (number_rules)
        self._locals: set[str] | None = None

    def is_number(self, side: str | None, position: int, with_: bool, depth: int = 0) -> bool:
        if side is None or depth > _DEPTH:
            return False
        side = side.strip()
        if not side or _SEPARATOR.search(_mask(side)) or re.search(r"[|&%]", _mask(side)):
            return False
        if _NUMBER.fullmatch(side):
            return True
        if not with_ and self._guarded(side, position):
            return True
        split = _arithmetic(side)
        if split is not None:
            left, operator, right = split
            if not left.strip() or not right.strip():
                return False
            if operator != "-":
                return True  # `+`, `*`, `/` take numbers only, in OPA and in rego-cpp
            # `-` is a set difference too: a number when one side is
            return any(self.is_number(part, position, with_, depth + 1) for part in (left, right))
        if side[0] == "(" and _closing(side, 0) == len(side) - 1:
            return self.is_number(side[1:-1], position, with_, depth + 1)
        call = re.match(rf"({_DOTTED})\(", side)
        if call and _closing(side, call.end() - 1) == len(side) - 1:
            called, own = _resolve(call.group(1), self.module, self.defined)
            return not own and called in NUMBER_BUILTINS
        if re.fullmatch(_NAME, side):
            return self._bound_to_number(side, position, depth) or self._number_rule(side)
        if re.fullmatch(_DOTTED, side):
            return self._number_rule(side)
        return False

    def _number_rule(self, ref: str) -> bool:
        """Whether ``ref`` names one of ``numbers``'s rules as Rego resolves it: not when its
        first name is (or may be) a local of the statement, which shadows a rule."""
        first = ref.split(".", 1)[0]
        if first != "data" and first in self._statement_locals():
            return False
        path = _path(ref, self.module)
        return path is not None and path in self.numbers

    def _statement_locals(self) -> set[str]:
        """Every name the statement may bind anywhere (more than it binds: what is read
        here as a local is never read as a rule)."""
        if self._locals is None:
            statement = self.module.statement(self.text, self.statement)
            self._locals = _declared(statement) | _parameters(self.text, self.statement)
        return self._locals

    def _scope(self, position: int) -> tuple[int, int]:
        """(start, end) of the body holding ``position``, where what counts must end: the body
        up to ``position``, or a comprehension's whole body when ``position`` is in its head
        (the head is evaluated for each of the body's results)."""
        text, stack = self.text, []
        for index in range(self.statement, position):
            if text[index] in "([{":
                stack.append(index)
            elif text[index] in ")]}" and stack:
                stack.pop()
        for opening in reversed(stack):
            if text[opening] == "(":
                continue  # parentheses and array literals bind nothing: the body goes on outside
            closing = _closing(text, opening)
            bar = _mask(text[opening + 1 : closing]).find("|") if closing > 0 else -1
            bar = -1 if _rule_body(text, opening) else bar
            if bar >= 0:
                body = opening + 1 + bar + 1
                return (body, position) if position >= body else (body, closing)
            if text[opening] == "{":
                return opening + 1, position
        flat = _mask(text[self.statement : position])
        heads = [m.end() for m in re.finditer(r"(?<![\w.])if(?![\w.])", flat)]
        return self.statement + (heads[-1] if heads else 0), position

    def _own_expressions(self, position: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
        """(start, end of the match) of each match of ``pattern`` that starts an expression of
        its own in the body holding ``position`` and ends there: at the body's top level, not
        in a closed block or a negation, after the body's start, a ``;`` or a line break
        where the line before does not go on."""
        start, end = self._scope(position)
        visible = _mask(_without_unbinding(_without_closed_blocks(self.text, start, end)))
        found = []
        for match in pattern.finditer(visible):
            before = self.text[start : start + match.start()].rstrip(" \t")
            if before and before[-1] not in ";\n":
                continue
            code = before.rstrip()
            if code and not code.endswith(";") and (_GOES_ON.search(code) or _CONTINUING.search(code)):
                continue
            found.append((start + match.start(), start + match.end()))
        return found

    def _ends_alone(self, end: int) -> bool:
        """Whether the expression ending at ``end`` is followed by nothing that goes on with it."""
        rest = re.match(r"[ \t]*(.?)", self.text[end:], re.S)
        assert rest is not None
        after = rest.group(1)
        if after == "\n":
            return not _GOES_ON_FROM.match(self.text, end + rest.end())
        return after in ("", ";", "}", "]")

    def _guarded(self, term: str, position: int) -> bool:
        """Whether the body checked ``term`` with ``is_number(term)`` before ``position``."""
        wanted = "".join(term.split())
        if re.search(r"(?<![\w.])_(?![\w])", wanted):
            return False  # every `_` is a variable of its own
        if _resolve("is_number", self.module, self.defined) != ("is_number", False):
            return False
        _start, end = self._scope(position)
        for _begin, opening in self._own_expressions(position, _GUARD):
            closing = _closing(self.text, opening - 1)
            argument = "".join(self.text[opening:closing].split())
            if 0 < closing < end and self._ends_alone(closing + 1) and argument == wanted:
                return True
        return False

    def _bound_to_number(self, name: str, position: int, depth: int) -> bool:
        """Whether ``name`` is bound once in the body before ``position``, by ``name := v``
        with ``v`` a number, and bound no other way there (nor a parameter)."""
        if name in _parameters(self.text, self.statement):
            return False
        start, end = self._scope(position)
        pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\s*:=")
        assignments = self._own_expressions(position, pattern)
        if len(assignments) != 1:
            return False
        begin, value = assignments[0]
        value_end = _expression_end(self.text, value)
        if value_end > end or not self._ends_alone(value_end):
            return False
        visible = _without_unbinding(_without_closed_blocks(self.text, start, end))
        others = visible[: begin - start] + " " * (value - begin) + visible[value - start :]
        if name in _bound_in(others):
            return False
        expression = self.text[value:value_end]
        return self.is_number(expression, begin, bool(_WITH.search(_mask(expression))), depth + 1)


_GUARD = re.compile(r"(?<![\w.])is_number\(")
# `some ...` and `every ...` up to their `in` (or the end of the declaration).
_DECLARATION = re.compile(r"(?<![\w.])(?:some|every)(?![\w.])(.*?)(?:(?<![\w.])in(?![\w.])|[;\n|}\]]|$)")
_ASSIGNMENT = re.compile(r":=|(?<![=!<>:])=(?!=)")
_WORD = re.compile(rf"(?<![\w.]){_NAME}")


def _declared(statement: str) -> set[str]:
    """Names ``statement`` may bind: assigned or unified (``x :=``, ``[a, x] :=``, both sides of
    ``=``), declared by ``some`` or ``every``, iterated as an index (``m[k]``)."""
    names = set(_bound_in(statement))
    for declaration in _DECLARATION.finditer(statement):
        names.update(_WORD.findall(declaration.group(1)))
    for assignment in _ASSIGNMENT.finditer(statement):
        begin = _expression_start(statement, 0, assignment.start())
        end = (
            _expression_end(statement, assignment.end()) if assignment.group(0) == "=" else assignment.start()
        )
        names.update(_WORD.findall(statement[begin:end]))
    return names


@functools.lru_cache(maxsize=16)
def number_rules(modules: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """Full paths (``data.pkg.rule``) of the complete rules of the policy's ``(name, text)``
    modules whose every value is a number (module docstring), to a fixed point: a rule
    whose value names another such rule is one too."""
    texts = [strip(text)[0] for _, text in modules]
    outlines = [outline(text) for text in texts]
    defined = definitions(modules)
    values: dict[str, list[tuple[int, int, int, str] | None]] = {}
    for index, (text, module) in enumerate(zip(texts, outlines, strict=True)):
        if module.package is None:
            continue
        for head in module.heads:
            found = None if head.function else _head_values(module.statement(text, head.start))
            spots = values.setdefault(f"data.{module.package}.{head.path}", [])
            if found is None:
                spots.append(None)
            else:
                spots += [(index, head.start, head.start + at, value) for at, value in found]
    packages = {f"data.{module.package}" for module in outlines if module.package is not None}
    candidates = {
        path: [spot for spot in spots if spot is not None]
        for path, spots in values.items()
        # a rule or a package below it makes it an object (or a conflict)
        if None not in spots
        and path not in packages
        and not any(other.startswith(f"{path}.") for other in [*values, *packages])
    }
    numbers: set[str] = set()
    changed = True
    while changed:  # each round adds a rule or ends
        changed = False
        for path, readable in candidates.items():
            if path in numbers:
                continue
            known = frozenset(numbers)
            if all(
                _Reader(texts[index], outlines[index], defined, start, known).is_number(value, at, False)
                for index, start, at, value in readable
            ):
                numbers.add(path)
                changed = True
    return frozenset(numbers)


def _head_values(statement: str) -> list[tuple[int, str]] | None:
    """(offset in ``statement``, text) of each value a complete rule's statement gives (its
    head's, and each ``else``'s); None when some part has no ``:=``/``=`` value (``p if``,
    ``else if``: true) or the head is not a complete rule's (``p[k] :=``, ``p contains``)."""
    default = re.match(r"default(?![\w.])", statement)
    head = _HEAD_REF.search(statement, default.end() if default else 0)
    if head is None or "[" in head.group(0):
        return None
    flat = _mask(statement)
    keywords = [m for m in re.finditer(r"(?<![\w.])(?:if|else)(?![\w.])", flat)]
    starts = [head.end(), *(m.end() for m in keywords if m.group(0) == "else")]
    found = []
    for start in starts:
        value = re.match(r"\s*(?::=|=(?!=))\s*", statement[start:])
        if value is None:
            return None
        begin = start + value.end()
        end = min([_expression_end(statement, begin), *(m.start() for m in keywords if m.start() >= begin)])
        found.append((begin, statement[begin:end]))
    return found


def _arithmetic(side: str) -> tuple[str, str, str] | None:
    """(left, operator, right) of ``side`` split at the operator Rego applies last: the last
    top-level ``+`` or binary ``-``, else the last ``*`` or ``/``; None when it has none."""
    flat = _mask(side)
    operators = [
        (m.start(), m.group(0).strip()) for m in re.finditer(r"[+*/]|(?<=[\w)\]}\"])(?<![0-9][eE])\s*-", flat)
    ]
    additive = [(at, op) for at, op in operators if op in "+-"]
    if not operators:
        return None
    at, operator = (additive or operators)[-1]
    width = len(re.match(r"\s*[-+*/]", flat[at:]).group(0))  # type: ignore[union-attr]
    return side[:at], operator, side[at + width :]


def set_order_findings(modules: tuple[tuple[str, str], ...]) -> list[Finding]:
    """Array comprehensions over a set the policy builds whose order can reach the decision
    (module docstring), in every module of the policy's ``(name, text)`` modules."""
    return list(_set_order_findings(modules))


@functools.lru_cache(maxsize=16)
def _set_order_findings(modules: tuple[tuple[str, str], ...]) -> tuple[Finding, ...]:
    found: list[Finding] = []
    try:
        for name, text, scope in rego_order._scopes(modules):
            found += _module_set_order_findings(name, text, scope.module, scope)
    except RecursionError:  # as rego_order: what the check cannot read is refused
        where = modules[0][0] if modules else "the policy"
        return (Finding("expressions nested too deeply for the load-time order check", f"{where}:1"),)
    return tuple(found)


def _module_set_order_findings(
    name: str, text: str, module: Outline, scope: rego_order._Scope
) -> list[Finding]:
    findings = []
    for match in re.finditer(r"\[", text):
        opening = match.start()
        end = _closing(text, opening)
        bar = rego_order._top_level(text[opening + 1 : end], "|") if end > 0 else -1
        if bar < 0:
            continue
        statement = max((start for start in module.starts if start <= opening), default=0)
        view = rego_order._flatten(text, statement, end + 1, opening)
        body = view[opening + 1 + bar + 1 - statement : end - statement]
        kind = rego_order._unordered(body, view[: opening - statement], scope)
        if kind not in (rego_order._SET, rego_order._SET_ORDERED):
            continue
        before = text[:opening].rstrip()
        if rego_order._ORDER_FREE.search(before) or rego_order._ORDER_SHOWN.search(before):
            continue  # order-free, or refused by rego_order already
        if _membership(text, statement, before):
            continue
        findings.append(Finding(SET_ORDER, f"{name}:{_line(text, opening)}"))
    return findings


def _membership(text: str, statement: int, before: str) -> bool:
    """Whether what ends in ``before`` is ``x in`` (not ``some x in``, ``every x in`` nor
    ``k, x in``, which read the array's order)."""
    if not re.search(r"(?<![\w.])in$", before):
        return False
    keyword = len(before) - 2
    left = _mask(text[_expression_start(text, statement, keyword) : keyword])
    return "," not in left and not re.search(r"(?<![\w.])(?:some|every)(?![\w.])", left)
