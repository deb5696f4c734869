"""Builtins the embedded engine allows, on arguments chosen to break them and on ordinary ones,
against real OPA.

OPA's compliance cases (test_opa_compliance.py) call builtins the way their authors meant.
Two suites go further:

- ``HOSTILE``: the arguments that broke the builtins now in ``INEXACT_BUILTINS``: non-ASCII
  text (multi-byte, case-changing, spaces outside ASCII), numbers beyond 2^53 and 2^64, tiny
  and huge floats, empty separators, invalid encodings, odd time strings, mixed types.
- ``ordinary_suite``: valid arguments a policy passes every day: nested objects to merge and
  patch, RFC 3339 times with ``Z``, fractions and offsets, ``+`` in query strings, floats one
  ulp apart, and a real certificate, CSR, keys and JWTs (``key_material``: made once per run
  with ``cryptography`` and PyJWT, the keys in the policy's data, the tokens in the input).
  Hostile arguments alone let ``object.union``, ``time.parse_rfc3339_ns`` and the x509
  parsers through: every argument was invalid, and undefined equalled undefined.

Every expression is one rule of its own policy, compiled the way the engine compiles one
(``_Compiled.build``: the load-time check, then exact_modules), and evaluated on every input
of its suite; OPA evaluates a suite's expressions in one ``opa eval`` per input.

rego-cpp can loop, allocate without bound or crash on odd arguments (``replace`` with an
empty old string did; ``object.subset`` with an empty array crashes), so the embedded side
runs in a child process (``python -m tests.policy.builtin_differential child SUITE.json
NAME...``) under a timeout, one JSON line per result. ``unchecked`` instead of ``child``
compiles without the load-time check: what a refused builtin would have answered.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RULE = 'x["{name}"] := v if {{\n\tv := {expression}\n}}\n'


@dataclass(frozen=True)
class Suite:
    """Expressions (name -> Rego over ``input`` and ``data``), the inputs each is evaluated
    on, and the policy's data (``data.json`` at the root)."""

    expressions: dict[str, str]
    inputs: list[dict[str, Any]]
    data: dict[str, Any]


def builtin_of(name: str) -> str:
    """The builtin an expression of the ordinary suite is about: its name up to ``/``."""
    return name.split("/", 1)[0]


# -- hostile arguments ---------------------------------------------------------------------

# name -> expression over input.s (a string), input.t (another), input.n (a number), input.k
# (a small integer), input.a (an array), input.o (an object); one per allowed builtin or more.
EXPRESSIONS: dict[str, str] = {
    "concat": 'concat(input.s, ["a", input.t, "b"])',
    "contains": "contains(input.s, input.t)",
    "endswith": "endswith(input.s, input.t)",
    "startswith": "startswith(input.s, input.t)",
    "split": "split(input.s, input.t)",
    "substring": "substring(input.s, input.k, 2)",
    "trim": "trim(input.s, input.t)",
    "trim_left": "trim_left(input.s, input.t)",
    "trim_right": "trim_right(input.s, input.t)",
    "trim_prefix": "trim_prefix(input.s, input.t)",
    "trim_suffix": "trim_suffix(input.s, input.t)",
    # Refused (capabilities.LITERAL_ARGUMENT_BUILTINS): the needle is not a literal.
    "strings.count/input_needle": "strings.count(input.s, input.t)",
    "strings.count/literal": (
        '[strings.count(input.s, "a"), strings.count(input.s, "aa"), strings.count(input.s, "é"),'
        ' strings.count(input.s, "本"), strings.count(input.s, "😀"), strings.count(input.s, " ")]'
    ),
    "strings.any_prefix_match": 'strings.any_prefix_match(input.s, [input.t, "x"])',
    "strings.any_suffix_match": 'strings.any_suffix_match(input.s, [input.t, "x"])',
    "count_string": "count(input.s)",
    "count_array": "count(input.a)",
    "array.concat": "array.concat(input.a, [input.n])",
    "array.reverse": "array.reverse(input.a)",
    "array.slice": "array.slice(input.a, input.k, 3)",
    "array.flatten": "array.flatten([input.a, [input.a]])",
    "object.get": 'object.get(input.o, input.s, "d")',
    "object.keys": 'count(object.keys(input.o)) + count({"a"} & object.keys(input.o))',
    "object.remove": "object.remove(input.o, [input.s])",
    "object.union": 'object.union(input.o, {"z": input.n})',
    "object.union_n": 'object.union_n([input.o, {"z": input.n}])',
    "object.subset": "object.subset(input.o, input.o)",
    "object.filter": "object.filter(input.o, [input.s])",
    "json.patch": 'json.patch(input.o, [{"op": "add", "path": "/p", "value": input.s}])',
    "type_name": "type_name(input.n)",
    "is_number": "is_number(input.n)",
    "is_string": "is_string(input.s)",
    "base64.encode": "base64.encode(input.s)",
    "base64url.encode": "base64url.encode(input.s)",
    "base64url.encode_no_pad": "base64url.encode_no_pad(input.s)",
    "base64url.decode": "base64url.decode(input.t)",
    "hex.decode": "hex.decode(input.t)",
    "urlquery.decode": "urlquery.decode(input.t)",
    "json.is_valid": "json.is_valid(input.t)",
    "json.marshal": "json.marshal(input.n)",
    "json.marshal_string": "json.marshal(input.s)",
    "json.marshal_object": "json.marshal(input.o)",
    "crypto.md5": "crypto.md5(input.s)",
    "crypto.sha1": "crypto.sha1(input.s)",
    "crypto.sha256": "crypto.sha256(input.s)",
    "crypto.hmac.sha256": "crypto.hmac.sha256(input.s, input.t)",
    "crypto.hmac.equal": "crypto.hmac.equal(input.s, input.t)",
    "crypto.hmac.md5": "crypto.hmac.md5(input.s, input.t)",
    "crypto.hmac.sha1": "crypto.hmac.sha1(input.s, input.t)",
    "crypto.hmac.sha512": "crypto.hmac.sha512(input.s, input.t)",
    "is_array": "[is_array(input.a), is_object(input.o), is_boolean(input.n), is_null(input.n)]",
    "is_set": "is_set(input.a)",
    "graph.reachable_paths": 'graph.reachable_paths({"a": ["b"], "b": [input.s]}, ["a"])',
    "regex.template_match": 'regex.template_match("a{[a-z]+}", input.s, "{", "}")',
    "base64url.decode_valid": "base64url.decode(base64url.encode(input.s))",
    "hex.decode_valid": 'hex.decode("c3a9")',
    "numbers.range": "numbers.range(input.k, 3)",
    "numbers.range_step": "numbers.range_step(0, input.k, 2)",
    "glob.quote_meta": "glob.quote_meta(input.s)",
    "regex.globs_match": "regex.globs_match(input.t, input.s)",
    "time.parse_rfc3339_ns": "time.parse_rfc3339_ns(input.t)",
    "time.parse_ns": 'time.parse_ns("2006-01-02", input.t)',
    "sort": "sort(input.a)",
    "max": "max(input.a)",
    "min": "min(input.a)",
    "graph.reachable": 'graph.reachable({"a": ["b"], "b": []}, [input.s])',
    "walk": "count([p | walk(input.o, [p, _])])",
    "union": 'union({{"a"}, {input.s}})',
    "intersection": 'intersection({{"a", input.s}, {input.s}})',
}

# No string holds ", \ or a control character: the engine denies such an input unevaluated.
INPUTS: list[dict[str, Any]] = [
    {"s": "é", "t": "É", "n": 1, "k": 0, "a": ["b", "a"], "o": {"é": 1, "e": 2}},
    {"s": "ßİǅ", "t": "ǅ", "n": 9007199254740993, "k": 1, "a": [10, 9, 100], "o": {"<": "&"}},
    {"s": "\u3000a b\u00a0", "t": " ", "n": 2**64, "k": 2, "a": [0.1, 0.2, 1e-7], "o": {"a b": 1, "a": 2}},
    {"s": "😀x😀", "t": "😀", "n": -0.5, "k": 63, "a": [1, "a", None, 1.5], "o": {}},
    {"s": "ab", "t": "", "n": 1e300, "k": -1, "a": ["a!", "a", "a b"], "o": {"a": [1, {"b": 2}]}},
    {"s": "a%zz+b", "t": "a%zz+b", "n": 1e-7, "k": 5, "a": [], "o": {"a": None}},
    {"s": "0x10", "t": "aGk", "n": 1.0, "k": 1, "a": [True, False], "o": {"1": 1}},
    {"s": "<a&b>", "t": "2024-02-30T00:00:00Z", "n": -7, "k": 3, "a": [[1], [0]], "o": {"b": {"c": 1}}},
    {
        "s": "x\u2028y",
        "t": "1970-01-01",
        "n": 253402300800000000000,
        "k": 1,
        "a": ["é", "z", "e"],
        "o": {"a": 1},
    },
    {"s": "a.b", "t": "(?i)ǅ", "n": 1700000000123456789, "k": 0, "a": [2**64, 1, 2.5], "o": {"x": "y"}},
    {"s": "ǅǆǄ", "t": "^.$", "n": 0, "k": 1, "a": ["Sales EMEA", "Sales", "Sales!"], "o": {"é": "É"}},
    {"s": "a,b,,c", "t": ",", "n": 123456789012345678901234567890, "k": 2, "a": [-1, -10, -2], "o": {"a": 1}},
    {"s": "{a: 1}", "t": "0x10", "n": -(2**63), "k": 4, "a": ["1", 1], "o": {"k": [1, 2]}},
    {"s": "", "t": "a{2,}", "n": 2**63 - 1, "k": 0, "a": [3000, 1999, 1003], "o": {"": ""}},
    # An empty needle on non-ASCII text: rego-cpp's strings.count was 7 for "日本", OPA's 3.
    {"s": "日本aaa😀", "t": "", "n": 3, "k": 1, "a": ["b", "a"], "o": {"日": 1}},
]
EMPTY_NEEDLE_INPUT = len(INPUTS) - 1
# Inputs holding a whole number written as a float ("n": 1.0): OPA indexes arrays by it,
# rego-cpp does not, so the engine denies such an input unevaluated (EMBEDDED_INPUT_UNSUPPORTED,
# policy/whole_numbers.py) whatever the expression. The other arguments of input 6 are held to
# OPA on a copy holding the integer.
WHOLE_FLOAT_INPUTS = frozenset({6})
INPUTS.append({**INPUTS[6], "n": 1})
WHOLE_FLOAT_COPY = len(INPUTS) - 1

HOSTILE = Suite(EXPRESSIONS, INPUTS, {})


# -- ordinary arguments --------------------------------------------------------------------

_NUMBERS_CHECKED = "; ".join(f"is_number(input.{name})" for name in "nmij")

# name ("builtin" or "builtin/variant") -> expression. Every builtin of SUPPORTED_BUILTINS has
# one (test_builtin_differential.py holds the list to that), operators included ("plus" is
# `+`, "internal.member_2" is `in`, "and"/"or" are `&`/`|` on sets); so do the builtins
# moved to INEXACT_BUILTINS because of these arguments, which must now be refused.
ORDINARY_EXPRESSIONS: dict[str, str] = {
    # strings
    "concat": "concat(input.t, input.a)",
    "contains": "[contains(input.s, input.t), contains(input.s, input.u)]",
    "startswith": "[startswith(input.s, input.u), startswith(input.s, input.t)]",
    "endswith": "[endswith(input.s, input.u), endswith(input.s, input.t)]",
    "split": "split(input.s, input.t)",
    "substring": "[substring(input.s, input.i, input.j), substring(input.s, input.i, -1)]",
    "trim": "trim(input.s, input.t)",
    "trim_left": "trim_left(input.s, input.u)",
    "trim_right": "trim_right(input.s, input.u)",
    "trim_prefix": "trim_prefix(input.s, input.u)",
    "trim_suffix": "trim_suffix(input.s, input.u)",
    "strings.count": (
        '[strings.count(input.s, "a"), strings.count(input.s, "é"), strings.count(input.s, ","),'
        ' strings.count(input.s, "Sales")]'
    ),
    "strings.any_prefix_match": (
        "[strings.any_prefix_match(input.s, input.a), strings.any_prefix_match(input.a, input.u),"
        " strings.any_prefix_match({input.s}, {input.u})]"
    ),
    "strings.any_suffix_match": (
        "[strings.any_suffix_match(input.s, input.a), strings.any_suffix_match(input.a, input.u),"
        " strings.any_suffix_match({input.s}, {input.u})]"
    ),
    "count": "[count(input.s), count(input.a), count(input.o), count({x | some x in input.a})]",
    # Refused (INEXACT_BUILTINS): rego-cpp writes 9007199254740992.0 as 9007199254740992 and a
    # set in the order it was built ("Sales EMEA" before "Sales").
    "internal.template_string": (
        '$"{input.s} in {input.u}: {input.n}, {input.i}, {input.a[0]}; {input.m}, {input.b}, '
        '{ {x | some x in input.a} }"'
    ),
    # types
    "type_name": (
        "[type_name(input.n), type_name(input.s), type_name(input.a), type_name(input.o),"
        " type_name({x | some x in input.a}), type_name(null), type_name(count(input.a) > 0)]"
    ),
    "is_array": "[is_array(input.a), is_array(input.o), is_array(input.s)]",
    "is_boolean": "[is_boolean(count(input.a) > 0), is_boolean(input.n), is_boolean(null)]",
    "is_null": "[is_null(null), is_null(input.n), is_null(input.o)]",
    "is_number": "[is_number(input.n), is_number(input.m), is_number(input.s)]",
    "is_object": "[is_object(input.o), is_object(input.a), is_object({x | some x in input.a})]",
    "is_set": "[is_set({x | some x in input.a}), is_set(input.a), is_set(input.o)]",
    "is_string": "[is_string(input.s), is_string(input.n), is_string(input.a)]",
    # arrays
    "array.concat": "array.concat(input.a, input.b)",
    "array.flatten": "array.flatten([input.a, [input.b, [input.n]]])",
    "array.reverse": "[array.reverse(input.a), array.reverse(input.b)]",
    "array.slice": "[array.slice(input.a, input.i, input.j), array.slice(input.b, 0, input.i)]",
    "numbers.range": "[numbers.range(input.i, input.j), numbers.range(input.j, input.i)]",
    "numbers.range_step": "numbers.range_step(input.i, input.j + 7, 3)",
    # Arrays looked up by a number of the input: OPA takes a whole float (1.0) as the integer,
    # the in-process engines do not, so WHOLE_FLOAT_INPUT is denied unevaluated.
    "index/array": "input.a[input.i]",
    "index/object.get": 'object.get(input.o, ["limits", "fields", input.i], "none")',
    "index/member_3": "input.i, input.a[0] in input.a",
    # objects
    "object.get": (
        '[object.get(input.o, ["limits", "rows"], 0), object.get(input.o, "name", "none"),'
        ' object.get(input.o, ["limits", "fields", 0], "none"), object.get(input.p, [], 1)]'
    ),
    "object.keys": "object.keys(input.o)",
    "object.remove": '[object.remove(input.o, ["name", "z"]), object.remove(input.o, {"limits"})]',
    "object.filter": '[object.filter(input.o, ["limits", "a"]), object.filter(input.o, {"name": 1})]',
    "object.subset": "[object.subset(input.o, input.p), object.subset(input.a, [])]",
    "object.union": "object.union(input.o, input.p)",
    "object.union_n": 'object.union_n([input.o, input.p, {"x": {"y": input.n}}])',
    "json.patch": (
        'json.patch(input.o, [{"op": "add", "path": "/added", "value": input.p},'
        ' {"op": "add", "path": "/added/list", "value": input.a},'
        ' {"op": "add", "path": "/added/list/-", "value": input.s},'
        ' {"op": "copy", "from": "/added/list", "path": "/copied"},'
        ' {"op": "move", "from": "/copied", "path": "/moved"},'
        ' {"op": "replace", "path": "/moved/0", "value": input.n},'
        ' {"op": "remove", "path": "/added/list/0"},'
        ' {"op": "test", "path": "/moved/0", "value": input.n}])'
    ),
    "walk": "[count([p | walk(input.o, [p, _])]), {p | walk(input.o, [p, v]); is_number(v)}]",
    # sets and operators
    "union": "union({{x | some x in input.a}, {input.s}, set()})",
    "intersection": "intersection({{x | some x in input.a}, {input.u, input.t}, {x | some x in input.a}})",
    "and": "{x | some x in input.a} & {input.u, input.t, input.s}",
    "or": "{x | some x in input.a} | {input.u, input.t}",
    "minus": "[{x | some x in input.a} - {input.u}, input.n - input.m, input.i - input.j]",
    "plus": "[input.n + input.m, input.i + input.j, input.n + input.i]",
    "mul": "[input.n * input.m, input.i * input.j, input.n * input.i]",
    "div": "[input.n / input.m, input.i / input.j]",
    "equal": "[input.n == input.m, input.i == input.j, input.o == input.p, input.b == [input.n]]",
    "neq": "[input.n != input.m, input.i != input.j]",
    # The embedded engine orders numbers only where the text shows them to be numbers
    # (rego_comparisons.py): checked with is_number first. Strings are refused.
    "lt": f"[r | {_NUMBERS_CHECKED}; r := [input.n < input.m, input.i < input.j]]",
    "lte": f"[r | {_NUMBERS_CHECKED}; r := [input.n <= input.m, input.i <= input.j]]",
    "gt": f"[r | {_NUMBERS_CHECKED}; r := [input.n > input.m, input.i > input.j]]",
    "gte": f"[r | {_NUMBERS_CHECKED}; r := [input.n >= input.m, input.i >= input.j]]",
    "equal/strings": "[input.s == input.u, input.s != input.u]",
    "lt/strings": "[input.s < input.u, input.s <= input.u, input.s > input.u, input.s >= input.u]",
    "internal.member_2": (
        '[input.s in input.a, input.n in input.b, "limits" in object.keys(input.o), input.u in {input.s},'
        " input.m in input.b]"
    ),
    # ordering (guarded)
    "sort": "[sort(input.a), sort(input.b)]",
    "max": "[max(input.a), max(input.b)]",
    "min": "[min(input.a), min(input.b)]",
    # encodings
    "base64.encode": "base64.encode(input.s)",
    "base64url.encode": "base64url.encode(input.s)",
    "base64url.encode_no_pad": "base64url.encode_no_pad(input.s)",
    "base64url.decode": "[base64url.decode(input.b64), base64url.decode(input.b64q) == `admin`]",
    "hex.decode": "[hex.decode(input.hex), hex.decode(input.hexq) == `admin`]",
    "json.is_valid": '[json.is_valid(`{"a": [1, null]}`), json.is_valid(input.s), json.is_valid(input.hex)]',
    "json.marshal": "[json.marshal(input.n), json.marshal([input.n, [input.n], null]), json.marshal(null)]",
    # Text of strings and objects holds `"`: the guard denies it (capabilities.EXACT_REGO).
    "json.marshal/text": "json.marshal(input.s)",
    "json.marshal/array": "json.marshal(input.b)",
    "urlquery.decode": "urlquery.decode(input.q)",
    # hashes
    "crypto.md5": "crypto.md5(input.s)",
    "crypto.sha1": "crypto.sha1(input.s)",
    "crypto.sha256": "crypto.sha256(input.s)",
    "crypto.hmac.md5": "crypto.hmac.md5(input.s, input.u)",
    "crypto.hmac.sha1": "crypto.hmac.sha1(input.s, input.u)",
    "crypto.hmac.sha256": "crypto.hmac.sha256(input.s, input.u)",
    "crypto.hmac.sha512": "crypto.hmac.sha512(input.s, input.u)",
    "crypto.hmac.equal": (
        "[crypto.hmac.equal(crypto.sha256(input.s), crypto.sha256(input.s)),"
        " crypto.hmac.equal(crypto.sha256(input.s), crypto.sha256(input.u))]"
    ),
    # patterns and graphs
    "glob.quote_meta": "glob.quote_meta(input.glob)",
    "regex.globs_match": "regex.globs_match(input.re, input.re2)",
    "regex.template_match": 'regex.template_match("urn:acme:{[a-z]+}:{[0-9]+}", input.urn, "{", "}")',
    "graph.reachable": "graph.reachable(input.g, [input.start])",
    "graph.reachable_paths": "graph.reachable_paths(input.g, [input.start])",
    # times
    "time.parse_rfc3339_ns": "time.parse_rfc3339_ns(input.time)",
    "time.parse_ns": (
        '[time.parse_ns("2006-01-02T15:04:05Z07:00", input.time), time.parse_ns("2006-01-02", input.day)]'
    ),
    "time.parse_ns/rfc1123": 'time.parse_ns("Mon, 02 Jan 2006 15:04:05 MST", input.date)',
    # keys, certificates and tokens (data.k: key_material)
    "crypto.x509.parse_certificates": "crypto.x509.parse_certificates(data.k.cert)",
    "crypto.x509.parse_certificate_request": "crypto.x509.parse_certificate_request(data.k.csr)",
    "crypto.x509.parse_keypair": "crypto.x509.parse_keypair(data.k.cert, data.k.rsa_private)",
    "crypto.x509.parse_rsa_private_key": (
        "[crypto.x509.parse_rsa_private_key(data.k.rsa_private_pkcs1),"
        " crypto.x509.parse_rsa_private_key(data.k.rsa_private)]"
    ),
    "crypto.parse_private_keys": "crypto.parse_private_keys(data.k.rsa_private)",
    "io.jwt.decode": "[io.jwt.decode(input.jwt.hs256), io.jwt.decode(input.jwt.es256)]",
    "io.jwt.verify_hs256": "io.jwt.verify_hs256(input.jwt.hs256, data.k.secret)",
    "io.jwt.verify_hs384": "io.jwt.verify_hs384(input.jwt.hs384, data.k.secret)",
    "io.jwt.verify_hs512": "io.jwt.verify_hs512(input.jwt.hs512, data.k.secret)",
    "io.jwt.verify_rs256": (
        "[io.jwt.verify_rs256(input.jwt.rs256, data.k.cert),"
        " io.jwt.verify_rs256(input.jwt.rs256, data.k.rsa_public)]"
    ),
    "io.jwt.verify_rs384": "io.jwt.verify_rs384(input.jwt.rs384, data.k.rsa_public)",
    "io.jwt.verify_rs512": "io.jwt.verify_rs512(input.jwt.rs512, data.k.rsa_jwks)",
    "io.jwt.verify_ps256": "io.jwt.verify_ps256(input.jwt.ps256, data.k.cert)",
    "io.jwt.verify_ps384": "io.jwt.verify_ps384(input.jwt.ps384, data.k.rsa_public)",
    "io.jwt.verify_ps512": "io.jwt.verify_ps512(input.jwt.ps512, data.k.rsa_jwks)",
    "io.jwt.verify_es256": (
        "[io.jwt.verify_es256(input.jwt.es256, data.k.es256_public),"
        " io.jwt.verify_es256(input.jwt.rs256, data.k.es256_public)]"
    ),
    "io.jwt.verify_es384": "io.jwt.verify_es384(input.jwt.es384, data.k.es384_public)",
    "io.jwt.verify_es512": "io.jwt.verify_es512(input.jwt.es512, data.k.es512_public)",
    "io.jwt.verify_eddsa": "io.jwt.verify_eddsa(input.jwt.eddsa, data.k.ed25519_public)",
    "io.jwt.encode_sign": (
        'io.jwt.encode_sign({"typ": "JWT", "alg": "HS256"},'
        ' {"sub": input.s, "n": input.n, "groups": input.a}, data.k.hs_jwk)'
    ),
    "io.jwt.encode_sign/rs256": (
        'io.jwt.encode_sign({"alg": "RS256"}, {"sub": input.s, "o": input.o}, data.k.rsa_jwk)'
    ),
    "io.jwt.encode_sign/es256": (
        'io.jwt.verify_es256(io.jwt.encode_sign({"alg": "ES256"}, {"sub": input.s}, data.k.es256_jwk),'
        " data.k.es256_public)"
    ),
    "io.jwt.encode_sign_raw": (
        'io.jwt.encode_sign_raw(`{"typ":"JWT","alg":"HS512"}`, concat("", [`{"sub":"`, input.s, `"}`]),'
        " data.k.hs_jwk_text)"
    ),
}

# Arguments of the other fields, per input: every expression runs on every input.
_ORDINARY_BASE: list[dict[str, Any]] = [
    {
        "s": "alice@example.com",
        "t": "@",
        "u": "alice",
        "n": 3,
        "m": 2,
        "i": 1,
        "j": 3,
        "a": ["sales", "analysts", "eng"],
        "b": [3, 1, 2],
        "o": {"limits": {"rows": 100, "fields": ["a", "b"]}, "name": "x", "tags": {"env": "prod"}},
        "p": {"limits": {"rows": 10}, "tags": {"team": "data"}},
        "q": "a+b%20c",
        "time": "2024-01-01T00:00:00Z",
        "date": "Tue, 02 Jan 2024 15:04:05 UTC",
    },
    {
        "s": "outputs.customer.ssn",
        "t": ".",
        "u": "outputs",
        "n": 0.5,
        "m": 1.5,
        "i": 0,
        "j": 2,
        "a": ["b", "a", "c", "a"],
        "b": [1.5, -2, 10, 0.25],
        "o": {"a": {"b": {"c": 1}}, "z": [1, 2]},
        "p": {"a": {"b": {"d": 2}, "e": 3}},
        "q": "name=J%C3%BCrgen+M",
        "time": "2024-01-01T00:00:00.123456789Z",
        "date": "Mon, 01 Jan 2024 00:00:00 PST",
    },
    {
        "s": "Sales EMEA",
        "t": " ",
        "u": "Sales",
        "n": 10.00000000000001,
        "m": 10,
        "i": 2,
        "j": 5,
        "a": ["Sales EMEA", "Sales", "sales"],
        "b": [10, 9.999999999999998, 10.00000000000001],
        "o": {"é": {"ü": 1}, "e": 2},
        "p": {"é": {"v": [2]}},
        "q": "a%2Bb+c",
        "time": "2023-06-30T12:30:45.5-07:00",
        "date": "Fri, 30 Jun 2023 12:30:45 GMT",
    },
    {
        "s": "a,b,,c",
        "t": ",",
        "u": "a",
        "n": 1700000000123456789,
        "m": 1000000000,
        "i": 3,
        "j": 1,
        "a": [],
        "b": [],
        "o": {},
        "p": {"x": {}},
        "q": "",
        "time": "2024-02-29T23:59:59+01:00",
        "date": "Thu, 29 Feb 2024 23:59:59 CET",
    },
    {
        "s": "café résumé",
        "t": "é",
        "u": "caf",
        "n": 0.3000000000000001,
        "m": 0.3,
        "i": 1,
        "j": 1,
        "a": ["é", "e", "z"],
        "b": [0.1, 0.3, 0.3000000000000001, 0.2],
        "o": {"x": {"y": {"z": [1, {"w": 2}]}}},
        "p": {"x": {"y": {"q": None}}},
        "q": "q=caf%C3%A9+au+lait",
        "time": "1999-12-31T23:59:59.999Z",
        "date": "Fri, 31 Dec 1999 23:59:59 UTC",
    },
    {
        "s": "/acme.audit.v1.Audit/Purge",
        "t": "/",
        "u": "/acme",
        "n": 9007199254740993,
        "m": 9007199254740992.0,
        "i": 4,
        "j": 2,
        "a": ["x"],
        "b": [9007199254740993, 9007199254740992.0, 1],
        "o": {"x": None, "y": True},
        "p": {"x": {"y": True}},
        "q": "+",
        "time": "2024-07-01T10:00:00.000001+05:30",
        "date": "Mon, 01 Jul 2024 10:00:00 IST",
    },
    {
        "s": "x",
        "t": "x",
        "u": "",
        "n": 1.000000000000001,
        "m": 1,
        "i": 0,
        "j": 0,
        "a": ["x", "y"],
        "b": [1, 1.000000000000001, 0.9999999999999999],
        "o": {"b": 1, "a": 2, "c": {"e": 1, "d": 2}},
        "p": {"c": {"f": 3}},
        "q": "a=1&b=2",
        "time": "2024-01-01T00:00:00+00:00",
        "date": "Mon, 01 Jan 2024 00:00:00 UTC",
    },
]

# The first input with floats one ulp apart, which need 17 significant digits: rego-cpp keeps
# 16 (0.30000000000000004 is 0.3 there), so the engine denies it unevaluated
# (EMBEDDED_INPUT_UNSUPPORTED) whatever the expression.
ROUNDED_INPUT = len(_ORDINARY_BASE)
_ORDINARY_BASE.append(
    {
        **_ORDINARY_BASE[0],
        "n": 0.30000000000000004,
        "m": 0.3,
        "b": [0.30000000000000004, 0.3, 10.000000000000002],
    }
)

# An input holding whole numbers written as floats (an index "i": 1.0, as a JWT claim reads
# in Python): denied unevaluated (EMBEDDED_INPUT_UNSUPPORTED), whatever the expression; OPA
# looks arrays up by it (``index/...``), rego-cpp would not (policy/whole_numbers.py).
WHOLE_FLOAT_INPUT = len(_ORDINARY_BASE)
_ORDINARY_BASE.append({**_ORDINARY_BASE[0], "i": 1.0, "m": 2.0})

# Fields every ordinary input shares: patterns and graphs, valid encodings.
_ORDINARY_COMMON: dict[str, Any] = {
    "glob": "*.acme.test",
    "re": "a.*b",
    "re2": "a[0-9]+b",
    "urn": "urn:acme:orders:42",
    "g": {"a": ["b", "c"], "b": ["d"], "c": [], "d": ["a"], "e": ["a"]},
    "start": "b",
    "b64": base64.urlsafe_b64encode("labelgate é".encode()).decode(),
    "hex": "6c6162656cc3a9",
    # Text in double quotes, encoded: rego-cpp decodes it to the text without them (fuzzing).
    "b64q": base64.urlsafe_b64encode(b'"admin"').decode(),
    "hexq": b'"admin"'.hex(),
    "day": "2024-03-15",
}


def key_material() -> dict[str, Any]:
    """Keys, a certificate (O=Acme), a CSR and JWKs (``data``) and the JWTs the inputs carry,
    made with ``cryptography`` and PyJWT. Tokens: valid (inputs 0, 2, 4, 6 and 7), signed by
    other keys (1, 5) and with a tampered payload (3)."""
    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID

    def pem_private(key: Any, pkcs1: bool = False) -> str:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL if pkcs1 else serialization.PrivateFormat.PKCS8
        return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()

    def pem_public(key: Any) -> str:
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    curves = {"es256": ec.SECP256R1(), "es384": ec.SECP384R1(), "es512": ec.SECP521R1()}
    mine: dict[str, Any] = {
        "rsa": rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    other: dict[str, Any] = {
        "rsa": rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    for alg, curve in curves.items():
        mine[alg], other[alg] = ec.generate_private_key(curve), ec.generate_private_key(curve)
    secret, other_secret = "labelgate-differential-secret-" * 3, "another-secret-of-some-length-" * 3
    hs_jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=")}

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Data"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gateway.acme.test"),
        ]
    )
    utc = datetime.UTC
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(mine["rsa"].public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=utc))
        .not_valid_after(datetime.datetime(2034, 1, 1, tzinfo=utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("gateway.acme.test")]), critical=False)
        .sign(mine["rsa"], hashes.SHA256())
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(mine["rsa"], hashes.SHA256())
    rsa_public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(mine["rsa"].public_key()))
    data = {
        "secret": secret,
        "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "rsa_private": pem_private(mine["rsa"]),
        "rsa_private_pkcs1": pem_private(mine["rsa"], pkcs1=True),
        "rsa_public": pem_public(mine["rsa"]),
        "rsa_jwks": json.dumps({"keys": [rsa_public_jwk]}),
        "ed25519_public": pem_public(mine["ed25519"]),
        "hs_jwk": hs_jwk,
        "hs_jwk_text": json.dumps(hs_jwk),
        "rsa_jwk": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(mine["rsa"])),
        "es256_jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(mine["es256"])),
        **{f"{alg}_public": pem_public(mine[alg]) for alg in curves},
    }

    def tokens(keys: dict[str, Any], hmac_secret: str, claims: dict[str, Any]) -> dict[str, str]:
        found = {
            alg: jwt.encode(claims, hmac_secret, algorithm=alg.upper()) for alg in ("hs256", "hs384", "hs512")
        }
        for alg in ("rs256", "rs384", "rs512", "ps256", "ps384", "ps512"):
            found[alg] = jwt.encode(claims, keys["rsa"], algorithm=alg.upper())
        for alg in curves:
            found[alg] = jwt.encode(claims, keys[alg], algorithm=alg.upper())
        found["eddsa"] = jwt.encode(claims, keys["ed25519"], algorithm="EdDSA")
        return found

    claims = [
        {"sub": "alice", "iss": "https://idp.acme.test", "groups": ["analysts", "eng"], "exp": 2000000000},
        {"sub": "bob", "aud": ["gateway"], "iat": 1700000000},
        {"sub": "carol", "n": 1.5, "nested": {"a": {"b": [1, 2]}}, "name": "Zoë"},
        {"sub": "dave", "admin": False},
        {"sub": "erin", "big": 9007199254740993, "f": 0.1, "empty": {}},
        {"sub": "frank", "scope": "read write"},
        {"sub": "grace", "nbf": 1, "exp": 2},
    ]
    per_input = []
    for index, claim in enumerate(claims):
        if index in (1, 5):
            per_input.append(tokens(other, other_secret, claim))
            continue
        found = tokens(mine, secret, claim)
        if index == 3:  # a payload the signature does not cover
            forged = base64.urlsafe_b64encode(json.dumps({"sub": "dave", "admin": True}).encode())
            found = {
                alg: ".".join([t.split(".")[0], forged.decode().rstrip("="), t.split(".")[2]])
                for alg, t in found.items()
            }
        per_input.append(found)
    return {"data": {"k": data}, "tokens": per_input, "odd_tokens": odd_tokens(mine, secret)}


def odd_tokens(keys: dict[str, Any], secret: str) -> dict[str, dict[str, str]]:
    """variant -> algorithm -> a token OPA's io.jwt builtins refuse (undefined) and rego-cpp's
    take: ``valid`` as signed, ``standard_alphabet`` with the signature in standard base64
    (``+``, ``/``: each token is signed until its signature holds ``-`` or ``_``), ``stray_pad``
    with one ``=`` after it (rego-cpp verified both, and decoded the second)."""
    import jwt

    signing = {alg: secret for alg in ("hs256", "hs384", "hs512")}
    signing |= {alg: keys["rsa"] for alg in ("rs256", "rs384", "rs512", "ps256", "ps384", "ps512")}
    signing |= {alg: keys[alg] for alg in ("es256", "es384", "es512")} | {"eddsa": keys["ed25519"]}
    valid = {}
    for alg, key in signing.items():
        for attempt in range(1000):
            token = jwt.encode(
                {"sub": "mallory", "n": attempt}, key, algorithm="EdDSA" if alg == "eddsa" else alg.upper()
            )
            if set(token.rsplit(".", 1)[1]) & {"-", "_"}:
                valid[alg] = token
                break
    return {
        "valid": valid,
        "standard_alphabet": {
            alg: token.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1].replace("-", "+").replace("_", "/")
            for alg, token in valid.items()
        },
        "stray_pad": {alg: token + "=" for alg, token in valid.items()},
    }


# The io.jwt builtins that parse a token, refused (INEXACT_BUILTINS) for what odd_tokens holds.
JWT_EXPRESSIONS: dict[str, str] = {
    **{
        f"io.jwt.verify_{alg}": f"io.jwt.verify_{alg}(input.token.{alg}, data.k.secret)"
        for alg in ("hs256", "hs384", "hs512")
    },
    **{
        f"io.jwt.verify_{alg}": f"io.jwt.verify_{alg}(input.token.{alg}, data.k.rsa_public)"
        for alg in ("rs256", "rs384", "rs512", "ps256", "ps384", "ps512")
    },
    **{
        f"io.jwt.verify_{alg}": f"io.jwt.verify_{alg}(input.token.{alg}, data.k.{alg}_public)"
        for alg in ("es256", "es384", "es512")
    },
    "io.jwt.verify_eddsa": "io.jwt.verify_eddsa(input.token.eddsa, data.k.ed25519_public)",
    "io.jwt.decode": "[io.jwt.decode(input.token.rs256), io.jwt.decode(input.token.eddsa)]",
}


def jwt_suite(material: dict[str, Any]) -> Suite:
    """JWT_EXPRESSIONS on each variant of ``odd_tokens`` (the valid tokens first)."""
    inputs = [{"token": tokens} for tokens in material["odd_tokens"].values()]
    return Suite(JWT_EXPRESSIONS, inputs, material["data"])


def ordinary_suite(material: dict[str, Any]) -> Suite:
    inputs = [
        {**_ORDINARY_COMMON, **fields, "jwt": material["tokens"][index % len(material["tokens"])]}
        for index, fields in enumerate(_ORDINARY_BASE)
    ]
    return Suite(ORDINARY_EXPRESSIONS, inputs, material["data"])


# -- running both sides --------------------------------------------------------------------


def _write_policy(directory: Path, suite: Suite, names: list[str]) -> Path:
    root = directory / "policy"
    module = root / "t" / "t.rego"
    module.parent.mkdir(parents=True, exist_ok=True)
    rules = "\n".join(RULE.format(name=name, expression=suite.expressions[name]) for name in names)
    module.write_text("package t\n\n" + rules)
    if suite.data:
        (root / "data.json").write_text(json.dumps(suite.data, ensure_ascii=False))
    return root


def opa_results(opa: str, directory: Path, suite: Suite = HOSTILE) -> list[dict[str, Any]]:
    """OPA's value of every expression (absent when undefined), per input."""
    root = _write_policy(directory, suite, list(suite.expressions))
    results = []
    for index, value in enumerate(suite.inputs):
        path = directory / f"input-{index}.json"
        path.write_text(json.dumps(value, ensure_ascii=False))
        done = subprocess.run(
            [opa, "eval", "-f", "json", "-b", str(root), "-i", str(path), "data.t.x"],
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(done.stdout).get("result") or [{"expressions": [{"value": {}}]}]
        results.append(found[0]["expressions"][0]["value"])
    return results


def opa_strict_errors(
    opa: str, directory: Path, suite: Suite, pairs: Iterable[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Of the (expression, input) pairs, those on which OPA with ``--strict-builtin-errors``
    fails: a builtin error that OPA's default mode turns into "undefined" and the embedded
    engine (strict, embedded.py) into a deny."""
    failing = set()
    for name, index in pairs:
        root = _write_policy(directory / "strict", suite, [name])
        path = root.parent / "input.json"
        path.write_text(json.dumps(suite.inputs[index], ensure_ascii=False))
        done = subprocess.run(
            [
                opa,
                "eval",
                "--strict-builtin-errors",
                "-f",
                "json",
                "-b",
                str(root),
                "-i",
                str(path),
                "data.t.x",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or "errors" in json.loads(done.stdout or "{}"):
            failing.add((name, index))
    return failing


def embedded_results(
    timeout: float, suite: Suite = HOSTILE, *, unchecked: bool = False
) -> dict[str, list[Any]]:
    """name -> per input: {"value": v}, {"undefined": true}, {"error": name} or {"refused":
    message}. An expression that stalls or kills the child is an error on the inputs it did not
    finish; the child is restarted after it. ``timeout`` bounds one child, so on a slow machine a
    child may run out of time on an expression that is only late: each such expression is run
    again first in a fresh child, with the whole ``timeout`` to itself, before it counts as
    stalled (no result may depend on the machine's speed). ``unchecked``: compiled without the
    load-time check, to show what a refused builtin would have answered."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proxy")])}
    results: dict[str, list[Any]] = {}
    pending = list(suite.expressions)
    retried: set[str] = set()
    with tempfile.TemporaryDirectory() as directory:
        spec = Path(directory) / "suite.json"
        spec.write_text(json.dumps(asdict(suite), ensure_ascii=False))
        mode = "unchecked" if unchecked else "child"
        command = [sys.executable, "-m", "tests.policy.builtin_differential", mode, str(spec)]
        while pending:
            found: dict[str, list[Any]] = {}
            with tempfile.TemporaryFile("w+") as out:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(
                        [*command, *pending],
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.DEVNULL,
                        env=env,
                        timeout=timeout,
                    )
                out.seek(0)
                for line in out:
                    entry = json.loads(line)
                    found.setdefault(entry["name"], []).append(entry["result"])
            for name in pending:
                if len(found.get(name, [])) == len(suite.inputs):
                    results[name] = found[name]
                elif name not in retried:  # late or stalled: once more, first, in a fresh child
                    retried.add(name)
                    break
                else:  # the child stalled or died here: what it finished stands, the rest failed
                    reached = found.get(name, [])
                    results[name] = reached + [{"error": "stalled or crashed"}] * (
                        len(suite.inputs) - len(reached)
                    )
                    break
            pending = [name for name in pending if name not in results]
    return results


def _child(spec: Path, names: list[str], *, unchecked: bool = False) -> None:
    import regopy

    from labelgate.errors import ConfigError
    from labelgate.policy import embedded
    from labelgate.policy.embedded import UNDEFINED, UnsupportedInput, _Compiled
    from labelgate.policy.source import PolicySource

    if unchecked:
        embedded.check_source = lambda modules, origin: None

    suite = Suite(**json.loads(spec.read_text()))
    for name in names:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as directory:
            root = _write_policy(Path(directory), suite, [name])
            try:
                compiled = _Compiled.build(PolicySource.from_dir(root), "t/x")
            except ConfigError as error:
                compiled, refused = None, error.message
        for value in suite.inputs:
            result: dict[str, Any]
            if compiled is None:
                result = {"refused": refused}
            else:
                try:
                    found = compiled.evaluate(value)
                    result = (
                        {"undefined": True}
                        if found is UNDEFINED or name not in found
                        else {"value": found[name]}
                    )
                except (regopy.RegoError, ValueError, UnsupportedInput) as error:
                    result = {"error": type(error).__name__}
            print(json.dumps({"name": name, "result": result}), flush=True)
        print(f"{name}: {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] in (["child"], ["unchecked"]):
        _child(Path(sys.argv[2]), sys.argv[3:], unchecked=sys.argv[1] == "unchecked")
