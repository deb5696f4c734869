"""The decision cache's exact key (``memo_key``, a fast-mode pickle of the relevant part
whose memo starts with the contract's words): never one key for two values, one key per
value as the gateway builds it, and no key for what is not plain data."""

from __future__ import annotations

import collections
import copy
import enum
import hashlib
import io
import json
import pickle
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.policy_engines import sample_input
from labelgate.policy import cache as cache_module
from labelgate.policy.cache import (
    _KEY_VOCABULARY,
    _TOKEN_ATTRIBUTES,
    _VOLATILE_REQUEST_KEYS,
    _per_thread,
    _relevant,
    cache_key,
    cache_keys,
    canonical_part,
    memo_key,
)


def doc(**attributes: Any) -> dict[str, Any]:
    out = sample_input()
    out["subject"]["attributes"] = attributes
    return out


class Level(enum.IntEnum):
    HIGH = 1


class Tag(str):
    pass


class Lossy:
    """Pickles as a plain string would be built: a class may say anything in ``__reduce__``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (str, ("x",))


def load_key(key: bytes) -> Any:
    """What a key stands for: unpickled with the vocabulary as the memo the pickler began with
    (the Python unpickler: the C one's ``memo`` setter drops a dict's entries on 3.11)."""
    unpickler = pickle._Unpickler(io.BytesIO(key))
    unpickler.memo = dict(enumerate(_KEY_VOCABULARY))  # type: ignore[attr-defined]
    return unpickler.load()


def _fast_pickle(value: Any) -> bytes:
    """Type-exact bytes of a value, with nothing memoised: equal bytes, equal values and types."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, 5)
    pickler.fast = True
    pickler.dump(value)
    return out.getvalue()


def test_the_key_loads_back_as_the_relevant_input() -> None:
    """Exact by construction: the key is the value, so equal keys are equal inputs."""
    base = sample_input()
    key = memo_key(base)
    assert key is not None
    loaded = load_key(key)
    assert _fast_pickle(loaded) == _fast_pickle(_relevant(base))  # equal, type for type
    assert "time_ns" not in loaded["context"]
    assert b"response" not in key and b"response" in _fast_pickle(loaded)  # a reference


def test_the_vocabulary_is_a_fixed_table_of_distinct_strings() -> None:
    """Each word is one memo entry (one-byte references), and keys never add entries."""
    assert all(type(word) is str for word in _KEY_VOCABULARY)
    assert len({id(word) for word in _KEY_VOCABULARY}) == len(_KEY_VOCABULARY) < 256
    assert len(set(_KEY_VOCABULARY)) == len(_KEY_VOCABULARY)
    for _ in range(3):
        memo_key(doc(value=["x", "y"], other={"z": 1}))
    assert len(_per_thread.writer.pickler.memo.copy()) == len(_KEY_VOCABULARY)


def test_a_word_spelt_by_another_string_object_is_written_out() -> None:
    """Only the vocabulary's own objects become references: an equal string built at run time
    is written in full. Another key for an equal input (a miss), loading back the same."""
    literal = doc(level="public")
    built = doc(level="".join(["pub", "lic"]))
    first, second = memo_key(literal), memo_key(built)
    assert first is not None and second is not None and first != second
    assert _fast_pickle(load_key(first)) == _fast_pickle(load_key(second))
    assert memo_key(doc(level="".join(["pub", "lic"]))) == second


_WORDS = st.sampled_from(_KEY_VOCABULARY)
_TEXT = st.one_of(
    _WORDS,  # the vocabulary's own objects: references
    _WORDS.map(lambda word: "".join(list(word))),  # equal strings, other objects: written out
    st.sampled_from(["", "x", "\x94", "h\x04", "é", "\ud800"]),
    st.text(max_size=6),
)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=16),
    _TEXT,
    st.binary(max_size=3),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_TEXT, inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one=_VALUES, other=_VALUES)
def test_any_two_keys_are_equal_only_for_equal_inputs(one: Any, other: Any) -> None:
    """Vocabulary objects, equal strings that are other objects, bytes that look like the
    references: a key always loads back as its input, type for type, so two inputs share a
    key only when they are equal, type for type."""
    first, second = doc(value=one, words={"path": one}), doc(value=other, words={"path": other})
    first_key, second_key = memo_key(first), memo_key(second)
    assert first_key is not None and second_key is not None
    assert _fast_pickle(load_key(first_key)) == _fast_pickle(_relevant(first))
    assert _fast_pickle(load_key(second_key)) == _fast_pickle(_relevant(second))
    if first_key == second_key:
        assert _fast_pickle(_relevant(first)) == _fast_pickle(_relevant(second))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (0.0, -0.0),
        (2**64, 2**64 + 1),
        ("é", "e\u0301"),
        ("\ud800", "\xed\xa0\x80"),  # a lone surrogate against the characters of its UTF-8 bytes
        (b"a", "a"),
        ((1,), [1]),
        ({"a": 1}, [["a", 1]]),
        ([], {}),
        ("", None),
        (False, 0),
    ],
    ids=[
        "signed-zero",
        "big-int",
        "normalisation",
        "surrogate",
        "bytes",
        "tuple",
        "pairs",
        "empty",
        "none",
        "bool",
    ],
)
def test_values_that_differ_never_share_a_key(one: Any, other: Any) -> None:
    first, second = memo_key(doc(value=one)), memo_key(doc(value=other))
    assert first is not None and second is not None
    assert first != second


@pytest.mark.parametrize(
    "value",
    [Level.HIGH, Tag("x"), Lossy(), collections.OrderedDict(a=1), len, object(), 1j, ...],
    ids=[
        "int-enum",
        "str-subclass",
        "own-reduce",
        "dict-subclass",
        "function",
        "object",
        "complex",
        "ellipsis",
    ],
)
def test_what_is_not_plain_data_gets_no_key(value: Any) -> None:
    """Nothing is pickled by its class's say: a subclass or an object has no key (no caching),
    and the keys after it are the ones computed before."""
    before = memo_key(doc(value="x"))
    assert before is not None
    assert memo_key(doc(value=value)) is None
    assert cache_keys(doc(value=value))[0] is None
    assert memo_key(doc(value="x")) == before


def test_cyclic_and_too_deep_inputs_get_no_key() -> None:
    before = memo_key(doc())
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert memo_key(doc(value=cyclic)) is None
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert memo_key(doc(value=deep)) is None
    assert memo_key(doc()) == before


def test_a_key_larger_than_a_pickle_frame_is_whole() -> None:
    """Past 64 KiB the pickler writes in several pieces: the key is all of them."""
    big = sample_input()
    big["fields"] = [
        {"path": f"outputs.c{n}", "labels": ["internal"], "sources": {"internal": ["catalog"]}}
        for n in range(3000)
    ]
    key = memo_key(big)
    assert key is not None and len(key) > 2**16
    assert load_key(key) == _relevant(big)
    assert memo_key(big) == key
    big["fields"][-1]["labels"] = ["restricted"]
    assert memo_key(big) not in (None, key)


def test_a_refusal_after_a_frame_was_written_leaves_nothing_behind() -> None:
    """A large input refused at its end has had pieces written already: none of them may
    become part of the next key."""
    before = memo_key(doc())
    big = doc()
    big["fields"] = [{"path": f"outputs.c{n}", "labels": ["internal"]} for n in range(3000)]
    big["approval"] = {"state": Tag("granted")}
    assert memo_key(big) is None
    assert memo_key(doc()) == before


def test_threads_compute_the_same_keys() -> None:
    """One pickler per thread: threads computing keys at once each get their input's key."""
    inputs = [doc(n=n) for n in range(200)]
    expected = [memo_key(d) for d in inputs]
    assert len(set(expected)) == len(inputs)
    wrong: list[int] = []

    def work() -> None:
        for _ in range(20):
            for n, d in enumerate(inputs):
                if memo_key(d) != expected[n]:
                    wrong.append(n)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_many_inputs_holding_frozensets_keep_getting_correct_keys() -> None:
    # CPython's fast-mode pickler raises its nesting count for each frozenset and never
    # lowers it: after some dozens of keys a reused pickler fails. The cache must renew it
    # and go on, never raise out of a decision.
    for number in range(300):
        doc = {"subject": {"groups": frozenset({f"g{number}", "analysts"})}, "n": number}
        key = memo_key(doc)
        if key is not None:
            assert load_key(key) == _relevant(doc)
    plain = {"subject": {"groups": ["analysts"]}, "n": 1}
    assert memo_key(plain) == memo_key(dict(plain))
    assert memo_key(plain) is not None


def test_exactly_the_per_call_request_values_are_left_out() -> None:
    """``_relevant`` spells the per-call names out one by one: they are the documented set,
    each is left out, and every other request value stays in the key."""
    base = doc()
    base["request"].update(session_id="s-1", peer="ipv4:10.0.0.1:1", digest="d-1", opaque=False)
    kept = {k: v for k, v in base["request"].items() if k not in _VOLATILE_REQUEST_KEYS}
    assert _relevant(base)["request"] == kept
    assert set(base["request"]) - set(kept) == _VOLATILE_REQUEST_KEYS
    for name in _VOLATILE_REQUEST_KEYS:
        other = doc()
        other["request"].update(session_id="s-1", peer="ipv4:10.0.0.1:1", digest="d-1", opaque=False)
        other["request"][name] = "another call"
        assert memo_key(other) == memo_key(base), name
    for name in kept:
        other = doc()
        other["request"].update(session_id="s-1", peer="ipv4:10.0.0.1:1", digest="d-1", opaque=False)
        other["request"][name] = "changed"
        assert memo_key(other) not in (None, memo_key(base)), name


def test_the_subject_is_keyed_whole_and_the_canonical_key_leaves_out_the_token() -> None:
    """The cache keys on every token claim (a policy may decide on them); ``canonical_part``
    spells out what the stored-input key leaves out besides: exactly ``_TOKEN_ATTRIBUTES``,
    and ``doc`` is not modified. The session is in neither (``_VOLATILE_REQUEST_KEYS``)."""
    claims = {"jti": "j", "iat": 1, "exp": 2, "nbf": 3}
    base = doc(team="risk", **claims)
    base["request"].update(session_id="s-1", digest="d-1", peer="ipv4:10.0.0.1")
    assert _relevant(base)["subject"] == base["subject"]
    assert set(_TOKEN_ATTRIBUTES) == set(claims)
    stored = canonical_part(base)
    assert stored["subject"]["attributes"] == {"team": "risk"}
    assert set(_relevant(base)["request"]) == set(stored["request"])
    assert "session_id" not in stored["request"]
    assert base["subject"]["attributes"] == {"team": "risk", **claims}  # not modified
    assert base["request"]["session_id"] == "s-1"
    for name in _TOKEN_ATTRIBUTES:
        other = copy.deepcopy(base)
        other["subject"]["attributes"][name] = "another token"
        assert memo_key(other) not in (None, memo_key(base)), name
        assert cache_key(other) == cache_key(base), name


def test_interleaved_inputs_of_one_length_each_keep_their_own_key() -> None:
    """A repeated input gets back the key object it got before; inputs whose keys have the
    same length, taking turns in any order, never get one another's."""
    inputs = [doc(who=f"user-{n}") for n in range(5)]
    expected = [memo_key(doc(who=f"user-{n}")) for n in range(5)]
    assert len({len(key or b"") for key in expected}) == 1 and len(set(expected)) == len(inputs)
    order = [0, 0, 1, 0, 1, 1, 2, 0, 3, 4, 3, 4, 2, 2, 1, 4, 0]
    got: dict[int, bytes] = {}
    for n in order:
        key = memo_key(inputs[n])
        assert key is not None
        assert _fast_pickle(load_key(key)) == _fast_pickle(_relevant(inputs[n]))
        assert key == memo_key(doc(who=f"user-{n}"))  # an equal input built anew
        if n in got:
            assert key == got[n]
        got[n] = key
    assert memo_key(inputs[3]) is memo_key(inputs[3])  # handed back, not made anew
    assert {n: memo_key(d) for n, d in enumerate(inputs)} == dict(enumerate(expected))


# Text that UTF-8 can encode (a lone surrogate has no canonical key: ``test_cache.py``).
_JSON_TEXT = st.one_of(
    _WORDS,
    _WORDS.map(lambda word: "".join(list(word))),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)
_JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        _JSON_TEXT,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_JSON_TEXT, inner, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON_VALUES, other=_JSON_VALUES)
def test_the_canonical_key_is_the_documented_json_byte_for_byte(value: Any, other: Any) -> None:
    """Stored and compared across processes and versions: sha256 of ``json.dumps`` of the
    canonical part (no session id nor token claims either) with sorted keys, compact
    separators, UTF-8 text, no NaN; the same when
    computed and when remembered, and None when the input is not JSON."""

    def documented(d: dict[str, Any]) -> bytes:
        text = json.dumps(
            canonical_part(d), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return hashlib.sha256(text.encode()).digest()

    with_token = doc(value=value, jti="j", exp=1)
    with_token["request"]["session_id"] = "s"
    for d in (doc(value=value, more=[other, value]), doc(value=other), with_token):
        cache_module._canonical_keys.clear()
        computed = cache_keys(d)
        assert computed[1] == documented(d) and computed[0] == memo_key(d)
        assert cache_keys(d) == computed  # remembered
    cyclic: list[Any] = [value]
    cyclic.append(cyclic)
    assert cache_keys(doc(value=cyclic)) == (None, None)
    assert cache_keys(doc(value={"x": float("nan")}))[1] is None
    assert cache_keys(doc(value={"x": b"bytes"}))[1] is None
