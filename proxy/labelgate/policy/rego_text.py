"""Reading a Rego module's text: which builtins it calls, and what rego-cpp's plan does not show.

The embedded engine cannot read rego-cpp's compiled plan at load time (capabilities.py says
why), and the wasm engine vets a policy before compiling it, so both read the text. Reading
it must be sound: a call the scanner does not see is a builtin nobody vetted (issue 12).

Lexing. Comments, strings, raw strings and the literal parts of template strings
(``$"..{expr}.."``, ``$`..`` ``) are found by a small lexer that follows OPA's scanner
(v1/ast/internal/scanner): a template's ``{expr}`` is code, strings and comments included,
so ``$"{f("a", http.send({}))}"`` shows its ``http.send`` call. ``blank`` keeps offsets (every
literal is spaces between quotes, a template is ``" (expr) "``), ``strip`` numbers literals.

Calls. Every ``(`` that follows a reference (``name``, ``a.b.c``, ``data.p["f"]``), with any
whitespace or comments in between, is a call: OPA takes only the adjacent form as a call,
but rego-cpp also takes ``upper ("a")``, ``time.now_ns\n()`` and ``f # c\n(x)``, so such a gap
is itself a finding (OPA refuses the module, or reads two expressions). ``set()`` is the
empty set, not a call. A call is the policy's own only when its whole path resolves, as Rego
resolves it, to a function the policy defines:

- ``data.a.b.f(..)`` by its path; ``alias.f(..)`` through an ``import`` of the same module
  (an alias shadows a builtin namespace in OPA and rego-cpp alike: ``import data.x as json``
  makes ``json.marshal`` mean ``data.x.marshal``); a bare ``f(..)`` or ``a.f(..)`` against the
  rules of the module's own package;
- everything else is a builtin call and is checked against the allow-list. A reference
  through an alias or ``data`` that names no function of the policy is reported by its full
  path (OPA refuses it; no allow-list holds such a name), and so is a reference with a
  bracket or one the scanner cannot read (``f(x).g(..)``).

Rule heads. A head is recognised only where Rego's grammar puts one: at bracket depth 0, at
the start of a line whose previous code line is complete (it does not end in an operator, a
comma or a keyword such as ``if``/``in``/``with``, which Rego continues on the next line), and
followed by ``:=``, ``=``, ``if``, ``contains`` or ``{`` on that line. A line inside a rule
body, at any column, is never taken for a head; a head written some other way (two rules
on one line, a head split over lines) is not seen, which only refuses its callers.

Other divergences that rego-cpp's plan does not show by name, refused when a module loads:

- iteration order (``rego_order.order_findings``, over the whole policy). OPA iterates sets and object
  keys in sorted order and ``walk`` depth first; rego-cpp iterates sets and objects in
  insertion order and walks breadth first. The embedded engine hands the input and the data
  over with their keys sorted (embedded.py), so iterating those is OPA's order; what the
  policy builds keeps rego-cpp's. A value is taken to be a set or an object when the text
  shows it: a literal or comprehension, ``set()``, a set- or object-returning builtin, a
  ``contains`` rule or a partial object rule (``p[k] := v``, ``a.b.c := 1`` makes ``a`` one),
  a package, or a name bound to one of these, in any module of the policy: a bare name
  against the rules of its package, ``data.pkg.rule`` and import aliases by their path. Refused:

  - ``concat``/``sort`` of a set, and an array comprehension over a set joined into a string
    (``concat``, ``json.marshal``), right there or kept first in a rule or a local, or passed
    through ``array.concat`` (``rego_order``: an array built in a set's order);
  - an array comprehension over an object the policy builds (``[k | o[k]]``, ``some k, v in
    o``, a literal ``{...}[k]``), and one calling ``walk``, unless it is the argument of
    ``count``, ``sort``, ``max`` or ``min`` (whose value does not depend on the order).
    ``o[k]`` with ``k`` bound earlier looks a key up and is not iteration.

  An array comprehension over a set used any other way than by ``count``, ``sort``, ``max``,
  ``min`` or a membership ``x in [...]`` is refused too (``rego_comparisons``: indexed, it
  was another element than OPA's). Not refused (a known gap): a set or object reaching these
  places through a function argument or a ``with``.
- ordering comparisons (``<``, ``>``, ``<=``, ``>=``, ``lt`` ... by name) unless the text
  shows both sides to be numbers (``rego_comparisons``: OPA orders any two values, rego-cpp
  holds a comparison across types false and orders strings and arrays by their JSON text).
- a comprehension in a function that indexes by one of its arguments (``f(k) := [v | v :=
  m[k]]``): rego-cpp iterates every key there.
- number literals: ``-0`` (rego-cpp keeps it below 0 and unequal to it), a fraction or
  exponent with more than 16 significant digits (rego-cpp rounds it to 16), and a whole number
  written with a fraction or an exponent (``1.0``: OPA indexes arrays by it, rego-cpp does not).
- string literals: rego-cpp keeps a ``"..."`` literal in its escaped form, exactly as
  written, and compares strings by that form, while input strings go in escaped the one way
  ``json.dumps(ensure_ascii=False)`` escapes (embedded.py): ``"\\u00e9"`` or ``"\\/"`` never
  equals the input's ``é`` or ``/`` (OPA: equal), so a ``\\u`` or ``\\/`` escape is refused
  (write the character itself). Raw strings (backticks) are escaped by rego-cpp the same way
  as the input, measured for ``"``, ``\\``, tab, newline and carriage return
  (tests/policy/test_capabilities.py); any other control character makes its output
  invalid JSON, so a raw string holding one is refused (write a ``"..."`` literal with the
  escape instead).
- body expressions rego-cpp evaluates unlike OPA (``rego_bodies.py``): ``not`` or a
  comprehension inside an ``every``, a comprehension inside a ``not``, and a negated
  expression whose calls, operands or indexes OPA evaluates before the negation.
- the ``%`` operator is the builtin ``rem`` (wrong on large numbers in rego-cpp);
- a call of a ``capabilities.LITERAL_ARGUMENT_BUILTINS`` builtin whose argument is not a
  non-empty string literal (``strings.count(s, "")`` counts bytes on non-ASCII text), and
  ``with`` replacing one or replaced by one;
- ``with`` replacing a guarded builtin or replaced by one (capabilities.GUARDED_BUILTINS):
  the engine swaps their calls for exact versions, which a replacement would bypass;
- rules named ``__labelgate...``: the names of those exact versions.

Findings err on the side of refusing: a construct the scanner cannot read is a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from labelgate.policy.capabilities import (
    GUARDED_BUILTINS,
    INEXACT_BUILTINS,
    LITERAL_ARGUMENT_BUILTINS,
    RESERVED_PREFIX,
    SUPPORTED_BUILTINS,
    TEXT_NAMES,
    Finding,
)
from labelgate.policy.whole_numbers import is_whole_float

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_NAME}(?:\.{_NAME})*"

# ------------------------------------------------------------------------------------------
# Lexing: what is code, what is a literal or a comment.


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    kind: str  # "comment", "string", "raw", "template" or "raw_template" (a template's literal part)


def _lex(text: str) -> list[_Token]:
    """Comments, strings and template literal parts, in order; everything between is code."""
    tokens: list[_Token] = []
    # One entry per template whose {expression} is being read: [raw, open braces inside it].
    templates: list[list[int]] = []
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if char == "#":
            end = text.find("\n", index)
            end = size if end < 0 else end
            tokens.append(_Token(index, end, "comment"))
            index = end
        elif char == '"':
            end = _string_end(text, index + 1)
            tokens.append(_Token(index, end, "string"))
            index = end
        elif char == "`":
            end = text.find("`", index + 1)
            end = size if end < 0 else end + 1
            tokens.append(_Token(index, end, "raw"))
            index = end
        elif char == "$" and text[index + 1 : index + 2] in ('"', "`"):
            raw = text[index + 1] == "`"
            end, opened = _template_part(text, index + 2, raw)
            tokens.append(_Token(index, end, "raw_template" if raw else "template"))
            if opened:
                templates.append([int(raw), 0])
            index = end
        elif templates and char == "{":
            templates[-1][1] += 1
            index += 1
        elif templates and char == "}":
            if templates[-1][1]:
                templates[-1][1] -= 1
                index += 1
                continue
            raw = bool(templates.pop()[0])
            end, opened = _template_part(text, index + 1, raw)
            tokens.append(_Token(index, end, "raw_template" if raw else "template"))
            if opened:
                templates.append([int(raw), 0])
            index = end
        else:
            index += 1
    return tokens


def _string_end(text: str, index: int) -> int:
    """End (exclusive) of a ``"..."`` string whose body starts at ``index``; a newline ends it."""
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] != "\n":
            index += 2
            continue
        if char == "\n":  # unterminated: OPA refuses it, and the next line is read as code
            return index
        index += 1
        if char == '"':
            return index
    return len(text)


def _template_part(text: str, index: int, raw: bool) -> tuple[int, bool]:
    """End (exclusive) of a template's literal part from ``index``, and whether ``{`` ended it."""
    while index < len(text):
        char, following = text[index], text[index + 1 : index + 2]
        if char == "\\" and (following == "{" or (not raw and following != "\n")):
            index += 2
            continue
        if char == "\n" and not raw:
            return index, False
        index += 1
        if char == "{":
            return index, True
        if char == ("`" if raw else '"'):
            return index, False
    return len(text), False


def _blank_token(text: str, token: _Token) -> str:
    """A token's text as code sees it, same length, line breaks kept."""
    body = "".join("\n" if char == "\n" else " " for char in text[token.start : token.end])
    if token.kind == "comment" or len(body) < 2:
        return body
    if token.kind in ("string", "raw"):
        return '"' + body[1:-1] + '"'
    # A template is a term whose expressions are code: `$"a{x}b"` reads as `"  (x) "`.
    first = '"' if text[token.start] == "$" else ")"
    last = text[token.end - 1]
    closing = "(" if last == "{" else ('"' if last in ('"', "`") else body[-1])
    return first + body[1:-1] + closing


def blank(text: str) -> str:
    """``text`` with comments and literals blanked, at the same offsets (see the module docstring)."""
    out, position = [], 0
    for token in _lex(text):
        out.append(text[position : token.start])
        out.append(_blank_token(text, token))
        position = token.end
    out.append(text[position:])
    return "".join(out)


def strip(text: str) -> tuple[str, list[str]]:
    """The text with comments removed and every string replaced by ``"<n>"`` (n indexes the list).

    Template strings read as in ``blank``. Line breaks are kept, so offsets map back to the
    same lines.
    """
    literals: list[str] = []
    out: list[str] = []
    position = 0
    for token in _lex(text):
        out.append(text[position : token.start])
        if token.kind in ("string", "raw"):
            literal = text[token.start : token.end]
            literals.append(literal)
            # Keep the line count of raw strings spanning lines.
            out.append(f'"{len(literals) - 1}"' + "\n" * literal.count("\n"))
        else:
            out.append(_blank_token(text, token))
        position = token.end
    out.append(text[position:])
    return "".join(out), literals


def _string_findings(name: str, text: str) -> list[Finding]:
    """String literals rego-cpp stores differently from the input's strings (module docstring)."""
    findings = []
    for token in _lex(text):
        if token.kind == "comment":
            continue
        literal = text[token.start : token.end]
        where = f"{name}:{_line(text, token.start)}"
        if token.kind in ("raw", "raw_template"):
            if any(ord(char) < 0x20 and char not in "\t\n\r" for char in literal):
                findings.append(Finding("a raw string holding a control character", where))
            continue
        escapes = {literal[m.end() - 1] for m in re.finditer(r"\\.", literal)}
        for escape in sorted(escapes & {"u", "/"}):
            findings.append(Finding(f"a string literal with the escape `\\{escape}`", where))
    return findings


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start``; -1 when unbalanced."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for index in range(start, len(text)):
        char = text[index]
        if char in pairs:
            stack.append(pairs[char])
        elif char in ")]}":
            if not stack or stack.pop() != char:
                return -1
            if not stack:
                return index
    return -1


def _opening(text: str, end: int) -> int:
    """Index of the bracket opening the one closing at ``end``; -1 when unbalanced."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for index in range(end, -1, -1):
        char = text[index]
        if char in pairs:
            stack.append(pairs[char])
        elif char in "([{":
            if not stack or stack.pop() != char:
                return -1
            if not stack:
                return index
    return -1


# ------------------------------------------------------------------------------------------
# Modules: package, imports and rule heads.

# Keywords after which Rego reads on into the next line, and which never start a rule.
# (`and` and `or` are names in Rego v1, which a rule may take: `or := input.xs`.)
_CONTINUING = frozenset({"if", "else", "in", "not", "some", "every", "with", "as", "contains"})
_INCOMPLETE_END = frozenset("=+-*/%&|<>!,.:;([{")
_HEAD_REF = re.compile(rf"{_NAME}(?:\.{_NAME}|\[[^\[\]\n]*\])*")
_HEAD_END = re.compile(r"[ \t]*(?::=|=(?!=)|if\b|contains\b|\{)")


@dataclass(frozen=True)
class Head:
    path: str  # the rule's path within its package ("p", "a.b.f"), brackets dropped
    function: bool
    start: int  # offset of the statement (``default`` included)


@dataclass(frozen=True)
class Outline:
    """What one module declares: its package, its import aliases and its rule heads."""

    package: str | None  # dotted, without ``data.``; None when the scanner cannot read it
    aliases: dict[str, str]  # alias -> imported path ("data.a.b", "input.x", "rego.v1")
    heads: tuple[Head, ...]
    # Where every statement starts (package, imports, heads, and lines where a statement
    # starts that the scanner does not read as a head): a statement runs to the next.
    starts: tuple[int, ...]

    def statement(self, text: str, start: int) -> str:
        """The text of the statement starting at ``start``."""
        later = [offset for offset in self.starts if offset > start]
        return text[start : min(later) if later else len(text)]


def outline(text: str, blanked: str | None = None) -> Outline:
    """The package, imports and heads of one module, read by Rego's grammar (module docstring)."""
    code = blank(text) if blanked is None else blanked
    package: str | None = None
    aliases: dict[str, str] = {}
    heads: list[Head] = []
    starts: list[int] = []
    depth, complete, offset = 0, True, 0
    for line in code.split("\n"):
        content = line.strip()
        if content and depth == 0 and complete:
            start = offset + len(line) - len(line.lstrip())
            word = re.match(_NAME, content)
            keyword = word.group(0) if word else None
            if keyword is not None and keyword not in _CONTINUING:
                starts.append(start)
                if keyword == "package":
                    found = re.fullmatch(rf"package\s+({_DOTTED})", content)
                    package = found.group(1) if found else None
                elif keyword != "import":  # every import is read below, wherever it is
                    head = _head(code, start + (len(keyword) if keyword == "default" else 0))
                    if head is not None:
                        heads.append(Head(head[0], head[1], start))
        for char in line:
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
        if depth < 0:  # unbalanced: nothing after this point is read as a head
            break
        if content:
            complete = depth == 0 and _ends_complete(content)
        offset += len(line) + 1
    # `import` is a keyword nowhere else: an alias counts however the line is laid out (a missed
    # alias would vet `alias.f(` as a builtin and rename it where OPA calls the policy's f).
    for found in re.finditer(rf"(?<![\w.])import\s+({_DOTTED})(?:\s+as\s+({_NAME}))?", code):
        aliases[found.group(2) or found.group(1).rsplit(".", 1)[-1]] = found.group(1)
    return Outline(package, aliases, tuple(heads), tuple(starts))


def _ends_complete(content: str) -> bool:
    if content[-1] in _INCOMPLETE_END:
        return False
    # A keyword after a `.` is a field name (`input.in`), which ends a line as any name does.
    word = re.search(rf"(?<![\w.]){_NAME}$", content)
    return word is None or word.group(0) not in _CONTINUING | {"default", "package", "import"}


def _head(code: str, start: int) -> tuple[str, bool] | None:
    """(rule path, is a function) when a head starts at ``start`` (after ``default``), else None."""
    while start < len(code) and code[start] in " \t":
        start += 1
    ref = _HEAD_REF.match(code, start)
    if ref is None or ref.group(0).split(".", 1)[0] in _CONTINUING:
        return None
    end = ref.end()
    function = code[end : end + 1] == "("
    if function:
        if "[" in ref.group(0):
            return None
        end = _closing(code, end) + 1
        if end == 0:
            return None
    if not _HEAD_END.match(code, end):
        return None
    return ref.group(0).split("[", 1)[0], function


@dataclass(frozen=True)
class Definitions:
    """Every rule and function the policy defines, by full path (``data.pkg.rule``)."""

    rules: frozenset[str]
    functions: frozenset[str]


def definitions(modules: tuple[tuple[str, str], ...]) -> Definitions:
    rules: set[str] = set()
    functions: set[str] = set()
    for _, text in modules:
        module = outline(text)
        if module.package is None:
            continue
        for head in module.heads:
            full = f"data.{module.package}.{head.path}"
            rules.add(full)
            if head.function:
                functions.add(full)
    return Definitions(frozenset(rules), frozenset(functions))


# ------------------------------------------------------------------------------------------
# Calls.

# Words followed by "(" that are not calls. (`contains(` is the builtin.)
_KEYWORDS = frozenset({"if", "not", "some", "every", "in", "else", "with", "as", "default", "and", "or"})
_KEYWORDS |= {"package", "import"}
_WITH_AS = re.compile(rf"\bwith\s+([^\n]+?)\s+as\s+({_DOTTED})\b(?!\s*[\[(])")


@dataclass(frozen=True)
class CallSite:
    """A call in a module's text: ``name`` is the builtin's name, or the path a call through
    ``data`` or an alias names; ``own`` when that path is a function the policy defines."""

    name: str
    line: int
    start: int  # the offsets of the reference before "(" in the module's text
    end: int
    own: bool
    apart: bool = False  # whitespace (a line break, a comment) between the reference and "("


def call_sites(text: str, defined: Definitions) -> list[CallSite]:
    """Every call in ``text`` (a module of the policy whose definitions are ``defined``)."""
    code = blank(text)
    module = outline(text, code)
    calls = []
    for paren in re.finditer(r"\(", code):
        end = paren.start()
        while end > 0 and code[end - 1] in " \t\r\n":  # comments are blanked to spaces
            end -= 1
        if end == 0 or not _ends_reference(code, end):
            continue
        apart = end < paren.start()
        start = _ref_start(code, end)
        if start < 0:  # f(x).g(..), [1][0](..): no reference the scanner can resolve
            tail = re.search(r"(?:\.\w+|\[[^\[\]]*\])*$", code[:end])
            start = tail.start() if tail else end
            calls.append(
                CallSite("(...)" + _shown(code[start:end]), _line(code, end), start, end, False, apart)
            )
            continue
        ref = code[start:end]
        if ref in _KEYWORDS or ref[0].isdigit():
            continue  # `not(..)`, `1.5(..)`: not calls
        if ref == "set" and re.match(r"\(\s*\)", code[paren.start() :]):
            continue  # `set()`: the empty set
        name, own = _resolve(ref, module, defined)
        calls.append(CallSite(name, _line(code, end), start, end, own, apart))
    return calls


def _ends_reference(code: str, end: int) -> bool:
    char = code[end - 1]
    return char == "]" or char == "_" or char.isalnum()


def _shown(ref: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[...]", re.sub(r"\s+", "", ref))


def _ref_start(code: str, end: int) -> int:
    """Start of the reference ending at ``end`` (``a.b["c"].d``), or -1 when it is not one the
    scanner can read (``f(x).g``, ``[1][0]``)."""
    index = end
    while True:
        if code[index - 1] == "]":
            opening = _opening(code, index - 1)
            if opening <= 0 or not _ends_reference(code, opening):
                return -1
            index = opening
            continue
        word = index
        while word > 0 and (code[word - 1].isalnum() or code[word - 1] == "_"):
            word -= 1
        if word == index:
            return -1
        index = word
        if index == 0 or code[index - 1] != ".":
            return index
        if index < 2 or not _ends_reference(code, index - 1):
            return -1
        index -= 1


def _path(ref: str, module: Outline) -> str | None:
    """The full path a dotted reference names as Rego resolves it; None when it names no rule
    (a bare name in a module whose package the scanner could not read)."""
    first, _, rest = ref.partition(".")
    if first == "data":
        return ref
    if first in module.aliases:
        return module.aliases[first] + (f".{rest}" if rest else "")
    return f"data.{module.package}.{ref}" if module.package is not None else None


def _resolve(ref: str, module: Outline, defined: Definitions) -> tuple[str, bool]:
    """(name to vet, whether it is the policy's own function) for a call of ``ref``."""
    if "[" in ref:
        return _shown(ref), False
    path = _path(ref, module)
    if path is not None and path in defined.functions:
        return path, True
    first = ref.split(".", 1)[0]
    if first == "data" or first in module.aliases:
        return path or ref, False  # OPA resolves it to a rule, and finds none
    return TEXT_NAMES.get(ref, ref), False


def scan_calls(text: str, defined: Definitions) -> list[tuple[str, int]]:
    """(builtin name, line) of every call in ``text`` that is not to the policy's own functions,
    of every name a ``with`` puts in another's place that is not one of the policy's rules, and
    of every template string (``internal.template_string``)."""
    calls = [(call.name, call.line) for call in call_sites(text, defined) if not call.own]
    code = blank(text)
    module = outline(text, code)
    for match in _WITH_AS.finditer(code):
        name = match.group(2)
        if name in ("true", "false", "null") or _path(name, module) in defined.rules:
            continue
        calls.append((TEXT_NAMES.get(name, name), _line(code, match.start())))
    for token in _lex(text):
        if token.kind in ("template", "raw_template") and text[token.start] == "$":
            calls.append(("internal.template_string", _line(text, token.start)))
    return sorted(calls, key=lambda call: call[1])


# ------------------------------------------------------------------------------------------
# Findings of the embedded engine.


def _builtin_findings(name: str, text: str, defined: Definitions) -> list[Finding]:
    findings = []
    for call, line in scan_calls(text, defined):
        if call in SUPPORTED_BUILTINS:
            continue
        why = INEXACT_BUILTINS.get(call)
        findings.append(Finding(f"builtin `{call}`" + (f" ({why})" if why else ""), f"{name}:{line}"))
    for match in re.finditer(r"%", blank(text)):
        findings.append(
            Finding(
                f"builtin `rem` (the `%` operator; {INEXACT_BUILTINS['rem']})",
                f"{name}:{_line(text, match.start())}",
            )
        )
    return findings


def _literal_argument_findings(name: str, text: str, defined: Definitions) -> list[Finding]:
    """Calls of a ``LITERAL_ARGUMENT_BUILTINS`` builtin whose argument is not a non-empty string
    literal, and a ``with`` replacing one or replaced by one (its calls would escape the check)."""
    code = blank(text)
    literals = {(token.start, token.end) for token in _lex(text) if token.kind in ("string", "raw")}
    findings = []
    for call in call_sites(text, defined):
        if call.own or call.name not in LITERAL_ARGUMENT_BUILTINS:
            continue
        index, role, why = LITERAL_ARGUMENT_BUILTINS[call.name]
        argument = _argument_span(code, call.end, index)
        if argument is None or argument not in literals or argument[1] - argument[0] <= 2:
            findings.append(
                Finding(
                    f"builtin `{call.name}` with a {role} that is not a non-empty string literal ({why})",
                    f"{name}:{call.line}",
                )
            )
    for match in _WITH_AS.finditer(code):
        for part in (match.group(1), match.group(2)):
            if part in LITERAL_ARGUMENT_BUILTINS:
                findings.append(
                    Finding(
                        f"`with` replacing or replaced by `{part}`", f"{name}:{_line(code, match.start())}"
                    )
                )
    return findings


def _argument_span(code: str, end: int, index: int) -> tuple[int, int] | None:
    """(start, end) of argument ``index`` of the call whose reference ends at ``end`` in the
    blanked ``code``, whitespace trimmed; None when the scanner cannot read it."""
    opening = code.find("(", end)
    closing = _closing(code, opening) if opening >= 0 else -1
    if closing < 0:
        return None
    bounds, depth = [opening + 1], 0
    for position in range(opening + 1, closing):
        char = code[position]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            bounds.append(position + 1)
    bounds.append(closing + 1)
    if index + 1 >= len(bounds):
        return None
    start, stop = bounds[index], bounds[index + 1] - 1
    while start < stop and code[start].isspace():
        start += 1
    while stop > start and code[stop - 1].isspace():
        stop -= 1
    return start, stop


def _apart_findings(name: str, text: str, defined: Definitions) -> list[Finding]:
    """A call written with a space, a line break or a comment before its "(": OPA does not
    read it as a call (the module does not parse, or it is two expressions), rego-cpp does."""
    return [
        Finding(
            f"whitespace between `{call.name}` and its `(` (OPA does not read a call there)",
            f"{name}:{call.line}",
        )
        for call in call_sites(text, defined)
        if call.apart
    ]


# A number literal (strings are "<n>" in stripped text, so their digits are whole integers).
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.])")


WHOLE_LITERAL = (
    "a whole number written with a fraction or an exponent (OPA indexes arrays by `1.0` and "
    "`1e0` unlike the in-process engines: write the integer)"
)


def whole_number_literals(stripped: str) -> list[tuple[str, int]]:
    """(literal, offset) of every number literal in ``stripped`` (``strip``'s text) written with
    a fraction or an exponent whose value, as a float, is a whole number below 2^53 (``1.0``,
    ``-0.0``, ``1e0``, ``1.00000000000000001``): OPA looks arrays up by it as by the integer
    (``xs[1.0]`` is ``xs[1]``) and OPA's own reading of ``1e0`` differs from ``1.0``, while
    rego-cpp and OPA's Wasm target look arrays up by integers only (whole_numbers.py)."""
    found = []
    for match in _NUMBER.finditer(stripped):
        sign, number = match.groups()
        if not number.isdigit() and is_whole_float(float(number)):
            found.append((sign + number, match.start()))
    return found


def _number_findings(name: str, stripped: str) -> list[Finding]:
    """Number literals rego-cpp reads as another number than OPA: ``-0`` (an integer below 0
    there), a fraction or exponent beyond 16 significant digits (rego-cpp rounds it), and a
    whole number written with a fraction or an exponent (``whole_number_literals``)."""
    findings = []
    whole = {offset for _, offset in whole_number_literals(stripped)}
    for match in _NUMBER.finditer(stripped):
        sign, number = match.groups()
        where = f"{name}:{_line(stripped, match.start())}"
        if sign and number == "0" and not re.search(r"[\w)\]}]\s*$", stripped[: match.start()]):
            findings.append(Finding("the literal `-0` (rego-cpp orders it below 0)", where))
        elif match.start() in whole:
            findings.append(Finding(WHOLE_LITERAL, where))
        elif not number.isdigit() and len(Decimal(number).normalize().as_tuple().digits) > 16:
            findings.append(Finding(f"the number `{number}` (rego-cpp keeps 16 significant digits)", where))
    return findings


def _guard_findings(name: str, text: str, defined: Definitions) -> list[Finding]:
    """``with`` around a guarded builtin, rules that take the guards' reserved names, and a
    guarded builtin called where the guard cannot go (a package the scanner cannot read)."""
    code = blank(text)
    module = outline(text, code)
    findings = []
    if module.package is None:
        for call in call_sites(text, defined):
            if not call.own and call.name in GUARDED_BUILTINS:
                findings.append(
                    Finding(
                        f"`{call.name}` in a module whose package is not a dotted name", f"{name}:{call.line}"
                    )
                )
    for match in _WITH_AS.finditer(code):
        for part in (match.group(1), match.group(2)):
            if part in GUARDED_BUILTINS:
                findings.append(
                    Finding(
                        f"`with` replacing or replaced by `{part}`", f"{name}:{_line(code, match.start())}"
                    )
                )
    for head in module.heads:
        if any(segment.startswith(RESERVED_PREFIX) for segment in head.path.split(".")):
            where = f"{name}:{_line(text, head.start)}"
            findings.append(Finding(f"a rule named `{head.path}` (`{RESERVED_PREFIX}` is reserved)", where))
    return findings


def text_findings(
    name: str, text: str, modules: tuple[tuple[str, str], ...] = (), defined: Definitions | None = None
) -> list[Finding]:
    """Everything in one module the embedded engine refuses; ``modules`` is the whole policy
    (``defined``, its definitions, when the caller has them already)."""
    from labelgate.policy.rego_bodies import body_findings  # imports this module
    from labelgate.policy.rego_comparisons import comparison_findings, set_order_findings  # likewise
    from labelgate.policy.rego_order import argument_key_findings, order_findings  # imports this module

    if defined is None:
        defined = definitions(modules or ((name, text),))
    stripped, _ = strip(text)
    scope = modules if (name, text) in modules else ((name, text), *(m for m in modules if m[0] != name))
    return (
        _builtin_findings(name, text, defined)
        + _literal_argument_findings(name, text, defined)
        + _apart_findings(name, text, defined)
        + _guard_findings(name, text, defined)
        + _string_findings(name, text)
        + _number_findings(name, stripped)
        + body_findings(name, stripped, scope)
        + argument_key_findings(name, stripped)
        + comparison_findings(name, stripped, defined, scope)
        + [
            finding
            for finding in order_findings(scope) + set_order_findings(scope)
            if finding.where.rpartition(":")[0] == name
        ]
    )
