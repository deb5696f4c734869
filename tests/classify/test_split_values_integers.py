"""Routed token streams (``split_values: hold``): a value split across messages' integer fields,
a character a value (pure). A client reads a repeated integer field back with ``chr``, as the
classifier reads it (``messages``); a value so split went out in clear, each message masked on
its own (review: ``codes`` [115, 115, 110, 32, 49, ...], and one code point per message)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues
from labelgate.errors import LabelgateError
from tests.classify.proto_files import add_map

_PACKAGE = "labelgateheldints"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/held_ints.proto", package=_PACKAGE, syntax="proto3"
    )
    char = file.message_type.add(name="Char")
    char.field.add(name="c", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    tok = file.message_type.add(name="Tok")
    tok.field.add(name="text", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    tok.field.add(name="codes", number=2, type=F.TYPE_INT32, label=F.LABEL_REPEATED)
    tok.field.add(name="n", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    tok.field.add(name="flag", number=4, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    add_map(tok, f"{_PACKAGE}.Tok", "counts", 5, F.TYPE_STRING, F.TYPE_UINT64)
    tok.field.add(
        name="chars", number=6, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Char"
    )
    return file


descriptor_pool.Default().Add(_file())
# Built at run time: fields mypy cannot see.
_POOL = descriptor_pool.Default()
Tok: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Tok"))
Char: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Char"))


def codes(text: str) -> list[int]:
    return [ord(character) for character in text]


def splitter() -> SplitValues:
    detectors = DetectorSet()
    return SplitValues(detectors, CarryOver(detectors, 64).cut_point)


def released_before_refusal(messages: list[Message], max_values: int | None = None) -> tuple[list[Any], str]:
    """What left, and the reason the stream ended (empty: it did not)."""
    split = splitter()
    released: list[Any] = []
    try:
        for message in messages:
            released += split.hold(message, max_values)
        released += split.flush()
    except LabelgateError as error:
        return released, error.reason
    return released, ""


@pytest.mark.parametrize(
    "pieces",
    [
        ["ssn 123-4", "5-6789 ok"],  # the review's
        ["card 4111 1111 ", "1111 1111 end"],
        ["mail alice.sm", "ith@example.com now"],
        ["ssn 1", "2", "3-45-67", "89 ok"],
    ],
)
def test_a_value_split_across_a_repeated_integer_fields_messages_ends_the_stream_before_it_leaves(
    pieces: list[str],
) -> None:
    released, reason = released_before_refusal([Tok(codes=codes(piece)) for piece in pieces])
    assert reason == reasons.STREAM_VALUE_SPLIT
    assert released == []  # no piece of the value went out


def test_a_value_one_code_point_a_message_in_a_scalar_ends_the_stream_before_it_leaves() -> None:
    messages = [Tok(n=code) for code in codes("ssn 123-45-6789 ok")]
    released, reason = released_before_refusal(messages)
    assert reason == reasons.STREAM_VALUE_SPLIT
    assert "".join(chr(message.n) for message in released) == ""


def test_a_map_of_integers_is_read_across_messages_key_by_key() -> None:
    messages = [Tok(counts={"c": code}) for code in codes("x 123-45-6789 ")]
    assert released_before_refusal(messages)[1] == reasons.STREAM_VALUE_SPLIT


def test_a_value_whole_in_one_message_is_its_own_messages_to_mask() -> None:
    messages = [Tok(codes=codes("ssn 123-45-6789")), Tok(codes=codes(" ok")), Tok(codes=codes(", bye!"))]
    released, reason = released_before_refusal(messages)
    assert (reason, len(released)) == ("", 3)


def test_text_that_is_no_value_leaves_message_by_message() -> None:
    split = splitter()
    # Ends in a run a value may be made of ("is 12"): held until a character none holds.
    assert split.hold(Tok(codes=codes("the total is 12"))) == []
    assert len(split.hold(Tok(codes=codes(" units!\n")))) == 2
    assert len(split.hold(Tok(codes=codes("no digits here\n")))) == 1
    assert len(split.flush()) == 0


def test_integers_read_across_messages_count_toward_the_values_a_message_may_hold() -> None:
    first, second = Tok(codes=codes("ssn 1")), Tok(codes=codes("x ok"))
    # The least ``max_values`` each message alone passes with (its walk, its own reading).
    least = next(limit for limit in range(200) if released_before_refusal([first], limit)[1] == "")
    assert released_before_refusal([second], least)[1] == ""
    # Read with the run the first ended in ("ssn 1"), the second takes more.
    assert released_before_refusal([first, second], least)[1] == reasons.MESSAGE_TOO_MANY_VALUES
    assert released_before_refusal([first, second], least + 64)[1] == ""


@pytest.mark.parametrize("top", [1000, 50_000, 128_256])
@pytest.mark.parametrize("per_message", [1, 8])
def test_token_id_streams_are_not_refused_and_leave_as_they_come(top: int, per_message: int) -> None:
    """Measured (10,000 messages, ids below 50,000, one a message or 1 to 8): no stream refused.
    Read as digit runs across messages they were, 6 streams in 10 and every one."""
    rng = random.Random(top + per_message)
    split = splitter()
    most_held = 0
    for _ in range(3000):
        if per_message == 1:
            message = Tok(n=rng.randrange(1, top), flag=True)
        else:
            message = Tok(codes=[rng.randrange(top) for _ in range(rng.randint(1, per_message))])
        split.hold(message)
        most_held = max(most_held, len(split._held))
    split.flush()
    assert most_held <= 16


def test_counters_and_sizes_are_not_refused() -> None:
    split = splitter()
    for count in range(1, 5000):
        split.hold(Tok(n=count, codes=[4096, 4096, count % 7]))
    split.flush()


def test_a_long_stream_whose_integer_paths_change_keeps_going() -> None:
    """A map keyed by something new in every message opens a path per key; those whose values
    end in no run a value may go on in are forgotten, so only ``max_paths`` open at once end
    the stream (fail closed), not ``max_paths`` over its life."""
    split = SplitValues(DetectorSet(), CarryOver(DetectorSet(), 64).cut_point, max_paths=8)
    for index in range(200):
        split.hold(Tok(counts={f"request-{index}": ord("!")}))  # no value holds a "!"
    split.flush()
    open_runs = SplitValues(DetectorSet(), CarryOver(DetectorSet(), 64).cut_point, max_paths=8)
    with pytest.raises(LabelgateError) as ended:
        for index in range(200):  # each key's value reads "a", a letter a value may begin with
            open_runs.hold(Tok(counts={f"request-{index}": ord("a")}))
    assert ended.value.reason == reasons.STREAM_HELD_TOO_LARGE


def records(text: str) -> Any:
    return Tok(chars=[Char(c=code) for code in codes(text)])


@pytest.mark.parametrize("pieces", [["ssn 123-", "45-6789 ok"], ["card 4111 1111 11", "11 1111 1111 end"]])
def test_a_value_split_across_messages_records_ends_the_stream_before_it_leaves(pieces: list[str]) -> None:
    # Review: a record's field was followed per element (``chars[0].c``), so the classifier's
    # reading of a message's records together had no counterpart across messages.
    released, reason = released_before_refusal([records(piece) for piece in pieces])
    assert reason == reasons.STREAM_VALUE_SPLIT
    assert released == []


def test_a_value_whole_in_one_messages_records_is_its_own_messages_to_mask() -> None:
    messages = [records("ssn 123-45-6789"), records(" ok"), records(", bye!")]
    released, reason = released_before_refusal(messages)
    assert (reason, len(released)) == ("", 3)


def test_token_id_records_streams_are_not_refused() -> None:
    generator = random.Random(11)
    split = splitter()
    for _ in range(3_000):
        split.hold(Tok(chars=[Char(c=generator.randrange(50_000)) for _ in range(generator.randint(1, 8))]))
    split.flush()
