"""Streamed text held on across replies is read once, not again on every reply (review s15
rev-cpu, finding 3): an untrusted upstream made the carry-over quadratic with text held
whole whose pieces say ``PRIVATE KEY``, an open key block whose pieces hold ``}``, or a key
written one line per element. What the carry-over reads of held text is counted (no
timing); and what it releases is compared with a carry-over that cuts every reply again."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from labelgate.classify import carry_runs, carryover, credentials, held_text, jsonpaths
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.errors import LabelgateError
from labelgate.oip.tensor import Tensor

BEGIN = b"-----BEGIN RSA PRIVATE KEY-----\n"
END = b"-----END RSA PRIVATE KEY-----"
REPLIES = 300


def text(*values: bytes) -> Tensor:
    return Tensor("text", "BYTES", [len(values)], list(values))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the carry-over reads of held text: each call of what reads all of it counts
    its length (some read a piece and ``_KEY_REACH`` bytes before it)."""
    counted: list[int] = []

    def count(function: Callable[..., object], size: Callable[..., int]) -> Callable[..., object]:
        def counting(*args: object) -> object:
            counted.append(size(*args))
            return function(*args)

        return counting

    def length(*args: object) -> int:
        return len(args[-1])  # type: ignore[arg-type]

    monkeypatch.setattr(credentials, "open_pem", count(credentials.open_pem, length))
    monkeypatch.setattr(jsonpaths, "parse_object", count(jsonpaths.parse_object, lambda data: len(data)))
    monkeypatch.setattr(carryover, "may_hide", count(carryover.may_hide, length))  # type: ignore[attr-defined]
    monkeypatch.setattr(CarryOver, "_cut", count(CarryOver._cut, length))
    monkeypatch.setattr(carry_runs, "run_of", count(carry_runs.run_of, lambda held, secrets: len(held)))

    class Counted(held_text.HeldReader):
        def __init__(self, held: bytes) -> None:
            counted.append(len(held))
            super().__init__(held)

    monkeypatch.setattr(held_text, "HeldReader", Counted)
    return counted


def bound(total: int, replies: int) -> int:
    """Linear: a few reads of each byte, and of a constant look-back per reply."""
    return 4 * (total + replies * carryover._KEY_REACH)


def fill(unit: bytes, size: int) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


# Held whole (not ASCII, or an object not closed), each piece saying PRIVATE KEY: the
# review's shapes, with 200-byte pieces.
HELD_WHOLE = {
    "PRIVATE KEY repeated": ("é".encode(), fill(b"PRIVATE KEY ", 200)),
    "one PRIVATE KEY a piece": ("é".encode(), fill(b"abc 12 ", 189) + b"PRIVATE KEY"),
    "unclosed JSON": (b'{"a": "', fill(b"abc 12 ", 189) + b"PRIVATE KEY"),
    "END then BEGIN a piece": (
        "é".encode() + BEGIN,
        fill(b"x", 138) + b"-----END RSA PRIVATE KEY----------BEGIN RSA PRIVATE KEY-----\n"[:62],
    ),
}


@pytest.mark.parametrize("shape", list(HELD_WHOLE))
def test_text_held_whole_whose_pieces_say_private_key_is_read_once(shape: str, reads: list[int]) -> None:
    first, piece = HELD_WHOLE[shape]
    carry = CarryOver(DetectorSet.default(), window=256)
    assert carry.release("r1", [text(first)], final=False)[0].values == [b""]
    for _ in range(REPLIES):
        assert carry.release("r1", [text(piece)], final=False)[0].values == [b""]
    total = len(first) + REPLIES * len(piece)
    assert sum(reads) <= bound(total, REPLIES), "held text is not read again on every reply"
    (last,) = carry.release("r1", [text(b" end")], final=True)
    assert last.values == [first + piece * REPLIES + b" end"]


def test_an_open_block_whose_pieces_hold_a_brace_is_read_once(reads: list[int]) -> None:
    carry = CarryOver(DetectorSet.default(), window=256)
    first = b"key: " * 60 + BEGIN
    (opened,) = carry.release("r1", [text(first)], final=False)
    assert not opened.values[0].endswith(b"-")  # released up to the marker at most
    piece = b"}" + fill(b"MIIE", 199)
    for _ in range(REPLIES):
        assert carry.release("r1", [text(piece)], final=False)[0].values == [b""]
    assert sum(reads) <= bound(len(first) + REPLIES * len(piece), REPLIES)
    (closed,) = carry.release("r1", [text(b"\n" + END + b"\nbye " + b"z" * 300)], final=False)
    assert (opened.values[0] + closed.values[0]).startswith(first + piece * REPLIES + b"\n" + END)


def test_a_key_written_one_line_per_element_is_read_once(reads: list[int]) -> None:
    """The BEGIN marker in element 0, the lines in element 1: element 1 is held while the
    block is open, and its text was read again on every reply."""
    carry = CarryOver(DetectorSet.default(), window=256)
    line = fill(b"MIIEabcd", 199) + b"\n"
    assert carry.release("r1", [text(BEGIN, line)], final=False)[0].values == [b"", b""]
    for _ in range(REPLIES):
        assert carry.release("r1", [text(b"", line)], final=False)[0].values == [b"", b""]
    assert sum(reads) <= bound((REPLIES + 1) * len(line), REPLIES)
    (last,) = carry.release("r1", [text(END, b"")], final=True)
    assert last.values == [BEGIN + END, line * (REPLIES + 1)]


def test_an_object_an_open_block_holds_is_released_once_it_closes() -> None:
    """Text held from an object's opening brace while a block in it is open leaves whole
    when a piece closes the object, not before (a ``}`` inside its string does not)."""
    part = b'{"k": "-----BEGIN RSA PRIVATE KEY----- MIIE'  # (a newline is no JSON)
    carry = CarryOver(DetectorSet.default(), window=len(part))
    assert carry.release("r1", [text(b"x" * 100 + part)], final=False)[0].values == [b"x" * 100]
    assert carry.release("r1", [text(b"ab}cd")], final=False)[0].values == [b""]
    assert carry.release("r1", [text(b'" }')], final=False)[0].values == [part + b'ab}cd" }']


# Pieces the random streams are made of: markers whole and split, braces, quotes, escapes,
# runs, text to fold.
FRAGMENTS = [
    BEGIN,
    END,
    b"-----BEGIN ",
    b"RSA PRI",
    b"VATE KEY-----",
    b"PRIVATE KEY",
    b"-----",
    b"MIIEabcd" * 8,
    b"\n",
    b" ",
    b"}",
    b"{",
    b'{"k": "',
    b'"}',
    b"\\u0031",
    "é".encode(),
    b"4111 ",
    b"1111",
    b"ann@",
    b"eyJ",
    b"hbGci",
    b"abc ",
    b"1<",
    b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
    b"---- END SSH2 ENCRYPTED PRIVATE KEY ----",
]


def streams(seed: int, count: int) -> Iterator[tuple[int, list[tuple[list[bytes], bool]]]]:
    rng = random.Random(seed)
    for _ in range(count):
        elements = rng.choice([1, 2, 3])
        replies = [
            (
                [b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 4))) for _ in range(elements)],
                rng.random() < 0.05,
            )
            for _ in range(rng.randint(1, 25))
        ]
        yield rng.choice([16, 64, 256]), replies


def released(carry: CarryOver, replies: list[tuple[list[bytes], bool]]) -> list[object]:
    out: list[object] = []
    try:
        for values, final in replies:
            for tensor in carry.release("r1", [text(*values)], final):
                out.append((tensor.values, getattr(tensor, "key_cover", None)))
        out.extend(
            (tensor.values, getattr(tensor, "key_cover", None))
            for _, tensors in carry.flush()
            for tensor in tensors
        )
    except LabelgateError as error:
        out.append(error.reason)
    return out


def read_again(carry: CarryOver) -> Callable[..., bytes | None]:
    """The carry-over's ``_held_on`` as it was: held on only what a piece cannot change
    without reading the held text again, else that text is read again whole (``_carry``)."""

    def held_on(
        state: Any, index: int, piece: bytes, shape: list[int], hold_whole: bool = False
    ) -> bytes | None:
        tail = state.tails[index]
        members = state.runs.get(index)
        closing = state.keys.get(index)
        if index in state.whole:
            scan = state.whole[index]
            if scan is not None and scan.closes(piece):
                state.whole[index] = None
                joined = b"".join((tail, piece))
                if jsonpaths.parse_object(joined) is not None:
                    carry._drop(state, index)
                    return joined
            if closing is not None:
                if closing in held_text.joined_end(tail, piece, len(closing) - 1):
                    return None
            elif carry._cuts and carry._secrets and b"PRIVATE KEY" in held_text.joined_end(tail, piece, 64):
                return None
        elif members is not None and closing is None:
            if piece.lstrip(members):
                return None
        elif closing is not None and members is None:
            if b"}" in piece or closing in held_text.joined_end(tail, piece, len(closing) - 1):
                return None
        else:
            return None
        carry._hold(len(piece))
        tail += piece
        if len(state.tails) == 1:
            state.shape = list(shape)
        return b""

    return held_on


def test_text_held_on_is_released_as_when_it_is_read_again() -> None:
    """Random streams of markers, braces, runs and text to fold: what leaves is what left
    when held text was read again whenever a piece could change what it is."""
    detectors = DetectorSet.default()
    for window, replies in streams(15, 400):
        reference = CarryOver(detectors, window)
        reference._held_on = read_again(reference)  # type: ignore[method-assign]
        assert released(CarryOver(detectors, window), replies) == released(reference, replies), replies


def test_a_run_an_element_held_on_no_longer_is_cut_once_it_is_free() -> None:
    """An element held while an earlier element's block is open stops being one run when a
    piece breaks it; once the block closes, the run it was is not taken for one it extends."""
    replies = [
        ([BEGIN, b"1" * 300], False),
        ([b"MIIE", b"a b"], False),
        ([b"\n" + END, b"7" * 300], False),
        ([b"", b"7" * 10], True),
    ]
    detectors = DetectorSet.default()
    reference = CarryOver(detectors, 256)
    reference._held_on = read_again(reference)  # type: ignore[method-assign]
    assert released(CarryOver(detectors, 256), replies) == released(reference, replies)


def test_a_pem_scan_fed_a_growing_text_finds_what_a_scan_of_all_of_it_finds() -> None:
    """``credentials.PemScan``, fed a text as it grows in pieces of any size, names the END
    marker ``open_pem`` of the whole text names: markers split anywhere, nested, closed."""
    parts = [BEGIN, END, b"-----BEGIN ", b"-----END ", b"RSA ", b"OPENSSH ", b"PRIVATE KEY", b"-----"]
    parts += [
        b" BLOCK",
        b" ----",
        b"---- BEGIN ",
        b"---- END ",
        b"SSH2 ",
        b"MIIE",
        b"\n",
        b" ",
        b"\x00",
        b"-",
    ]
    rng = random.Random(15)
    for _ in range(2000):
        whole = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 30)))
        scan, data, at = credentials.PemScan(), bytearray(), 0
        while at < len(whole):
            step = rng.randint(0, 12)
            data += whole[at : at + step]
            at += step
            assert scan.feed(data) == credentials.open_pem(bytes(data)), bytes(data)
