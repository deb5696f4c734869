"""Checks on a Rego module's text for divergences that rego-cpp's plan does not show by name.

The builtin names come from the compiled plan (capabilities.py); what is left depends on how
a builtin is called, so it is read from the text with comments removed and strings blanked
(a ``sprintf(`` inside a string or a comment is not a call):

- ``sprintf`` needs a string literal as format, with verbs from ``SPRINTF_VERBS`` only
  (``%v``/``%s`` of numbers and strings differ from OPA: see the compliance report);
- iterating a set follows insertion order in rego-cpp and sorted order in OPA, so
  ``concat``/``sort`` of a set, and an array comprehension over a set that is joined into a
  string right there (``concat``, ``json.marshal``), differ and are refused. A value is taken
  to be a set when the text shows it: a set literal or comprehension, ``set()``, a
  set-returning builtin, a ``contains`` rule, or a name bound to one of these. Not refused
  (a known gap): an array comprehension over a set whose order reaches the decision some
  other way (the default pack builds such arrays and only looks them up by content, which
  the differential test confirms), and a set reaching these places through a function
  argument or another package.

- string literals: rego-cpp keeps a ``"..."`` literal in its escaped form, exactly as
  written, and compares strings by that form, while input strings go in escaped the one way
  ``json.dumps(ensure_ascii=False)`` escapes (embedded.py): ``"\\u00e9"`` or ``"\\/"`` never
  equals the input's ``é`` or ``/`` (OPA: equal), so a ``\\u`` or ``\\/`` escape is refused
  (write the character itself). Raw strings (backticks) are escaped by rego-cpp the same way
  as the input, measured for ``"``, ``\\``, tab, newline and carriage return
  (tests/policy/test_capabilities.py); any other control character makes its output
  invalid JSON, so a raw string holding one is refused (write a ``"..."`` literal with the
  escape instead).

Findings err on the side of refusing: a construct the scanner cannot read is a finding.
"""

from __future__ import annotations

import re

from labelgate.policy.capabilities import SUPPORTED_BUILTINS, TEXT_NAMES, Finding

# Verbs whose compliance cases pass and whose output does not depend on quoting (%d of an
# integer); %% is a literal percent sign.
SPRINTF_VERBS = frozenset({"d", "%"})
# Builtins that return a set in OPA.
SET_BUILTINS = ("object.keys", "intersection", "union", "graph.reachable", "net.cidr_expand")
# Where the order of an array comprehension's elements becomes a string: an array built
# from a set is refused right there. Elsewhere it is accepted (see the module docstring).
_ORDER_SHOWN = re.compile(r"(?<![\w.])(?:concat\s*\([^()]*,|(?:json|yaml)\.marshal\s*\()$")

_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`')
# A template string ($"..{expr}.." or $`..`) is kept as text: the expressions inside it
# are calls like any other, and a word( in its literal part only errs on refusing.
_TEMPLATE = re.compile(r'\$"(?:[^"\\\n]|\\.)*"|\$`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text: str) -> tuple[str, list[str]]:
    """The text with comments removed and every string replaced by ``"<n>"`` (n indexes the list).

    Line breaks are kept, so offsets map back to the same lines.
    """
    literals: list[str] = []
    out: list[str] = []
    position = 0
    pattern = re.compile(f"{_TEMPLATE.pattern}|{_STRING.pattern}|{_COMMENT.pattern}")
    for match in pattern.finditer(text):
        out.append(text[position : match.start()])
        token = match.group(0)
        if token.startswith("$"):
            out.append("$" + '"' + token[2:-1].replace('"', " ").replace("`", " ") + '"')
        elif token.startswith("#"):
            out.append(" " * len(token))
        else:
            literals.append(token)
            placeholder = f'"{len(literals) - 1}"'
            # Keep the line count of raw strings spanning lines.
            out.append(placeholder + "\n" * token.count("\n"))
        position = match.end()
    out.append(text[position:])
    return "".join(out), literals


def _string_findings(name: str, text: str) -> list[Finding]:
    """String literals rego-cpp stores differently from the input's strings (module docstring)."""
    findings = []
    pattern = re.compile(f"{_TEMPLATE.pattern}|{_STRING.pattern}|{_COMMENT.pattern}")
    for match in pattern.finditer(text):
        token = match.group(0)
        where = f"{name}:{_line(text, match.start())}"
        if token.startswith("#"):
            continue
        if token.lstrip("$").startswith("`"):
            if any(ord(char) < 0x20 and char not in "\t\n\r" for char in token):
                findings.append(Finding("a raw string holding a control character", where))
            continue
        escapes = {token[m.end() - 1] for m in re.finditer(r"\\.", token)}
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


def _sprintf_findings(name: str, text: str, literals: list[str]) -> list[Finding]:
    findings = []
    for match in re.finditer(r"(?<![\w.])sprintf\s*\(\s*", text):
        where = f"{name}:{_line(text, match.start())}"
        literal = re.match(r'"(\d+)"\s*,', text[match.end() :])
        if literal is None:
            findings.append(Finding("`sprintf` with a format that is not a string literal", where))
            continue
        raw = literals[int(literal.group(1))]
        verbs = re.findall(r"%[-+# 0-9.*\[\]]*([A-Za-z%])", raw[1:-1])
        bad = sorted(set(verbs) - SPRINTF_VERBS)
        if bad:
            shown = ", ".join(f"%{verb}" for verb in bad)
            findings.append(Finding(f"`sprintf` verb {shown} (only %d is exact)", where))
    return findings


def _set_names(text: str) -> set[str]:
    """Rule and variable names the text binds to a set (to a fixed point)."""
    names = {m.group(1) for m in re.finditer(rf"^\s*({_NAME})(?:\s*\[[^\]]*\])?\s+contains\b", text, re.M)}
    while True:
        found = set(names)
        for match in re.finditer(rf"(?<![\w.])({_NAME})\s*(?::=|=)(?!=)\s*", text):
            if _is_set_expression(text, match.end(), names):
                found.add(match.group(1))
        if found == names:
            return names
        names = found


def _is_set_expression(text: str, start: int, names: set[str]) -> bool:
    rest = text[start:]
    if rest.startswith("set()"):
        return True
    if rest.startswith("{"):
        end = _closing(text, start)
        inner = text[start + 1 : end] if end > 0 else ""
        # An object (literal or comprehension) has a top-level "key: value"; a set has none.
        return end > 0 and not _top_level_colon(inner) and inner.strip() != ""
    if any(re.match(rf"{re.escape(b)}\s*\(", rest) for b in SET_BUILTINS):
        return True
    word = re.match(rf"({_NAME})\b(?!\s*[\[(.])", rest)
    return bool(word and word.group(1) in names)


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


def _iterates_set(body: str, names: set[str]) -> bool:
    for match in re.finditer(rf"\bin\s+({_NAME})\b(?!\s*[\[(.])|(?<![\w.])({_NAME})\s*\[", body):
        name = match.group(1) or match.group(2)
        if name in names:
            return True
    return bool(re.search(r"\bin\s+(\{|set\(\))", body)) or any(
        re.search(rf"\bin\s+{re.escape(b)}\s*\(", body) for b in SET_BUILTINS
    )


def _set_order_findings(name: str, text: str) -> list[Finding]:
    names = _set_names(text)
    findings = []
    # Array comprehensions: `[head | body]` not directly inside an order-free builtin.
    for match in re.finditer(r"\[", text):
        end = _closing(text, match.start())
        if end < 0:
            continue
        inner = text[match.start() + 1 : end]
        bar = _top_level(inner, "|")
        if bar < 0 or not _iterates_set(inner[bar + 1 :], names):
            continue
        before = text[: match.start()].rstrip()
        if not _ORDER_SHOWN.search(before):
            continue
        findings.append(
            Finding(
                "an array comprehension over a set (rego-cpp keeps insertion order)",
                f"{name}:{_line(text, match.start())}",
            )
        )
    # concat(sep, set) and sort(set) follow insertion order in rego-cpp.
    for match in re.finditer(r"(?<![\w.])(concat|sort)\s*\(", text):
        end = _closing(text, match.end() - 1)
        args = text[match.end() : end] if end > 0 else ""
        if match.group(1) == "concat":
            comma = _top_level(args, ",")
            args = args[comma + 1 :] if comma >= 0 else ""
        if _is_set_expression(args.strip() + " ", 0, names) and args.strip():
            findings.append(
                Finding(
                    f"`{match.group(1)}` of a set (rego-cpp keeps insertion order)",
                    f"{name}:{_line(text, match.start())}",
                )
            )
    return findings


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


# Words followed by "(" that are not calls.
# (`contains(` is the builtin: the keyword is never followed by a parenthesis in practice,
# and if it were, `contains` is allowed anyway.)
_KEYWORDS = frozenset({"if", "not", "some", "every", "in", "else", "with", "as", "default"})
# `with count as f` makes every call of count call f: f is used like a call.
_WITH_AS = re.compile(r"\bwith\s+[\w.\[\]\"]+\s+as\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\b(?!\s*[\[(])")
_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\(")
# Heads start at column 0 (as `opa fmt` writes them): an indented line is a body, and taking
# its first word for a rule name would hide a builtin call such as `\thttp.send(...)`. An
# indented head is only ever refused wrongly, never let through.
_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_]\w*)", re.M)
_IMPORT = re.compile(r"^\s*import\s+(data(?:\.\w+)+|input(?:\.\w+)*)(?:\s+as\s+(\w+))?", re.M)


def own_names(modules: tuple[tuple[str, str], ...]) -> set[str]:
    """Names a call may use for the policy's own rules and functions: heads and import aliases.

    A head in any module counts for every module: more permissive than Rego's package scoping,
    but only for names the policy itself defines, which never shadow a builtin in OPA 1.x.
    """
    names = {"data", "input"}
    for _, text in modules:
        stripped, _ = strip(text)
        names |= {m.group(1) for m in _HEAD.finditer(stripped)} - {"package", "import"}
        for match in _IMPORT.finditer(stripped):
            names.add(match.group(2) or match.group(1).rsplit(".", 1)[-1])
    return names


def scan_calls(text: str, own: set[str]) -> list[tuple[str, int]]:
    """(builtin name, line) of every call in ``text`` that is not to the policy's own functions."""
    stripped, _ = strip(text)
    calls = []
    for match in _CALL.finditer(stripped):
        name = match.group(1)
        if name in _KEYWORDS or name.split(".", 1)[0] in own:
            continue
        calls.append((TEXT_NAMES.get(name, name), _line(stripped, match.start())))
    for match in _WITH_AS.finditer(stripped):
        name = match.group(1)
        if name.split(".", 1)[0] not in own and name not in ("true", "false", "null"):
            calls.append((name, _line(stripped, match.start())))
    for match in re.finditer(r"\$(?=[\"`])", stripped):
        calls.append(("internal.template_string", _line(stripped, match.start())))
    return calls


def _builtin_findings(name: str, text: str, own: set[str]) -> list[Finding]:
    return [
        Finding(f"builtin `{call}`", f"{name}:{line}")
        for call, line in scan_calls(text, own)
        if call not in SUPPORTED_BUILTINS
    ]


def text_findings(name: str, text: str, modules: tuple[tuple[str, str], ...] = ()) -> list[Finding]:
    """Everything in one module the embedded engine refuses; ``modules`` is the whole policy."""
    own = own_names(modules or ((name, text),))
    stripped, literals = strip(text)
    return (
        _builtin_findings(name, text, own)
        + _string_findings(name, text)
        + _sprintf_findings(name, stripped, literals)
        + _set_order_findings(name, stripped)
    )
