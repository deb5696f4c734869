"""Text packed into wider numbers' bytes is carried across replies however it ends (review of
the fifth round's packed carry-over): one control byte (a form feed, ``ESC [0m``) in a
reply's last 32 bytes, or one byte that is not UTF-8 before a value's first piece, made its
bytes not "end in text", so nothing was carried and ``123-45-`` / ``6789`` reached the caller
in two replies; so did a short piece right after binary bytes. Now the tail is read as the
classifier reads binary (control characters dropped) and a run of value bytes at its end is
text from 8 bytes on; a shorter one is read with the next reply's first bytes, and a value
they complete ends the stream (at most 7 bytes of its start went out). And an empty output of
the datatype held releases what is held (it failed ``STREAM_OUTPUT_CHANGED``)."""

from __future__ import annotations

import pytest

from labelgate.classify.carryover import CarryOver
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import tensor_to_raw
from tests.classify.test_carryover_keys import BEGIN, BODY, END, clear_bytes, line
from tests.classify.test_carryover_packed import (
    CARD,
    DETECTORS,
    SSN,
    elements,
    packed,
    run,
    tail_padded,
)
from tests.classify.test_numbers_packed import SIZES

GROUPED_CARD = b"4111 1111 1111 1111"
REST = tail_padded(b"6789 and that is all for the note today ok")
# Binary bytes no text ends in (not UTF-8), before a value's first piece.
BINARY = b"\x80" * 16


def replies_of(datatype: str, pieces: list[bytes]) -> list[list[Tensor]]:
    return [[packed("t", datatype, piece)] for piece in pieces]


def refused(replies: list[list[Tensor]]) -> tuple[bytes, UpstreamError | None]:
    """What the caller got of output ``t`` (unmasked, carried) before the stream ended, and
    the error that ended it."""
    carry = CarryOver(DETECTORS, 64)
    seen = b""
    for position, tensors in enumerate(replies):
        try:
            released = carry.release("r", tensors, position == len(replies) - 1)
        except UpstreamError as error:
            return seen, error
        seen += b"".join(tensor_to_raw(tensor) for tensor in released if tensor.name == "t")
    return seen, None


CONTROL_SPLITS: dict[str, tuple[list[bytes], bytes]] = {
    "a form feed before an SSN": ([elements(b"Note.\x0cthe customer ssn is 123-45-"), REST], SSN),
    "an ANSI reset before an SSN": ([elements(b"Note\x1b[0m the customer ssn is 123-45-"), REST], SSN),
    "a byte that is not UTF-8 before an SSN": (
        [elements(b"Note.\xe9the customer ssn is 123-45-"), REST],
        SSN,
    ),
    "a form feed before a card": (
        [elements(b"x\x0cplease charge card 4111 1111 "), tail_padded(b"1111 1111 now thanks a lot for it")],
        GROUPED_CARD,
    ),
    "a NUL before a card": (
        [elements(b"x\x00please charge card 4111111111"), tail_padded(b"111111 now thanks a lot for it")],
        CARD,
    ),
}


@pytest.mark.parametrize("datatype", sorted(SIZES))
@pytest.mark.parametrize("split", CONTROL_SPLITS)
def test_a_value_after_a_control_byte_split_across_replies_does_not_reach_the_caller(
    split: str, datatype: str
) -> None:
    pieces, value = CONTROL_SPLITS[split]
    seen, _ = run(replies_of(datatype, pieces))
    assert value not in seen["t"].translate(None, b"\x00\x0c"), seen["t"]


@pytest.mark.parametrize("datatype", ["FP32", "INT16", "FP64", "BF16"])
def test_key_lines_each_followed_by_a_control_byte_are_covered(datatype: str) -> None:
    key = [tail_padded(b"key follows:\n" + line(BEGIN) + b"\x0c")]
    key += [tail_padded(line(body) + b"\x0c") for body in BODY]
    key += [tail_padded(END.encode() + b"\n\x0c")]
    seen, _ = run([[packed("k", datatype, piece)] for piece in key])
    assert clear_bytes(seen["k"]) == 0


SHORT_SPLITS: dict[str, list[bytes]] = {
    "an SSN's start after binary": [elements(BINARY + b"123-45-"), REST],
    "a card's start after binary": [elements(BINARY + b"4111 11"), tail_padded(b"11 1111 1111 now")],
    "a key's marker after binary": [
        elements(BINARY + b"-----BE"),
        tail_padded(b"GIN RSA PRIVATE KEY-----\n" + line(BODY[0])),
    ],
    "UTF-16 after binary": [elements(BINARY + "123-45-".encode("utf-16-le")), tail_padded(b"6789 ok")],
    "control bytes after the start": [elements(BINARY + b"123-45-" + b"\x0c" * 300), REST],
    "replies of control bytes between": [
        elements(BINARY + b"123-45-"),
        b"\x0c" * 8,
        b"\x00" * 8,
        REST,
    ],
    "a float card's digits past the window": [
        elements(BINARY + b"4.1"),
        *[b"1" * 32] * 4,
        tail_padded(b"e15 ok"),
    ],
}


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "INT64"])
@pytest.mark.parametrize("split", SHORT_SPLITS)
def test_a_value_begun_in_a_short_run_after_binary_ends_the_stream_when_the_next_replies_complete_it(
    split: str, datatype: str
) -> None:
    assert_refused(replies_of(datatype, SHORT_SPLITS[split]))


@pytest.mark.parametrize("datatype", ["FP16", "INT16", "FP32", "INT32"])
def test_a_value_an_element_a_reply_after_binary_ends_the_stream(datatype: str) -> None:
    size = SIZES[datatype]
    text = b"123-45-6789 ok, that is all"
    pieces = [BINARY + text[:size]] + [text[at : at + size] for at in range(size, len(text) - size, size)]
    assert_refused(replies_of(datatype, pieces))


def assert_refused(replies: list[list[Tensor]]) -> None:
    seen, error = refused(replies)
    assert error is not None and error.reason == "STREAM_VALUE_SPLIT", seen
    # At most 7 bytes of its start went out (none past the binary bytes' run).
    start = seen.translate(None, b"\x00\x0c").rsplit(b"\x80", 1)[-1]
    assert len(start) < 8, seen


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "INT64"])
def test_a_run_of_eight_value_bytes_after_binary_is_carried_as_text(datatype: str) -> None:
    pieces = [elements(BINARY + b"4111 1111"), tail_padded(b" 1111 1111 and no more")]
    seen, released = run(replies_of(datatype, pieces))
    assert GROUPED_CARD not in seen["t"]
    assert tensor_to_raw(released[0][0]) == b""  # held whole: binary bytes are no text to cut


def test_text_after_binary_a_value_only_later_completes_is_not_refused() -> None:
    """A value that starts past the short run the binary bytes ended in is the next
    replies' own: classified with them (held as text), the stream goes on."""
    pieces = [elements(BINARY + b" John"), tail_padded(b" Smith's SSN is 123-45-6789, as we have it")]
    seen, error = refused(replies_of("FP32", pieces))
    assert error is None
    masked, _ = run(replies_of("FP32", pieces))
    assert SSN not in masked["t"]
    assert seen == b"".join(pieces)


@pytest.mark.parametrize("final", [True, False])
@pytest.mark.parametrize("datatype", ["FP32", "INT16", "FP64"])
def test_an_empty_output_of_the_datatype_held_releases_what_is_held(datatype: str, final: bool) -> None:
    carry = CarryOver(DETECTORS, 64)
    text = elements(b"the customer's note continues here and on")
    (first,) = carry.release("r", [packed("t", datatype, text)], False)
    empty = Tensor("t", datatype, [1, 0], [])
    (second,) = carry.release("r", [empty], final)
    assert second.datatype == datatype and len(second.shape) == 2
    if not final:  # still held; the final reply releases it
        (second,) = carry.release("r", [empty], True)
    assert tensor_to_raw(first) + tensor_to_raw(second) == text
    assert carry.flush() == []


def test_an_empty_output_of_another_datatype_still_fails_the_reply() -> None:
    carry = CarryOver(DETECTORS, 64)
    carry.release("r", [packed("t", "FP32", elements(b"the customer's note continues here"))], False)
    with pytest.raises(UpstreamError) as raised:
        carry.release("r", [Tensor("t", "FP16", [1, 0], [])], True)
    assert raised.value.reason == "STREAM_OUTPUT_CHANGED"
