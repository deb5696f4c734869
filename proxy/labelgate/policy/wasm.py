"""Decisions in process on OPA's own Wasm target (``opa build -t wasm``), run with wasmtime.

The policy is compiled by OPA itself, so its semantics are OPA's compiler's and OPA's Wasm
runtime's, not a reimplementation's. A policy folder is compiled when it loads (``opa build
-t wasm -e labelgate/decision/result``, the binary from ``$LABELGATE_OPA`` or PATH, ~0.2 s);
a followed bundle that already carries ``policy.wasm`` is used as shipped (its signature
covers it) once the builtins it uses pass the check below, otherwise it is compiled the same
way. The data document (catalog included) is the
policy source's, loaded into each instance once. The host side of the ABI is wasm_host.py.

Exactness: builtins the module implements itself are not all OPA's to the byte
(``json.marshal`` writes object keys in hash order and does not escape ``<>&``, U+2028 and
U+2029 as OPA does; ``to_number("1e400")`` is a number where OPA's is undefined), so a
policy may call only the module-native builtins in ``WASM_NATIVE_BUILTINS`` (read from the
text, as for the embedded engine: rego_text.py), ``json.marshal`` only on what the text shows
to be a number (``marshal_findings``), and the host builtins below; anything else is refused
at load. The ``/`` operator is refused too (division_findings: OPA's wasm target rounds
quotients to 18 significant digits); ``+``, ``-`` and ``*`` with a non-integer operand are not
exact either and are not refused (docs/EMBEDDED_COMPLIANCE.md, "The wasm engine"). The text
is not the module: the module is checked as well (module_findings), by the builtins it uses
itself (the functions its ``name`` section names, which OPA's compiler keeps only for what
the policy reaches) and those its ``builtins`` export asks of the host, so a bundle's
policy.wasm built from other modules than the ones beside it cannot use a refused builtin.
Builtins the module does not implement itself are called on the host (the ``builtins``
export names them). The host implements only ``sprintf`` (wasm_sprintf.py:
``%d``, ``%s``, ``%v``, ``%%`` in a literal format, on numbers, strings, booleans and null);
a policy needing any other host builtin, or a sprintf format that is not a literal or uses
anything else, is refused when it loads (POLICY_UNSUPPORTED_BY_WASM, naming it and pointing
to ``--engine opa``), so a followed bundle keeps its last good revision. A sprintf argument
that is an array, object or set fails the decision closed (POLICY_ERROR) rather than differ.
The default pack needs no host builtin at all (it writes numbers with ``json.marshal``, which
the module implements): a decision is one ``opa_eval`` call (rego/labelgate/decision/engines.rego).

Everything else is EmbeddedEngine's (this class extends it): folder watching, bundle
following, revision hooks (the bundle's catalog), atomic swaps, and the inline budget: a
decision runs on the event loop once its measured average is under ``inline_budget`` (a
default-pack decision takes ~50-70 µs here), else in the worker pool. A wasmtime Store is not
thread-safe, so each thread has its own instance per revision.
"""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from labelgate.errors import ConfigError
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.contract import (
    POLICY_ERROR,
    POLICY_UNAVAILABLE,
    POLICY_UNDEFINED,
    REPLAY,
    Decision,
    for_phase,
    input_phase,
    validate_result,
)
from labelgate.policy.embedded import UNDEFINED, EmbeddedEngine
from labelgate.policy.engine import DECISION_PATH
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm_host import (
    ADVICE,
    HOST_BUILTINS,
    UNSUPPORTED,
    WasmEvalError,
    WasmInstance,
    WasmPolicy,
)
from labelgate.policy.wasm_sprintf import check_format

if TYPE_CHECKING:
    from labelgate.policy.bundle_client import BundleClient
    from labelgate.policy.rego_text import Outline

log = get_logger(__name__)

COMPILE_TIMEOUT_SECONDS = 120.0
_DECISION_MEMO_LIMIT = 4096
_FIELDS_MEMO_LIMIT = 1024
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_MARSHAL_FORMAT = 2  # no back-references: the bytes depend on the values only (policy/cache.py)


def opa_binary(configured: str | None = None) -> str:
    """The opa binary that compiles policies: ``configured``, ``$LABELGATE_OPA``, or ``opa`` on PATH."""
    candidate = configured or os.environ.get("LABELGATE_OPA")
    if candidate:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise ConfigError(
            reasons.OPA_BINARY_MISSING,
            f"the wasm engine compiles policies with opa, and {candidate} ($LABELGATE_OPA) is not an "
            "executable file: fix $LABELGATE_OPA, put opa on PATH, or run `make tools`",
        )
    found = shutil.which("opa")
    if found is None:
        raise ConfigError(
            reasons.OPA_BINARY_MISSING,
            "the wasm engine compiles policies with opa: neither $LABELGATE_OPA is set nor `opa` on "
            "PATH (`make tools` builds the pinned one into .tools/bin), or serve a bundle that "
            "already holds policy.wasm",
        )
    return found


def compile_wasm(source: PolicySource, entrypoint: str, opa: str | None = None) -> bytes:
    """``opa build -t wasm -e ENTRYPOINT`` of the source's modules and data; the module's bytes."""
    from labelgate.bundle.build import read_tarball

    binary = opa_binary(opa)
    with tempfile.TemporaryDirectory(prefix="labelgate-wasm-") as directory:
        root = Path(directory) / "policy"
        for rel, text in source.modules:
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts:
                raise ConfigError(
                    reasons.POLICY_FILE_INVALID, f"{source.origin}: module path {rel!r} is not relative"
                )
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        (root / "data.json").write_text(json.dumps(source.data), encoding="utf-8")
        output = Path(directory) / "bundle.tar.gz"
        command = [binary, "build", "-t", "wasm", "-e", entrypoint, "-o", str(output), str(root)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ConfigError(
                reasons.POLICY_COMPILE_FAILED, f"{source.origin}: {binary} build: {error}"
            ) from error
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().replace(f"{root}/", "")
            raise ConfigError(reasons.POLICY_COMPILE_FAILED, f"{source.origin}: opa build -t wasm: {message}")
        files = read_tarball(output.read_bytes())
    if "policy.wasm" not in files:
        raise ConfigError(reasons.POLICY_COMPILE_FAILED, f"{source.origin}: opa build wrote no policy.wasm")
    return files["policy.wasm"]


def sprintf_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where a module calls sprintf with a format the host cannot render exactly (or not a literal)."""
    from labelgate.policy.rego_text import strip

    found = []
    for name, text in modules:
        stripped, literals = strip(text)
        for call in re.finditer(r"(?<![\w.])sprintf\s*\(\s*", stripped):
            line = stripped.count("\n", 0, call.start()) + 1
            literal = re.match(r'"(\d+)"\s*,', stripped[call.end() :])
            if literal is None:
                found.append(f"`sprintf` with a format that is not a string literal at {name}:{line}")
                continue
            token = literals[int(literal.group(1))]
            format = token[1:-1] if token.startswith("`") else json.loads(token)
            bad = check_format(format)
            if bad is not None:
                found.append(f"`sprintf` directive {bad!r} (only %d, %s, %v, %% are exact) at {name}:{line}")
    return found


# Module-native builtins a policy may call on the wasm engine: what the default pack calls
# (rego/), each held byte for byte to real OPA over 500+ inputs by tests/policy/
# test_differential.py (and test_wasm.py's default-pack test). Operators, comparisons,
# membership and comprehensions are not calls and are not listed (WASM_OPERATORS); that
# corpus exercises them only as the default pack uses them (comparisons, membership, and `+`
# and `-` on integers). Not exact, and not refused: `+`, `-`, `*` with a non-integer operand
# (docs/EMBEDDED_COMPLIANCE.md, "The wasm engine"); refused: `/` (division_findings). Left out
# on purpose: json.marshal (allowed only as marshal_findings says),
# json.marshal_with_options, to_number, format_int and anything else that formats numbers or
# serialises in an order, and anything nondeterministic (capabilities.NONDETERMINISTIC).
# sprintf is a host builtin, checked by sprintf_findings. Add a builtin only with a
# differential test against OPA that calls it.
WASM_NATIVE_BUILTINS: frozenset[str] = frozenset(
    {
        "array.concat",
        "concat",
        "count",
        "is_array",
        "is_boolean",
        "is_object",
        "is_string",
        "max",
        "min",
        "object.get",
        "object.union",
        "sort",
    }
)
# The builtins Rego writes as operators (``==``, ``+``, ``%``, ``&``, ``in`` ...): the text
# check does not see them as calls, and the module check (module_findings) allows them.
# ``div`` (``/``) is not among them: OPA's wasm target rounds quotients to 18 significant
# digits (division_findings).
WASM_OPERATORS: frozenset[str] = frozenset(
    {
        "and",
        "equal",
        "gt",
        "gte",
        "internal.member_2",
        "internal.member_3",
        "lt",
        "lte",
        "minus",
        "mul",
        "neq",
        "or",
        "plus",
        "rem",
    }
)
# The function of OPA's Wasm library that implements each module-native builtin (OPA
# 1.22.3: internal/compiler/wasm/wasm.go ``builtinsFunctions``, and what `opa build -t wasm`
# keeps for a policy calling each builtin; tests/policy/test_wasm.py compares this with the
# pinned binary). OPA's compiler drops every library function the policy does not reach,
# names included, so the functions a module's ``name`` section still names are the
# builtins it implements for its policy. A builtin may reach another's function too
# (glob.match reaches opa_regex_match, json.filter reaches split's): then both are named, and
# the policy is refused all the same; no allowed builtin reaches a refused builtin's function.
# Deprecated aliases (re_match, net.cidr_overlap) read as the builtin they share it with.
_NATIVE_FUNCTIONS: dict[str, str] = {
    "builtin_graph_reachable": "graph.reachable",
    "builtin_json_filter": "json.filter",
    "builtin_json_remove": "json.remove",
    "builtin_member": "internal.member_2",
    "builtin_member3": "internal.member_3",
    "builtin_object_filter": "object.filter",
    "builtin_object_get": "object.get",
    "builtin_object_keys": "object.keys",
    "builtin_object_remove": "object.remove",
    "builtin_object_union": "object.union",
    "builtin_object_union_n": "object.union_n",
    "opa_agg_all": "all",
    "opa_agg_any": "any",
    "opa_agg_count": "count",
    "opa_agg_max": "max",
    "opa_agg_min": "min",
    "opa_agg_product": "product",
    "opa_agg_sort": "sort",
    "opa_agg_sum": "sum",
    "opa_arith_abs": "abs",
    "opa_arith_ceil": "ceil",
    "opa_arith_divide": "div",
    "opa_arith_floor": "floor",
    "opa_arith_minus": "minus",
    "opa_arith_multiply": "mul",
    "opa_arith_plus": "plus",
    "opa_arith_rem": "rem",
    "opa_arith_round": "round",
    "opa_array_concat": "array.concat",
    "opa_array_flatten": "array.flatten",
    "opa_array_reverse": "array.reverse",
    "opa_array_slice": "array.slice",
    "opa_base64_decode": "base64.decode",
    "opa_base64_encode": "base64.encode",
    "opa_base64_is_valid": "base64.is_valid",
    "opa_base64_url_decode": "base64url.decode",
    "opa_base64_url_encode": "base64url.encode",
    "opa_bits_and": "bits.and",
    "opa_bits_negate": "bits.negate",
    "opa_bits_or": "bits.or",
    "opa_bits_shiftleft": "bits.lsh",
    "opa_bits_shiftright": "bits.rsh",
    "opa_bits_xor": "bits.xor",
    "opa_cidr_contains": "net.cidr_contains",
    "opa_cidr_intersects": "net.cidr_intersects",
    "opa_cmp_eq": "equal",
    "opa_cmp_gt": "gt",
    "opa_cmp_gte": "gte",
    "opa_cmp_lt": "lt",
    "opa_cmp_lte": "lte",
    "opa_cmp_neq": "neq",
    "opa_glob_match": "glob.match",
    "opa_json_is_valid": "json.is_valid",
    "opa_json_marshal": "json.marshal",
    "opa_json_unmarshal": "json.unmarshal",
    "opa_numbers_range": "numbers.range",
    "opa_regex_find_all_string_submatch": "regex.find_all_string_submatch_n",
    "opa_regex_is_valid": "regex.is_valid",
    "opa_regex_match": "regex.match",
    "opa_set_diff": "minus",
    "opa_set_intersection": "and",
    "opa_set_union": "or",
    "opa_sets_intersection": "intersection",
    "opa_sets_union": "union",
    "opa_strings_concat": "concat",
    "opa_strings_contains": "contains",
    "opa_strings_endswith": "endswith",
    "opa_strings_format_int": "format_int",
    "opa_strings_indexof": "indexof",
    "opa_strings_lower": "lower",
    "opa_strings_replace": "replace",
    "opa_strings_replace_n": "strings.replace_n",
    "opa_strings_reverse": "strings.reverse",
    "opa_strings_split": "split",
    "opa_strings_startswith": "startswith",
    "opa_strings_substring": "substring",
    "opa_strings_trim": "trim",
    "opa_strings_trim_left": "trim_left",
    "opa_strings_trim_prefix": "trim_prefix",
    "opa_strings_trim_right": "trim_right",
    "opa_strings_trim_space": "trim_space",
    "opa_strings_trim_suffix": "trim_suffix",
    "opa_strings_upper": "upper",
    "opa_template_string": "internal.template_string",
    "opa_to_number": "to_number",
    "opa_types_is_array": "is_array",
    "opa_types_is_boolean": "is_boolean",
    "opa_types_is_null": "is_null",
    "opa_types_is_number": "is_number",
    "opa_types_is_object": "is_object",
    "opa_types_is_set": "is_set",
    "opa_types_is_string": "is_string",
    "opa_types_name": "type_name",
    "opa_value_transitive_closure": "walk",
}
# Builtins the wasm engine vets by the modules' text (their arguments, their format): a module
# calling one the text does not call was built from other modules.
_VETTED_IN_TEXT = ("json.marshal", "sprintf")
# What module_findings lets a module use: what native_findings lets the text call, and the
# operators.
_MODULE_ALLOWED = WASM_NATIVE_BUILTINS | HOST_BUILTINS | WASM_OPERATORS | {"json.marshal"}
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
    ``count(...)``; the index variable of ``some i, x in ...`` iterated in the same rule, named
    nowhere else in it but in ``json.marshal(i)`` and neither a rule of the package nor an
    import (an array's index; known gap: over an object it is a key, a string, which differs
    only if it holds ``<``, ``>``, ``&``, U+2028 or U+2029); a reference ``data.a.b`` that the
    data document itself holds as an integer, at a path no package of the policy is at, above
    or below (a package's rules may be there: review, ``data.labelgate.decision.pairs.max_rows``
    was a partial object rule whose key is an integer elsewhere in the data); or
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
            elif not _is_integer(argument, rule, module, outlines, data, integer_keys):
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
    module: Outline,
    outlines: list[tuple[str, Outline]],
    data: dict[str, Any],
    integer_keys: dict[str, bool],
) -> bool:
    count = re.match(r"count\s*\(", argument)
    if count is not None:
        from labelgate.policy.rego_text import _closing

        return _closing(argument, count.end() - 1) == len(argument) - 1
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


def _an_array_index(name: str, rule: str, module: Outline, outlines: list[tuple[str, Outline]]) -> bool:
    """Whether ``name`` is the index of a ``some name, x in ...`` in ``rule`` and is named there
    only there and in ``json.marshal(name)``: a second mention may bind it afresh (in a
    comprehension, by ``:=``), and where no ``some`` is in scope the name is a rule or an import."""
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
        if re.search(r"(?<![\w.])some\s+$", before) and re.match(r"\s*,\s*[A-Za-z_]\w*\s+in\b", after):
            declared += 1
        elif not (re.search(r"(?<![\w.])json\.marshal\s*\(\s*$", before) and re.match(r"\s*\)", after)):
            return False
    return declared == 1


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


def native_findings(source: PolicySource) -> list[str]:
    """What the policy calls that the wasm engine does not evaluate exactly as OPA (see above)."""
    from labelgate.policy.rego_text import definitions, scan_calls

    defined = definitions(source.modules)
    places: dict[str, list[str]] = {}
    for name, text in source.modules:
        for call, line in scan_calls(text, defined):
            if call in WASM_NATIVE_BUILTINS or call in HOST_BUILTINS or call == "json.marshal":
                continue
            places.setdefault(call, []).append(f"{name}:{line}")
    found = []
    if places:
        names = ", ".join(f"`{call}`" for call in sorted(places))
        where = "; ".join(f"`{call}` at {', '.join(places[call][:3])}" for call in sorted(places))
        found.append(f"builtin(s) {names} ({where})")
    return (
        found
        + division_findings(source.modules)
        + marshal_findings(source.modules, source.data)
        + order_findings(source.modules)
    )


def order_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where the policy orders a set or an object it builds into what the decision shows
    (``rego_order``): OPA's wasm target iterates both in its own hash order, where OPA sorts
    (review: ``concat("; ", reasons)`` gave another reason). Objects of the input and the
    data are iterated in that order too, which the text cannot tell from arrays: a known gap
    (docs/EMBEDDED_COMPLIANCE.md)."""
    from labelgate.policy.rego_order import order_findings as found_in

    return [f"{finding.what} ({finding.where})" for finding in found_in(modules)]


def division_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where a module divides: OPA's wasm target rounds a quotient to 18 significant digits,
    where OPA keeps more (``(1 / 3) * 3 == 1`` and ``t / 1000000000 > 1750000000`` for
    ``t = 1750000000000000001`` are true in OPA, false there). Any quotient may need them,
    whatever the operands, so every ``/`` is refused (in Rego's grammar ``/`` is only ever
    division; comments and strings are blanked first)."""
    from labelgate.policy.rego_text import blank

    places = []
    for name, text in modules:
        code = blank(text)
        places += [f"{name}:{code.count(chr(10), 0, match.start()) + 1}" for match in re.finditer("/", code)]
    if not places:
        return []
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return [
        f"the `/` operator at {', '.join(places[:3])}{more} (OPA's wasm target rounds quotients "
        "to 18 significant digits; compare products instead, e.g. `a > b * c` for `a / c > b`)"
    ]


def check_native(source: PolicySource) -> None:
    """Raise ConfigError(POLICY_UNSUPPORTED_BY_WASM) naming what native_findings finds."""
    findings = native_findings(source)
    if findings:
        raise ConfigError(
            UNSUPPORTED,
            f"{source.origin}: the wasm engine cannot evaluate this policy exactly as OPA does: "
            f"{'; '.join(findings)}; {ADVICE}",
        )


def _leb128(data: bytes, offset: int) -> tuple[int, int]:
    """An unsigned LEB128 number at ``offset``, and the offset after it (IndexError past the end)."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset


def module_function_names(wasm: bytes) -> set[str] | None:
    """The function names of a Wasm module's ``name`` custom section; None when it has none
    (or one that does not read)."""
    names: set[str] | None = None
    try:
        offset = 8  # magic and version
        while offset < len(wasm):
            section, offset = wasm[offset], offset + 1
            size, offset = _leb128(wasm, offset)
            end = offset + size
            if section == 0:
                length, at = _leb128(wasm, offset)
                if wasm[at : at + length] == b"name":
                    at += length
                    while at < end:
                        subsection, at = wasm[at], at + 1
                        sub_size, at = _leb128(wasm, at)
                        if subsection == 1:  # function names: a vector of (index, name)
                            names = set() if names is None else names
                            count, entry = _leb128(wasm, at)
                            for _ in range(count):
                                _, entry = _leb128(wasm, entry)
                                length, entry = _leb128(wasm, entry)
                                names.add(wasm[entry : entry + length].decode("utf-8"))
                                entry += length
                        at += sub_size
            offset = end
    except (IndexError, UnicodeDecodeError):
        return None
    return names


def module_builtins(wasm: bytes, host: Iterable[str]) -> set[str] | None:
    """The builtins a module compiled by ``opa build -t wasm`` uses: the ones it implements
    itself (named by the functions of its ``name`` section, _NATIVE_FUNCTIONS) and the ``host``
    ones its ``builtins`` export names. None when the module names none of its functions."""
    names = module_function_names(wasm)
    if names is None:
        return None
    return set(host) | {_NATIVE_FUNCTIONS[function] for function in names & _NATIVE_FUNCTIONS.keys()}


def module_findings(source: PolicySource, wasm: bytes, host: Iterable[str], what: str) -> list[str]:
    """What the module ``what`` (a bundle's policy.wasm, or the one compiled from the text)
    uses that native_findings would refuse in the text, or that the text does not call.

    native_findings reads the modules; a bundle's policy.wasm runs as shipped, and nothing but
    this ties it to them: a policy.wasm built from other modules than the ones beside it is
    refused when it uses a builtin the wasm engine refuses (``/`` included), or a builtin vetted
    in the text (json.marshal, sprintf) that no module calls. Sound for a module as OPA's
    compiler writes it (every builtin it implements is named); a module it did not write, or
    one optimised with ``wasm-opt`` (which may inline a builtin's function away), can hide one.
    """
    from labelgate.policy.rego_text import definitions, scan_calls

    used = module_builtins(wasm, host)
    if used is None:
        return [
            f"{what} has no function names (a `name` section, which `opa build -t wasm` always "
            "writes), so the builtins it implements cannot be checked"
        ]
    found = []
    refused = sorted(used - _MODULE_ALLOWED)
    if refused:
        names = ", ".join(f"`{builtin}`" for builtin in refused)
        found.append(
            f"{what} uses builtin(s) {names}, which the modules' text does not show (is it built from them?)"
        )
    defined = definitions(source.modules)
    called = {call for _, text in source.modules for call, _ in scan_calls(text, defined)}
    unseen = [builtin for builtin in _VETTED_IN_TEXT if builtin in used and builtin not in called]
    if unseen:
        names = ", ".join(f"`{builtin}`" for builtin in unseen)
        found.append(
            f"{what} calls {names}, which no module calls (their arguments are checked in the "
            "modules' text, so the module must be built from those modules)"
        )
    return found


class _WasmCompiled:
    """One revision: the compiled module and its data; each thread evaluates on its own instance."""

    def __init__(self, source: PolicySource, policy: WasmPolicy, data_json: bytes) -> None:
        self.source = source
        self.policy = policy
        self.data_json = data_json
        self.average_seconds: float | None = None
        self._local = threading.local()
        self._decisions: dict[bytes, Decision] = {}
        self._fields_json: dict[bytes, str] = {}

    @property
    def revision(self) -> str:
        return self.source.revision

    @classmethod
    def build(
        cls, source: PolicySource, entrypoint: str, opa: str | None = None, wasm: bytes | None = None
    ) -> _WasmCompiled:
        """Compile (unless ``wasm`` is given), check what the host must provide, and load the data."""
        source.refuse_yaml_data("wasm")
        check_native(source)  # before compiling: cheaper, and it names the lines
        what = "the bundle's policy.wasm" if wasm is not None else "the compiled module"
        if wasm is None:
            wasm = compile_wasm(source, entrypoint, opa)
        policy = WasmPolicy(wasm, entrypoint, source.origin)
        # The module itself: a bundle's policy.wasm may not be built from the modules beside it.
        findings = module_findings(source, wasm, policy.builtins.values(), what)
        if findings:
            raise ConfigError(
                UNSUPPORTED,
                f"{source.origin}: the wasm engine cannot evaluate this policy exactly as OPA does: "
                f"{'; '.join(findings)}; {ADVICE}",
            )
        if "sprintf" in policy.builtins.values():
            findings = sprintf_findings(source.modules)
            if findings:
                raise ConfigError(
                    UNSUPPORTED,
                    f"{source.origin}: the wasm engine cannot evaluate this policy exactly as OPA does: "
                    f"{'; '.join(findings)}; {ADVICE}",
                )
        compiled = cls(source, policy, json.dumps(source.data, ensure_ascii=False).encode("utf-8"))
        compiled._instance()  # the data loads here, or the revision is refused
        return compiled

    def _instance(self) -> WasmInstance:
        instance = getattr(self._local, "instance", None)
        if instance is None:
            try:
                instance = self._local.instance = self.policy.instantiate(self.data_json)
            except WasmEvalError as error:
                raise ConfigError(reasons.POLICY_DATA_INVALID, f"{self.source.origin}: {error}") from error
        return instance

    def evaluate(self, value: Any) -> Any:
        """The decision rule's value for input ``value``, or UNDEFINED. Raises on any error."""
        results = json.loads(self.evaluate_text(value))
        return results[0]["result"] if results else UNDEFINED

    def decision(self, output: bytes, engine: str, phase: str | None = None) -> Decision:
        """The validated Decision for a result set as the module wrote it (memoised by its text).

        A policy gives the same few results over and over, and turning the text into a
        validated Decision is a pure function of it, so the text is the key; only good
        decisions are kept, so every invalid result is logged as it happens.
        """
        decision = self._decisions.get(output)
        if decision is not None:
            return for_phase(decision, phase)
        results = json.loads(output)
        if not results:
            return Decision.deny(POLICY_UNDEFINED, engine=engine, revision=self.revision)
        # Remembered without the phase check (replay accepts every valid result), which is
        # applied on every answer: two attribute reads.
        decision = validate_result(results[0]["result"], phase=REPLAY, engine=engine, revision=self.revision)
        if not decision.failed_closed:
            if len(self._decisions) >= _DECISION_MEMO_LIMIT:
                self._decisions.clear()
            self._decisions[output] = decision
        return for_phase(decision, phase)

    def encode_input(self, value: Any) -> bytes:
        """``value`` as the module's JSON input text.

        ``fields``, two thirds of a default-pack input and the same list call after call for a
        model, is encoded once per distinct value: its JSON is remembered by its ``marshal``
        bytes (format 2: equal bytes load back as equal values of equal types, so they encode
        to the same JSON; a value ``marshal`` refuses is encoded afresh) and spliced in as the
        object's last member. Member order means nothing to OPA's JSON parser. ~3 µs for the
        key against ~11 µs for the encoding (``python -m bench.policy_engines``).
        """
        fields = value.get("fields") if type(value) is dict else None
        if type(fields) is not list:
            return _ENCODER.encode(value).encode("utf-8")
        try:
            key = marshal.dumps(fields, _MARSHAL_FORMAT)
        except ValueError:
            return _ENCODER.encode(value).encode("utf-8")
        fields_json = self._fields_json.get(key)
        if fields_json is None:
            fields_json = _ENCODER.encode(fields)
            if len(self._fields_json) >= _FIELDS_MEMO_LIMIT:
                self._fields_json.clear()
            self._fields_json[key] = fields_json
        rest = _ENCODER.encode({k: v for k, v in value.items() if k != "fields"})
        separator = "," if len(rest) > 2 else ""
        return f'{rest[:-1]}{separator}"fields":{fields_json}}}'.encode()

    def evaluate_text(self, value: Any) -> bytes:
        """The result set as JSON text (``[{"result": ...}]``, ``[]`` when undefined)."""
        text = self.encode_input(value)
        instance = self._instance()
        started = time.perf_counter()
        try:
            output = instance.evaluate(text)
        except WasmEvalError:
            self._local.instance = None  # a trap may leave the instance in any state: start afresh
            raise
        elapsed = time.perf_counter() - started
        previous = self.average_seconds
        # A lost update between threads only makes the average slightly stale: harmless.
        self.average_seconds = elapsed if previous is None else previous * 0.9 + elapsed * 0.1
        return output


class WasmEngine(EmbeddedEngine):
    """PolicyEngine on OPA's Wasm target, from ``policy_dir`` or the bundles ``bundle`` follows."""

    name = "wasm"

    def __init__(
        self,
        policy_dir: Path | None = None,
        *,
        bundle: BundleClient | None = None,
        watch_interval: float | None = 2.0,
        decision_path: str = DECISION_PATH,
        inline_budget: float = 0.0001,
        workers: int | None = None,
        opa: str | None = None,
    ) -> None:
        super().__init__(
            policy_dir,
            bundle=bundle,
            watch_interval=watch_interval,
            decision_path=decision_path,
            inline_budget=inline_budget,
            workers=workers,
        )
        self._opa = opa
        if policy_dir is not None:
            opa_binary(opa)  # a missing compiler is a configuration error now, not at start

    async def _swap_in(self, source: PolicySource) -> bool:
        if self._compiled is not None and source.revision == self._compiled.revision:
            return False
        wasm = getattr(source, "wasm", None)
        compiled = await asyncio.to_thread(_WasmCompiled.build, source, self._entrypoint, self._opa, wasm)
        commits = [await asyncio.to_thread(hook, source) for hook in self._hooks]
        old = self.revision
        self._compiled = compiled  # type: ignore[assignment]  # the atomic swap
        for commit in commits:
            commit()
        log.info(
            "policy_loaded",
            engine=self.name,
            origin=source.origin,
            old_revision=old,
            revision=source.revision,
            modules=len(source.modules),
            compiled="bundle" if wasm is not None else "opa build",
        )
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        compiled, executor = self._compiled, self._executor
        if compiled is None or executor is None:
            log.error("policy_not_loaded", engine=self.name)
            return Decision.deny(POLICY_UNAVAILABLE, engine=self.name, revision=self.revision)
        assert isinstance(compiled, _WasmCompiled)
        try:
            average = compiled.average_seconds
            if average is not None and average <= self._inline_budget:
                output = compiled.evaluate_text(input)
            else:
                loop = asyncio.get_running_loop()
                output = await loop.run_in_executor(executor, compiled.evaluate_text, input)
            return compiled.decision(output, self.name, input_phase(input))
        except Exception as error:  # fail closed on anything the module, the host or the input throws
            log.error(
                "policy_eval_error",
                engine=self.name,
                revision=compiled.revision,
                error_type=type(error).__name__,
                error=str(error) if isinstance(error, WasmEvalError) else None,
            )
            return Decision.deny(POLICY_ERROR, engine=self.name, revision=compiled.revision)
