"""Values hidden from the raw scan of a reply's text in ways a reader undoes are found and
masked, on every text path (text elements, JSON leaves and keys, output names), with the
extension and without: character references (``&#52;``), digits newer than the runtime's
Unicode, UTF-16 and UTF-32 text, cursor movements, bytes that are not UTF-8 read in a legacy
encoding or as CESU-8. Found by review (rev-tensors, rev-rest-render), each reached an
analyst unmasked."""

from __future__ import annotations

import json

import pytest

from labelgate.classify import DetectorSet, classify_outputs, native
from labelgate.classify.json_elements import KEY_DETECTED
from labelgate.enforce import apply_masks
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG, KEY, SSN
from tests.classify.test_folding_hidden import text_tensor_of_bytes

DETECTORS = DetectorSet.default()
CARD = "4111111111111111"
MODEL = "customer-profile"


def references(text: str, hexadecimal: bool = False) -> str:
    return "".join(f"&#x{ord(char):x};" if hexadecimal else f"&#{ord(char)};" for char in text)


def digits_from(text: str, zero: int) -> str:
    return text.translate({ord(digit): zero + int(digit) for digit in "0123456789"})


def circled(digits: str) -> str:
    """``digits`` (no zeros) in circled digits: ``①``."""
    return "".join(chr(0x2460 + int(digit) - 1) for digit in digits)


def cesu8(text: str) -> bytes:
    """``text`` in CESU-8: UTF-8, but a character past U+FFFF written as its two UTF-16
    surrogates, each as UTF-8 (Java's modified UTF-8)."""
    units = text.encode("utf-16-le")
    surrogates = "".join(chr(int.from_bytes(units[at : at + 2], "little")) for at in range(0, len(units), 2))
    return surrogates.encode("utf-8", "surrogatepass")


FORMS = {
    "decimal references": f"card {references(CARD)}".encode(),
    "hexadecimal references": f"ssn {references(SSN, hexadecimal=True)}".encode(),
    "Kawi digits (15.0)": f"card {digits_from(CARD, 0x11F50)}".encode(),
    "Nag Mundari digits (15.0)": f"ssn {digits_from(SSN, 0x1E4F0)}".encode(),
    "outlined digits (16.0)": f"card {digits_from(CARD, 0x1CCF0)}".encode(),
    "UTF-16 with a BOM, full-width": f"ssn {digits_from(SSN, 0xFF10)}".encode("utf-16"),
    "UTF-16-LE, Arabic-Indic": f"ssn {digits_from(SSN, 0x660)}".encode("utf-16-le"),
    "UTF-16-BE, zero-width spaces": ("card " + "\u200b".join(CARD)).encode("utf-16-be"),
    "UTF-32 with a BOM, no-break spaces": "card 4111\u00a01111\u00a01111\u00a01111".encode("utf-32"),
    "cursor left over a decoy": f"card 9999\x1b[4D{CARD}".encode(),
    # Found by review (rev-new L3): named references, with no numeric one beside them.
    "no-break space references": b"card 4111&nbsp;1111&nbsp;1111&nbsp;1111",
    "en dash references": b"ssn 123&ndash;45&ndash;6789",
    "minus references": b"ssn 123&minus;45&minus;6789",
    "hyphen references": b"ssn 123&hyphen;45&hyphen;6789",
    "soft hyphen references": ("card " + "&shy;".join(CARD)).encode(),
    "no-break spaces, no semicolons": b"card 4111&nbsp1111&nbsp1111&nbsp1111",
    # Found by review (rev-rest-render 2): bytes that are not UTF-8, in the encoding a client
    # decodes them as (``other_encodings.legacy_readings``, ``decoded_text.utf8_read``).
    "CESU-8, mathematical bold digits": cesu8(f"card {digits_from(CARD, 0x1D7CE)}"),
    "GBK, full-width": f"card {digits_from(CARD, 0xFF10)} ssn {digits_from(SSN, 0xFF10)}".encode("gbk"),
    "Shift_JIS, full-width": f"ssn {digits_from(SSN, 0xFF10)}".encode("shift_jis"),
    "GBK, full-width, a stray byte": f"ssn {digits_from(SSN, 0xFF10)}".encode("gbk") + b"\xff",
    "CP932, circled digits": f"card {circled(CARD)}".encode("cp932"),
    "EUC-KR, circled digits": f"card {circled(CARD)}".encode("cp949"),
    "Big5, full-width": f"card {digits_from(CARD, 0xFF10)}".encode("big5"),
    "Windows-1252, en dashes": "ssn 123\u201345\u20136789".encode("cp1252"),
    "JSON-looking, GBK inside": b'{"note": "' + f"ssn {digits_from(SSN, 0xFF10)}".encode("gbk") + b'"}',
    # Found by review (rev-rest-render 1): markup a browser or a Markdown renderer (a chat UI)
    # drops between a value's characters (``markup.rendered``, read with the folded form).
    "empty HTML element": b"ssn 123<b></b>-45-6789",
    "HTML comment": b"ssn 123<!-- x -->-45-6789",
    "empty spans": b"card 4111<span></span>1111<span></span>1111<span></span>1111",
    "empty comments": b"card 4111<!---->1111<!---->1111<!---->1111",
    "Markdown backslash escapes": b"ssn 123\\-45\\-6789",
    "Markdown emphasis": b"ssn 12**3**-45-6789",
    "Markdown code span": b"ssn 12`3`-45-6789",
    "Markdown strikethrough, underscores": b"card 4111-~~1111~~-_1111_-1111",
    "Markdown link": b"ssn 12[3](https://example.com)-45-6789",
    "abruptly closed comments": b"card 4111<!-->1111<!--->1111<?x>1111",
    "a quoted > in an attribute": b'ssn 123<b title=">">-45-6789',
    "a hidden element between": b"ssn 123<span hidden>0</span>-45-6789",
    "script between": b"card 4111<script>var x = 1;</script>111111111111",
    "tag, full-width digits": f"ssn {digits_from('123', 0xFF10)}<i></i>-45-6789".encode(),
    "tag and a reference": b"ssn 123<b></b>&#45;45-6789",
    "tag in JSON escapes": b"ssn 123\\u003cb>\\u003c/b>-45-6789",
    "tag after a control character": b"ssn 123\x00<b></b>-45-6789",
}
MASKS = [{"path": f"outputs.notes{{{name}}}", "strategy": "redact"} for name in ("us_ssn", "credit_card")]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_hidden_values_in_text_elements_are_found_and_masked_whole(use_native: bool, raw: bool) -> None:
    values = [*FORMS.values(), b"plain &amp; fine", f"ssn {SSN}".encode()]
    with native.forced(use_native):
        tensor = Tensor("notes", "BYTES", [len(values)], values)
        tensor = text_tensor_of_bytes(tensor) if raw else tensor
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    for name, value in zip(FORMS, masked.values, strict=False):
        assert value == b"[REDACTED]", name
    assert masked.values[-2:] == [b"plain &amp; fine", b"ssn [REDACTED]"]


def test_the_native_scan_and_the_python_path_agree_on_references() -> None:
    values = [
        f"card {references(CARD)} and ssn {SSN}".encode(),
        b"Q&amp;A &#39;quoted&#39;",
        f"{CARD}".encode(),
    ]
    spans = []
    for use_native in (True, False):
        with native.forced(use_native):
            spans.append(
                classify_outputs(
                    MODEL, [text_tensor_of_bytes(Tensor("notes", "BYTES", [3], values))], CATALOG, DETECTORS
                ).spans
            )
    assert spans[0] == spans[1]
    assert {hit.detector for hit in spans[0]["notes"][0]} == {"credit_card", "us_ssn"}


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_leaf_hiding_a_value_in_references_is_masked(use_native: bool) -> None:
    hidden = json.dumps({"contact": {"id": f"card {references(CARD)}"}, "n": 1})
    plain = json.dumps({"contact": {"id": "x"}, "n": 1})
    with native.forced(use_native):
        tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [2], [hidden.encode(), plain.encode()]))
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [leaf] = result.json_elements["notes"][0]
        assert [(hit.detector, hit.start, hit.end) for hit in leaf.detections] == [
            ("credit_card", 0, len(f"card {references(CARD)}"))
        ], "found only decoded: the whole leaf"
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    assert json.loads(masked.values[0]) == {"contact": {"id": "[REDACTED]"}, "n": 1}
    assert json.loads(masked.values[1]) == {"contact": {"id": "x"}, "n": 1}


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_leaf_hiding_a_value_in_named_references_is_masked(use_native: bool) -> None:
    # Decoded, the dashes are folded too: the element is opaque, masked whole (``FOLDED_TEXT``).
    leaf = "ssn 123&ndash;45&ndash;6789"
    hidden = json.dumps({"contact": {"id": leaf}, "n": 1})
    plain = json.dumps({"contact": {"id": "Q&amp;A"}, "n": 1})
    with native.forced(use_native):
        tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [2], [hidden.encode(), plain.encode()]))
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    assert masked.values[0] == b"[REDACTED]"
    assert json.loads(masked.values[1]) == {"contact": {"id": "Q&amp;A"}, "n": 1}


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_key_hiding_a_value_in_references_makes_the_element_opaque(use_native: bool) -> None:
    element = json.dumps({f"card {references(CARD)}": "x"}).encode()
    with native.forced(use_native):
        result = classify_outputs(
            MODEL, [text_tensor_of_bytes(Tensor("notes", "BYTES", [1], [element]))], CATALOG, DETECTORS
        )
    sources = {
        source for field in result.fields for by_label in field.sources.values() for source in by_label
    }
    assert f"catalog:fail_closed:{KEY_DETECTED}" in sources


NAMES = {
    "references": f"card_{references(CARD)}",
    "Kawi digits": f"card_{digits_from(CARD, 0x11F50)}",
    "unassigned code points": "card_" + "\U00040000".join(CARD),
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_an_output_name_hiding_a_value_fails_the_reply(name: str) -> None:
    with pytest.raises(UpstreamError) as refused:
        classify_outputs(MODEL, [Tensor(name, "FP32", [0], [])], CATALOG, DETECTORS)
    assert refused.value.reason == "OUTPUT_NAME_DETECTED"
