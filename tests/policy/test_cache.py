"""CachingEngine over a real EmbeddedEngine (counted), with an injected clock."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from labelgate.auth import Authenticator, JwtSettings
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.mtls import MtlsIdentifier
from labelgate.policy.cache import CachingEngine, cache_key, cache_keys, cached_from, memo_key
from labelgate.policy.contract import Decision
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.engine import PolicyEngine
from tests.policy.conftest import write_policy
from tests.support.pki import claims, create_ca, rsa_signing_key, write_jwks

# The input chooses the TTL; no input.ttl -> undefined -> a fail-closed deny. (is_number first:
# the embedded engine orders only what the text shows to be numbers, rego_comparisons.py.)
POLICY = """result := {
	"allow": true,
	"reason": concat("", [data.labelgate.tables.tag, input.subject.id]),
	"mask": [],
	"require_approval": null,
	"cache_ttl_seconds": input.ttl,
} if {
	is_number(input.ttl)
	input.ttl >= 0
}
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
    attributes = {"team": "risk", "jti": "t1", "iat": 1, "exp": 4_000_000_000, "nbf": 1}
    out: dict[str, Any] = {
        "version": "labelgate.v1",
        "subject": {"id": subject, "groups": [], "auth": "mtls", "attributes": attributes},
        "request": {
            "service": "s",
            "method": "/s/M",
            "model": "m",
            "requested_outputs": [],
            "session_id": "s1",
            **request,
        },
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
    await cache.decide(doc(request_id="r1", digest="d1", session_id="s1", peer="ipv4:10.0.0.1"))
    # Another session too: a caller naming none gets one per connection (found by review:
    # keyed on it, a REST client without keep-alive never hit the cache).
    other_call = doc(request_id="r2", digest="d2", session_id="s2", peer="ipv4:10.0.0.1")
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
        # A policy may decide on the token (found by review: a revoked jti was served the
        # allow cached for another token).
        lambda d: d["subject"]["attributes"].update(jti="stolen"),
        lambda d: d["subject"]["attributes"].update(iat=2),
        lambda d: d["subject"]["attributes"].update(exp=5_000_000_000),
        lambda d: d["subject"]["attributes"].update(nbf=2),
    ],
    ids=[
        "attributes",
        "groups",
        "approval",
        "requested-outputs",
        "model-version",
        "peer",
        "jti",
        "iat",
        "exp",
        "nbf",
    ],
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


def test_a_new_token_is_another_cache_key_and_the_same_stored_input() -> None:
    """The cache keys on the token's claims (a policy may decide on them); the canonical key,
    which names stored inputs for impact analysis, does not: one person's calls are one
    stored input across tokens. Neither keys on the session (one per connection)."""

    def doc(jti: str, exp: int, session: str = "s1") -> dict[str, Any]:
        return {
            "subject": {"id": "jwt:i#ann", "groups": ["analysts"], "attributes": {"jti": jti, "exp": exp}},
            "request": {"model": "m", "session_id": session, "request_id": jti},
        }

    assert memo_key(doc("a", 1)) != memo_key(doc("b", 1))
    assert memo_key(doc("a", 1)) != memo_key(doc("a", 2))
    assert memo_key(doc("a", 1)) == memo_key(doc("a", 1, session="s2"))  # sessions: not keyed
    assert cache_key(doc("a", 1)) == cache_key(doc("b", 2)) == cache_key(doc("a", 1, session="s2"))
    assert cache_key(doc("a", 1)) != cache_key({**doc("a", 1), "subject": {"id": "jwt:i#bob"}})
    memo, canonical = cache_keys(doc("c", 3, session="s3"))  # the same through the memo
    assert memo == memo_key(doc("c", 3, session="s3")) and canonical == cache_key(doc("a", 1))


def test_a_new_token_beside_a_certificate_is_another_cache_key_and_the_same_stored_input() -> None:
    """The same for a token presented beside a client certificate: its claims, kept in
    ``also_verified_credentials``, are in the cache key and out of the canonical one."""

    def doc(jti: str, exp: int) -> dict[str, Any]:
        token = {
            "id": "jwt:i#ann",
            "groups": ["analysts"],
            "attributes": {"jti": jti, "exp": exp, "iss": "i"},
        }
        attributes = {"cert_sha256": "ab", "also_verified_credentials": {"jwt": token}}
        return {
            "subject": {"id": "mtls:wl", "groups": [], "attributes": attributes},
            "request": {"model": "m"},
        }

    assert memo_key(doc("a", 1)) != memo_key(doc("b", 1)) and memo_key(doc("a", 1)) != memo_key(doc("a", 2))
    assert cache_key(doc("a", 1)) == cache_key(doc("b", 2))
    other_issuer = doc("a", 1)
    other_issuer["subject"]["attributes"]["also_verified_credentials"]["jwt"]["attributes"]["iss"] = "j"
    assert cache_key(other_issuer) != cache_key(doc("a", 1))
    assert (
        doc("a", 1)["subject"]["attributes"]["also_verified_credentials"]["jwt"]["attributes"]["jti"] == "a"
    )


def test_the_cache_keys_on_the_relevant_part_the_canonical_key_leaves_out_no_more_of() -> None:
    from labelgate.policy.cache import memo_key

    base = doc(request_id="1", peer="ipv4:10.0.0.1")
    volatile = doc(request_id="2", peer="ipv4:10.0.0.1", digest="d")
    volatile["context"]["time_ns"] = 2
    assert memo_key(volatile) == memo_key(base) and cache_key(volatile) == cache_key(base)
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


# ------------------------------------------------------------------ token, session and time

REVOKING = """import rego.v1

revoked if input.subject.attributes.jti in data.labelgate.tables.revoked_jtis

default result := {
	"allow": false, "reason": "denied", "mask": [], "require_approval": null, "cache_ttl_seconds": 0,
}

result := {"allow": true, "reason": "ok", "mask": [], "require_approval": null, "cache_ttl_seconds": 60} if {
	not revoked
}
"""


async def test_a_policy_deciding_on_the_token_id_is_not_bypassed_by_a_cached_allow(
    tmp_path: Path,
) -> None:
    # Found by review: the key left out ``jti``, so once one good call was cached a revoked
    # token was served its allow.
    engine = EmbeddedEngine(
        write_policy(tmp_path, REVOKING, data={"revoked_jtis": ["stolen"]}), watch_interval=None
    )
    await engine.start()
    try:
        cache = CachingEngine(engine, clock=Clock())

        def call(jti: str, session: str) -> dict[str, Any]:
            out = doc(session_id=session)
            out["subject"]["attributes"]["jti"] = jti
            return out

        assert (await cache.decide(call("good", "s1"), key=cache_keys(call("good", "s1"))[0])).allow
        assert (await cache.decide(call("good", "s1"))).cached  # the good call itself is cached
        decision = await cache.decide(call("stolen", "s1"), key=cache_keys(call("stolen", "s1"))[0])
        assert (decision.allow, decision.cached) == (False, False)
    finally:
        await engine.close()


class WallClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def with_exp(exp: Any, ttl: int = 60) -> dict[str, Any]:
    out = doc(ttl=ttl)
    out["subject"]["attributes"]["exp"] = exp
    return out


async def test_an_entry_never_outlives_the_token_it_was_decided_for(counted: CountingEngine) -> None:
    clock, wall = Clock(), WallClock()
    cache = CachingEngine(counted, clock=clock, wall_clock=wall)
    # An integer, as Subject.to_policy hands every engine a token's exp (a whole float such as
    # 1900000010.0 is an input the in-process engines deny unevaluated: whole_numbers.py).
    expiring = with_exp(int(wall.now) + 10)  # 10 s left on the token, a TTL of 60
    await cache.decide(expiring)
    clock.now += 9.9
    wall.now += 9.9
    assert (await cache.decide(expiring)).cached
    clock.now += 0.1
    wall.now += 0.1
    assert not (await cache.decide(expiring)).cached  # the token's time is up: asked again
    assert counted.calls == 2 and len(cache) == 0  # an expired token's decision is not stored
    lasting = with_exp(int(wall.now) + 3600)  # more than the TTL left: the TTL holds
    await cache.decide(lasting)
    clock.now += 59.9
    assert (await cache.decide(lasting)).cached
    clock.now += 0.1
    assert not (await cache.decide(lasting)).cached


@pytest.mark.parametrize(
    ("exp", "stored_for"),
    [
        (10**400, 60),  # beyond a float: the TTL, no OverflowError
        (-(10**400), None),
        (float("inf"), 60),
        (float("-inf"), None),
        (float("nan"), None),  # no telling when it expires: not stored
        # Not a number of seconds: expired (fail closed), never "no expiry" (it was, review:
        # the gateway's tokens always carry a number, so only a malformed input gets here).
        (True, None),
        ("1900000010", None),
        (None, None),
    ],
    ids=["huge", "huge-negative", "inf", "minus-inf", "nan", "bool", "string", "null"],
)
@pytest.mark.parametrize("holding", ["with_exp", "behind_certificate"], ids=["own", "beside-a-certificate"])
async def test_an_odd_token_expiry_never_stores_past_it_nor_raises(
    exp: Any, stored_for: int | None, holding: str
) -> None:
    """The subject's own token, or one presented beside a client certificate."""
    doc_with = with_exp if holding == "with_exp" else behind_certificate

    class Allowing:
        name, revision = "allowing", "r1"

        async def decide(self, input: dict[str, Any]) -> Decision:
            return Decision(allow=True, reason="ok", cache_ttl_seconds=60, engine="allowing", revision="r1")

    clock = Clock()
    cache = CachingEngine(Allowing(), clock=clock, wall_clock=WallClock())  # type: ignore[arg-type]
    key = memo_key(doc_with(exp))
    assert key is not None
    await cache.decide(doc_with(exp), key=key)
    if stored_for is None:
        assert len(cache) == 0
        return
    clock.now += stored_for - 0.1
    assert cache.cached(key) is not None
    clock.now += 0.1
    assert cache.cached(key) is None


# ------------------------------------------------------------------ a token beside a certificate
# Review (fail-open): the subject of a call with a client certificate and a bearer token is
# the certificate's (mTLS comes first in the default order); the token was kept as its id
# only, so its ``exp`` and ``jti`` were invisible to the cache and to policy. Each other
# credential is now whole in ``subject.attributes.also_verified_credentials``.


def behind_certificate(exp: Any, ttl: int = 60, jti: str = "t2") -> dict[str, Any]:
    """An input whose subject is a client certificate (no ``exp`` of its own) with a bearer
    token presented beside it, as the authenticator writes them."""
    out = doc(ttl=ttl)
    token = {"id": "jwt:i#alice", "name": "alice", "groups": [], "auth": "jwt"}
    out["subject"]["attributes"] = {
        "cert_sha256": "ab",
        "also_verified": {"jwt": token["id"]},
        "also_verified_credentials": {"jwt": {**token, "attributes": {"iss": "i", "exp": exp, "jti": jti}}},
    }
    return out


async def test_an_entry_never_outlives_a_token_presented_beside_a_certificate(
    counted: CountingEngine,
) -> None:
    clock, wall = Clock(), WallClock()
    cache = CachingEngine(counted, clock=clock, wall_clock=wall)
    expiring = behind_certificate(int(wall.now) + 10)  # 10 s left on the token, a TTL of 60
    await cache.decide(expiring)
    clock.now += 9.9
    wall.now += 9.9
    assert (await cache.decide(expiring)).cached
    clock.now += 0.1
    wall.now += 0.1
    assert not (await cache.decide(expiring)).cached  # the token's time is up, certificate or not
    assert counted.calls == 2 and len(cache) == 0


# A REVOKING policy that reads every credential of the call: the subject's and each one
# presented beside it. (The default pack keeps no revocation list.)
REVOKING_EVERY_CREDENTIAL = """import rego.v1

credentials contains input.subject

credentials contains credential if {
	some credential in object.get(input.subject, ["attributes", "also_verified_credentials"], {})
}

revoked if {
	some credential in credentials
	credential.attributes.jti in data.labelgate.tables.revoked_jtis
}

default result := {
	"allow": false, "reason": "denied", "mask": [], "require_approval": null, "cache_ttl_seconds": 0,
}

result := {"allow": true, "reason": "ok", "mask": [], "require_approval": null, "cache_ttl_seconds": 60} if {
	not revoked
}
"""


async def test_a_revoked_token_id_is_refused_behind_a_client_certificate(tmp_path: Path) -> None:
    """End to end from the authenticator: a certificate and a revoked token (the certificate
    is the subject) are refused, and a cached allow for the same certificate with a good
    token is not served to them."""
    signing = rsa_signing_key("rsa-1")
    jwks = write_jwks(tmp_path / "jwks.json", signing)
    authenticator = Authenticator(
        mtls=MtlsIdentifier(),
        jwt=JwtVerifier.from_settings(
            JwtSettings(issuer="https://idp.test", audience="labelgate", jwks_file=jwks)
        ),
    )
    cert = create_ca().issue("workload", uris=["spiffe://t/workload"])
    tls = {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert.cert_pem]}

    def call(jti: str) -> dict[str, Any]:
        token = signing.sign(claims(jti=jti))
        subject = authenticator.authenticate([("authorization", f"Bearer {token}")], tls)
        assert subject.auth == "mtls"  # the certificate is the subject, the token beside it
        out = doc()
        out["subject"] = subject.to_policy()
        return out

    engine = EmbeddedEngine(
        write_policy(tmp_path / "policy", REVOKING_EVERY_CREDENTIAL, data={"revoked_jtis": ["stolen"]}),
        watch_interval=None,
    )
    await engine.start()
    try:
        cache = CachingEngine(engine, clock=Clock())
        good = call("good")
        assert (await cache.decide(good, key=cache_keys(good)[0])).allow
        assert (await cache.decide(good, key=cache_keys(good)[0])).cached
        stolen = call("stolen")
        decision = await cache.decide(stolen, key=cache_keys(stolen)[0])
        assert (decision.allow, decision.cached) == (False, False)
    finally:
        await engine.close()


# ------------------------------------------------------------------ bounds


class Answering:
    """Answers every input with ``ttl`` as its cache TTL, as a policy engine that is not checked
    against the result schema might."""

    name, revision = "answering", "r1"

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl

    async def decide(self, input: dict[str, Any]) -> Decision:
        return Decision(allow=True, reason="ok", cache_ttl_seconds=self.ttl, engine=self.name, revision="r1")


@pytest.mark.parametrize("ttl", [10**400, 2**63, 86_401])
async def test_a_ttl_beyond_the_contracts_maximum_is_clamped_never_raised(ttl: int) -> None:
    # Found by review: a 401-digit TTL overflowed ``clock() + ttl`` (OverflowError: every call
    # the policy answered so failed as INTERNAL). The schema refuses it now; the cache clamps.
    from labelgate.policy.contract import MAX_CACHE_TTL_SECONDS

    clock = Clock()
    cache = CachingEngine(Answering(ttl), clock=clock)  # type: ignore[arg-type]
    decision = await cache.decide(doc())
    assert decision.allow and len(cache) == 1
    clock.now += MAX_CACHE_TTL_SECONDS - 0.1
    assert (await cache.decide(doc())).cached
    clock.now += 0.1
    assert cache.cached(memo_key(doc())) is None  # type: ignore[arg-type]


def big(n: int, size: int = 2000) -> dict[str, Any]:
    """An input whose key is a little over ``size`` bytes, distinct per ``n``."""
    return doc(requested_outputs=[f"{n}-" + "x" * size])


async def test_the_cache_is_bounded_by_the_bytes_of_its_keys() -> None:
    # Found by review: bounded by entry count only, one caller with 68 KB keys pinned ~1 GB.
    sizes = [len(memo_key(big(n)) or b"") for n in range(8)]
    assert len(set(sizes)) == 1 and sizes[0] > 2000
    cache = CachingEngine(Answering(60), max_bytes=sizes[0] * 3 + 10, clock=Clock())  # type: ignore[arg-type]
    for n in range(3):
        await cache.decide(big(n))
    assert len(cache) == 3 and cache.key_bytes == 3 * sizes[0]
    assert (await cache.decide(big(0))).cached  # 0 is now the most recent
    await cache.decide(big(3))  # evicts 1, the least recently used
    assert len(cache) == 3 and cache.key_bytes == 3 * sizes[0]
    assert cache.cached(memo_key(big(1))) is None  # type: ignore[arg-type]
    assert all(cache.cached(memo_key(big(n))) is not None for n in (0, 2, 3))  # type: ignore[arg-type]
    # Small keys fill the room big ones leave, up to the entry bound as before.
    for n in range(50):
        await cache.decide(doc(f"small-{n}"))
    assert cache.key_bytes <= sizes[0] * 3 + 10
    assert cache.key_bytes == sum(len(key) for key in cache._entries)


async def test_a_key_larger_than_the_byte_bound_is_not_stored() -> None:
    small = len(memo_key(doc()) or b"")
    cache = CachingEngine(Answering(60), max_bytes=small + 100, clock=Clock())  # type: ignore[arg-type]
    await cache.decide(doc())
    assert (await cache.decide(big(0))).allow  # answered, not stored: nothing else evicted
    assert len(cache) == 1 and cache.key_bytes == small
    assert (await cache.decide(doc())).cached


async def test_the_byte_count_follows_expiry_revision_drops_and_clearing() -> None:
    clock = Clock()
    inner = Answering(60)
    cache = CachingEngine(inner, clock=clock)  # type: ignore[arg-type]
    for n in range(3):
        await cache.decide(doc(f"u{n}"))
    assert cache.key_bytes == sum(len(key) for key in cache._entries) > 0
    clock.now += 61
    assert cache.cached(memo_key(doc("u0"))) is None  # type: ignore[arg-type]  # expired: deleted
    assert cache.key_bytes == sum(len(key) for key in cache._entries) and len(cache) == 2
    inner.revision = "r2"
    assert cache.cached(memo_key(doc("u1"))) is None  # type: ignore[arg-type]
    assert (len(cache), cache.key_bytes) == (0, 0)
    await cache.decide(doc("u1"))  # decided under r1 by this engine: not stored under r2
    inner.revision = "r1"
    await cache.decide(doc("u1"))
    assert len(cache) == 1 and cache.key_bytes > 0
    cache.clear()
    assert cache.key_bytes == 0


def test_the_canonical_memo_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelgate.policy import cache as cache_module

    monkeypatch.setattr(cache_module, "CANONICAL_MEMO_BYTES", 10_000)
    cache_module._canonical_keys.clear()
    cache_module._canonical_bytes = 0
    for n in range(40):
        memo, canonical = cache_keys(big(n))
        assert canonical == cache_key(big(n)) and memo is not None
        held = sum(len(key) for key in cache_module._canonical_keys)
        assert held == cache_module._canonical_bytes <= 10_000
    assert 0 < len(cache_module._canonical_keys) < 10
    huge = big(0, size=20_000)  # larger than the whole memo: computed, not remembered
    assert cache_keys(huge)[1] == cache_key(huge) is not None
    assert memo_key(huge) not in cache_module._canonical_keys
    cache_module._canonical_keys.clear()
    cache_module._canonical_bytes = 0


def test_cache_keys_gives_no_canonical_key_for_text_utf8_cannot_encode() -> None:
    # Found by review: ``text.encode()`` sat outside the ``try``, so a lone surrogate raised
    # UnicodeEncodeError out of ``cache_keys`` rather than giving no canonical key, as any input
    # that is not JSON does. The cache's own key is exact for it still.
    odd = doc(model="m\ud800")
    memo, canonical = cache_keys(odd)
    assert canonical is None and memo is not None and memo == memo_key(odd)
    assert cache_key(odd) is None


async def test_a_policy_giving_a_huge_ttl_is_an_invalid_result_not_an_internal_error(tmp_path: Path) -> None:
    # Found by review: through the cache, a 401-digit TTL raised OverflowError out of
    # ``decide`` (INTERNAL, on every call) rather than failing as the invalid result it is.
    policy = (
        'result := {"allow": true, "reason": "ok", "mask": [], "require_approval": null, '
        f'"cache_ttl_seconds": {10**400}}}\n'
    )
    engine = EmbeddedEngine(write_policy(tmp_path, policy), watch_interval=None)
    await engine.start()
    try:
        cache = CachingEngine(engine, clock=Clock())
        for _ in range(2):
            decision = await cache.decide(doc(), key=cache_keys(doc())[0])
            assert (decision.allow, decision.fail_reason) == (False, "POLICY_RESULT_INVALID")
        assert len(cache) == 0
    finally:
        await engine.close()
