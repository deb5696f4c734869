"""The decision cache's exact key (``memo_key``, a fast-mode pickle of the relevant part):
one key per value, never one key for two values, and no key for what is not plain data."""

from __future__ import annotations

import collections
import enum
import pickle
import threading
from typing import Any

import pytest

from bench.policy_engines import sample_input
from labelgate.policy.cache import _relevant, cache_keys, memo_key


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


def test_the_key_loads_back_as_the_relevant_input() -> None:
    """Exact by construction: the key is the value, so equal keys are equal inputs."""
    base = sample_input()
    key = memo_key(base)
    assert key is not None
    loaded = pickle.loads(key)  # noqa: S301 (our own bytes, from the line above)
    assert loaded == _relevant(base)
    assert "time_ns" not in loaded["context"]


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
    assert pickle.loads(key) == _relevant(big)  # noqa: S301 (our own bytes)
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
            assert pickle.loads(key) == _relevant(doc)  # noqa: S301 (our own key)
    plain = {"subject": {"groups": ["analysts"]}, "n": 1}
    assert memo_key(plain) == memo_key(dict(plain))
    assert memo_key(plain) is not None
