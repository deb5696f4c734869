"""Text the gateway decodes otherwise than as UTF-8 (UTF-16, UTF-32, a legacy encoding:
``other_encodings``) is read in display order too, as UTF-8 text is (``shown_text``). Found by
review (ninth round): ``ssn \\u202e9876-54-321\\u202c`` in UTF-16LE (a BYTES element, a UINT8
tensor's bytes, an INT16 tensor's raw bytes) went out, though a reader decoding it so shows
``ssn 123-45-6789``; the same in UTF-8 was masked. Decodes holding no right-to-left character
or bidi control are read as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, display_order, other_encodings
from labelgate.classify.folding import UNFOLDABLE
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.other_encodings import (
    LEGACY_ENCODINGS,
    legacy_folded,
    legacy_readings,
    wide_folded,
    wide_reading,
)
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_file(REPO / "rego" / "labelgate" / "catalog" / "data.json")
DETECTORS = DetectorSet.default()
SSN, CARD, KEY = "123-45-6789", "4111 1111 1111 1111", "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
RLO, PDF, RLI, PDI = "\u202e", "\u202c", "\u2067", "\u2069"
REVERSED = {
    "us_ssn": f"ssn {RLO}{SSN[::-1]}{PDF}",
    "credit_card": f"card {RLO}{CARD[::-1]}{PDF}",
    "secret": f"key {RLO}{KEY[::-1]}{PDF}",
    # No control: a Hebrew letter shows the groups in reverse order (a right-to-left paragraph).
    "credit_card (implicit)": "\u05d0 1111 1111 1111 4111",
    "us_ssn (isolated)": f"ssn {RLI}{RLO}{SSN[::-1]}{PDF}{PDI}",
}
# The wide encodings, with and without a byte order mark, and the legacy one that holds the
# bidi controls and Hebrew (GB18030's four-byte sequences hold every code point).
ENCODINGS = ("utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32-be", "utf-32", "gb18030")
HARMLESS = f"note {RLO}olleh{PDF} \u05d0 12 34 \u05d1 ok"


def detector_of(name: str) -> str:
    return name.split()[0]


def decoded(tensor: Tensor) -> Tensor:
    response = pb.ModelInferResponse()
    encode_outputs(response, [tensor], raw=True)
    (result,) = decode_outputs(response)
    return result


def classified(tensor: Tensor) -> set[str]:
    result = classify_outputs("m", [tensor], CATALOG, DETECTORS)
    return {hit.detector for hits in result.spans.get(tensor.name, {}).values() for hit in hits}


def as_bytes(data: bytes) -> Tensor:
    return decoded(Tensor("out", "BYTES", [1], [data]))


def as_uint8(data: bytes) -> Tensor:
    return decoded(Tensor("out", "UINT8", [len(data)], list(data)))


def as_int16(data: bytes) -> Tensor:
    """The bytes as an INT16 tensor's raw buffer (a client's ``tobytes()``)."""
    data = data + b"\x00" * (len(data) % 2)
    return decoded(Tensor("out", "INT16", [len(data) // 2], np.frombuffer(data, dtype="<i2").tolist()))


CONTAINERS = {"BYTES": as_bytes, "UINT8": as_uint8, "INT16 raw bytes": as_int16}


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", list(REVERSED))
def test_a_value_shown_forwards_in_another_encoding_is_found(
    name: str, encoding: str, container: str
) -> None:
    data = REVERSED[name].encode(encoding)
    if container == "INT16 raw bytes" and encoding == "gb18030":
        # Wider numbers' raw bytes are decoded only when they read as text (mostly UTF-8,
        # ``numbers._reads_as_text``): a few words of ASCII around the value.
        data = b"notes of the call as taken: " + data + b" (end of notes)"
    assert detector_of(name) in classified(CONTAINERS[container](data)), data


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", list(REVERSED))
def test_a_value_only_a_display_order_of_a_decode_shows_spans_the_text(name: str, encoding: str) -> None:
    data = REVERSED[name].encode(encoding)
    hidden = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data]))
    assert (detector_of(name), 0, len(data)) in {
        (hit.detector, hit.start, hit.end) for hit in hidden.get(0, ())
    }


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_wide_folded_holds_the_display_reading(encoding: str) -> None:
    form = wide_folded(REVERSED["us_ssn"].encode(encoding))
    assert form is not None and form is not UNFOLDABLE
    assert SSN.encode() in form


@pytest.mark.parametrize("container", list(CONTAINERS))
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_harmless_text_in_another_encoding_is_not_masked(encoding: str, container: str) -> None:
    data = HARMLESS.encode(encoding)
    assert classified(CONTAINERS[container](data)) == set()


def test_decodes_that_nothing_reorders_read_as_before() -> None:
    """No right-to-left character or bidi control: the decode's folded form alone."""
    for encoding in ("utf-16-le", "utf-32-be"):
        data = f"ssn {SSN[::-1]} card \uff14111".encode(encoding)
        form = wide_reading(data)
        assert form is not None and b"\n" not in form
    data = "card \uff14111 \u2014 ok".encode("gb18030")
    readings = legacy_readings(data)
    assert readings and all(b"\n" not in form for _, form in readings)


def test_a_legacy_reading_and_its_piece_by_piece_fold_agree() -> None:
    """``legacy_folded`` folds as ``legacy_readings`` reads (a piece's own reading is found
    among its readings, ``split_values``)."""
    data = REVERSED["us_ssn"].encode("gb18030")
    readings = dict(legacy_readings(data))
    assert SSN.encode() in readings["gb18030"]
    assert legacy_folded("gb18030", data) == readings["gb18030"]


def test_gb18030_is_the_only_legacy_encoding_that_holds_a_reordering_character() -> None:
    """Only GB18030's decodes are read in display order (``other_encodings._REORDERING_ENCODINGS``):
    no other legacy encoding read holds a right-to-left character or a bidi control, so none
    of them decodes to one."""
    reordering = "".join(
        chr(code)
        for first, last in display_order._REORDERING
        for code in range(first, last + 1)
        if not 0xD800 <= code <= 0xDFFF
    )
    holding = set()
    for encoding in LEGACY_ENCODINGS:
        if any(char.encode(encoding, "ignore") for char in reordering):
            holding.add(encoding)
    assert holding == other_encodings._REORDERING_ENCODINGS
