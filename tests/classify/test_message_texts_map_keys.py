"""A routed token stream (``split_values: hold``) reads a map's keys, and its string and bytes
values whatever their key, as one text across its messages (``message_texts``: the map's
path, ``tags{keys}`` and ``tags{}``). The hold followed a map's values by key only and its
keys not at all, so ``Token(tags={"my ssn is 123-45-": "a"})`` then ``Token(tags={"6789
thanks": "b"})`` left in two pieces, each passing its own classification (the classifier
reads every key of one message, each on its own), and so did a value split under a key that
changes between messages. A message may hold several entries, which a caller may read in any
order: every entry of one message is read joined to every entry of the next
(``split_values._unread_pairs``), so a value across two messages is read whichever entries
end and begin them."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message

from labelgate.classify import reasons
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.message_texts import text_fields, texts_of
from labelgate.classify.messages import MessageValues
from labelgate.classify.split_values import SplitValues
from labelgate.classify.straddling import straddled, straddled_pairs
from labelgate.errors import LabelgateError
from tests.classify import split_values_proto

DETECTORS = DetectorSet.default()
# Built at run time: fields mypy cannot see.
Token: Any = split_values_proto.Token
Note: Any = split_values_proto.Note
FIRST, SECOND = "my ssn is 123-45-", "6789 thanks"


def hold_stream(messages: list[Message]) -> tuple[list[Message], str]:
    """What left, and the reason the stream ended (empty: it did not)."""
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released: list[Message] = []
    try:
        for message in messages:
            released += splitter.hold(message)
        released += splitter.flush()
    except LabelgateError as error:
        return released, error.reason
    return released, ""


def token(**fields: Any) -> Message:
    message: Message = Token(**fields)
    return message


def packed_note() -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(Note(text="n"))
    return holder


SPLIT: dict[str, list[Message]] = {
    # The review's: the value in the keys, one key a message.
    "keys": [token(tags={FIRST: "a"}), token(tags={SECOND: "b"})],
    "keys of a bytes map": [token(blobs={FIRST: b"a"}), token(blobs={SECOND: b"b"})],
    "keys of a map of Any": [token(anys={FIRST: packed_note()}), token(anys={SECOND: packed_note()})],
    # Values under a key that changes (``chunk_0``, ``chunk_1``): one text to a caller that
    # joins the map's values.
    "values under changing keys": [token(tags={"c0": FIRST}), token(tags={"c1": SECOND})],
    "bytes values under changing keys": [
        token(blobs={"c0": FIRST.encode()}),
        token(blobs={"c1": SECOND.encode()}),
    ],
    # Several entries a message: the piece ends in whichever entry the caller reads last.
    "a key not last in key order": [
        token(tags={FIRST: "a", "zzz": "b"}),
        token(tags={SECOND: "c"}),
    ],
    "a key not first in key order": [
        token(tags={FIRST: "a"}),
        token(tags={"000": "b", SECOND: "c"}),
    ],
    "a value neither last nor first in key order": [
        token(tags={"a": FIRST, "b": "ok"}),
        token(tags={"a": "fine", "c": SECOND}),
    ],
    # The entry the value runs on into comes after a long one in key order: past the carry
    # window's cut, which the first message's release reads up to.
    "a value continued past the cut": [
        token(tags={"c0": FIRST}),
        token(tags={"a": "x " * 200, "z": SECOND}),
    ],
    "keys in a map nested in a message field": [
        token(note={"text": "n"}, tags={FIRST: "a"}),
        token(tags={SECOND: "b"}),
    ],
}


@pytest.mark.parametrize("name", SPLIT)
def test_a_value_split_across_map_keys_or_changing_keys_ends_the_stream(name: str) -> None:
    pieces = SPLIT[name]
    assert hold_stream(pieces) == ([], reasons.STREAM_VALUE_SPLIT)


def test_keys_of_a_map_in_a_struct_are_followed_too() -> None:
    first, second = struct_pb2.Struct(), struct_pb2.Struct()
    first.fields[FIRST].string_value = "a"
    second.fields[SECOND].string_value = "b"
    assert hold_stream([first, second]) == ([], reasons.STREAM_VALUE_SPLIT)


def test_the_hold_reads_a_maps_keys_and_values_at_its_path_and_each_value_by_key() -> None:
    message = token(tags={"b": "two", "a": "one"}, blobs={"k": b"\x01"})
    texts = list(texts_of(message, MessageValues(None), []))
    assert texts == [
        ("blobs['k']", "blobs{}", b"\x01"),
        ("blobs{keys}", "blobs{keys}", b"k"),
        ("blobs{}", "blobs{}", b"\x01"),
        ("tags['a']", "tags{}", b"one"),
        ("tags['b']", "tags{}", b"two"),
        ("tags{keys}", "tags{keys}", b"a"),
        ("tags{keys}", "tags{keys}", b"b"),
        ("tags{}", "tags{}", b"one"),
        ("tags{}", "tags{}", b"two"),
    ]
    # The fields' own texts, as the classifier names them, are what they were.
    assert [path for path, _, _ in text_fields(message)] == ["blobs['k']", "tags['a']", "tags['b']"]


def test_a_refusal_names_the_map_not_its_keys() -> None:
    """A key is the upstream's text no policy decided on: the refusal does not quote it."""
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    splitter.hold(token(tags={FIRST: "a"}))
    with pytest.raises(LabelgateError) as refused:
        splitter.hold(token(tags={SECOND: "b"}))
        splitter.flush()
    assert "tags{keys}" in refused.value.message
    assert "123-45" not in refused.value.message


def chat_chunk(piece: str) -> Message:
    """A chat stream as a Struct: role and content in every message, content in pieces."""
    return struct_pb2.Struct(
        fields={
            "role": struct_pb2.Value(string_value="assistant"),
            "content": struct_pb2.Value(string_value=piece),
        }
    )


PIECES = ["The weather ", "is fine today, ", "and tomorrow ", "it will rain ", "in the afternoon. "] * 20
ORDINARY = {
    "Struct chunks": [chat_chunk(piece) for piece in PIECES],
    "metadata beside the text": [
        token(text=piece, tags={"model": "small model", "role": "assistant", "finish": ""})
        for piece in PIECES
    ],
    "text under a key that changes, beside metadata": [
        token(tags={"model": "m-1", f"chunk_{index:03}": piece}) for index, piece in enumerate(PIECES)
    ],
}


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_streams_with_maps_leave_whole_and_in_order(name: str) -> None:
    assert hold_stream(ORDINARY[name]) == (ORDINARY[name], "")


@pytest.mark.parametrize("name", ["Struct chunks", "metadata beside the text"])
def test_ordinary_streams_with_maps_are_released_as_they_come(name: str) -> None:
    messages = ORDINARY[name]
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released = [out for message in messages for out in splitter.hold(message)]
    assert len(released) > len(messages) // 2  # not held to the stream's end
    assert released + splitter.flush() == messages


def test_what_a_maps_entries_hold_is_counted_and_given_back() -> None:
    """A message's entries are kept beside its piece until it leaves, and short pairs read
    are remembered: both count toward the hold's bound, and nothing is left at the end."""
    messages = [token(tags={"model": "small model", "role": "assistant", "t": piece}) for piece in PIECES]
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    bare = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released = []
    for message in messages[:10]:
        released += splitter.hold(message)
        bare.hold(token(tags={"t": "x"}))
    assert splitter.held_bytes > bare.held_bytes
    released += [out for message in messages[10:] for out in splitter.hold(message)]
    assert released  # released as it goes: pairs were read and remembered on the way
    assert released + splitter.flush() == messages
    assert splitter.held_bytes == 0


def test_a_split_after_many_messages_of_the_same_entries_ends_the_stream() -> None:
    """Entries read once in pairs are not read again while they repeat; new ones are."""
    same = [token(tags={"a": "x y", "b": "y z"}) for _ in range(40)]
    # Neither joined in key order: ``FIRST`` is not the last key of its message, nor the
    # last value; ``SECOND`` not the first of its.
    keys = [token(tags={"a": "x y", FIRST: "z", "zz": "y z"}), token(tags={"0": "x", SECOND: "w"})]
    assert hold_stream(same + keys)[1] == reasons.STREAM_VALUE_SPLIT
    values = [token(tags={"a": FIRST, "b": "y z"}), token(tags={"0": "x", "1": SECOND})]
    assert hold_stream(same + values)[1] == reasons.STREAM_VALUE_SPLIT


FRAGMENTS = [
    "123-",
    "45-",
    "6789",
    " ",
    "ssn ",
    "4111 ",
    "1111",
    "a@b",
    ".com",
    "x",
    "\\u0034",
    "１２",
    "\u200b",
    "é",
]


def test_pairs_scanned_together_answer_as_each_pair_read_alone() -> None:
    """``straddled_pairs`` scans plain pairs together and reads only those with a detection:
    the same answers as reading every pair (``straddled``), randomized."""
    rng = random.Random(11)
    for _ in range(1500):
        pairs = [
            (
                "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 4))).encode(),
                "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 4))).encode(),
            )
            for _ in range(rng.randint(1, 6))
        ]
        each = [straddled(DETECTORS, pair) for pair in pairs]
        assert (straddled_pairs(DETECTORS, pairs) is None) == all(answer is None for answer in each), pairs
