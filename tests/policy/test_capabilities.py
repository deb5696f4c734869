"""The embedded engine refuses policies it cannot evaluate exactly as OPA does (issue 12).

The allow-list itself is held to the compliance results in test_opa_compliance.py; here, what
a user sees: a folder calling an unsupported builtin (or an inexact sprintf verb, or a set
joined in insertion order) does not load, the message names the builtin, file and line and
points at ``--engine opa``, and the default pack loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelgate.errors import ConfigError
from labelgate.policy.capabilities import EXACT_REGO, SUPPORTED_BUILTINS, UNSUPPORTED, exact_modules
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.rego_text import definitions, scan_calls, strip, text_findings
from tests.policy.conftest import REGO, VALID_RESULT, result_rule, write_policy


async def refusal(tmp_path: Path, body: str) -> str:
    engine = EmbeddedEngine(write_policy(tmp_path, body + result_rule(VALID_RESULT)), watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    assert refused.value.reason == UNSUPPORTED
    assert "--engine opa" in refused.value.message
    return refused.value.message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('lookup := http.send({"method": "get", "url": "http://x"})\n', "builtin `http.send`"),
        ('parts := strings.split_n("a,b", ",", 1)\n', "builtin `strings.split_n`"),
        ('cidr if net.cidr_contains("10.0.0.0/8", input.ip)\n', "builtin `net.cidr_contains`"),
        ('ok if semver.is_valid("1.0.0")\n', "builtin `semver.is_valid`"),
        ("now := time.now_ns()\n", "builtin `time.now_ns`"),
        ('say := sprintf("%d", [input.x])\n', "builtin `sprintf` (%d truncates numbers to 32 bits)"),
        ('tags contains "b"\n\njoined := concat(",", tags)\n', "`concat` of a set"),
    ],
)
async def test_a_folder_using_what_regopy_cannot_evaluate_exactly_is_refused(
    tmp_path: Path, body: str, named: str
) -> None:
    message = await refusal(tmp_path, body)
    assert named in message
    line = 3 + body.count("\n") - 1  # the body starts on line 3, after the package header
    assert f"labelgate/decision/policy.rego:{line}" in message


async def test_the_refusal_names_every_finding_once(tmp_path: Path) -> None:
    message = await refusal(
        tmp_path, 'a := http.send({})\n\nb := http.send({"x": 1})\n\nc := graphql.parse("", "")\n'
    )
    assert (
        "builtin `http.send` at labelgate/decision/policy.rego:3, labelgate/decision/policy.rego:5" in message
    )
    assert "builtin `graphql.parse` at labelgate/decision/policy.rego:7" in message


async def test_the_default_pack_and_plain_policies_load(tmp_path: Path) -> None:
    for folder in (
        REGO,
        write_policy(tmp_path, 'n := count(input.x)\n\nf(v) := trim(v, " ")\n' + result_rule(VALID_RESULT)),
    ):
        engine = EmbeddedEngine(folder, watch_interval=None)
        await engine.start()
        await engine.close()


def test_calls_in_strings_comments_and_to_own_functions_are_not_builtins() -> None:
    text = (
        "package p\n\nimport data.lib.util as u\n\n"
        "f(x) := x\n\n"
        'a := f(1) # http.send({})\n\nb := "http.send({})"\n\n'
        "c := u.g(1) + data.lib.h(2)\n\nd := `net.cidr_merge(x)`\n"
    )
    lib = "package lib.util\n\ng(x) := x\n", "package lib\n\nh(x) := x\n"
    defined = definitions((("p.rego", text), ("u.rego", lib[0]), ("l.rego", lib[1])))
    assert scan_calls(text, defined) == []
    plain = "package p\n\nx := trim_space(input.s)\n"
    assert scan_calls(plain, definitions((("p.rego", plain),))) == [("trim_space", 3)]
    assert strip('x := "a#b" # c\n')[0].count("\n") == 1


def test_sprintf_is_refused_whatever_its_format() -> None:
    """%d of a number beyond 32 bits wraps around in rego-cpp (1700000000123456789 -> 1032178965)."""
    for text in (
        'package p\n\nx := sprintf("%d of %d, 100%%", [1, 2])\n',
        "package p\n\nx := sprintf(input.f, [1])\n",
    ):
        assert [f.what for f in text_findings("m.rego", text)] == [
            "builtin `sprintf` (%d truncates numbers to 32 bits)"
        ]


def test_the_allow_list_keeps_out_what_depends_on_the_outside_world() -> None:
    assert (
        not {"http.send", "time.now_ns", "rand.intn", "opa.runtime", "net.lookup_ip_addr"}
        & SUPPORTED_BUILTINS
    )


@pytest.mark.parametrize(
    ("literal", "named"),
    [
        ('"\\u00e9trangers"', "a string literal with the escape `\\u`"),
        ('"a\\/b"', "a string literal with the escape `\\/`"),
        ('$"{input.x}\\u00e9"', "a string literal with the escape `\\u`"),
        ("`a\x01b`", "a raw string holding a control character"),
    ],
)
async def test_string_literals_rego_cpp_keeps_escaped_are_refused(
    tmp_path: Path, literal: str, named: str
) -> None:
    """rego-cpp keeps "\\u00e9" as written, so it never equals the input's "é" (OPA: equal)."""
    message = await refusal(tmp_path, f"blocked if input.group == {literal}\n")
    assert f"{named} at labelgate/decision/policy.rego:3" in message


def test_plain_string_literals_are_not_findings() -> None:
    text = 'package t\n\na := "é \\\\u00e9 \\" \\\\ \\n \\t"\n\nb := `a"b\\c\td`\n\nc := "x" # "\\u00e9"\n'
    assert text_findings("t.rego", text) == []


# Review: rego-cpp writes a template string's values unlike OPA (`2.0` as `2`, `1e2` as `100`,
# strings inside an array without OPA's escapes, a set in another order). The release tag came
# out "2-stable", never the revoked "2.0-stable": the embedded engine allowed where OPA denies.
_TEMPLATE_RELEASE = """\
import data.labelgate.tables

release_tag := $"{tables.release}-stable"

result := {
	"allow": not_revoked,
	"reason": $"release {release_tag}; groups {input.subject.groups}",
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": 30,
} if {
	not_revoked := count([r | some r in tables.revoked_releases; r == release_tag]) == 0
}
"""


async def test_a_template_string_is_refused_as_rego_cpp_writes_its_values_unlike_opa(tmp_path: Path) -> None:
    from tests.policy.conftest import opa_value, rego_cpp_unchecked

    data = {"revoked_releases": ["2.0-stable"], "release": 2.0}
    policy = write_policy(tmp_path / "policy", _TEMPLATE_RELEASE, data=data)
    document = '{"subject": {"groups": ["ops\\u200b", "eng\\u2028"]}}'
    assert (await opa_value(policy, document))["allow"] is False
    assert '"allow":true' in rego_cpp_unchecked(policy, document)  # the refusal is earned
    # Data holding 2.0 is refused on its own now (a whole float: whole_numbers.py); the
    # template is refused whatever the data holds.
    policy = write_policy(tmp_path / "integer", _TEMPLATE_RELEASE, data={**data, "release": 2})
    engine = EmbeddedEngine(policy, watch_interval=None)
    with pytest.raises(ConfigError) as refused:
        await engine.start()
    await engine.close()
    message = refused.value.message
    assert refused.value.reason == UNSUPPORTED and "--engine opa" in message
    assert "builtin `internal.template_string` (" in message
    assert "labelgate/decision/policy.rego:5, labelgate/decision/policy.rego:9" in message


async def test_raw_and_escaped_literals_equal_the_input_strings_in_regopy() -> None:
    """The evidence for what the scanner lets through: these literals equal the same input
    strings in rego-cpp (as in OPA), and the refused \\u and \\/ escapes do not."""
    import regopy

    from labelgate.policy.embedded import UnsupportedInput, _interpreter, set_policy_input

    cases = {
        "raw_quote": ('`a"b`', 'a"b', True),
        "raw_backslash": ("`a\\b`", "a\\b", True),
        "raw_tab_newline": ("`a\tb\nc`", "a\tb\nc", True),
        "escaped": ('"a\\"b\\\\c\\nd\\te"', 'a"b\\c\nd\te', True),
        "non_ascii": ('"é"', "é", True),
        "u_escape": ('"\\u00e9"', "é", False),
        "slash_escape": ('"\\/"', "/", False),
    }
    interpreter = _interpreter()
    rules = "\n".join(f"{name} := {literal} == input.{name}" for name, (literal, _, _) in cases.items())
    interpreter.add_module("t.rego", f"package t\n\n{rules}\n")
    values = {name: value for name, (_, value, _) in cases.items()}
    with pytest.raises(UnsupportedInput):  # decisions refuse such input strings (ordering)
        set_policy_input(interpreter, values)
    # So measure through the JSON text, which rego-cpp stores exactly as the builder would.
    interpreter.set_input_term(json.dumps(values, ensure_ascii=False))
    got = {}
    for name in cases:
        output = interpreter.query(f"x = data.t.{name}")
        assert isinstance(output, regopy.Output) and output.ok()
        got[name] = output.results[0].bindings["x"]
    assert got == {name: equal for name, (_, _, equal) in cases.items()}


def test_guarded_calls_are_renamed_in_place_and_the_exact_versions_added_per_package() -> None:
    """Only the name changes (lines stay where they were); a package's own `sort` is its own."""
    calling = "package p\n\nx := sort(input.a)\n\ny := json.marshal(max(input.b)) # min(\n"
    own = "package q\n\nsort(x) := x\n\nz := sort(1)\n"
    out = dict(exact_modules((("a.rego", calling), ("b.rego", own))))
    assert out["a.rego"] == (
        "package p\n\nx := __labelgate_sort(input.a)\n\n"
        "y := __labelgate_marshal(__labelgate_max(input.b)) # min(\n"
    )
    assert out["b.rego"] == own
    assert list(out) == ["a.rego", "b.rego", "__labelgate/p.rego"]
    assert out["__labelgate/p.rego"] == "package p\n\n" + EXACT_REGO
