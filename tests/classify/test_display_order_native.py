"""The bidi algorithm in the extension (``proxy/native/src/bidi.rs``) gives exactly the orders
its Python reference (``display_order_reference``, the code it replaced) gives: the same
permutation, byte for byte, on the Chromium-checked cases, on random text of every bidi
class (explicit controls nested past the deepest level, brackets past BD16's stack and past
``BRACKET_BUDGET``, several texts a call, both directions, separators as such and as
spaces), and on the first 10,000 code points; and it refuses malformed input. Its one call for
all the readings of a call (``bidi_orders``, what ``display_orders_of`` and
``display_orders_of_points`` use) keeps exactly the orders the readings one by one give, each
text's distinct ones but the stored one, in their order."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from labelgate.classify import display_order
from labelgate.classify.display_order import (
    _BRACKET_TEXT,
    _CODES,
    _PAIRS,
    _REORDERING_TEXT,
    classes_of,
    display_orders,
    display_orders_of,
    display_orders_of_points,
)
from labelgate.errors import LabelgateError
from tests.classify import display_order_reference as reference
from tests.classify.test_folding_display_order import SHOWN, random_texts

KERNEL: Any = display_order._KERNEL.kernel
MODES = [(base, whole) for whole in (False, True) for base in (0, 1)]

# Characters of every bidi class (``_CODES``' names), some of each, unassigned code points
# of the right-to-left blocks too (R by default).
SAMPLES = {
    "L": "aZé東\u200e\U0001d400",
    "R": "\u05d0\u05d1\u05ea\u200f\u05ff\U00010800",
    "AL": "\u0627\u062f\u0710\u061c\ufdf2",
    "EN": "0159\u06f1\u00b2\uff11",
    "ES": "+-\u207a",
    "ET": "$%#\u00b0\u20ac",
    "AN": "\u0661\u0662\u066b\u0600",
    "CS": ",./:\u00a0",
    "NSM": "\u0300\u05b4\u064b",
    "BN": "\u00ad\u200b\x00\ufeff",
    "B": "\n\r\x1c\u0085\u2029",
    "S": "\t\x0b\x1f",
    "WS": " \u2028\u3000\x0c",
    "ON": '!"&*@~\u00a1',
    "LRE": "\u202a",
    "RLE": "\u202b",
    "LRO": "\u202d",
    "RLO": "\u202e",
    "PDF": "\u202c",
    "LRI": "\u2066",
    "RLI": "\u2067",
    "FSI": "\u2068",
    "PDI": "\u2069",
}
CLASSES = list(SAMPLES)
BRACKETS = [chr(code) for pair in sorted(_PAIRS.items()) for code in pair]
OPENINGS = [chr(code) for code in sorted(_PAIRS)]
CLOSINGS = [chr(_PAIRS[code]) for code in sorted(_PAIRS)]
INITIATORS = "\u202a\u202b\u202d\u202e\u2066\u2067\u2068"
# The reference's L2 costs a numpy pass a level of a call: texts nested past 125 levels
# come in calls of their own, a few, with one text in ten opening more brackets than BD16 keeps.
DEEP_CALLS, FLOODED = 0.04, 0.1


def _reference_order(classes: str, points: bytes, base: int, whole: bool, starts: list[int]) -> Any:
    """``display_order._order``'s arguments, read by the reference (which takes each
    character's text, ``owner``, rather than where each text starts)."""
    owner = np.searchsorted(np.array(starts), np.arange(len(classes)), side="right") - 1
    return reference._order(classes, np.frombuffer(points, dtype="<u4"), base, whole, owner)


Order = Callable[[str, bytes, int, bool, list[int]], Any]


def _one_by_one(texts: Sequence[str], paired: Sequence[bool], order: Order) -> list[list[bytes]]:
    """What ``display_orders_of`` kept of ``texts`` (all of them, each ``paired`` or not) when it
    asked for each reading of the joined texts apart (``order``: ``display_order._order`` or
    the reference's), each order as bytes: per text its distinct orders but the stored one, in
    the order of the readings, whole ones only when some text holds a separator."""
    classes, points, starts = _arguments(texts, paired)
    offsets = [*starts, len(classes)]
    found: list[dict[bytes, None]] = [{} for _ in texts]
    modes = (False, True) if "B" in classes or "S" in classes else (False,)
    for whole in modes:
        for base in (0, 1):
            shown = order(classes, points, base, whole, starts) if classes else np.zeros(0, np.int64)
            for at in range(len(texts)):
                own = shown[offsets[at] : offsets[at + 1]] - offsets[at]
                if _REORDERING_TEXT.search(texts[at]) and (np.diff(own) != 1).any():
                    found[at].setdefault(own.astype(np.int64).tobytes())
    return [list(each) for each in found]


def _budgeted(texts: Sequence[str]) -> list[bool]:
    """Which of ``texts`` ``display_orders_of`` pairs brackets in (``BRACKET_BUDGET``)."""
    budget, paired = display_order.BRACKET_BUDGET, []
    for text in texts:
        if _REORDERING_TEXT.search(text):
            budget -= len(_BRACKET_TEXT.findall(text))
        paired.append(budget >= 0)
    return paired


def _in_one_call(texts: Sequence[str], paired: Sequence[bool]) -> list[list[bytes]]:
    """The orders of ``texts`` from the extension's one call for every reading (``_orders_of``)."""
    sizes = [len(text) for text in texts]
    points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    every = display_order._orders_of(points, sizes, list(paired))
    for each in every:
        for order in each:
            assert order.dtype == np.int64 and order.flags.writeable
    return [[order.tobytes() for order in each] for each in every]


def _arguments(texts: Sequence[str], paired: Sequence[bool]) -> tuple[str, bytes, list[int]]:
    """As ``display_orders_of`` joins ``texts``: the class letters, the code points (those of
    texts not ``paired``, past the bracket budget, 0) and where each text starts."""
    sizes = [len(text) for text in texts]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(int).tolist()
    points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    classes = classes_of(points)
    kept = np.where(np.repeat(np.array(paired, dtype=bool), sizes), points, 0).astype("<u4")
    return classes, display_order.bracket_points(kept).tobytes(), starts


def assert_same_orders(texts: Sequence[str], paired: Sequence[bool] | None = None) -> None:
    """The native and the reference order of ``texts`` joined, in each direction and mode."""
    classes, points, starts = _arguments(texts, [True] * len(texts) if paired is None else paired)
    for base, whole in MODES:
        native = display_order._order(classes, points, base, whole, starts)
        if not classes:  # the reference reads no empty text
            assert native.tolist() == []
            continue
        expected = _reference_order(classes, points, base, whole, starts)
        assert native.dtype == expected.dtype == np.int64
        assert native.tobytes() == expected.tobytes(), (texts, base, whole)


def _random_text(rng: random.Random, deep: bool = False) -> str:
    """Up to 200 characters of every class, brackets and controls often; ``deep``, nested
    past the deepest level (125); now and then more brackets open than BD16 keeps (63)."""
    shape = rng.random()
    if deep:
        head = "".join(rng.choice(INITIATORS) for _ in range(rng.randint(120, 140)))
    elif shape < FLOODED:
        head = "".join(rng.choice(OPENINGS) for _ in range(rng.randint(60, 80)))
    else:
        head = ""
    body = []
    brackets, controls = rng.choice((0.05, 0.15, 0.3)), rng.choice((0.02, 0.05, 0.12))
    for _ in range(rng.randint(0, 200 - len(head))):
        pick = rng.random()
        if pick < brackets:
            body.append(rng.choice(BRACKETS))
        elif pick < brackets + controls:
            body.append(rng.choice("\u202a\u202b\u202d\u202e\u202c\u2066\u2067\u2068\u2069"))
        else:
            body.append(rng.choice(SAMPLES[rng.choice(CLASSES)]))
    if head and body:  # close some of what the head opened
        closers = ["\u202c", "\u2069"] if deep else CLOSINGS
        for _ in range(rng.randint(0, len(body))):
            body.insert(rng.randrange(len(body)), rng.choice(closers))
        body = body[: 200 - len(head)]
    return head + "".join(body)


def _random_calls(seed: int, strings: int) -> Iterator[tuple[list[str], list[bool]]]:
    """Calls of 1-40 random texts, ``strings`` texts in all; in some, the texts from one on
    past the bracket budget (their brackets no brackets), as ``display_orders_of`` reads them."""
    rng = random.Random(seed)
    made = 0
    while made < strings:
        if rng.random() < DEEP_CALLS:
            texts = [_random_text(rng, deep=rng.random() < 0.7) for _ in range(rng.randint(1, 3))]
        else:
            texts = [_random_text(rng) for _ in range(rng.randint(1, 40))]
        cut = rng.randrange(len(texts) + 1) if rng.random() < 0.2 else len(texts)
        made += len(texts)
        yield texts, [index < cut for index in range(len(texts))]


def _table_texts() -> list[str]:
    """The texts of ``test_folding_display_order``'s tables and cases."""
    texts = [
        *SHOWN,
        "ssn \u202e987\n6-54-321\u202c x",
        "\u05d0 12\n34 \u05d1",
        "ssn 123-45-6789, café, 東京 ①②",
        "\u202c stray pop",
    ]
    texts += random_texts()  # test_texts_read_together_read_as_each_read_alone's
    return texts


def test_the_extension_is_there() -> None:
    assert KERNEL is not None, "labelgate_native is missing: pip install ./proxy/native (make venv does)"


def test_the_random_alphabet_holds_every_class() -> None:
    letters = set(classes_of(np.array([ord(each) for each in "".join(SAMPLES.values())], dtype=np.uint32)))
    assert letters == set(_CODES.values())
    for name, characters in SAMPLES.items():
        assert set(classes_of(np.array([ord(each) for each in characters], dtype=np.uint32))) == {
            _CODES[name]
        }


def test_the_tables_cases_read_the_same() -> None:
    texts = _table_texts()
    for text in texts:
        assert_same_orders([text])
    for start in range(0, len(texts), 7):  # several a call
        assert_same_orders(texts[start : start + 7])


def test_random_text_of_every_class_reads_the_same() -> None:
    strings = 0
    for texts, paired in _random_calls(seed=20260, strings=20_000):
        assert_same_orders(texts, paired)
        strings += len(texts)
    assert strings >= 20_000


def test_the_first_ten_thousand_code_points_read_the_same() -> None:
    assert_same_orders(["".join(map(chr, range(10_000)))])


def test_display_orders_are_the_reference_s_past_the_bracket_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole calls, the budget small enough that some texts' brackets are neutrals."""
    rng = random.Random(11)
    calls = [[_random_text(rng) for _ in range(rng.randint(1, 6))] for _ in range(150)]
    calls.append(["".join(map(chr, range(10_000)))])
    monkeypatch.setattr(display_order, "BRACKET_BUDGET", 40)
    for texts in calls:
        got = [[order.tobytes() for order in each] for each in display_orders_of(texts)]
        assert got == _one_by_one(texts, _budgeted(texts), _reference_order), texts


def test_one_call_keeps_what_the_readings_one_by_one_give() -> None:
    """``bidi_orders`` against four ``bidi_order`` calls and the dedupe ``display_orders_of``
    made of them: the random calls (texts past the budget among them), the tables, ids 0..9999."""
    strings = 0
    for texts, paired in _random_calls(seed=7321, strings=20_000):
        assert _in_one_call(texts, paired) == _one_by_one(texts, paired, display_order._order), texts
        strings += len(texts)
    assert strings >= 20_000
    tables = _table_texts()
    for start in range(0, len(tables), 7):
        texts = tables[start : start + 7]
        expected = _one_by_one(texts, [True] * len(texts), _reference_order)
        assert _in_one_call(texts, [True] * len(texts)) == expected, texts
    ids = ["".join(map(chr, range(10_000)))]
    assert _in_one_call(ids, [True]) == _one_by_one(ids, [True], _reference_order)


def _runs_text(rng: random.Random) -> str:
    """Up to 200 characters in runs of one class (1 to 30 long, often past the 8 the extension
    takes at once), a run now and then after a mark (which takes the type before it: an AL's
    becomes R, and the run after it must leave W2's state as an R would)."""
    text = ""
    while len(text) < rng.randint(20, 200):
        if rng.random() < 0.3:
            text += rng.choice(SAMPLES["NSM"])
        name = rng.choice(["L", "R", "ON", "AL", "EN", "L", "R", "ON", *CLASSES])
        text += rng.choice(SAMPLES[name]) * rng.choice((1, 2, 9, 10, 17, 30))
    return text[:200]


def test_runs_of_one_class_read_the_same() -> None:
    """Long runs of L, R and ON (a tensor of token ids is mostly such) take the extension's
    shortcut: the same orders as the reference's, next to every class."""
    rng = random.Random(404)
    for _ in range(1500):
        assert_same_orders([_runs_text(rng)])
    # An Arabic letter, a mark (R by W1 and W3), a run of R, digits and a terminator (EN, not
    # AN: W2 stops at the R; so the terminator is a digit too, W5, and shows with them).
    for run in ("\u05d0" * 12, "!" * 12, "a" * 12):
        for tail in ("12$a", "$12a", "1,2a"):
            assert_same_orders(["\u0627\u0300" + run + tail])


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.uint16])
def test_code_points_read_as_their_text(dtype: Any) -> None:
    """``display_orders_of_points`` gives what ``display_orders`` gives the text of the points."""
    rng = random.Random(17)
    texts = [_random_text(rng) for _ in range(400)] + [_runs_text(rng) for _ in range(100)]
    texts += ["", "ssn \u202e9876-54-321\u202c", "".join(map(chr, range(10_000)))]
    for text in texts:
        points = np.array([ord(each) for each in text], dtype=np.int64)
        if dtype == np.uint16 and len(points) and points.max() > 0xFFFF:
            continue
        got = display_orders_of_points(points.astype(dtype))
        expected = display_orders(text)
        assert [order.tobytes() for order in got] == [order.tobytes() for order in expected], text
        assert all(order.dtype == np.int64 and order.flags.writeable for order in got)


@pytest.mark.parametrize(
    "points",
    [
        np.array([0x05D0, 0x110000]),  # past U+10FFFF
        np.array([0x05D0, -1]),
        np.array([0x05D0, 0x31], dtype=np.float64),
        np.array([True, False]),
    ],
)
def test_what_is_not_code_points_is_refused(points: Any) -> None:
    with pytest.raises(ValueError):
        display_orders_of_points(points)


OPENERS = np.array(sorted(_PAIRS), dtype="<u4").tobytes()
CLOSERS = np.array([_PAIRS[code] for code in sorted(_PAIRS)], dtype="<u4").tobytes()
GOOD: dict[str, Any] = {
    "classes": b"LRE",
    "points": bytes(12),
    "base": 1,
    "whole": False,
    "starts": [0, 1],
    "openers": OPENERS,
    "closers": CLOSERS,
}


@pytest.mark.parametrize(
    "changed",
    [
        {"classes": b"LZE"},  # a letter that names no class
        {"classes": b"L\x00E"},
        {"classes": b"LlE"},
        {"classes": "LRE".encode("utf-16-le")},
        {"points": bytes(8)},  # fewer code points than classes
        {"points": bytes(16)},
        {"points": bytes(13)},
        {"base": 2},
        {"base": -1},
        {"starts": [1, 0]},  # out of order
        {"starts": [0, 4]},  # past the end
        {"starts": [-1]},
        {"openers": OPENERS + b"\x00"},  # not 32-bit code points
        {"closers": CLOSERS[:-4]},  # a closer short
        {"openers": OPENERS[4:] + OPENERS[:4]},  # not ascending
        {"openers": OPENERS[:4] + OPENERS[:-4]},  # one twice
    ],
)
def test_malformed_arguments_are_refused_with_value_error(changed: dict[str, Any]) -> None:
    arguments = {**GOOD, **changed}
    with pytest.raises(ValueError):
        KERNEL.bidi_order(*arguments.values())


def test_well_formed_arguments_give_a_permutation() -> None:
    order = np.frombuffer(KERNEL.bidi_order(*GOOD.values()), dtype=np.int64)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert KERNEL.bidi_order(b"", b"", 0, True, [], OPENERS, CLOSERS) == b""
    assert KERNEL.bidi_order(b"", b"", 0, True, [0, 0], OPENERS, CLOSERS) == b""


GOOD_CALL: dict[str, Any] = {
    "classes": b"RRRLLL",
    "points": bytes(24),
    "sizes": [3, 0, 3],
    "openers": OPENERS,
    "closers": CLOSERS,
}


@pytest.mark.parametrize(
    "changed",
    [
        {"classes": b"RRRLLZ"},  # a letter that names no class
        {"classes": b"RRRLL\x00"},
        {"points": bytes(20)},  # fewer code points than classes
        {"points": bytes(25)},
        {"sizes": [3, 3, 1]},  # more than the characters
        {"sizes": [3, 2]},  # fewer
        {"sizes": [7, -1]},
        {"openers": OPENERS + b"\x00"},
        {"closers": CLOSERS[:-4]},
        {"openers": OPENERS[4:] + OPENERS[:4]},
    ],
)
def test_malformed_calls_for_every_reading_are_refused_with_value_error(changed: dict[str, Any]) -> None:
    arguments = {**GOOD_CALL, **changed}
    with pytest.raises(ValueError):
        KERNEL.bidi_orders(*arguments.values())


def test_a_call_for_every_reading_gives_each_text_s_count() -> None:
    shown, counts = KERNEL.bidi_orders(*GOOD_CALL.values())
    # Every reading shows R R R reversed: one order; nothing of the other two reorders.
    assert list(counts) == [1, 0, 0]
    assert np.frombuffer(shown, dtype=np.int64).tolist() == [2, 1, 0]
    assert KERNEL.bidi_orders(b"", b"", [], OPENERS, CLOSERS) == (bytearray(), b"")


def test_without_the_extension_text_that_may_reorder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Python path is left to read it in display order: refused, never read as stored."""
    monkeypatch.setattr(display_order._KERNEL, "kernel", None)
    assert display_orders_of(["ssn 123-45-6789"]) == [[]]  # nothing reorders it: not asked
    with pytest.raises(LabelgateError) as refused:
        display_orders_of(["ssn \u202e9876-54-321\u202c"])
    assert refused.value.reason == "NATIVE_KERNEL_FAILED"
