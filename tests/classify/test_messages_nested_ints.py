"""An integer field of a repeated message read across its elements, as a repeated integer field.

``Reply { repeated Char chars; }`` with ``Char { int32 c; }`` reads back ``chars[].c`` one
value an element: code points ``[115, 115, 110, 32, 49, ...]`` are ``ssn 123-...`` to a client
that calls ``chr`` on each, and ``[4111, 1111, 1111, 1111]`` a card however it prints them. The
values across the elements (at any depth of repeated messages) are read as a ``repeated int32``
is (``classify.messages``): the path is labelled and a mask zeroes every one of them.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

from labelgate.classify import Catalog, DetectorSet, classify_message, to_policy_fields
from labelgate.classify.messages import FIXED_STEP_VALUES
from labelgate.enforce import apply_message_masks
from labelgate.errors import UpstreamError
from tests.classify.proto_files import add_map

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
KEY = b"0123456789abcdef0123456789abcdef"
SSN_TEXT = "ssn 123-45-6789"
CARD_PARTS = [4111, 1111, 1111, 1111]
_PACKAGE = "labelgatenestedints"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="labelgate_tests/nested_ints.proto", package=_PACKAGE, syntax="proto3"
    )
    char = file.message_type.add(name="Char")
    char.field.add(name="c", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    token = file.message_type.add(name="Token")
    token.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    token.field.add(name="logprob", number=2, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    group = file.message_type.add(name="Group")
    group.field.add(
        name="chars", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Char"
    )
    reply = file.message_type.add(name="Reply")
    reply.field.add(
        name="chars", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Char"
    )
    reply.field.add(
        name="tokens", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Token"
    )
    reply.field.add(
        name="groups", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".{_PACKAGE}.Group"
    )
    reply.field.add(name="note", number=4, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    add_map(reply, f"{_PACKAGE}.Reply", "by_name", 5, F.TYPE_STRING, F.TYPE_MESSAGE, f".{_PACKAGE}.Char")
    return file


descriptor_pool.Default().Add(_file())
_classes = {
    name: message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(f"{_PACKAGE}.{name}")
    )
    for name in ("Char", "Token", "Group", "Reply")
}
Char, Token, Group, Reply = (_classes[name] for name in ("Char", "Token", "Group", "Reply"))


def codes(text: str) -> list[int]:
    return [ord(character) for character in text]


def detected(message) -> dict[str, dict[str, list[str]]]:
    result = classify_message(message, CATALOG, DETECTORS)
    return {
        field["path"]: field["sources"] for field in to_policy_fields(result.fields) if "{" in field["path"]
    }


def released(message, path: str):
    result = classify_message(message, CATALOG, DETECTORS)
    return result, apply_message_masks(
        message, result, [{"path": path, "strategy": "redact", "params": {}}], KEY
    )


def test_code_points_across_a_repeated_messages_elements_are_found_and_zeroed() -> None:
    message = Reply(chars=[Char(c=code) for code in codes(SSN_TEXT)], note="kept")
    assert detected(message)["chars[].c{us_ssn}"] == {"confidential": ["detector:us_ssn"]}
    result, masked = released(message, "chars[].c{us_ssn}")
    assert {leaf.location for leaf in result.message_spans} == {
        ("chars", index, "c") for index in range(len(SSN_TEXT))
    }
    assert [char.c for char in masked.chars] == [0] * len(SSN_TEXT)
    assert masked.note == "kept"


def test_a_card_in_code_points_over_a_repeated_messages_elements_is_zeroed_alone() -> None:
    message = Reply(tokens=[Token(id=code, logprob=-0.5) for code in codes("card 4111 1111 1111 1111")])
    assert detected(message)["tokens[].id{credit_card}"] == {"confidential": ["detector:credit_card"]}
    _, masked = released(message, "tokens[].id{credit_card}")
    assert {token.id for token in masked.tokens} == {0}
    assert {token.logprob for token in masked.tokens} == {-0.5}  # the rest of each element stays


def test_numbers_over_a_repeated_messages_elements_are_not_read_as_digit_runs() -> None:
    # The residual (module docstring): records' numbers joined read as cards too often; a
    # ModelStatistics reply's counts did, model after model.
    assert "tokens[].id{credit_card}" not in detected(Reply(tokens=[Token(id=part) for part in CARD_PARTS]))


def test_values_two_repeated_levels_down_are_read_across_every_element_in_order() -> None:
    first, second = codes(SSN_TEXT[:8]), codes(SSN_TEXT[8:])  # 'ssn 123-' and '45-6789'
    message = Reply(
        groups=[Group(chars=[Char(c=code) for code in first]), Group(chars=[Char(c=code) for code in second])]
    )
    assert "groups[].chars[].c{us_ssn}" in detected(message)
    result, masked = released(message, "groups[].chars[].c{us_ssn}")
    assert {leaf.location for leaf in result.message_spans} == {
        *(("groups", 0, "chars", index, "c") for index in range(len(first))),
        *(("groups", 1, "chars", index, "c") for index in range(len(second))),
    }
    assert [char.c for group in masked.groups for char in group.chars] == [0] * len(SSN_TEXT)


def test_a_maps_message_values_spelling_a_card_label_the_map() -> None:
    # Read in the map's order only: seventeen 4s, a card by its checksum, read so in any order.
    message = Reply()
    for index in range(17):
        message.by_name[f"k{index:02}"].c = ord("4")
    result = classify_message(message, CATALOG, DETECTORS)
    by_path = {field["path"]: field["sources"] for field in to_policy_fields(result.fields)}
    assert by_path["by_name"]["confidential"] == ["detector:credit_card"]
    assert not result.message_spans  # labelled, not spanned: a mask clears the map whole


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Reply(tokens=[Token(id=index, logprob=-1.0) for index in range(1, 40)]), id="token-ids"),
        pytest.param(Reply(chars=[Char(c=1), Char(c=3), Char(c=224), Char(c=224)]), id="small"),
        pytest.param(Reply(tokens=[Token(id=1001 + index) for index in range(6)]), id="ids"),
        pytest.param(Reply(chars=[Char(c=code) for code in codes("ssn 123-45-6789")[:1]]), id="one-value"),
    ],
)
def test_ordinary_values_of_repeated_messages_are_not_data(message) -> None:
    result = classify_message(message, CATALOG, DETECTORS)
    assert not result.message_spans and not detected(message)


def cheapest(message) -> int:
    """The smallest ``max_values`` that does not refuse ``message``."""
    low, high = 0, 10_000
    while low < high:
        middle = (low + high) // 2
        try:
            classify_message(message, CATALOG, DETECTORS, max_values=middle)
        except UpstreamError:
            low = middle + 1
        else:
            high = middle
    return low


def test_reading_across_elements_is_charged_as_reading_a_repeated_field() -> None:
    # The same shape, once worth reading as characters (a value reads as a digit) and once not
    # ("~" is nothing a built-in detector needs).
    worth = Reply(chars=[Char(c=code) for code in [126] * 14 + [49]])
    plain = Reply(chars=[Char(c=code) for code in [126] * 15])
    assert cheapest(worth) - cheapest(plain) == FIXED_STEP_VALUES


# Counts of a statistics reply (one success count a model): a 27 (ESC) and letters' codes
# after it, which read as characters move a terminal's cursor (review of this fix).
STATISTICS_COUNTS = [280, 151, 127, 209, 48, 100, 83, 141, 130, 107, 287, 274, 218, 89, 165, 60, 160, 234]
STATISTICS_COUNTS += [42, 27, 86, 76, 9, 110, 293, 273, 155, 173, 171, 120, 61, 106, 190, 123, 95, 67]


def statistics_reply(counts: list[int]) -> Any:
    from labelgate._proto.inference import model_extensions_pb2 as ext

    reply = ext.ModelStatisticsResponse()
    for index, count in enumerate(counts):
        reply.model_stats.add(name=f"m{index}").inference_stats.success.count = count
    return reply


def test_small_counts_of_a_statistics_reply_are_no_data() -> None:
    # Read as characters, an ESC and a letter after it cover every value with every detector
    # (a cursor moved): chance in records' numbers, not text (``messages.no_cursor_cover``).
    assert not detected(statistics_reply(STATISTICS_COUNTS))
    generator = random.Random(7)
    for _ in range(200):
        counts = [generator.randint(0, 300) for _ in range(generator.randint(2, 60))]
        assert not detected(statistics_reply(counts)), counts
    # What such counts spell is still found.
    assert detected(statistics_reply(codes("\x1b[31mssn 123-45-6789")))
