"""A routed token stream (``split_values: hold``) whose text is in bytes fields: the hold read
string fields across messages but not bytes fields, so a value split across two messages'
bytes (``ssn 123-45-`` / ``6789``), in a bytes field, a repeated one, a map's bytes value or
inside an Any, left in pieces, each masked on its own (THREAT-MODEL, what the fifth round
left). Bytes fields are now read across messages as string fields are, as the classifier
reads them: as they are, and in the legacy encodings it reads bytes that are not UTF-8 in.
Binary, which a raw scan cannot judge, holds its stream to the end and then leaves whole."""

from __future__ import annotations

import random

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.message_texts import text_fields
from labelgate.classify.split_values import SplitValues, straddled
from labelgate.errors import UpstreamError
from tests.classify.split_values_proto import Note, Token
from tests.classify.test_hidden_forms import digits_from

DETECTORS = DetectorSet.default()


class CountingCarry(CarryOver):
    """The carry-over, counting the bytes its cut reads."""

    def __init__(self) -> None:
        super().__init__(DETECTORS, window=256)
        self.read = 0

    def cut_point(self, text: bytes) -> int | None:
        self.read += len(text)
        return super().cut_point(text)


def stream(messages: list[Message], carry: CarryOver | None = None) -> list[Message]:
    carry = carry or CarryOver(DETECTORS, 256)
    splitter = SplitValues(DETECTORS, carry.cut_point)
    released = []
    for message in messages:
        released += splitter.hold(message)
    return released + splitter.flush()


def in_data(data: bytes) -> Message:
    return Token(data=data)


def in_chunks(data: bytes) -> Message:
    return Token(chunks=[b"", data])


def in_map(data: bytes) -> Message:
    # Its key is followed text too (a map's keys are read across messages): long enough that
    # a few of them pass the carry window (256 bytes), so pieces may leave before the end.
    return Token(blobs={"one blob of the stream, " * 4: data})


def in_note(data: bytes) -> Message:
    return Token(note=Note(data=data))


def in_any(data: bytes) -> Message:
    token = Token()
    token.extra.Pack(Note(data=data))
    return token


def in_bytes_value(data: bytes) -> Message:
    token = Token()
    token.extra.Pack(wrappers_pb2.BytesValue(value=data))
    return token


def as_reply(data: bytes) -> Message:
    """A method whose reply type is ``BytesValue``."""
    return wrappers_pb2.BytesValue(value=data)


SHAPES = {
    "bytes field": (in_data, "data"),
    "repeated bytes": (in_chunks, "chunks[1]"),
    "map of bytes": (in_map, "blobs{}"),
    "nested message": (in_note, "note.data"),
    "Any": (in_any, "extra{}.data"),
    "BytesValue in an Any": (in_bytes_value, "extra{}.value"),
    "BytesValue reply": (as_reply, "value"),
}
SPLIT = {
    "ssn": (b"ssn 123-45-", b"6789 thanks"),
    "card": (b"card 4111 1111", b" 1111 1111 end"),
    "email": (b"write to alice.smi", b"th@example.com"),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pieces", SPLIT.values(), ids=SPLIT.keys())
def test_a_value_split_across_messages_bytes_fields_ends_the_stream(
    shape: str, pieces: tuple[bytes, bytes]
) -> None:
    build, shown = SHAPES[shape]
    with pytest.raises(UpstreamError) as refused:
        stream([build(piece) for piece in pieces])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
    assert f"(field {shown})" in refused.value.message
    assert "123-45-6789" not in refused.value.message  # the map key is not shown


@pytest.mark.parametrize("shape", SHAPES)
def test_bytes_whose_pieces_make_no_value_flow_in_order(shape: str) -> None:
    build, _ = SHAPES[shape]
    pieces = [b"The weather ", b"is fine, ", b"ssn 123-45-6789 whole", b" bye " + b"x" * 300, b"."]
    messages = [build(piece) for piece in pieces]
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released = [out for message in messages for out in splitter.hold(message)]
    assert released, "bytes that are text are cut as strings are: they leave before the end"
    assert released + splitter.flush() == messages


def test_the_fields_read_across_messages_are_bytes_fields_too() -> None:
    token = Token(text="a", data=b"\xffb", chunks=[b"c"], blobs={"k": b"d"})
    token.extra.Pack(Note(data=b"e"))
    assert sorted(text_fields(token)) == [
        ("blobs['k']", "blobs{}", b"d"),
        ("chunks[0]", "chunks[0]", b"c"),
        ("data", "data", b"\xffb"),
        ("extra{}.data", "extra{}.data", b"e"),
        ("text", "text", b"a"),
    ]


FULL_SSN = digits_from("123-45-6789", 0xFF10)  # full-width digits


@pytest.mark.parametrize("encoding", ["gbk", "shift_jis", "euc_jp", "big5"])
def test_a_value_split_in_a_legacy_encoding_ends_the_stream(encoding: str) -> None:
    """The classifier reads bytes that are not UTF-8 in legacy encodings too (full-width digits
    in GBK: ``other_encodings.legacy_readings``); so is their joined text."""
    split = [f"ssn {FULL_SSN[:7]}".encode(encoding), f"{FULL_SSN[7:]} ok".encode(encoding)]
    assert straddled(DETECTORS, split) == "us_ssn"
    with pytest.raises(UpstreamError) as refused:
        stream([in_data(piece) for piece in split])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
    # Whole in one piece, the value is that piece's to mask: the stream leaves, at its end.
    whole = [in_data(f"ssn {FULL_SSN} ok".encode(encoding)), in_data(" and more".encode(encoding))]
    assert stream(whole) == whole


def test_binary_is_held_to_the_end_read_once_and_leaves_whole() -> None:
    """Binary (a raw scan cannot judge it: not ASCII) is held to the end of the stream and
    its cut not read again per message; its chance values of a few bytes (``8::``) in any
    reading, across pieces too, end nothing, as in numbers' raw bytes (``numbers._LOOSE``)."""
    rng = random.Random(3)  # a stream whose UTF-8 reading makes ``::`` across two pieces
    messages = [wrappers_pb2.BytesValue(value=rng.randbytes(1024)) for _ in range(256)]
    assert straddled(DETECTORS, [message.value for message in messages]) is None
    carry = CountingCarry()
    assert stream(messages, carry) == messages
    assert carry.read <= 4 * 256 * 1024, "held binary is not cut again on every message"


def test_a_value_split_across_binary_chunks_ends_the_stream() -> None:
    rng = random.Random(6)
    first, second = rng.randbytes(2048), rng.randbytes(2048)
    messages = [in_chunks(first + b"\x01ssn 123-45-"), in_chunks(b"6789\x02" + second)]
    with pytest.raises(UpstreamError) as refused:
        stream(messages)
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
