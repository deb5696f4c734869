"""CachingEngine over a real EmbeddedEngine (counted), with an injected clock."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.cache import CachingEngine, cache_key, cached_from, memo_key
from labelgate.policy.contract import Decision
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.engine import PolicyEngine
from tests.policy.conftest import write_policy

# The input chooses the TTL; no input.ttl -> undefined -> a fail-closed deny.
POLICY = """result := {
	"allow": true,
	"reason": concat("", [data.labelgate.tables.tag, input.subject.id]),
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": input.ttl,
} if input.ttl >= 0
"""


class CountingEngine:
    """Passes through to a real engine and counts the decisions it had to make."""

    def __init__(self, inner: EmbeddedEngine) -> None:
        self.inner = inner
        self.calls = 0
        self.name = inner.name

    @property
    def revision(self) -> str:
        return self.inner.revision

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def healthy(self) -> bool:
        return await self.inner.healthy()

    async def decide(self, input: dict[str, Any]) -> Decision:
        self.calls += 1
        return await self.inner.decide(input)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[CountingEngine]:
    engine = CountingEngine(
        EmbeddedEngine(write_policy(tmp_path, POLICY, data={"tag": "v1:"}), watch_interval=None)
    )
    await engine.start()
    yield engine
    await engine.close()


def doc(subject: str = "alice", ttl: int | None = 60, **request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": "labelgate.v1",
        "subject": {"id": subject, "groups": [], "auth": "mtls", "attributes": {"team": "risk"}},
        "request": {"service": "s", "method": "/s/M", "model": "m", "requested_outputs": [], **request},
        "approval": {"state": "none"},
        "context": {"time_ns": 1},
    }
    if ttl is not None:
        out["ttl"] = ttl
    return out


async def test_a_repeated_input_is_served_from_the_cache(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, clock=Clock())
    assert isinstance(cache, PolicyEngine) and isinstance(counted.inner, PolicyEngine)
    first = await cache.decide(doc())
    second = await cache.decide(doc())
    assert counted.calls == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert not first.cached and second.cached
    assert second.to_result() == first.to_result() and second.revision == first.revision


async def test_per_call_values_do_not_split_the_cache(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, clock=Clock())
    await cache.decide(doc(request_id="r1", session_id="s1", peer="ipv4:10.0.0.1"))
    other_call = doc(request_id="r2", session_id="s2", peer="ipv4:10.0.0.1")
    other_call["context"]["time_ns"] = 999
    assert (await cache.decide(other_call)).cached
    assert counted.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["subject"]["attributes"].update(team="fraud"),
        lambda d: d["subject"].update(groups=["analysts"]),
        lambda d: d.update(approval={"state": "granted", "grant_id": "g1"}),
        lambda d: d["request"].update(requested_outputs=["ssn"]),
        lambda d: d["request"].update(model_version="2"),
        # A policy may decide on where a call comes from (found by review: a call from
        # outside was served the allow cached for an office address).
        lambda d: d["request"].update(peer="ipv4:203.0.113.9"),
    ],
    ids=["attributes", "groups", "approval", "requested-outputs", "model-version", "peer"],
)
async def test_decision_relevant_changes_miss(counted: CountingEngine, change: Any) -> None:
    cache = CachingEngine(counted, clock=Clock())
    await cache.decide(doc())
    changed = doc()
    change(changed)
    assert not (await cache.decide(changed)).cached
    assert counted.calls == 2


async def test_entries_expire_after_the_policys_ttl(counted: CountingEngine) -> None:
    clock = Clock()
    cache = CachingEngine(counted, clock=clock)
    await cache.decide(doc(ttl=30))
    clock.now += 29.9
    assert (await cache.decide(doc(ttl=30))).cached
    clock.now += 0.1
    assert not (await cache.decide(doc(ttl=30))).cached
    assert counted.calls == 2


async def test_ttl_zero_is_never_cached(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, clock=Clock())
    for _ in range(3):
        decision = await cache.decide(doc(ttl=0))
        assert decision.fail_reason is None and not decision.cached
    assert counted.calls == 3 and len(cache) == 0


async def test_fail_closed_denies_are_never_cached(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, clock=Clock())
    for _ in range(3):
        decision = await cache.decide(doc(ttl=None))
        assert decision.fail_reason == "POLICY_UNDEFINED" and not decision.cached
    assert counted.calls == 3 and len(cache) == 0


async def test_a_new_revision_drops_everything(counted: CountingEngine, tmp_path: Path) -> None:
    cache = CachingEngine(counted, clock=Clock())
    await cache.decide(doc("alice"))
    await cache.decide(doc("bob"))
    assert len(cache) == 2
    write_policy(tmp_path, POLICY, data={"tag": "v2:"})
    assert await counted.inner.reload()
    decision = await cache.decide(doc("alice"))
    assert not decision.cached and decision.reason == "v2:alice"
    assert len(cache) == 1 and cache.revision_drops == 1
    assert not (await cache.decide(doc("bob"))).cached


async def test_least_recently_used_entries_are_evicted(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, max_entries=2, clock=Clock())
    await cache.decide(doc("a"))
    await cache.decide(doc("b"))
    assert (await cache.decide(doc("a"))).cached  # a is now the most recent
    await cache.decide(doc("c"))  # evicts b
    assert len(cache) == 2
    assert (await cache.decide(doc("a"))).cached
    assert not (await cache.decide(doc("b"))).cached
    assert cache.stats() == {"hits": 2, "misses": 4, "entries": 2, "revision_drops": 0}


async def test_an_input_that_is_not_json_bypasses_the_cache(counted: CountingEngine) -> None:
    cache = CachingEngine(counted, clock=Clock())
    odd = doc()
    odd["subject"]["attributes"] = {"when": object()}
    assert cache_key(odd) is None
    assert (await cache.decide(odd)).fail_reason == "POLICY_ERROR"
    assert len(cache) == 0


def test_the_key_ignores_order_and_volatile_fields_only() -> None:
    base = doc(request_id="1")
    reordered = {k: base[k] for k in reversed(list(base))}
    assert cache_key(reordered) == cache_key(base)
    volatile = copy.deepcopy(base)
    volatile["request"]["request_id"] = "2"
    assert cache_key(volatile) == cache_key(base)
    assert base["request"]["request_id"] == "1"  # the caller's input is not modified
    relevant = copy.deepcopy(base)
    relevant["request"]["model"] = "other"
    assert cache_key(relevant) != cache_key(base)


async def test_a_failing_engine_empties_the_cache() -> None:
    """Fail closed: once the engine fails, nobody is served from what it said before."""
    from labelgate.policy.contract import Decision

    class Flaky:
        name, revision = "flaky", "r1"
        failing = False

        async def start(self) -> None: ...
        async def close(self) -> None: ...

        async def healthy(self) -> bool:
            return not self.failing

        async def decide(self, input: dict[str, Any]) -> Decision:
            if self.failing:
                return Decision.deny("POLICY_UNAVAILABLE", engine="flaky", revision="r1")
            return Decision(allow=True, reason="ok", cache_ttl_seconds=60, engine="flaky", revision="r1")

    from labelgate.policy.cache import CachingEngine

    inner = Flaky()
    cache = CachingEngine(inner)
    doc = {"version": "labelgate.v1", "phase": "request", "subject": {"id": "a"}, "fields": []}
    other = {**doc, "subject": {"id": "b"}}
    assert (await cache.decide(doc)).allow and (await cache.decide(other)).allow
    assert (await cache.decide(doc)).cached
    inner.failing = True
    assert not (await cache.decide({**doc, "subject": {"id": "c"}})).allow
    assert not (await cache.decide(doc)).allow  # no longer served from the cache
    inner.failing = False
    await cache.decide(other)
    inner.failing = True
    assert not await cache.healthy()
    assert len(cache._entries) == 0


def test_a_new_token_of_the_same_person_is_the_same_key() -> None:
    from labelgate.policy.cache import cache_key

    def doc(jti: str, exp: int) -> dict[str, Any]:
        return {
            "subject": {"id": "jwt:i#ann", "groups": ["analysts"], "attributes": {"jti": jti, "exp": exp}}
        }

    assert cache_key(doc("a", 1)) == cache_key(doc("b", 2))
    assert cache_key(doc("a", 1)) != cache_key({**doc("a", 1), "subject": {"id": "jwt:i#bob"}})


def test_the_cache_keys_on_the_same_relevant_part_as_the_canonical_key() -> None:
    from labelgate.policy.cache import memo_key

    base = doc(request_id="1", peer="ipv4:10.0.0.1")
    volatile = doc(request_id="2", peer="ipv4:10.0.0.1")
    volatile["context"]["time_ns"] = 2
    assert memo_key(volatile) == memo_key(base)
    assert base["request"]["request_id"] == "1"  # the caller's input is not modified
    relevant = doc(request_id="1", peer="ipv4:10.0.0.1")
    relevant["subject"]["attributes"]["team"] = "ops"
    assert memo_key(relevant) != memo_key(base)


def test_the_cache_key_never_confuses_values_of_different_types() -> None:
    """Exact, never a false hit: 1, 1.0 and true are different inputs to a policy."""
    from labelgate.policy.cache import memo_key

    keys = set()
    for value in (1, 1.0, True, "1", [1], None):
        variant = doc()
        variant["subject"]["attributes"] = {"level": value}
        keys.add(memo_key(variant))
    assert len(keys) == 6 and None not in keys
    odd = doc()
    odd["subject"]["attributes"] = {"when": object()}
    assert memo_key(odd) is None


def test_one_input_has_one_cache_key_however_its_objects_are_shared() -> None:
    """The key depends on values only: not on whether equal strings are one object or
    several (which changes reference counts, and some ``marshal`` formats with them)."""
    from labelgate.policy.cache import memo_key

    shared_label = "".join(["confid", "ential"])
    fields = [{"path": f"outputs.c{n}", "labels": [shared_label]} for n in range(3)]
    separate = [{"path": f"outputs.c{n}", "labels": ["".join(["confid", "ential"])]} for n in range(3)]
    first, second = doc(), doc()
    first["fields"], second["fields"] = fields, separate
    assert memo_key(first) == memo_key(second)


def test_a_remembered_canonical_key_is_the_computed_one() -> None:
    """``cache_key`` remembers its answers by the exact in-process key: a repeated input gets
    the same canonical key, and a different input never gets another's."""
    from labelgate.policy import cache as cache_module

    cache_module._canonical_keys.clear()
    base = doc(request_id="1")
    first = cache_key(base)
    assert len(cache_module._canonical_keys) == 1
    assert cache_key(doc(request_id="2")) == first  # volatile fields only: remembered
    reordered = {k: base[k] for k in reversed(list(base))}
    assert cache_key(reordered) == first  # another marshal key, the same canonical one
    other = doc(subject="bob")
    assert cache_key(other) not in (None, first)


def test_cache_keys_gives_both_keys_from_one_marshal() -> None:
    """The gateway's one call: the cache's exact key and the store's canonical key, the same
    as asking each; the exact key is the input's own bytes, so it cannot collide."""
    from labelgate.policy.cache import cache_keys, memo_key

    base = doc(request_id="1")
    memo, canonical = cache_keys(base)
    assert memo == memo_key(base) and canonical == cache_key(base)
    assert memo is not None and b"alice" in memo
    other = doc(subject="bob")
    assert cache_keys(other) != (memo, canonical)
    odd = doc()
    odd["subject"]["attributes"] = {"when": object()}
    assert cache_keys(odd) == (None, None)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(phase="response"),
        lambda d: d["subject"].update(id="bob"),
        lambda d: d["subject"].update(groups=["analysts"]),
        lambda d: d["subject"].update(auth="jwt"),
        lambda d: d["subject"]["attributes"].update(team="fraud"),
        lambda d: d["request"].update(model="other"),
        lambda d: d["request"].update(method="/s/Other"),
        lambda d: d["request"].update(requested_outputs=["ssn"]),
        lambda d: d.update(fields=[{"path": "outputs.a", "labels": ["internal"], "sources": {}}]),
        lambda d: d["fields"][0].update(path="outputs.b"),
        lambda d: d["fields"][0].update(labels=["confidential"]),
        lambda d: d["fields"][0].update(sources={"public": ["detector:us_ssn"]}),
        lambda d: d.update(labels=["public", "internal"]),
        lambda d: d.update(approval={"state": "granted", "grant_id": "g1"}),
        lambda d: d["context"].update(recorded_call={"subject": "x"}),
        lambda d: d.update(ttl=60.0),
    ],
    ids=[
        "phase",
        "subject-id",
        "groups",
        "auth",
        "attributes",
        "model",
        "method",
        "requested-outputs",
        "fields",
        "field-path",
        "field-labels",
        "field-sources",
        "labels",
        "approval",
        "context",
        "number-type",
    ],
)
async def test_any_change_of_any_part_misses_with_the_gateways_key(
    counted: CountingEngine, change: Any
) -> None:
    """The gateway hands ``decide`` the key from ``cache_keys``: every part of the input is in it."""
    from labelgate.policy.cache import cache_keys

    def full() -> dict[str, Any]:
        out = doc()
        out["phase"] = "request"
        out["fields"] = [{"path": "outputs.a", "labels": ["public"], "sources": {"public": ["catalog"]}}]
        out["labels"] = ["public"]
        return out

    cache = CachingEngine(counted, clock=Clock())
    first = full()
    await cache.decide(first, key=cache_keys(first)[0])
    again = full()
    assert (await cache.decide(again, key=cache_keys(again)[0])).cached
    changed = full()
    change(changed)
    assert not (await cache.decide(changed, key=cache_keys(changed)[0])).cached
    assert counted.calls == 2


async def test_a_served_decision_cannot_be_changed_by_the_caller_it_is_shared_with(tmp_path: Path) -> None:
    """Hits hand out the stored decision itself, so all of it must be read-only: its fields,
    its masks and their parameters, its approval requirement."""
    # The mask comes from the input: regopy (1.5.2) fails to evaluate a constant array of objects.
    policy = """result := {
	"allow": false,
	"reason": "held",
	"mask": input.mask,
	"require_approval": {
		"approver_groups": ["owners"],
		"min_approvals": 1,
		"grant_ttl_seconds": 60,
		"reason": "owner",
	},
	"cache_ttl_seconds": 60,
}
"""

    def held() -> dict[str, Any]:
        out = doc()
        out["mask"] = [{"path": "outputs.ssn", "strategy": "partial", "params": {"keep_last": 4}}]
        return out

    engine = EmbeddedEngine(write_policy(tmp_path, policy), watch_interval=None)
    await engine.start()
    try:
        cache = CachingEngine(engine, clock=Clock())
        first = await cache.decide(held())
        hit, again = await cache.decide(held()), await cache.decide(held())
        assert not first.cached and hit.cached and again.cached
        assert hit.to_result() == again.to_result() == first.to_result()
        with pytest.raises(dataclasses.FrozenInstanceError):
            hit.allow = True  # type: ignore[misc]
        with pytest.raises(TypeError):
            hit.masks[0].params["keep_last"] = 0  # type: ignore[index]
        with pytest.raises(dataclasses.FrozenInstanceError):
            hit.masks[0].strategy = "null"  # type: ignore[misc]
        assert isinstance(hit.masks, tuple) and hit.require_approval is not None
        assert isinstance(hit.require_approval.approver_groups, tuple)
        with pytest.raises(dataclasses.FrozenInstanceError):
            hit.require_approval.min_approvals = 0  # type: ignore[misc]
        assert (await cache.decide(held())).to_result() == first.to_result()
    finally:
        await engine.close()


async def test_an_input_the_engine_refuses_does_not_empty_the_cache(counted: CountingEngine) -> None:
    """EMBEDDED_INPUT_UNSUPPORTED is about one input, not an outage: not stored, and a caller
    sending such strings must not empty everyone's cache."""
    cache = CachingEngine(counted, clock=Clock())
    await cache.decide(doc(ttl=60))
    assert len(cache) == 1
    refused = {**doc(ttl=60), "subject": {"id": 'a"b'}}
    for _ in range(2):
        decision = await cache.decide(refused)
        assert decision.fail_reason == "EMBEDDED_INPUT_UNSUPPORTED" and not decision.cached
    assert counted.calls == 3 and len(cache) == 1
    assert (await cache.decide(doc(ttl=60))).cached
    await cache.decide(doc(ttl=None))  # an engine failure still empties it
    assert len(cache) == 0


class IdentifyingEngine:
    """As OPA with decision logging: every evaluation has an id of its own."""

    name, revision = "opa", "r1"

    def __init__(self) -> None:
        self.evaluated = 0

    async def decide(self, input: dict[str, Any]) -> Decision:
        self.evaluated += 1
        return Decision(
            allow=True,
            reason="ok",
            cache_ttl_seconds=60,
            engine=self.name,
            revision=self.revision,
            decision_id=f"d-{self.evaluated}",
        )


async def test_a_cached_decision_names_the_evaluation_it_came_from_never_as_its_own() -> None:
    # A cached decision was not evaluated for this call: carrying the id of the call that was
    # joined its audit record to another call's decision-log event (found by review). The id
    # is kept as where the decision came from, and nothing built on the decision (an approval
    # stage's refusal copies ``decision_id``) can pass it off as this call's.
    cache = CachingEngine(IdentifyingEngine(), clock=Clock())  # type: ignore[arg-type]
    first, second = await cache.decide(doc()), await cache.decide(doc())
    assert (first.decision_id, first.cached, cached_from(first)) == ("d-1", False, None)
    assert (second.decision_id, second.cached, cached_from(second)) == (None, True, "d-1")
    assert second.to_result() == first.to_result() and second.revision == first.revision
    assert cached_from(dataclasses.replace(second, reason="copied")) == "d-1"


# ------------------------------------------------------------------ revision moved meanwhile


class SwitchingEngine:
    """An engine whose ``decide`` of subject ``held`` waits until the test lets it answer
    (``release``), so the revision can change while that decision is being made; a decision
    names the revision it started under."""

    name = "switching"

    def __init__(self, revision: str) -> None:
        self.revision = revision
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool:
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        revision = self.revision
        if input["subject"]["id"] == "held":
            self.started.set()
            await self.release.wait()
        return Decision(
            allow=True, reason=revision, cache_ttl_seconds=60, engine=self.name, revision=revision
        )


class GenerationEngine(SwitchingEngine):
    """As OpaEngine: counts its revision changes (``revision_generation``)."""

    def __init__(self, revision: str) -> None:
        super().__init__(revision)
        self.revision_generation = 0

    def switch(self, revision: str) -> None:
        self.revision = revision
        self.revision_generation += 1


async def test_a_decision_made_while_the_engines_revision_moved_to_and_fro_is_not_stored() -> None:
    # The revision went R1 -> R2 -> R1 while the decision was being made: it names R1, the
    # revision in force again, but it was made across two changes. The engine's own count of
    # changes (read before the wait) says so, though the cache itself never saw R2.
    engine = GenerationEngine("R1")
    cache = CachingEngine(engine, clock=Clock())  # type: ignore[arg-type]
    held = asyncio.create_task(cache.decide(doc("held")))
    await engine.started.wait()
    engine.switch("R2")
    engine.switch("R1")
    engine.release.set()
    decision = await held
    assert decision.revision == "R1" and not decision.cached  # still answered to its caller
    assert len(cache) == 0
    assert not (await cache.decide(doc("held"))).cached  # asked again, then stored
    assert (await cache.decide(doc("held"))).cached


async def test_a_decision_made_while_the_cache_saw_the_revision_move_is_not_stored() -> None:
    # An engine that counts nothing: the cache's own count of the changes it saw (here on
    # another caller's hit while the revision was R2) tells the decision straddled them.
    engine = SwitchingEngine("R1")
    cache = CachingEngine(engine, clock=Clock())  # type: ignore[arg-type]
    held = asyncio.create_task(cache.decide(doc("held")))
    await engine.started.wait()
    engine.revision = "R2"
    assert (await cache.decide(doc("bob"))).revision == "R2"
    engine.revision = "R1"
    assert (await cache.decide(doc("carol"))).revision == "R1"
    engine.release.set()
    assert (await held).revision == "R1"
    assert cache.cached(memo_key(doc("held"))) is None
    assert cache.cached(memo_key(doc("carol"))) is not None  # decided without a change meanwhile
