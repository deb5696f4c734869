"""A value split across a routed stream's messages is placed, not counted
(``straddling.straddled``).

A decoy: a whole value in one piece that the next piece's first character turns into no
value (``321-54-9876`` + ``1``). Counted per detector, the pieces alone held as many values
as the joined text, so a value split across two other pieces left in pieces (review s13,
rev-labels finding 2)."""

from __future__ import annotations

import pytest
from google.protobuf import wrappers_pb2

from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import UNREADABLE, SplitValues, straddled
from labelgate.errors import LabelgateError
from tests.classify.test_split_values import stream

DECOYED = {
    "ssn": ["ssn 123-45-", "6789 and 321-54-9876", "1 bye"],
    "card": ["card 4111 1111 ", "1111 1111 and 5555 5555 5555 4444", "7 bye"],
    "folded": ["ssn １２３-４５-", "６７８９ and ３２１-５４-９８７６", "１ bye"],
    "escaped": ["ssn \\u0031\\u0032\\u0033-4", "5-6789 and \\u0033\\u0032\\u0031-54-9876", "1 bye"],
    "referenced": ["ssn &#49;&#50;&#51;-4", "5-6789 and &#51;&#50;&#49;-54-9876", "1 bye"],
    "rendered": ["ssn 123<b>", "</b>-45-6789 and 321-54-9876", "1 bye"],
}
SPLIT = {
    "ssn": "us_ssn",
    "card": "credit_card",
    "folded": "us_ssn",
    "escaped": "us_ssn",
    "referenced": "us_ssn",
    "rendered": "us_ssn",
}


@pytest.mark.parametrize("case", DECOYED)
def test_a_decoy_does_not_stand_in_for_a_split_value(case: str) -> None:
    pieces = DECOYED[case]
    assert straddled(DetectorSet(), [piece.encode() for piece in pieces]) == SPLIT[case]
    # Held until no later piece can join them (text that cannot be cut: to the end), then refused.
    splitter = SplitValues(DetectorSet(), CarryOver(DetectorSet(), window=32).cut_point)
    with pytest.raises(LabelgateError) as refused:
        for piece in pieces:
            assert splitter.hold(wrappers_pb2.StringValue(value=piece)) == []
        splitter.flush()
    assert refused.value.reason == "STREAM_VALUE_SPLIT"
    assert SPLIT[case] in refused.value.message


WHOLE = {
    "side by side": ["ann@x.com", "bob@y.com", "cid@z.org"],
    "folded, in one piece": [
        "ssn １２３-４５-６７８９ ok",
        " and card ４１１１ １１１１ １１１１ １１１１",
        " bye",
    ],
    "escaped, in one piece": ["ssn \\u0031\\u0032\\u0033-45-6789 ok", " and then", " bye"],
    "a decoy alone": ["ref 111-22-3333\u200b", "0 and", " bye"],
}


@pytest.mark.parametrize("case", WHOLE)
def test_values_each_piece_covers_leave(case: str) -> None:
    pieces = WHOLE[case]
    assert straddled(DetectorSet(), [piece.encode() for piece in pieces]) is None
    assert stream(pieces, cut=lambda text: None) == pieces


def test_a_reading_the_pieces_do_not_split_into_places_nothing() -> None:
    # The escape straddles the pieces: decoded, neither piece reads as the joined text does.
    pieces = [b"ssn 123-45-6789 \\", b"u0031 ok"]
    assert straddled(DetectorSet(), pieces) == "us_ssn"


def test_joined_text_that_cannot_be_folded_is_refused() -> None:
    # A cursor movement can show the pieces' characters in any order: no reading places them.
    pieces = ["ssn 123-45-\x1b[2D", "6789 ok"]
    assert straddled(DetectorSet(), [piece.encode() for piece in pieces]) == UNREADABLE
    splitter = SplitValues(DetectorSet(), lambda text: None)
    with pytest.raises(LabelgateError) as refused:
        for piece in pieces:
            splitter.hold(wrappers_pb2.StringValue(value=piece))
        splitter.flush()
    assert refused.value.reason == "STREAM_VALUE_SPLIT"
    assert "cannot be read" in refused.value.message
