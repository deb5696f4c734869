"""What the embedded engine (regopy 1.5.2) evaluates exactly as OPA does, and the check that
refuses a policy using anything else (issue 12: never a silently different decision).

``SUPPORTED_BUILTINS`` is evidence, not opinion: OPA's own compliance suite is run against
regopy (tests/policy/test_opa_compliance.py, docs/EMBEDDED_COMPLIANCE.md). Which builtins a
case calls is read from rego-cpp's compiled plan (an OPA-IR plan: ``static.builtin_funcs``
plus every ``CallStmt`` that is not one of the plan's own functions, so operators such as
``plus`` and ``internal.member_2`` count, and so do names rego-cpp does not know). A builtin
is listed only when at least one passing case calls it and no reviewed failure is blamed on
it; a test holds the list to that. Builtins whose value depends on the outside world
(``NONDETERMINISTIC``) stay out whatever their cases say: the decision cache and the
differential test assume a decision depends on the input and the policy only.

OPA's cases are not adversarial, so passing them is not enough: ``INEXACT_BUILTINS`` are
builtins whose cases pass but that a differential run against real OPA showed to differ,
with chosen arguments (non-ASCII text, numbers beyond 2^53, odd number and duration syntax,
empty separators, JWTs signed in standard base64) or with ordinary, valid ones (nested
objects to merge, RFC 3339 times ending in ``Z``, ``+`` in a query string, a real
certificate and key); they are out, with the reason the refusal names.
``LITERAL_ARGUMENT_BUILTINS`` differ only on arguments a literal rules out
(``strings.count`` with an empty needle counts bytes + 1 on non-ASCII text, OPA characters
+ 1): they load only when that argument is a non-empty string literal. What stays is held
to real OPA on both kinds of arguments by tests/policy/test_builtin_differential.py, every
allowed builtin on ordinary ones.

``GUARDED_BUILTINS`` (sort, max, min, json.marshal) differ too but the default pack needs
them, so they stay, guarded per decision: rego-cpp orders values by their JSON text (``9``
after ``10``, ``"a b"`` before ``"a"``, ``"a"`` before ``1``), and its json.marshal does not
escape ``<>&``, U+2028 and U+2029 nor sort a set. ``exact_modules`` swaps every call of them for
a function of the policy's own package (``EXACT_REGO``) that returns rego-cpp's answer when
it is provably OPA's, computes OPA's otherwise (numbers by ``<``/``>``, which rego-cpp gets
right; strings by the order of their ``hex.encode``), and raises an evaluation error (a deny)
for what neither covers: mixed types, booleans, arrays and objects in an order, json.marshal
of anything but numbers, arrays of them and null (its text of a string or an object holds
``"``, which rego-cpp's string builtins then count and hash escaped, and booleans an ``in``
made come out ``True``: found by fuzzing). Each guarded call costs a function call (~50 µs
in rego-cpp).

At load time the gateway cannot read that plan: ``Interpreter.save_bundle`` corrupts the heap
(``double free``) once grpc's libraries are loaded before regopy's (libstdc++ then allocates
with ``malloc`` what rego-cpp frees with its own snmalloc; ``labelgate/__init__.py`` now loads
rego-cpp first for that reason, but a process importing grpc before labelgate still has the
mismatch). So ``check_source`` scans the text instead (rego_text.py: comments and literals
blanked, every call whose whole path does not resolve, as Rego resolves it, to a function of
the policy itself is a builtin call), and the compliance test checks that the scanner finds
every builtin the plan names in all of OPA's cases: a name it missed would be a call it
cannot vet (test_rego_text.py holds its calls and heads to ``opa parse`` as well).

Divergences that depend on values rather than names (see the docstring of embedded.py):
- rego-cpp keeps strings in their JSON-escaped form: it compares and sorts them by it, and
  ``count`` and the string builtins count escaped bytes (some, such as ``trim_space``, then
  produce invalid JSON, which the engine turns into a deny). So strings holding ``"``,
  ``\\`` or control characters differ. From the input (requested output names, model names,
  subject ids and groups reach it from callers) they are refused per decision: such an input
  is denied with EMBEDDED_INPUT_UNSUPPORTED, found by the escaping the input goes through
  anyway (embedded.py ``_InputBuilder``), so it costs nothing per decision; ``--engine opa``
  decides it. The policy's own literals are vetted when it loads (rego_text.py: a ``\\u`` or
  ``\\/`` escape never equals the input's string, so it is refused). Strings of the policy or
  its data holding these characters are accepted (the default pack has a few, in messages
  that differ from every other before that character, so they sort as in OPA).
- data from a data.yaml is refused when the policy loads (source.py: PyYAML reads YAML
  1.1, OPA YAML 1.2).
- sets and objects iterate in the order they were built in rego-cpp, sorted in OPA, and
  ``walk`` goes breadth first there, depth first in OPA. The input and the data go in with
  their keys sorted (embedded.py); for what the policy builds, rego_order.order_findings
  refuses ``concat``/``sort`` of a set, an array comprehension over a set joined into a
  string, and one over an object or ``walk`` whose order can matter, for sets and objects
  the text of any module of the policy shows; one reaching them through a function argument
  is not seen (the differential test is the backstop for the default pack).
- numbers with a fraction or exponent are kept to 16 significant digits: such literals
  beyond 16 digits and ``-0`` are refused at load (rego_text.py), such floats in the data
  at load and in the input per decision (embedded.py).
- arrays are looked up by integers only, where OPA takes any whole number (``xs[1.0]``): a
  whole number written as a float is refused as a literal (rego_text.py) and in the data at
  load, and denied in the input per decision (whole_numbers.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regopy

from labelgate.errors import ConfigError
from labelgate.policy import reasons

UNSUPPORTED = reasons.POLICY_UNSUPPORTED_BY_EMBEDDED
ADVICE = "run this policy with --engine opa, or rewrite it without these"

# Every builtin (operators included) that passing compliance cases call and no known failure is
# blamed on, minus NONDETERMINISTIC and INEXACT_BUILTINS; tests/policy/test_opa_compliance.py
# holds it to that, tests/policy/test_builtin_differential.py to real OPA on hostile and ordinary
# arguments (every one of them has an ordinary case there).
SUPPORTED_BUILTINS: frozenset[str] = frozenset(
    {
        "and",
        "array.concat",
        "array.flatten",
        "array.reverse",
        "array.slice",
        "base64.encode",
        "base64url.encode",
        "base64url.encode_no_pad",
        "concat",
        "contains",
        "count",
        "crypto.hmac.equal",
        "crypto.hmac.md5",
        "crypto.hmac.sha1",
        "crypto.hmac.sha256",
        "crypto.hmac.sha512",
        "crypto.md5",
        "crypto.sha1",
        "crypto.sha256",
        "crypto.x509.parse_rsa_private_key",
        "div",
        "endswith",
        "equal",
        "glob.quote_meta",
        "graph.reachable",
        "gt",
        "gte",
        "internal.member_2",
        "intersection",
        "io.jwt.encode_sign_raw",
        "is_array",
        "is_boolean",
        "is_null",
        "is_number",
        "is_object",
        "is_set",
        "is_string",
        "json.is_valid",
        "json.marshal",
        "lt",
        "lte",
        "max",
        "min",
        "minus",
        "mul",
        "neq",
        "numbers.range",
        "numbers.range_step",
        "object.filter",
        "object.get",
        "object.keys",
        "object.remove",
        "or",
        "plus",
        "regex.globs_match",
        "regex.template_match",
        "sort",
        "split",
        "startswith",
        "strings.any_prefix_match",
        "strings.any_suffix_match",
        "strings.count",
        "substring",
        "trim",
        "trim_left",
        "trim_prefix",
        "trim_right",
        "trim_suffix",
        "type_name",
        "union",
        "walk",
    }
)

# Builtins whose OPA compliance cases pass but that differ from OPA on other arguments
# (tests/policy/test_builtin_differential.py has the reproductions): refused, with the reason.
INEXACT_BUILTINS: dict[str, str] = {
    "abs": "wrong beyond 64-bit numbers and on some floats",
    "ceil": "wrong beyond 64-bit numbers and on some floats",
    "floor": "wrong beyond 64-bit numbers and on some floats",
    "round": "wrong beyond 64-bit numbers and on some floats",
    "rem": "wrong on large numbers",
    "glob.match": "wrong on non-ASCII text",
    "regex.match": "wrong on non-ASCII text",
    "hex.encode": "wrong on non-ASCII text",
    "lower": "wrong on non-ASCII text",
    "upper": "wrong on non-ASCII text",
    "trim_space": "keeps non-ASCII spaces",
    "sprintf": "%d truncates numbers to 32 bits",
    "to_number": 'reads "0x10" and " 5 " as numbers',
    "units.parse": 'reads "1e400" as Infinity',
    "units.parse_bytes": 'reads "1e400" as Infinity',
    "sum": "false, not undefined, for non-numbers",
    "product": "false, not undefined, for non-numbers",
    "time.parse_duration_ns": 'accepts "1h1.5m-3us"',
    "yaml.unmarshal": 'reads "0x10" as a string (YAML 1.1)',
    "replace": "an empty old string never terminates and grows without bound",
    "regex.split": "an empty pattern never terminates",
    "yaml.is_valid": "an empty document never terminates",
    "indexof": "an empty needle has an index, OPA's is undefined",
    "indexof_n": "an empty needle has indexes, OPA's are undefined",
    "json.filter": "an empty path differs",
    "json.remove": "an empty path differs",
    "base64.decode": "accepts input without padding",
    "base64url.decode": 'decoded text in double quotes loses them ("\\"admin\\"" equals "admin")',
    "hex.decode": 'decoded text in double quotes loses them ("\\"admin\\"" equals "admin")',
    "base64.is_valid": "accepts input without padding",
    "urlquery.encode": "writes a space as %20, OPA as +",
    "urlquery.encode_object": "writes a space as %20, OPA as +",
    "urlquery.decode_object": "a key without a value gets two",
    "yaml.marshal": "quotes and orders keys differently",
    "json.marshal_with_options": "does not escape <, > and &",
    "bits.and": "undefined beyond 64-bit numbers and for 1.0",
    "bits.or": "undefined beyond 64-bit numbers and for 1.0",
    "bits.xor": "undefined beyond 64-bit numbers and for 1.0",
    "bits.negate": "undefined beyond 64-bit numbers and for 1.0",
    "bits.lsh": "undefined for 1.0",
    "bits.rsh": "undefined beyond 64-bit numbers and for 1.0",
    "regex.is_valid": "wrong on non-ASCII patterns",
    "regex.find_n": "wrong on non-ASCII patterns",
    "regex.replace": "wrong on non-ASCII patterns",
    "regex.find_all_string_submatch_n": "wrong on non-ASCII and empty patterns",
    "time.date": "undefined for 1.0",
    "time.clock": "undefined for 1.0",
    "time.weekday": "undefined for 1.0",
    "time.add_date": "undefined for 1.0",
    "time.format": "undefined for 1.0, and writes .000000000",
    "time.diff": "differs near 0 and beyond 2^53",
    # Found with ordinary, valid arguments (tests/policy/builtin_differential.py ordinary_suite).
    "object.union": "replaces a nested object where OPA merges it",
    "object.union_n": "replaces a nested object where OPA merges it",
    "object.subset": "crashes the process when the second argument is an empty array",
    "time.parse_rfc3339_ns": "undefined for a Z (UTC) offset",
    "time.parse_ns": "undefined for a Z (UTC) offset and for zone names",
    "urlquery.decode": "keeps + where OPA decodes a space",
    "crypto.x509.parse_certificates": "leaves out most fields (Subject holds only CommonName)",
    "crypto.x509.parse_certificate_request": "leaves out most fields (Subject holds only CommonName)",
    "crypto.x509.parse_keypair": "leaves out Leaf and most fields of the certificate",
    "crypto.parse_private_keys": "returns base64url JWK fields (d, e, n) where OPA returns numbers (D, E, N)",
    "graph.reachable_paths": "leaves out a path that ends where a cycle returns",
    "io.jwt.encode_sign": "undefined when the claims hold an array from the input",
    "json.patch": "undefined when a test op follows another op",
    # Found with tokens OPA refuses (tests/policy/builtin_differential.py odd_tokens): a token
    # whose signature is in standard base64 or ends in a stray "=" verified, where OPA's value
    # is undefined (an error under strict builtin errors).
    **{
        f"io.jwt.verify_{alg}": 'accepts a signature in standard base64 ("+", "/") or with a stray "="'
        for alg in (
            *("hs256", "hs384", "hs512", "rs256", "rs384", "rs512", "ps256", "ps384", "ps512"),
            *("es256", "es384", "es512", "eddsa"),
        )
    },
    "io.jwt.decode": 'decodes a token whose signature ends in a stray "="',
    # Template strings (`$"..."`). Which values reach one cannot be told from the text (any
    # input, data or rule value), so every template is refused, not only those of non-strings.
    "internal.template_string": (
        'template strings ($"..."): writes 2.0 as 2 and 1e2 as 100, strings inside arrays, sets '
        "and objects without OPA's escapes (U+2028), and sets in another order"
    ),
}

# Allowed builtins that are exact only when an argument is a non-empty string literal:
# name -> (the argument's index, what it is, why). rego_text.py refuses any other call of one,
# and a `with` replacing it or replaced by it (tests/policy/test_builtin_differential.py
# holds the reason to real OPA).
LITERAL_ARGUMENT_BUILTINS: dict[str, tuple[int, str, str]] = {
    "strings.count": (
        1,
        "needle",
        'an empty needle counts bytes, not characters, on non-ASCII text ("日本": 7, OPA 3)',
    ),
}

# Builtins whose value is not a function of the input and the policy: never embedded.
NONDETERMINISTIC = frozenset(
    {
        "http.send",
        "net.lookup_ip_addr",
        "opa.runtime",
        "rand.intn",
        "time.now_ns",
        "uuid.rfc4122",
        "crypto.x509.parse_and_verify_certificates",  # depends on the clock
        "crypto.x509.parse_and_verify_certificates_with_options",
        "io.jwt.decode_verify",  # checks exp/nbf against the clock
        "providers.aws.sign_req",  # signs with the clock
        "trace",
        "internal.print",  # OPA drops print output by default; harmless, but rego-cpp's is untested
    }
)

# How the text names a builtin the plan calls something else.
TEXT_NAMES = {"print": "internal.print"}

# Allowed builtins whose calls exact_modules swaps for EXACT_REGO's functions.
GUARDED_BUILTINS = {
    "sort": "__labelgate_sort",
    "max": "__labelgate_max",
    "min": "__labelgate_min",
    "json.marshal": "__labelgate_marshal",
}
RESERVED_PREFIX = "__labelgate"

# The exact versions (see the module docstring), added to every package that calls one. Each
# branch returns rego-cpp's own answer only when it is provably OPA's. An object comprehension
# with two values for one key is an evaluation error in rego-cpp: the engine denies.
# The engine runs rego-cpp with strict builtin errors (a builtin's type error is an evaluation
# error, a deny: rego-cpp otherwise leaves the assigned variable unbound and goes on), so each
# branch tests its values' types (__labelgate_all_strings, __labelgate_all_numbers) before a
# builtin that would fail on another type; `every` with `not` inside is not used (refused:
# rego-cpp drops the negation).
EXACT_REGO = """\
__labelgate_all_strings(values) if {
	type_name(values) in {"array", "set"}
	count([value | some value in values; not is_string(value)]) == 0
}

__labelgate_all_numbers(values) if {
	type_name(values) in {"array", "set"}
	count([value | some value in values; not is_number(value)]) == 0
}

__labelgate_sort(values) := sorted if {
	__labelgate_all_strings(values)
	sorted := sort(values)
	is_array(sorted)
	count(sorted) == count(values)
	joined := concat("", sorted)
	not contains(joined, " ")
	not contains(joined, "!")
} else := sorted if {
	__labelgate_all_strings(values)
	keyed := sort([[hex.encode(value), value] | some value in values])
	sorted := [pair[1] | some pair in keyed]
} else := sorted if {
	__labelgate_all_numbers(values)
	sorted := sort([value | some value in values])
	count([i | some i in numbers.range(1, count(sorted) - 1); sorted[i - 1] > sorted[i]]) == 0
} else := sorted if {
	__labelgate_all_numbers(values)
	items := [value | some value in values]
	n := count(items)
	ranked := {rank: item |
		some i in numbers.range(0, n - 1)
		item := items[i]
		before := [j | some j in numbers.range(0, n - 1); j < i; items[j] == item]
		smaller := [other | some other in items; other < item]
		rank := count(smaller) + count(before)
	}
	sorted := [ranked[k] | some k in numbers.range(0, n - 1)]
} else := {"error": v | some v in [1, 2]}

__labelgate_max(values) := top if {
	__labelgate_all_numbers(values)
	top := max(values)
	count([value | some value in values; value > top]) == 0
} else := top if {
	__labelgate_all_strings(values)
	top := max(values)
	joined := concat("", values)
	not contains(joined, " ")
	not contains(joined, "!")
} else := top if {
	__labelgate_all_numbers(values)
	found := [value | some value in values; count([other | some other in values; other > value]) == 0]
	top := found[0]
} else := top if {
	sorted := __labelgate_sort(values)
	top := sorted[count(sorted) - 1]
}

__labelgate_min(values) := bottom if {
	__labelgate_all_numbers(values)
	bottom := min(values)
	count([value | some value in values; value < bottom]) == 0
} else := bottom if {
	__labelgate_all_strings(values)
	bottom := min(values)
	joined := concat("", values)
	not contains(joined, " ")
	not contains(joined, "!")
} else := bottom if {
	__labelgate_all_numbers(values)
	found := [value | some value in values; count([other | some other in values; other < value]) == 0]
	bottom := found[0]
} else := bottom if {
	sorted := __labelgate_sort(values)
	bottom := sorted[0]
}

__labelgate_marshal(value) := json.marshal(value) if {
	is_number(value)
} else := json.marshal(value) if {
	count([node | walk(value, [_, node]); not __labelgate_marshalled_alike(node)]) == 0
} else := {"error": v | some v in [1, 2]}

__labelgate_marshalled_alike(node) if is_number(node)

__labelgate_marshalled_alike(node) if is_array(node)

__labelgate_marshalled_alike(node) if is_null(node)
"""


@dataclass(frozen=True)
class Finding:
    what: str  # "builtin `http.send`" or "the `with` keyword"
    where: str  # "labelgate/decision/x.rego:12" or the origin


def read_plan(builder: regopy.Interpreter, bundle: regopy.Bundle) -> dict[str, Any]:
    """rego-cpp's compiled plan (OPA IR) for ``bundle``: written out as JSON and read back."""
    with tempfile.TemporaryDirectory(prefix="labelgate-plan-") as directory:
        target = Path(directory) / "bundle"
        builder.save_bundle(str(target), bundle)
        plan: dict[str, Any] = json.loads((target / "plan.json").read_text())
        return plan


def plan_builtins(builder: regopy.Interpreter, bundle: regopy.Bundle) -> set[str]:
    """Every builtin the compiled policy calls (all rules, not only those the entrypoint reaches)."""
    return called_builtins(read_plan(builder, bundle))


def called_builtins(plan: dict[str, Any]) -> set[str]:
    # A function rego-cpp does not know (e.g. split_n) compiles to a CallStmt without being
    # declared in static.builtin_funcs, so the calls are read too: a name that is not one of
    # the plan's own functions is a builtin.
    declared = {entry["name"] for entry in (plan.get("static") or {}).get("builtin_funcs") or []}
    own = {func.get("name") for func in (plan.get("funcs") or {}).get("funcs") or []}
    called = {stmt.get("func") for kind, stmt in _statements(plan) if kind == "CallStmt"}
    return declared | {name for name in called if isinstance(name, str) and name not in own}


def _statements(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("type"), str) and isinstance(node.get("stmt"), dict):
            yield node["type"], node["stmt"]
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def refuse(findings: list[Finding], origin: str) -> None:
    """Raise the ConfigError that names every finding (at most a few places per finding)."""
    if not findings:
        return
    grouped: dict[str, list[str]] = {}
    for finding in findings:
        grouped.setdefault(finding.what, []).append(finding.where)
    parts = []
    for what, places in sorted(grouped.items()):
        shown = ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")
        parts.append(f"{what} at {shown}")
    raise ConfigError(
        UNSUPPORTED,
        f"{origin}: the embedded engine (regopy) cannot evaluate this policy exactly as OPA does: "
        f"{'; '.join(parts)}; {ADVICE}",
    )


def exact_modules(modules: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The modules rego-cpp compiles: every call of a GUARDED_BUILTINS builtin renamed to its
    exact version, plus one module of EXACT_REGO per package that calls one.

    Only the name changes, so lines stay where they were (columns after a renamed call move).
    A module whose package the scanner cannot read keeps its calls: check_source refuses it.
    """
    from labelgate.policy.rego_text import call_sites, definitions, outline

    defined = definitions(modules)
    rewritten = []
    packages: list[str] = []
    for name, text in modules:
        package = outline(text).package
        sites = [call for call in call_sites(text, defined) if not call.own and call.name in GUARDED_BUILTINS]
        if package is not None and sites:
            for call in reversed(sites):
                text = text[: call.start] + GUARDED_BUILTINS[call.name] + text[call.end :]
            if package not in packages:
                packages.append(package)
        rewritten.append((name, text))
    for package in packages:
        rewritten.append((f"{RESERVED_PREFIX}/{package}.rego", f"package {package}\n\n{EXACT_REGO}"))
    return tuple(rewritten)


def check_source(modules: tuple[tuple[str, str], ...], origin: str) -> None:
    """Raise ConfigError(POLICY_UNSUPPORTED_BY_EMBEDDED) unless regopy evaluates it exactly."""
    from labelgate.policy.rego_text import definitions, text_findings

    defined = definitions(modules)
    findings: list[Finding] = []
    for name, text in modules:
        findings += text_findings(name, text, modules, defined)
    refuse(findings, origin)
