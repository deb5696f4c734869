"""Streamed text held back across replies is not read again on every reply (review s13
rev-streams-mem, finding 4): email runs, and text held whole (not ASCII, JSON)."""

from __future__ import annotations

import pytest

from labelgate.classify import carry_runs, carryover, jsonpaths
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.oip.tensor import Tensor


def text(value: bytes) -> Tensor:
    return Tensor("text", "BYTES", [1], [value])


def carry_all(carry: CarryOver, pieces: list[bytes]) -> list[bytes]:
    return [carry.release("r1", [text(piece)], final=False)[0].values[0] for piece in pieces]


def test_an_email_run_is_held_until_it_ends_without_reading_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    email_start = carry_runs._email_start

    def counted(data: bytes, cut: int) -> int:
        reads.append(len(data))
        return email_start(data, cut)

    monkeypatch.setattr(carry_runs, "_email_start", counted)
    carry = CarryOver(DetectorSet.default(), window=64)
    pieces = [b"write to ann@", *[b"b" * 50] * 300]
    assert b"".join(carry_all(carry, pieces)) == b"write to ", "the run holding an @ is held whole"
    assert sum(reads) < 20 * len(b"".join(pieces)), "a run held whole is not read again on every reply"
    (ended,) = carry.release("r1", [text(b".example.com thanks " + b"z" * 100)], final=False)
    assert ended.values[0].startswith(b"ann@" + b"b" * 15000 + b".example.com thanks ")


@pytest.mark.parametrize("first", ["é".encode(), b"\\u0031", b"[1, "])
def test_text_held_whole_is_not_read_again_on_every_reply(
    first: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    may_hide = carryover.may_hide

    def counted(data: bytes) -> bool:
        reads.append(len(data))
        return may_hide(data)

    monkeypatch.setattr(carryover, "may_hide", counted)
    carry = CarryOver(DetectorSet.default(), window=64)
    pieces = [first, *[b"4111 1111 " * 5] * 300]
    assert b"".join(carry_all(carry, pieces)) == b""
    assert sum(reads) < 20 * len(b"".join(pieces))
    (last,) = carry.release("r1", [text(b" end")], final=True)
    assert last.values[0] == b"".join(pieces) + b" end"


def test_an_object_is_followed_piece_by_piece_and_parsed_once_it_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[int] = []
    parse_object = jsonpaths.parse_object

    def counted(element: bytes, check_depth: bool = True) -> object:
        parsed.append(len(element))
        return parse_object(element, check_depth)

    monkeypatch.setattr(jsonpaths, "parse_object", counted)
    carry = CarryOver(DetectorSet.default(), window=64)
    pieces = [b'{"a": "', *[b'} \\" {[' * 10] * 300, b'", "b": [{"c": "}"}]', b"}  "]
    released = carry_all(carry, pieces)
    assert released[:-1] == [b""] * (len(pieces) - 1)
    assert released[-1] == b"".join(pieces), "a whole object is released whole when it closes"
    assert len(parsed) <= 3, "the object is parsed when it closes, not on every reply"


@pytest.mark.parametrize("pieces", [[b'{"a": 1', b"} x", b"}"], [b'{"a": 1', b"]", b"}"]])
def test_text_that_closed_without_being_one_object_is_held_to_the_final_reply(pieces: list[bytes]) -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    assert b"".join(carry_all(carry, pieces)) == b""
    (last,) = carry.release("r1", [text(b"")], final=True)
    assert last.values[0] == b"".join(pieces)


def test_an_escaped_quote_across_replies_is_read_as_one() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    pieces = [b'{"a": "\\', b'"}', b'"}']
    assert carry_all(carry, pieces) == [b"", b"", b"".join(pieces)]
