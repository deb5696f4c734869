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

At load time the gateway cannot read that plan: ``Interpreter.save_bundle`` corrupts the heap
(``double free``) once grpc's libraries are loaded before regopy's (libstdc++ then allocates
with ``malloc`` what rego-cpp frees with its own snmalloc; ``labelgate/__init__.py`` now loads
rego-cpp first for that reason, but a process importing grpc before labelgate still has the
mismatch). So ``check_source`` scans the text instead (rego_text.py: comments and strings
removed, every ``name(`` / ``a.b.c(`` that is not a function of the policy itself is a
builtin call), and the compliance test checks that the scanner finds every builtin the plan
names in all of OPA's cases: a name it missed would be a call it cannot vet.

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
- sprintf: only ``%d`` (and ``%%``) in a literal format; ``%s``/``%v`` of big numbers and of
  some strings differ from OPA, so any other verb, or a format that is not a literal, is
  refused (rego_text.py).
- sets iterate in insertion order in rego-cpp, sorted in OPA: an array comprehension,
  ``concat`` or ``sort`` over a set differs. rego_text.py refuses those over a set the text
  shows (a set literal or comprehension, ``set()``, a set-returning builtin, a ``contains``
  rule, or a name bound to one of these); a set reaching them through a function argument
  is not seen (the differential test is the backstop for the default pack).
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
# blamed on, minus NONDETERMINISTIC; tests/policy/test_opa_compliance.py holds it to that.
SUPPORTED_BUILTINS: frozenset[str] = frozenset(
    {
        "abs",
        "and",
        "array.concat",
        "array.flatten",
        "array.reverse",
        "array.slice",
        "base64.decode",
        "base64.encode",
        "base64.is_valid",
        "base64url.decode",
        "base64url.encode",
        "base64url.encode_no_pad",
        "bits.and",
        "bits.lsh",
        "bits.negate",
        "bits.or",
        "bits.rsh",
        "bits.xor",
        "ceil",
        "concat",
        "contains",
        "count",
        "crypto.hmac.equal",
        "crypto.hmac.md5",
        "crypto.hmac.sha1",
        "crypto.hmac.sha256",
        "crypto.hmac.sha512",
        "crypto.md5",
        "crypto.parse_private_keys",
        "crypto.sha1",
        "crypto.sha256",
        "crypto.x509.parse_certificate_request",
        "crypto.x509.parse_certificates",
        "crypto.x509.parse_keypair",
        "crypto.x509.parse_rsa_private_key",
        "div",
        "endswith",
        "equal",
        "floor",
        "glob.match",
        "glob.quote_meta",
        "graph.reachable",
        "graph.reachable_paths",
        "gt",
        "gte",
        "hex.decode",
        "hex.encode",
        "indexof",
        "indexof_n",
        "internal.member_2",
        "internal.template_string",
        "intersection",
        "io.jwt.decode",
        "io.jwt.encode_sign",
        "io.jwt.encode_sign_raw",
        "io.jwt.verify_eddsa",
        "io.jwt.verify_es256",
        "io.jwt.verify_es384",
        "io.jwt.verify_es512",
        "io.jwt.verify_hs256",
        "io.jwt.verify_hs384",
        "io.jwt.verify_hs512",
        "io.jwt.verify_ps256",
        "io.jwt.verify_ps384",
        "io.jwt.verify_ps512",
        "io.jwt.verify_rs256",
        "io.jwt.verify_rs384",
        "io.jwt.verify_rs512",
        "is_array",
        "is_boolean",
        "is_null",
        "is_number",
        "is_object",
        "is_set",
        "is_string",
        "json.filter",
        "json.is_valid",
        "json.marshal",
        "json.marshal_with_options",
        "json.patch",
        "json.remove",
        "lower",
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
        "object.subset",
        "object.union",
        "object.union_n",
        "or",
        "plus",
        "product",
        "regex.find_all_string_submatch_n",
        "regex.find_n",
        "regex.globs_match",
        "regex.is_valid",
        "regex.match",
        "regex.replace",
        "regex.split",
        "regex.template_match",
        "rem",
        "replace",
        "round",
        "sort",
        "split",
        "sprintf",
        "startswith",
        "strings.any_prefix_match",
        "strings.any_suffix_match",
        "strings.count",
        "substring",
        "sum",
        "time.add_date",
        "time.clock",
        "time.date",
        "time.diff",
        "time.format",
        "time.parse_duration_ns",
        "time.parse_ns",
        "time.parse_rfc3339_ns",
        "time.weekday",
        "to_number",
        "trim",
        "trim_left",
        "trim_prefix",
        "trim_right",
        "trim_space",
        "trim_suffix",
        "type_name",
        "union",
        "units.parse",
        "units.parse_bytes",
        "upper",
        "urlquery.decode",
        "urlquery.decode_object",
        "urlquery.encode",
        "urlquery.encode_object",
        "walk",
        "yaml.is_valid",
        "yaml.marshal",
        "yaml.unmarshal",
    }
)

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


def check_source(modules: tuple[tuple[str, str], ...], origin: str) -> None:
    """Raise ConfigError(POLICY_UNSUPPORTED_BY_EMBEDDED) unless regopy evaluates it exactly."""
    from labelgate.policy.rego_text import text_findings

    findings: list[Finding] = []
    for name, text in modules:
        findings += text_findings(name, text, modules)
    refuse(findings, origin)
