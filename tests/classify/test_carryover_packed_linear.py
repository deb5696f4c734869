"""A run held in packed text is not cut again on every reply (review of the fifth round's
packed carry-over): FP32 replies ``the number is: 1`` then 4 KiB of ``1`` each cost 0.19 s at
512 KiB and 3.65 s at 2 MiB. The cut between elements moved back before the run, so the held
text did not start with it, was taken for no run, and was cut again whole on every reply.
The work is counted (bytes the cut reads, no timing), and what leaves is compared with a
carry-over that cuts every reply again."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from labelgate.classify import carry_runs
from labelgate.classify.carryover import CarryOver
from labelgate.errors import LabelgateError
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import tensor_to_raw
from tests.classify.test_carryover_packed import DETECTORS, packed
from tests.classify.test_numbers_packed import SIZES

REPLIES = 128


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the carry-over's cuts read: each call of what reads all of a text counts its length."""
    counted: list[int] = []

    def count(function: Callable[..., object], at: int) -> Callable[..., object]:
        def counting(*args: object) -> object:
            counted.append(len(args[at]))  # type: ignore[arg-type]
            return function(*args)

        return counting

    monkeypatch.setattr(CarryOver, "_cut", count(CarryOver._cut, 1))  # (self, text)
    monkeypatch.setattr(carry_runs, "run_of", count(carry_runs.run_of, 0))  # (held, secrets)
    return counted


@pytest.mark.parametrize(
    "first",
    [b"the number is: 1", b"the number is:  1111", b"the mail: xann@b", b"the key:  ghp_ab"],
    ids=["run mid-element", "run element-aligned", "email mid-element", "token mid-element"],
)
def test_a_run_packed_text_ends_in_is_not_cut_again_on_every_reply(first: bytes, reads: list[int]) -> None:
    carry = CarryOver(DETECTORS, 256)
    run = first[-1:]
    piece = run * 4096
    out = tensor_to_raw(carry.release("r", [packed("t", "FP32", first)], False)[0])
    for _ in range(REPLIES):
        out += tensor_to_raw(carry.release("r", [packed("t", "FP32", piece)], False)[0])
    last = b"1111 end of it. "
    out += tensor_to_raw(carry.release("r", [packed("t", "FP32", last)], True)[0])
    assert out == first + piece * REPLIES + last
    total = len(first) + REPLIES * len(piece)
    assert sum(reads) <= 4 * total, "held text is cut again on every reply"


def as_before(carry: CarryOver) -> CarryOver:
    """``carry`` holding on only a run its held text is whole (as before the fix): text that
    ends in a run it does not start with is cut again on every reply."""
    carry._run_after = lambda text, cut: b""  # type: ignore[method-assign]
    return carry


FRAGMENTS = [
    b"the number is: ",
    b"1" * 7,
    b"4111 ",
    b"123-45-",
    b"6789",
    b"4.1",
    b"e15",
    b"ann@",
    b"ex.com",
    b"ghp_",
    b"abcDEF123",
    b"eyJ",
    b"-",
    b".",
    b" ",
    b"x",
    b"\n",
]


def streams(seed: int, count: int) -> Iterator[tuple[int, str, list[bytes]]]:
    rng = random.Random(seed)
    for _ in range(count):
        datatype = rng.choice(["BYTES", "FP16", "FP32", "FP64"])
        size = SIZES.get(datatype, 1)
        replies = []
        for _ in range(rng.randint(1, 12)):
            data = b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 6)))
            if rng.random() < 0.4:
                data += rng.choice(FRAGMENTS[1:2] + FRAGMENTS[10:11]) * rng.randint(1, 60)
            replies.append(data + b" " * (-len(data) % size))
        yield rng.choice([16, 64, 256]), datatype, replies


def released(carry: CarryOver, datatype: str, replies: list[bytes]) -> list[object]:
    out: list[object] = []
    try:
        for position, data in enumerate(replies):
            tensor = Tensor("t", "BYTES", [1], [data]) if datatype == "BYTES" else packed("t", datatype, data)
            for each in carry.release("r", [tensor], position == len(replies) - 1):
                out.append(tensor_to_raw(each) if each.datatype != "BYTES" else each.values)
    except LabelgateError as error:
        out.append(error.reason)
    return out


def test_packed_and_bytes_text_held_on_as_a_run_is_released_as_when_cut_again() -> None:
    """Random streams of runs, values and words, as BYTES and packed: what leaves is what
    left when text ending in a run it does not start with was cut again on every reply."""
    for window, datatype, replies in streams(102, 1500):
        reference = as_before(CarryOver(DETECTORS, window))
        assert released(CarryOver(DETECTORS, window), datatype, replies) == released(
            reference, datatype, replies
        ), (window, datatype, replies)
