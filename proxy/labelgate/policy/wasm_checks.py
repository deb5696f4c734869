"""What a policy may use for the wasm engine to decide exactly as OPA does; refused at load otherwise.

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
anything else, or a ``with ... as sprintf`` (``sprintf_with_findings``: the formats of the
replaced function's calls are never vetted), is refused when it loads
(POLICY_UNSUPPORTED_BY_WASM, naming it and pointing to ``--engine opa``), so a followed
bundle keeps its last good revision. A sprintf argument that is an array, object or set
fails the decision closed (POLICY_ERROR) rather than differ. A number literal written as a
float whose value is whole (``1.0``) is refused at load too (``whole_literal_findings``,
whole_numbers.py).
The default pack needs no host builtin at all (it writes numbers with ``json.marshal``, which
the module implements): a decision is one ``opa_eval`` call (rego/labelgate/decision/engines.rego).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from labelgate.errors import ConfigError
from labelgate.policy.wasm_host import ADVICE, HOST_BUILTINS, UNSUPPORTED
from labelgate.policy.wasm_marshal import marshal_findings
from labelgate.policy.wasm_sprintf import check_format
from labelgate.policy.wasm_strict import read_u32

if TYPE_CHECKING:
    from labelgate.policy.source import PolicySource


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
# differential test against OPA that calls it. Beyond the default pack: is_number, the check
# the embedded engine asks for before an ordering comparison (rego_comparisons.py), so that
# one policy loads on both (test_wasm.py holds it to OPA on every JSON type).
WASM_NATIVE_BUILTINS: frozenset[str] = frozenset(
    {
        "array.concat",
        "concat",
        "count",
        "is_array",
        "is_boolean",
        "is_number",
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
        + set_order_findings(source.modules)
        + sprintf_with_findings(source.modules)
        + whole_literal_findings(source.modules)
    )


# ``as sprintf`` but a call (``with x as sprintf("%v", [y])``, a call the call check vets).
_AS_SPRINTF = re.compile(r"(?<![\w.])as\s+sprintf(?![\w.(])")


def sprintf_with_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where a ``with`` puts sprintf in another function's place (``concat("%x", xs) == "ff"
    with concat as sprintf``): the replaced function's calls then reach the host's sprintf
    with formats ``sprintf_findings`` never sees at a ``sprintf(`` call, refused or not
    literals at all, and every decision on that path failed closed at runtime (review). Any
    ``as sprintf`` that is not a call is refused (an import alias named ``sprintf`` too)."""
    from labelgate.policy.rego_text import blank

    places = []
    for name, text in modules:
        code = blank(text)
        places += [f"{name}:{code.count(chr(10), 0, m.start()) + 1}" for m in _AS_SPRINTF.finditer(code)]
    if not places:
        return []
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return [
        f"`sprintf` put in another function's place by `with ... as sprintf` at "
        f"{', '.join(places[:3])}{more} (its formats are checked at `sprintf(` calls only; call "
        "sprintf itself with a literal format)"
    ]


def whole_literal_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Number literals written with a fraction or an exponent whose value is whole (``1.0``,
    ``1e0``): OPA indexes arrays by them, the module by integers only (``input.fields[1.0]`` and
    ``1.0, "secret" in input.fields`` were undefined here, true in OPA; whole_numbers.py)."""
    from labelgate.policy.rego_text import strip, whole_number_literals

    places = []
    for name, text in modules:
        stripped, _ = strip(text)
        places += [
            f"`{literal}` at {name}:{stripped.count(chr(10), 0, offset) + 1}"
            for literal, offset in whole_number_literals(stripped)
        ]
    if not places:
        return []
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return [
        f"whole number(s) written with a fraction or an exponent ({', '.join(places[:3])}{more}; "
        "OPA indexes arrays by them, OPA's wasm target does not: write the integer)"
    ]


def order_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where the policy orders a set or an object it builds into what the decision shows
    (``rego_order``): OPA's wasm target iterates both in its own hash order, where OPA sorts
    (review: ``concat("; ", reasons)`` gave another reason). Objects of the input and the
    data are iterated in that order too, which the text cannot tell from arrays: a known gap
    (docs/EMBEDDED_COMPLIANCE.md)."""
    from labelgate.policy.rego_order import order_findings as found_in

    return [f"{finding.what} ({finding.where})" for finding in found_in(modules)]


SET_ORDER = (
    "an array comprehension over a set used other than by `count`, `sort`, `max`, `min` or `in` "
    "(OPA's wasm target iterates a set in its own hash order, OPA sorts it: `[g | some g in s][0]` "
    "is another element there; wrap it in `sort(...)`)"
)


def set_order_findings(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where an array comprehension over a set the policy builds keeps the set's order in what
    the decision reads other than as a string (indexed, compared, iterated with its index),
    read as for the embedded engine (``rego_comparisons.set_order_findings``; joined into a
    string it is ``order_findings``'): OPA's wasm target iterates a set in its own hash order
    (review: with 40 groups, ``[g | some g in s] == sort(input.groups)`` was false there,
    true in OPA, and ``[g | some g in s][0]`` another group)."""
    from labelgate.policy import rego_comparisons

    found = rego_comparisons.set_order_findings(modules)
    places = [finding.where for finding in found if finding.what == rego_comparisons.SET_ORDER]
    other = [
        f"{finding.what} ({finding.where})" for finding in found if finding.what != rego_comparisons.SET_ORDER
    ]
    if not places:
        return other
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return [f"{SET_ORDER} at {', '.join(places[:3])}{more}", *other]


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


def module_function_names(wasm: bytes) -> set[str] | None:
    """The function names of a Wasm module's ``name`` custom section; None when it has none
    (or one that does not read)."""
    names: set[str] | None = None
    try:
        offset = 8  # magic and version
        while offset < len(wasm):
            section, offset = wasm[offset], offset + 1
            size, offset = read_u32(wasm, offset)
            end = offset + size
            if section == 0:
                length, at = read_u32(wasm, offset)
                if wasm[at : at + length] == b"name":
                    at += length
                    while at < end:
                        subsection, at = wasm[at], at + 1
                        sub_size, at = read_u32(wasm, at)
                        if subsection == 1:  # function names: a vector of (index, name)
                            names = set() if names is None else names
                            count, entry = read_u32(wasm, at)
                            for _ in range(count):
                                _, entry = read_u32(wasm, entry)
                                length, entry = read_u32(wasm, entry)
                                names.add(wasm[entry : entry + length].decode("utf-8"))
                                entry += length
                        at += sub_size
            offset = end
    except (IndexError, ValueError):
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
