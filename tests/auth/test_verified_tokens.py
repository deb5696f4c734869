"""The verified-token memo: one signature check per token, never a token past its expiry,
never one verified under a key set that has since changed."""

from __future__ import annotations

import time

import pytest

from labelgate.auth import reasons
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.subject import Subject
from labelgate.auth.verified_tokens import VerifiedTokens
from labelgate.errors import Unauthenticated
from tests.support.pki import SigningKey, claims


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ALICE = Subject.proven("jwt", "alice", issuer="https://idp.test")


def test_a_token_verified_once_is_answered_from_the_memo(verifier: JwtVerifier, ec_key: SigningKey) -> None:
    token = ec_key.sign(claims("bob"))
    first = verifier.verify(token)
    assert len(verifier.verified) == 1
    # The same object: the second call did not decode or check the signature again.
    assert verifier.verify(token) is first


def test_a_refused_token_is_not_remembered(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    header, _, signature = rsa_key.sign(claims("alice")).split(".")
    other_payload = rsa_key.sign(claims("mallory")).split(".")[1]
    forged = f"{header}.{other_payload}.{signature}"
    for _ in range(2):
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(forged)
        assert caught.value.reason == reasons.TOKEN_BAD_SIGNATURE
    assert len(verifier.verified) == 0


def test_a_token_past_exp_but_within_the_leeway_is_checked_in_full_every_time(
    verifier: JwtVerifier, rsa_key: SigningKey
) -> None:
    token = rsa_key.sign(claims("alice", now=time.time() - 310, ttl=300))  # expired 10 s ago
    assert verifier.verify(token).name == "alice"  # the 30 s leeway accepts it
    assert len(verifier.verified) == 0


def test_an_entry_ends_at_the_token_expiry() -> None:
    clock = Clock(1000.0)
    memo = VerifiedTokens(clock=clock)
    keys = object()
    memo.put("t", keys, ALICE, expires=1010.0)
    clock.now = 1009.9
    assert memo.get("t", keys) is ALICE
    clock.now = 1010.0
    assert memo.get("t", keys) is None
    assert len(memo) == 0


def test_an_entry_holds_only_for_the_key_set_that_verified_it() -> None:
    memo = VerifiedTokens(clock=Clock(0.0))
    before, after = object(), object()
    memo.put("t", before, ALICE, expires=60.0)
    assert memo.get("t", after) is None  # e.g. a JWKS refresh dropped the signing key
    assert memo.get("t", before) is None  # and the stale entry is gone


def test_the_memo_is_bounded_and_drops_the_least_recently_used() -> None:
    memo = VerifiedTokens(max_entries=2, clock=Clock(0.0))
    keys = object()
    for token in ("a", "b"):
        memo.put(token, keys, ALICE, expires=60.0)
    assert memo.get("a", keys) is ALICE  # "b" is now the oldest
    memo.put("c", keys, ALICE, expires=60.0)
    assert len(memo) == 2
    assert memo.get("b", keys) is None
    assert memo.get("a", keys) is ALICE


def test_a_memo_needs_room_for_one_entry() -> None:
    with pytest.raises(ValueError):
        VerifiedTokens(max_entries=0)
