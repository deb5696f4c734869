"""EmbeddedEngine (regopy / rego-cpp in process): decisions, fail-closed cases, reloads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import ConfigError, InvalidInput
from labelgate.policy.cache import CachingEngine
from labelgate.policy.contract import build_input
from labelgate.policy.embedded import EmbeddedEngine
from tests.policy.conftest import REGO, VALID_RESULT, opa_value, refused_start, result_rule, write_policy

# Echoes parts of the input so a test can tell which input (and which revision) decided.
ECHO = """result := {
	"allow": input.subject.id in data.labelgate.tables.allowed,
	"reason": concat("", [data.labelgate.tables.prefix, input.subject.id]),
	"mask": [{"path": p, "strategy": "redact", "params": {}} | some p in input.paths],
	"require_approval": null,
	"cache_ttl_seconds": 60,
} if input.subject.id
"""
TABLES = {"allowed": ["alice"], "prefix": "v1:"}
APPROVAL = {"approver_groups": ["security"], "min_approvals": 2, "grant_ttl_seconds": 900, "reason": "held"}


def subject_input(subject_id: str, paths: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"subject": {"id": subject_id}, "paths": list(paths)}


@pytest.fixture
async def engine_for(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[EmbeddedEngine] = []

    async def start(policy_dir: Path, **kwargs: Any) -> EmbeddedEngine:
        kwargs.setdefault("watch_interval", None)
        engine = EmbeddedEngine(policy_dir, **kwargs)
        await engine.start()
        started.append(engine)
        return engine

    yield start
    for engine in started:
        await engine.close()


async def test_a_decision_echoing_the_input(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    decision = await engine.decide(subject_input("alice", ("outputs.ssn",)))
    assert decision.fail_reason is None
    assert decision.to_result() == {
        "allow": True,
        "reason": "v1:alice",
        "mask": [{"path": "outputs.ssn", "strategy": "redact", "params": {}}],
        "require_approval": None,
        "cache_ttl_seconds": 60,
    }
    assert (decision.engine, decision.revision, decision.decision_id) == ("embedded", engine.revision, None)
    assert len(engine.revision) == 64
    assert await engine.healthy()
    assert (await engine.decide(subject_input("mallory"))).allow is False


async def test_non_ascii_strings_survive(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    tricky = "a/b é☃😀 \u2028"
    decision = await engine.decide(subject_input(tricky, (f"outputs.{tricky}",)))
    assert decision.fail_reason is None
    assert decision.reason == f"v1:{tricky}"
    assert decision.masks[0].path == f"outputs.{tricky}"


@pytest.mark.parametrize(
    "doc",
    [
        subject_input('a"b'),
        subject_input("alice", ("outputs.a\\b",)),
        subject_input("alice", ("outputs.a\nb",)),
        subject_input("alice", ("outputs.\x01",)),
        {**subject_input("alice"), "extra": {'key"': 1}},  # keys too
        {"f": 1.5, **subject_input("alice", ("outputs.a\tb",))},  # the JSON-text path (a float first)
    ],
    ids=["quote", "backslash", "newline", "control", "key", "json-text-path"],
)
async def test_an_input_string_rego_cpp_orders_differently_is_refused(
    tmp_path: Path, engine_for: Any, doc: dict[str, Any]
) -> None:
    """rego-cpp sorts `a"` after `a#` (it compares escaped forms): never decided, denied."""
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    for _ in range(2):  # the escape memo must not let a refused string through the second time
        decision = await engine.decide(doc)
        assert (decision.allow, decision.fail_reason) == (False, "EMBEDDED_INPUT_UNSUPPORTED")
        assert "opa engine" in decision.reason and not decision.masks
    assert (await engine.decide(subject_input("alice"))).allow  # the next plain input is decided


async def test_explain_refuses_such_an_input_clearly(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    with pytest.raises(InvalidInput) as raised:
        engine.explain(subject_input('a"b'))
    assert raised.value.reason == "EMBEDDED_INPUT_UNSUPPORTED"


async def test_non_ascii_data_equals_the_same_input_string(tmp_path: Path, engine_for: Any) -> None:
    """Data went in \\u-escaped (json.dumps' default), so "é" from data never matched the input's."""
    body = ECHO.replace("data.labelgate.tables.allowed", "data.labelgate.tables.allowed_groups")
    engine = await engine_for(
        write_policy(tmp_path, body, data={"allowed_groups": ["sous-traitants-é"], "prefix": ""})
    )
    assert (await engine.decide(subject_input("sous-traitants-é"))).allow
    assert not (await engine.decide(subject_input("sous-traitants-e"))).allow


async def test_data_from_yaml_is_refused(tmp_path: Path, engine_for: Any) -> None:
    """PyYAML reads `1e3` as a string, OPA as 1000: the same file, different data."""
    write_policy(tmp_path, result_rule(VALID_RESULT))
    (tmp_path / "labelgate" / "tables").mkdir(parents=True)
    (tmp_path / "labelgate" / "tables" / "data.yaml").write_text("max_rows: 1e3\n")
    with pytest.raises(ConfigError) as raised:
        await engine_for(tmp_path)
    assert raised.value.reason == "BUNDLE_DATA_UNSUPPORTED"
    assert "labelgate/tables/data.yaml" in raised.value.message
    assert "data.json" in raised.value.message and "--engine opa" in raised.value.message


@pytest.mark.parametrize(
    ("phase", "valid"), [("request", False), ("response", False), (None, False), ("replay", True)]
)
async def test_a_result_that_allows_and_holds_is_valid_in_replay_only(
    tmp_path: Path, engine_for: Any, phase: str | None, valid: bool
) -> None:
    # The requirement comes from data: a constant one trips a rego-cpp bug (invalid JSON out).
    held = json.dumps({**VALID_RESULT, "require_approval": "@"}).replace(
        '"@"', "data.labelgate.tables.approval"
    )
    engine = await engine_for(write_policy(tmp_path, f"result := {held}\n", data={"approval": APPROVAL}))
    doc = {} if phase is None else {"phase": phase}
    decision = await engine.decide(doc)
    if valid:
        assert decision.allow and decision.require_approval is not None and not decision.failed_closed
    else:
        assert (decision.allow, decision.fail_reason) == (False, "POLICY_RESULT_INVALID")
        assert "contradictory" in decision.reason


@pytest.mark.parametrize("inline_budget", [0.0, 10.0], ids=["always-threaded", "inline-when-fast"])
async def test_concurrent_decisions_do_not_mix_inputs(
    tmp_path: Path, engine_for: Any, inline_budget: float
) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES), inline_budget=inline_budget)
    names = [f"user-{i}" for i in range(60)]
    decisions = await asyncio.gather(*(engine.decide(subject_input(n, (f"outputs.{n}",))) for n in names))
    assert [d.reason for d in decisions] == [f"v1:{n}" for n in names]
    assert [d.masks[0].path for d in decisions] == [f"outputs.{n}" for n in names]


async def test_undefined_is_policy_undefined(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    decision = await engine.decide({"no": "subject"})
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_UNDEFINED")


async def test_a_missing_decision_path_is_policy_undefined(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(
        write_policy(tmp_path, ECHO, data=TABLES), decision_path="labelgate/other/result"
    )
    assert (await engine.decide(subject_input("alice"))).fail_reason == "POLICY_UNDEFINED"


async def test_schema_violating_result_is_policy_result_invalid(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, 'result := {"allow": "yes"}\n'))
    decision = await engine.decide(subject_input("alice"))
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_RESULT_INVALID")


async def test_an_evaluation_error_is_policy_error(tmp_path: Path, engine_for: Any) -> None:
    conflict = result_rule(VALID_RESULT, "input.a") + result_rule({**VALID_RESULT, "reason": "b"}, "input.b")
    engine = await engine_for(write_policy(tmp_path, conflict))
    assert (await engine.decide({"a": True})).fail_reason is None
    decision = await engine.decide({"a": True, "b": True})
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_ERROR")


async def test_an_input_that_is_not_json_is_policy_error(tmp_path: Path, engine_for: Any) -> None:
    engine = await engine_for(write_policy(tmp_path, ECHO, data=TABLES))
    decision = await engine.decide({"subject": {"id": object()}})
    assert decision.fail_reason == "POLICY_ERROR"


async def test_before_start_every_decision_is_a_deny(tmp_path: Path) -> None:
    engine = EmbeddedEngine(write_policy(tmp_path, ECHO, data=TABLES), watch_interval=None)
    decision = await engine.decide(subject_input("alice"))
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_UNAVAILABLE")
    assert await engine.healthy() is False


async def test_a_policy_that_does_not_compile_fails_at_start(tmp_path: Path) -> None:
    engine = EmbeddedEngine(write_policy(tmp_path, "result := {\n"), watch_interval=None)
    with pytest.raises(ConfigError) as caught:
        await engine.start()
    assert caught.value.reason == "POLICY_COMPILE_FAILED"
    assert "labelgate/decision/policy.rego:3:11: this is unclosed" in caught.value.message
    await engine.close()


async def test_reload_swaps_the_revision_and_drops_the_cache(tmp_path: Path, engine_for: Any) -> None:
    policy = write_policy(tmp_path, ECHO, data=TABLES)
    engine = await engine_for(policy)
    cache = CachingEngine(engine)
    first = await cache.decide(subject_input("bob"))
    assert (await cache.decide(subject_input("bob"))).cached
    assert await engine.reload() is False  # nothing changed: same revision, cache kept
    assert len(cache) == 1

    write_policy(tmp_path, ECHO, data={"allowed": ["alice", "bob"], "prefix": "v2:"})
    assert await engine.reload() is True
    assert engine.revision != first.revision
    second = await cache.decide(subject_input("bob"))
    assert not second.cached and second.allow is True and second.reason == "v2:bob"
    assert second.revision == engine.revision
    assert cache.revision_drops == 1


async def test_a_broken_edit_keeps_the_last_good_revision(tmp_path: Path, engine_for: Any) -> None:
    policy = write_policy(tmp_path, ECHO, data=TABLES)
    engine = await engine_for(policy)
    good = engine.revision
    (policy / "labelgate" / "decision" / "broken.rego").write_text(
        "package labelgate.decision\n\nresult := {\n"
    )
    with pytest.raises(ConfigError):
        await engine.reload()
    assert engine.revision == good
    assert (await engine.decide(subject_input("alice"))).fail_reason is None


async def test_the_watcher_picks_up_edits(tmp_path: Path, engine_for: Any) -> None:
    policy = write_policy(tmp_path, ECHO, data=TABLES)
    engine = await engine_for(policy, watch_interval=0.02)
    old = engine.revision
    write_policy(tmp_path, ECHO, data={**TABLES, "prefix": "v2:"})

    for _ in range(500):  # up to 10 s; the watcher polls every 20 ms
        if engine.revision != old:
            break
        await asyncio.sleep(0.02)
    assert engine.revision != old, "the watcher never loaded the edited policy"
    assert (await engine.decide(subject_input("alice"))).reason == "v2:alice"


async def test_in_flight_decisions_finish_across_a_reload(tmp_path: Path, engine_for: Any) -> None:
    policy = write_policy(tmp_path, ECHO, data=TABLES)
    engine = await engine_for(policy, inline_budget=0.0)  # every decision in the thread pool
    old = engine.revision
    calls = [asyncio.ensure_future(engine.decide(subject_input(f"u{i}"))) for i in range(40)]
    write_policy(tmp_path, ECHO, data={**TABLES, "prefix": "v2:"})
    await engine.reload()
    decisions = await asyncio.gather(*calls)
    prefixes = {old: "v1:", engine.revision: "v2:"}
    for i, decision in enumerate(decisions):
        assert decision.fail_reason is None
        assert decision.reason == f"{prefixes[decision.revision]}u{i}"  # one snapshot per decision


async def test_explain_lists_the_rules_that_hold(tmp_path: Path, engine_for: Any) -> None:
    body = (
        ECHO
        + '\nreasons contains "listed" if input.subject.id in data.labelgate.tables.allowed\n'
        + "\nflagged if input.flag\n\nzero := 0\n\nhelper(x) := x\n"
    )
    engine = await engine_for(write_policy(tmp_path, body, data=TABLES))
    explanation = engine.explain(subject_input("alice"))
    assert explanation["matched"]["reasons"] == ["listed"]
    assert explanation["matched"]["zero"] == 0
    assert explanation["matched"]["result"]["reason"] == "v1:alice"
    assert explanation["not_matched"] == {"flagged": "undefined"}
    assert "helper" not in explanation["matched"]  # functions need arguments: not listed


async def test_the_real_policy_pack_decides(engine_for: Any) -> None:
    engine = await engine_for(REGO)
    decision = await engine.decide(_public_only_input())
    assert decision.fail_reason is None, decision
    assert decision.allow is True and decision.masks == ()


def _public_only_input() -> dict[str, Any]:
    return build_input(
        phase="response",
        subject={"id": "alice", "groups": [], "auth": "mtls"},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "sentiment",
            "requested_outputs": [],
        },
        fields=[{"path": "outputs.label", "labels": ["public"], "sources": {"public": ["catalog"]}}],
        approval=None,
        time_ns=1,
    )


@pytest.mark.parametrize(("value", "literal"), [(1e-07, "0.0000001"), (2**65, "36893488147419103232")])
async def test_numbers_rego_cpp_would_reformat_arrive_exactly(
    tmp_path: Path, engine_for: Any, value: float, literal: str
) -> None:
    # Built node by node, rego-cpp turns 1e-07 into 0 and cannot hold 2**65: such inputs
    # must take the JSON-text route so the policy sees the number the gateway sent.
    rule = result_rule(VALID_RESULT, f"input.v == {literal}")
    engine = await engine_for(write_policy(tmp_path, rule))
    assert (await engine.decide({"v": value})).allow is True
    assert (await engine.decide({"v": 0})).fail_reason == "POLICY_UNDEFINED"


# -- numbers rego-cpp rounds, and object order (review rev-s11 F8, F3) -------------------------

# rego-cpp keeps a number with a fraction to 16 significant digits: 0.30000000000000004 is 0.3
# there, so `score > 0.3` failed where OPA holds it.
THRESHOLD = result_rule(VALID_RESULT, "is_number(input.score)\n\tinput.score > 0.3")


@pytest.mark.parametrize(
    "doc",
    [
        {"score": 0.30000000000000004},
        {"nested": [{"f": 1.0000000000000002}], "score": 1},
        {"score": 10.000000000000002},
    ],
)
async def test_an_input_float_rego_cpp_would_round_is_refused(
    tmp_path: Path, engine_for: Any, doc: dict[str, Any]
) -> None:
    engine = await engine_for(write_policy(tmp_path, THRESHOLD))
    decision = await engine.decide(doc)
    assert (decision.allow, decision.fail_reason) == (False, "EMBEDDED_INPUT_UNSUPPORTED")


@pytest.mark.parametrize(
    ("score", "allow"), [(0.3000000000000001, True), (0.3, False), (1e-7, False), (0.5, True)]
)
async def test_floats_of_16_digits_are_decided_as_opa_does(
    tmp_path: Path, engine_for: Any, score: float, allow: bool
) -> None:
    engine = await engine_for(write_policy(tmp_path, THRESHOLD))
    decision = await engine.decide({"score": score})
    assert decision.fail_reason in (None, "POLICY_UNDEFINED") and decision.allow is allow


async def test_data_with_a_float_rego_cpp_would_round_does_not_load(tmp_path: Path) -> None:
    folder = write_policy(
        tmp_path, result_rule(VALID_RESULT, "data.labelgate.tables.t > 0.3"), data={"t": 0.1 + 0.2}
    )
    refused = await refused_start(EmbeddedEngine(folder, watch_interval=None))
    assert refused.reason == "POLICY_DATA_INVALID"
    assert "0.30000000000000004" in refused.message and "--engine opa" in refused.message


# The approver group is the first key of an object, in data and in the input: OPA iterates
# keys sorted ("ciso"); rego-cpp iterated them as they went in ("zz-contractors").
FIRST_KEYS = result_rule(
    {**VALID_RESULT, "allow": False, "reason": "held", "cache_ttl_seconds": 0},
    "\n\t".join(
        [
            "data.labelgate.tables.owners[input.label]",
            '[g | data.labelgate.tables.owners[input.label][g]][0] == "ciso"',
            '[k | input.o[k]] == ["a", "b", "c"]',
            "[v | some v in input.o] == [2, 1, 3]",
        ]
    ),
)


async def test_objects_of_the_input_and_the_data_iterate_in_opas_order(
    tmp_path: Path, engine_for: Any
) -> None:
    owners = {"restricted": {"zz-contractors": "vendor desk", "data-owners": "owners", "ciso": "security"}}
    engine = await engine_for(write_policy(tmp_path, FIRST_KEYS, data={"owners": owners}))
    for doc in (
        {"label": "restricted", "o": {"b": 1, "a": 2, "c": 3}},
        {"o": {"b": 1, "a": 2, "c": 3}, "label": "restricted", "f": 0.5},
    ):
        decision = await engine.decide(doc)  # the node-by-node builder, then the JSON-text path
        assert decision.fail_reason is None and decision.reason == "held", decision


# -- builtin errors (issue 12) -------------------------------------------------------------------

# A builtin error makes OPA's expression undefined, failing the body; rego-cpp (not strict) left
# the variable unbound and went on, so each of these allowed where OPA does not.
ERRORING_BODIES = {
    "negated_comparison": "v := count(input.n)\n\tnot v > 3",
    "unused_result": "v := count(input.n)",
    "negated_type_test": 'v := concat(",", input.n)\n\tnot is_string(v)',
    "negated_helper": "v := count(input.n)\n\tnot _over(v)\n}\n\n_over(x) if {\n\tis_number(x)\n\tx > 3",
    "in_an_object": 'v := {"size": count(input.n)}',
}
ERRORING_INPUT = {"n": 5}


@pytest.mark.parametrize("name", sorted(ERRORING_BODIES))
async def test_a_builtin_error_is_a_deny_where_opa_fails_the_body(
    tmp_path: Path, engine_for: Any, name: str
) -> None:
    policy = write_policy(tmp_path / "policy", result_rule(VALID_RESULT, ERRORING_BODIES[name]))
    assert await opa_value(policy, json.dumps(ERRORING_INPUT)) is None, (
        "OPA decides this body: the case is wrong"
    )
    engine = await engine_for(policy)
    decision = await engine.decide(ERRORING_INPUT)
    assert (decision.allow, decision.fail_reason) == (False, "POLICY_ERROR")
    # The same body on an input the builtin takes is decided, as in OPA.
    assert (await engine.decide({"n": ["a", "b"]})).allow is (name != "negated_type_test")


# The text json.marshal makes of a string or an object holds `"`, which rego-cpp's string
# builtins read escaped (count 17 where OPA counts 15), and a boolean an `in` made is written
# `True` there (found by fuzzing): the guard denies both; numbers stay exact.
@pytest.mark.parametrize(
    ("condition", "decided"),
    [
        ("count(json.marshal(input.o)) <= 15", False),
        ('json.marshal([1 in {1}]) == "[true]"', False),
        ('json.marshal([count(input.o), null]) == "[1,null]"', True),
    ],
)
async def test_json_marshal_is_exact_or_a_deny(
    tmp_path: Path, engine_for: Any, condition: str, decided: bool
) -> None:
    engine = await engine_for(write_policy(tmp_path, result_rule(VALID_RESULT, condition)))
    decision = await engine.decide({"o": {"a": "b c d"}})
    assert (decision.allow, decision.fail_reason) == ((True, None) if decided else (False, "POLICY_ERROR"))
