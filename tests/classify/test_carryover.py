"""Streamed text is scanned across replies: a value split over replies is classified whole."""

from __future__ import annotations

import pytest

from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import CustomPattern, DetectorSet
from labelgate.errors import ResourceExhausted
from labelgate.oip.tensor import Tensor

CARD = b"4111 1111 1111 1111"
PIECES = [b"my card is 4111 11", b"11 1111 ", b"1111 thanks"]


def text(value: bytes) -> Tensor:
    return Tensor("text", "BYTES", [1], [value])


def stream(carry: CarryOver, pieces: list[bytes], request: str = "r1") -> list[bytes]:
    released = []
    for position, piece in enumerate(pieces):
        final = position == len(pieces) - 1
        (tensor,) = carry.release(request, [text(piece)], final=final)
        released.append(tensor.values[0])
    return released


def test_a_card_split_over_three_replies_is_released_whole_in_one_reply() -> None:
    detectors = DetectorSet.default()
    released = stream(CarryOver(detectors, window=64), PIECES)
    assert b"".join(released) == b"".join(PIECES), "nothing is lost or duplicated"
    holding = [chunk for chunk in released if CARD in chunk]
    assert len(holding) == 1, released
    assert [hit.detector for hit in detectors.scan(holding[0])] == ["credit_card"]
    # Scanned one by one, as before, no piece holds the card: that was the leak.
    assert all(not detectors.scan(piece) for piece in PIECES)


def test_text_is_held_back_no_longer_than_the_window() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    long_text = b"plain words and nothing else " * 10
    (tensor,) = carry.release("r1", [text(long_text)], final=False)
    assert tensor.values[0] == long_text[: len(long_text) - 64]
    (last,) = carry.release("r1", [text(b"")], final=True)
    assert last.values[0] == long_text[-64:]


def test_a_complete_match_straddling_the_cut_is_held_whole() -> None:
    carry = CarryOver(DetectorSet.default(), window=16)
    chunk = b"x" * 40 + b" 123-45-6789" + b" and more"  # the cut (16 from the end) falls inside
    (tensor,) = carry.release("r1", [text(chunk)], final=False)
    released = tensor.values[0]
    assert released == b"x" * 40 + b" ", "held from the start of the match, not cut in two"


def test_requests_and_elements_are_carried_apart() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [text(b"4111 1111 ")], final=False)
    carry.release("b", [text(b"unrelated ")], final=False)
    (b_tail,) = carry.release("b", [text(b"end")], final=True)
    assert b_tail.values[0] == b"unrelated end"
    (a_tail,) = carry.release("a", [text(b"1111 1111")], final=True)
    assert a_tail.values[0] == CARD


def test_the_stream_end_flushes_what_is_held_with_its_shape() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [Tensor("text", "BYTES", [2], [b"left ", b"right "])], final=False)
    ((request, tensors),) = carry.flush()
    assert request == "a"
    assert tensors[0].shape == [2] and tensors[0].values == [b"left ", b"right "]
    assert carry.flush() == []


def test_a_final_reply_without_the_output_still_releases_it() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    carry.release("a", [text(b"held text")], final=False)
    (flushed,) = carry.release("a", [], final=True)
    assert (flushed.name, flushed.values) == ("text", [b"held text"])


def test_whole_json_elements_and_numbers_pass_unheld() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    document = b'{"note": "hello"}'
    numbers = Tensor("score", "FP32", [1], [0.5])
    json_tensor, number_tensor = carry.release("a", [text(document), numbers], final=False)
    assert json_tensor.values == [document] and number_tensor is numbers


def test_the_cut_never_splits_a_utf8_character() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    chunk = "é".encode() * 100
    (tensor,) = carry.release("a", [text(chunk)], final=False)
    tensor.values[0].decode("utf-8")  # raises if a character was cut


HELD_WHOLE = {
    # A raw scan cannot see these, so no cut can be placed safely before the final reply.
    "full-width digits": ["x" * 300 + " １２３-４", "５-６７８９ " + "y" * 300],
    "zero-width spaces": ["ssn 123-" + "\u200b" * 300, "45-6789 ok"],
    "JSON escapes": ["x" * 300 + " \\u0031\\u003", "2\\u0033-45-6789 " + "y" * 300],
    "a JSON object": ['{"id": 1, "diagnosis": "' + "x" * 300, '", "more": 2}'],
}


def test_text_a_raw_scan_cannot_judge_is_held_whole_until_the_final_reply() -> None:
    for kind, pieces in HELD_WHOLE.items():
        released = stream(CarryOver(DetectorSet.default(), window=64), [p.encode() for p in pieces])
        assert released[:-1] == [b""] * (len(pieces) - 1), kind
        assert released[-1] == "".join(pieces).encode(), kind


def test_a_json_object_completed_by_a_later_reply_is_released_whole_then() -> None:
    carry = CarryOver(DetectorSet.default(), window=64)
    (first,) = carry.release("r1", [text(b'{"a": "' + b"x" * 100)], final=False)
    (second,) = carry.release("r1", [text(b'"}')], final=False)
    assert (first.values[0], second.values[0]) == (b"", b'{"a": "' + b"x" * 100 + b'"}')


def test_with_a_custom_detector_of_unbounded_matches_text_is_held_whole() -> None:
    pem = CustomPattern("pem", r"-----BEGIN[\s\S]+?-----END", "restricted")
    carry = CarryOver(DetectorSet(None, [pem]), window=64)
    (tensor,) = carry.release("r1", [text(b"-----BEGIN key " + b"k" * 200)], final=False)
    assert tensor.values[0] == b""
    bounded = CarryOver(DetectorSet(None, [CustomPattern("emp", r"EMP-\d{6}", "internal")]), window=64)
    (cut,) = bounded.release("r1", [text(b"z" * 200)], final=False)
    assert cut.values[0] == b"z" * 136


def test_held_text_past_the_limit_fails_the_stream() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    carry.release("r1", [text("é".encode() * 400)], final=False)
    with pytest.raises(ResourceExhausted) as refused:
        carry.release("r1", [text("é".encode() * 200)], final=False)
    assert refused.value.reason == "STREAM_HELD_TOO_LARGE"


def test_a_custom_detector_with_a_lookaround_holds_text_whole() -> None:
    # The lookbehind's text lies outside the match's width: a cut between them hides both.
    behind = CustomPattern("acct", r"(?<=acct:)\d{6}", "restricted")
    carry = CarryOver(DetectorSet(None, [behind]), window=64)
    (tensor,) = carry.release("r1", [text(b"z" * 200 + b" acct:")], final=False)
    assert tensor.values[0] == b""


def test_the_hold_limit_counts_every_element_of_every_request() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    many = Tensor("text", "BYTES", [4], ["é".encode() * 100] * 4)  # 800 bytes held
    carry.release("a", [many], final=False)
    with pytest.raises(ResourceExhausted):
        carry.release("b", [many], final=False)


def test_what_a_final_reply_releases_is_no_longer_counted() -> None:
    carry = CarryOver(DetectorSet.default(), window=64, hold_limit=1000)
    for request in ("a", "b", "c"):
        carry.release(request, [text("é".encode() * 300)], final=False)
        carry.release(request, [text(b"")], final=True)
