"""The verified-token memo: one signature check per token, never a token past its expiry,
never one verified under a key set that has since changed."""

from __future__ import annotations

import sys
import threading
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


def test_an_entry_evicted_by_another_thread_mid_lookup_is_a_miss_not_a_key_error() -> None:
    """The admin listener verifies tokens in worker threads (``asyncio.to_thread``) while the
    event loop does too. Here one thread is held inside ``get`` (in the clock) while another
    fills the memo past its bound; the held lookup must end as a miss, not a ``KeyError``."""
    keys = object()
    in_clock, evicted = threading.Event(), threading.Event()
    reader: list[threading.Thread] = []

    def clock() -> float:
        if reader and threading.current_thread() is reader[0] and not in_clock.is_set():
            in_clock.set()
            assert evicted.wait(5)
        return 0.0

    memo = VerifiedTokens(max_entries=2, clock=clock)
    memo.put("alice", keys, ALICE, expires=60.0)
    found: list[object] = []
    reader.append(threading.Thread(target=lambda: found.append(_get_or_error(memo, "alice", keys))))
    reader[0].start()
    assert in_clock.wait(5)
    for token in ("b", "c"):  # pushes "alice" out
        memo.put(token, keys, ALICE, expires=60.0)
    evicted.set()
    reader[0].join(5)
    assert found in ([None], [ALICE])


def test_the_memo_shared_by_threads_raises_nothing() -> None:
    """As the reviewer's repro: threads getting and putting across more tokens than fit."""
    memo, keys = VerifiedTokens(max_entries=8), object()
    subjects = {f"t{i}": Subject.proven("jwt", f"u{i}", issuer="i") for i in range(12)}
    errors: list[str] = []

    def work(offset: int) -> None:
        for n in range(20_000):
            token = f"t{(n + offset) % 12}"
            try:
                found = memo.get(token, keys)
                if found is None:
                    memo.put(token, keys, subjects[token], time.time() + 600)
                elif found is not subjects[token]:
                    errors.append("wrong subject")
            except Exception as error:  # any exception is the failure
                errors.append(type(error).__name__)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and len(memo) <= 8


def _get_or_error(memo: VerifiedTokens, token: str, keys: object) -> object:
    try:
        return memo.get(token, keys)
    except Exception as error:  # reported to the test's thread
        return error
