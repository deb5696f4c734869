"""Builtins the embedded engine allows, on arguments chosen to break them, against real OPA.

OPA's compliance cases (test_opa_compliance.py) call builtins the way their authors meant;
the arguments here are the ones that broke the builtins now in ``INEXACT_BUILTINS``:
non-ASCII text (multi-byte, case-changing, spaces outside ASCII), numbers beyond 2^53 and
2^64, tiny and huge floats, empty separators, invalid encodings, odd time strings, mixed
types. Every expression is one rule of its own policy, compiled the way the engine compiles
one (``_Compiled.build``: the load-time check, then exact_modules), and evaluated on every
input; OPA evaluates them all in one ``opa eval`` per input.

rego-cpp can loop or allocate without bound on odd arguments (``replace`` with an empty old
string did), so the embedded side runs in a child process (``python -m
tests.policy.builtin_differential child``) under a timeout, one JSON line per result.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RULE = 'x["{name}"] := v if {{\n\tv := {expression}\n}}\n'

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
    "strings.count": "strings.count(input.s, input.t)",
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
]


def opa_results(opa: str, directory: Path) -> list[dict[str, Any]]:
    """OPA's value of every expression (absent when undefined), per input."""
    module = "package t\n\n" + "\n".join(RULE.format(name=n, expression=e) for n, e in EXPRESSIONS.items())
    (directory / "t.rego").write_text(module)
    results = []
    for index, value in enumerate(INPUTS):
        path = directory / f"input-{index}.json"
        path.write_text(json.dumps(value, ensure_ascii=False))
        done = subprocess.run(
            [opa, "eval", "-f", "json", "-d", str(directory / "t.rego"), "-i", str(path), "data.t.x"],
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(done.stdout).get("result") or [{"expressions": [{"value": {}}]}]
        results.append(found[0]["expressions"][0]["value"])
    return results


def embedded_results(timeout: float) -> dict[str, list[Any]]:
    """name -> per input: {"value": v}, {"undefined": true}, {"error": name} or {"refused":
    message}. An expression that stalls or kills the child is an error on the inputs it did not
    finish; the child is restarted after it."""
    command = [sys.executable, "-m", "tests.policy.builtin_differential", "child"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proxy")])}
    results: dict[str, list[Any]] = {}
    pending = list(EXPRESSIONS)
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
            if len(found.get(name, [])) == len(INPUTS):
                results[name] = found[name]
            else:  # the child stalled or died here: what it finished stands, the rest failed
                reached = found.get(name, [])
                results[name] = reached + [{"error": "stalled or crashed"}] * (len(INPUTS) - len(reached))
                break
        pending = [name for name in pending if name not in results]
    return results


def _child(names: list[str]) -> None:
    import regopy

    from labelgate.errors import ConfigError
    from labelgate.policy.embedded import UNDEFINED, _Compiled
    from labelgate.policy.source import PolicySource

    for name in names:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as directory:
            module = Path(directory) / "t" / "t.rego"
            module.parent.mkdir()
            module.write_text("package t\n\n" + RULE.format(name=name, expression=EXPRESSIONS[name]))
            try:
                compiled = _Compiled.build(PolicySource.from_dir(Path(directory)), "t/x")
            except ConfigError as error:
                compiled, refused = None, error.message
        for value in INPUTS:
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
                except (regopy.RegoError, ValueError) as error:
                    result = {"error": type(error).__name__}
            print(json.dumps({"name": name, "result": result}), flush=True)
        print(f"{name}: {time.monotonic() - started:.2f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
