"""``json.marshal`` for the wasm engine: allowed only on what a policy's text shows to be an integer.

OPA's wasm target writes object keys in hash order and does not escape ``<>&``, U+2028 and
U+2029 as OPA does, so ``json.marshal`` of anything but an integer may differ. What counts as
an integer: the builtin ``count`` (no rule or import of that name), the index bound by ``some
i, x in`` over what is certainly an array (over a set it is the element, over an object a
key), or a path of the data document that holds an integer there and that no package of the
policy reaches (a rule could shadow or extend it); anything unsure is refused (``wasm_checks``).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelgate.policy.rego_text import Outline


_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
# A definition whose value is a reference (``name := root.a[k].b``), with an optional body:
# the name, the reference's root and its dotted part before any bracket.
_DATA_VALUE = re.compile(
    r"(?:default\s+)?([A-Za-z_]\w*)\s*:?=\s*([A-Za-z_]\w*)((?:\.\w+)*)"
    r"(?:\[[^\[\]]*\](?:\.\w+|\[[^\[\]]*\])*)?(?:\s+if\b.*)?",
    re.S,
)
# What a ``with`` replaces: only the input's replacements leave data and builtins as they are.
_WITH_TARGET = re.compile(r"(?<![\w.])with\s+([A-Za-z_]\w*)")
# An import the outline reads in full: a dotted path, an optional alias, nothing else on the line
# (``import data["lib"].count`` binds ``count`` too, which the outline does not see).
_IMPORT = re.compile(r"(?<![\w.])import(?!\w)")
_PLAIN_IMPORT = re.compile(
    r"import[ \t]+[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:[ \t]+as[ \t]+[A-Za-z_]\w*)?[ \t]*\r?(?:\n|$)"
)
# A statement defining ``count`` (read or not as a head: ``count(x)\n\t:= 1`` is one in OPA).
_COUNT_STATEMENT = re.compile(r"(?:default\s+)?count(?!\w)")
# What may follow the collection of ``some i, x in`` and end it: on its line, the end of the
# expression, or a line break then no operator or postfix continuing it (OPA reads
# ``input.xs\n| {1}`` as one expression).
_COLLECTION_END = re.compile(r"[ \t]*(?:$|[;}\]]|\r?\n(?!\s*(?:[|&+\-*/%<>=!:.\[(]|(?:with|in|as)(?!\w))))")


def _integer_keys(data: Any, found: dict[str, bool]) -> dict[str, bool]:
    """For every object key in ``data``: whether each of its values is an integer."""
    if isinstance(data, dict):
        for key, value in data.items():
            found[key] = found.get(key, True) and _exact_integer(value)
            _integer_keys(value, found)
    elif isinstance(data, list):
        for value in data:
            _integer_keys(value, found)
    return found


def _exact_integer(value: Any) -> bool:
    return type(value) is int and -(2**53) < value < 2**53


def marshal_findings(modules: tuple[tuple[str, str], ...], data: dict[str, Any]) -> list[str]:
    """Where ``json.marshal`` is called on something the text does not show to be an integer.

    The module's json.marshal writes integers as OPA does (test_differential.py), not objects
    (key order) nor some strings (escapes). An argument counts as an integer when it is:
    ``count(...)`` where ``count`` is the builtin (review: a function ``count`` of the package or
    an import binding the name passed for it); the index variable of ``some i, x in C`` iterated
    in the same rule, named nowhere else in it but in ``json.marshal(i)`` and neither a rule of
    the package nor an import, with ``C`` certainly an array (review: over a set ``i`` is the
    element, over an object a key, a string holding ``<`` marshals differently); a reference
    ``data.a.b`` that the data document itself holds as an integer, at a path no package of the
    policy is at, above or below (a package's rules may be there: review,
    ``data.labelgate.decision.pairs.max_rows`` was a partial object rule whose key is an integer
    elsewhere in the data); or
    ``rule.….key`` into a rule of the module's package every definition of which has a
    reference into ``data`` as its value (``r := data.t[k]``, or through an import of data; no
    ``else``) at a path no package is at, above or below, whose name the rule holding the call
    only reads through (``rule.x``: any other mention may be a local or an argument of that
    name), and whose last ``key`` holds an integer wherever it appears in the data document.
    Anything else is refused, and so is every json.marshal when a ``with`` replaces anything
    but the input (it may replace the data or ``count``). Rules and their definitions are
    found as the call scanner finds them (rego_text.outline: by Rego's grammar, not by layout).
    """
    from labelgate.policy.rego_text import _closing, blank, outline

    integer_keys = _integer_keys(data, {})
    outlines = [(blank(text), outline(text)) for _, text in modules]
    replaced = [
        f"{name}:{code.count(chr(10), 0, match.start()) + 1}"
        for (name, _), (code, _) in zip(modules, outlines, strict=True)
        for match in _WITH_TARGET.finditer(code)
        if match.group(1) != "input"
    ]
    found = []
    for (name, _), (code, module) in zip(modules, outlines, strict=True):
        for call in re.finditer(r"(?<![\w.])json\.marshal\s*\(", code):
            end = _closing(code, call.end() - 1)
            argument = code[call.end() : end].strip() if end > 0 else ""
            rule = _statement_around(code, module.starts, call.start())
            line = code.count("\n", 0, call.start()) + 1
            if replaced:
                found.append(
                    f"`json.marshal` at {name}:{line} of what the `with` at {replaced[0]} may replace"
                )
            elif not _is_integer(argument, rule, code, module, outlines, data, integer_keys):
                found.append(f"`json.marshal` of a value not known to be an integer at {name}:{line}")
    return found


def _statement_around(code: str, starts: tuple[int, ...], position: int) -> str:
    """The statement (rule) holding ``position``."""
    before = [offset for offset in starts if offset <= position]
    after = [offset for offset in starts if offset > position]
    return code[max(before) if before else 0 : min(after) if after else len(code)]


def _is_integer(
    argument: str,
    rule: str,
    code: str,
    module: Outline,
    outlines: list[tuple[str, Outline]],
    data: dict[str, Any],
    integer_keys: dict[str, bool],
) -> bool:
    count = re.match(r"count\s*\(", argument)
    if count is not None:
        from labelgate.policy.rego_text import _closing

        whole = _closing(argument, count.end() - 1) == len(argument) - 1
        return whole and _count_is_the_builtin(code, module, outlines)
    if re.fullmatch(r"[A-Za-z_]\w*", argument):
        return _an_array_index(argument, rule, module, outlines)
    if not _DOTTED.fullmatch(argument):
        return False
    head = argument.split(".", 1)[0]
    if head == "data":
        return _exact_integer(_data_at(argument, data)) and not _rules_may_be_at(argument, outlines)
    if head == "input" or not _valued_from_data(head, module.package, outlines):
        return False
    # Any mention of the name but ``name.x`` may bind a local or an argument of that name.
    if any(not re.match(r"\.\w", rule[m.end() :]) for m in re.finditer(rf"(?<![\w.]){head}(?!\w)", rule)):
        return False
    return integer_keys.get(argument.rsplit(".", 1)[-1], False)


def _count_is_the_builtin(code: str, module: Outline, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether a bare ``count(..)`` in ``module`` (blanked ``code``) calls OPA's builtin: no import
    of the module binds the name (an alias or a path's last element) and no module of its
    package has a statement defining it (a rule or function shadows the builtin there)."""
    if module.package is None or "count" in module.aliases:
        return False
    if any(_PLAIN_IMPORT.match(code, found.start()) is None for found in _IMPORT.finditer(code)):
        return False
    for other_code, other in outlines:
        if other.package is None:
            return False
        if other.package == module.package and any(
            _COUNT_STATEMENT.match(other_code, start) for start in other.starts
        ):
            return False
    return True


def _an_array_index(name: str, rule: str, module: Outline, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether ``name`` is the index of a ``some name, x in C`` in ``rule`` with ``C`` certainly
    an array (``_certainly_an_array``) and is named there only there and in
    ``json.marshal(name)``: a second mention may bind it afresh (in a comprehension, by
    ``:=``), and where no ``some`` is in scope the name is a rule or an import."""
    if (
        module.package is None
        or name in module.aliases
        or any(
            other.package == module.package and head.path.split(".", 1)[0] == name
            for _, other in outlines
            for head in other.heads
        )
    ):
        return False
    declared = 0
    for mention in re.finditer(rf"(?<![\w.]){name}(?!\w)", rule):
        before, after = rule[: mention.start()], rule[mention.end() :]
        declaration = re.match(r"\s*,\s*[A-Za-z_]\w*\s+in\b\s*", after)
        if re.search(r"(?<![\w.])some\s+$", before) and declaration is not None:
            if not _certainly_an_array(after[declaration.end() :], outlines):
                return False
            declared += 1
        elif not (re.search(r"(?<![\w.])json\.marshal\s*\(\s*$", before) and re.match(r"\s*\)", after)):
            return False
    return declared == 1


def _certainly_an_array(collection: str, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether the expression starting ``collection`` is certainly an array: a literal or a
    comprehension ``[...]``, or a dotted ``input.`` path the input's JSON Schema declares an
    array (the gateway builds every input to it; not where a ``with`` may replace the input).
    A set, an object, data, a rule, a path with brackets: refused (over a set the index is the
    element, over an object a key, neither known to be an integer)."""
    from labelgate.policy.rego_text import _closing

    if collection.startswith("["):
        end = _closing(collection, 0) + 1
        if end == 0:
            return False
    else:
        path = re.match(r"input((?:\.[A-Za-z_]\w*)+)", collection)
        if path is None or not _declared_an_array(path.group(1)[1:].split(".")):
            return False
        if any(re.search(r"(?<![\w.])with\s+input(?!\w)", code) for code, _ in outlines):
            return False
        end = path.end()
    return _COLLECTION_END.match(collection, end) is not None


@functools.cache
def _input_schema() -> Any:
    # The schema `make check` passes to `opa check` (proto/labelgate/v1/schema/opa links to it).
    return json.loads(resources.files("labelgate").joinpath("schema", "input.json").read_text("utf-8"))


def _declared_an_array(keys: list[str]) -> bool:
    """Whether the input schema declares ``input.<keys>`` an array, through ``properties`` only
    (``properties`` applies whatever else a node says; a ``$ref`` or ``oneOf`` on the way is
    not followed)."""
    node = _input_schema()
    for key in keys:
        properties = node.get("properties") if isinstance(node, dict) else None
        node = properties.get(key) if isinstance(properties, dict) else None
        if not isinstance(node, dict):
            return False
    return bool(node.get("type") == "array")


def _data_at(path: str, data: dict[str, Any]) -> Any:
    """The data document's value at ``data.a.b`` (None when it holds nothing there)."""
    value: Any = data
    for key in path.split(".")[1:]:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _rules_may_be_at(path: str, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether a package of the policy is at ``path`` (``data.a.b``), above it (its rules may
    extend it: ``b.c := ...`` in package ``a``) or below it, or cannot be read."""
    for _, module in outlines:
        if module.package is None:
            return True
        package = f"data.{module.package}"
        if path == package or path.startswith(f"{package}.") or package.startswith(f"{path}."):
            return True
    return False


def _valued_from_data(rule: str, package: str | None, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether ``rule`` has definitions in ``package`` and each one's value is a reference into
    the data document (not to where a package's rules may be)."""
    definitions = 0
    for code, module in outlines:
        if package is None or module.package != package:
            continue
        for head in module.heads:
            if head.path.split(".", 1)[0] != rule:
                continue
            statement = module.statement(code, head.start).strip()
            value = _DATA_VALUE.fullmatch(statement)
            if value is None or value.group(1) != rule or re.search(r"\belse\b", statement):
                return False
            root = value.group(2)
            target = "data" if root == "data" else module.aliases.get(root, "")
            if target != "data" and not target.startswith("data."):
                return False
            if _rules_may_be_at(target + value.group(3), outlines):
                return False
            definitions += 1
    return definitions > 0
