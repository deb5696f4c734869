"""Values that show only in the order a reader sees the text in: written backwards inside a
RIGHT-TO-LEFT OVERRIDE (``ssn \\u202e9876-54-321\\u202c`` shows as ``ssn 123-45-6789``),
or in digit groups a right-to-left embedding, letter or mark shows in reverse order. Found by
``shown_text`` (its display readings, ``display_order``) on every path that folds text: text
tensors, JSON leaves, message strings, parameters, output names, integer tensors read as
characters, a stream's pieces; and what that costs right-to-left text that hides nothing."""

from __future__ import annotations

import json
import random

import pytest

from labelgate.classify import DetectorSet, classify_message, classify_outputs, native
from labelgate.classify.classifier import names_detected
from labelgate.classify.detectors import Detection
from labelgate.classify.folding import may_hide
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.markup import gates_forced
from labelgate.classify.parameters import Parameter, classify_parameters
from labelgate.classify.shown_text import rendered_reading
from labelgate.classify.split_values import straddled
from labelgate.enforce import apply_masks
from tests.classify.order_proto import Order
from tests.classify.test_folding import CATALOG, KEY, text_tensor

DETECTORS = DetectorSet.default()
SSN, CARD, TOKEN = "123-45-6789", "4111 1111 1111 1111", "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2"
RLO, RLE, PDF, RLI, PDI, RLM = "\u202e", "\u202b", "\u202c", "\u2067", "\u2069", "\u200f"
ALEF, BET = "\u05d0", "\u05d1"
# Each shows a value to a reader (a browser lays each out so); none is found as stored.
SHOWN = {
    "ssn reversed": (f"ssn {RLO}{SSN[::-1]}{PDF}", "us_ssn"),
    "card reversed": (f"card {RLO}{CARD[::-1]}{PDF}", "credit_card"),
    "key reversed": (f"key {RLO}{TOKEN[::-1]}{PDF}", "secret"),
    "ssn reversed in an isolate": (f"ssn {RLI}{RLO}{SSN[::-1]}{PDF}{PDI}", "us_ssn"),
    "half an ssn reversed": (f"ssn 123-45-{RLO}9876{PDF} ok", "us_ssn"),
    "ssn groups in an embedding": (f"ssn {RLE}6789 45 123{PDF}", "us_ssn"),
    "card groups after a Hebrew letter": (f"{ALEF} 1111 1111 1111 4111", "credit_card"),
    "card groups after a right-to-left mark": (f"{RLM}1111 1111 1111 4111", "credit_card"),
    "ssn reversed past a newline a browser collapses": (f"ssn {RLO}\n{SSN[::-1]}{PDF}", "us_ssn"),
    "ssn reversed around markup": (f"ssn {RLO}9876-54-<b></b>321{PDF}", "us_ssn"),
    "ssn reversed around a colour": (f"ssn {RLO}9876-54\x1b[0m-321{PDF}", "us_ssn"),
}
WRITTEN = [SSN, CARD, TOKEN]


@pytest.mark.parametrize("name", list(SHOWN))
def test_a_value_only_its_display_order_shows_spans_the_whole_text(name: str) -> None:
    text, detector = SHOWN[name]
    data = text.encode()
    assert detector not in {hit.detector for hit in DETECTORS.scan(data)}, "hidden from a raw scan"
    with gates_forced(True):
        assert may_hide(data)
    with gates_forced(False):
        assert may_hide(data)
    hidden = hidden_by_folding([data], DETECTORS, DETECTORS.scan_each([data]))
    assert (detector, 0, len(data)) in {(hit.detector, hit.start, hit.end) for hit in hidden.get(0, ())}


# Right-to-left text with values a raw scan finds and digits, marks and isolates that hide
# nothing: each value is masked where it is, no text is spanned whole.
PLAIN = [
    f"שלום {SSN} עולם",
    f"כרטיס {CARD} בבקשה",  # its groups show in reverse order: the same characters, covered
    "مرحبا jo@example.com شكرا",
    "اتصل بي على +1 555 123 4567 الآن",
    f"טלפון{RLM} 03-1234567 {RLM}ת.ז. 12345678",
    f"{RLI}{ALEF}{BET} 12{PDI} 2024-01-31 {ALEF}",
    "سعر ١٢٣٫٤٥ ريال، ٣ قطع",
]


def prose(letters: str, rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(map(len, words)) < size:
        roll = rng.random()
        if roll < 0.1:
            words.append(str(rng.randint(0, 99999)))
        elif roll < 0.12:
            words.append(RLM)
        elif roll < 0.14:
            words.append("\n")
        else:
            words.append("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))))
    return " ".join(words)


def test_right_to_left_text_that_hides_nothing_is_not_spanned_whole() -> None:
    rng = random.Random(7)
    corpus = [
        *PLAIN,
        *(prose("אבגדהוזחטיכלמנסעפצקרשת", rng, 2000) for _ in range(20)),
        *(prose("ابتثجحخدذرزسشصضطظعغفقكلمنهوي", rng, 2000) for _ in range(20)),
    ]
    texts = [text.encode() for text in corpus]
    found = DETECTORS.scan_each(texts)
    assert {0, 1, 2, 3} <= set(found)
    assert hidden_by_folding(texts, DETECTORS, found) == {}


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_a_text_tensor_shows_no_value_reversed_once_masked(use_native: bool, raw: bool) -> None:
    values = [text for text, _ in SHOWN.values()] + [f"{ALEF} ssn {SSN}", "ok"]
    with native.forced(use_native):
        tensor = text_tensor("free", values, raw)
        result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
        masks = [
            {"path": f"outputs.free{{{name}}}", "strategy": "redact"}
            for name in ("us_ssn", "credit_card", "secret")
        ]
        [masked] = apply_masks([tensor], result, masks, KEY)
    assert masked.values[: len(SHOWN)] == [b"[REDACTED]"] * len(SHOWN)
    assert masked.values[-2:] == [f"{ALEF} ssn [REDACTED]".encode(), b"ok"], "a plain value keeps its span"


@pytest.mark.parametrize("ascii_escapes", [True, False])
def test_a_json_leaf_written_backwards_is_masked(ascii_escapes: bool) -> None:
    # ensure_ascii writes the override as \u202e: the classifier reads the escapes decoded.
    document = json.dumps({"contact": {"id": SHOWN["ssn reversed"][0]}}, ensure_ascii=ascii_escapes)
    tensor = text_tensor("notes", [document, json.dumps({"contact": {"id": "x"}})], raw=True)
    result = classify_outputs("customer-profile", [tensor], CATALOG, DETECTORS)
    assert "outputs.notes{us_ssn}" in {field.path for field in result.fields}
    [masked] = apply_masks([tensor], result, [{"path": "outputs.notes{us_ssn}", "strategy": "redact"}], KEY)
    assert SSN[::-1].encode() not in masked.values[0] and b"9876" not in masked.values[0]
    assert json.loads(masked.values[1]) == {"contact": {"id": "x"}}


def test_escaped_text_written_backwards_is_found_decoded() -> None:
    escaped = json.dumps(SHOWN["card reversed"][0]).encode()  # "card \u202e1111 ... 1114\u202c"
    assert b"\\u202e" in escaped
    [hit] = hidden_by_escapes([escaped], DETECTORS)[0]
    assert (hit.detector, hit.start, hit.end) == ("credit_card", 0, len(escaped))


def test_message_strings_parameters_and_output_names_written_backwards_are_found() -> None:
    text = SHOWN["ssn reversed"][0]
    order = Order(id=text, attrs={"k": SHOWN["card reversed"][0]})
    labels = {field.path: set(field.labels) for field in classify_message(order, CATALOG, DETECTORS).fields}
    assert labels["id{us_ssn}"] == {"confidential"}
    assert "confidential" in labels["attrs"]
    parameter = Parameter("", "note", text)
    result = classify_parameters([parameter], {"note": "public"}, DETECTORS)
    assert "parameters.note{us_ssn}" in {field.path for field in result.fields}
    assert names_detected([f"out_{RLO}{SSN[::-1]}{PDF}", "notes"], DETECTORS) == {0: "us_ssn"}


def exact(text: bytes) -> list[Detection]:
    raise AssertionError("built-in detectors read characters themselves")


def test_the_rendered_reading_shows_what_an_override_reverses_and_leaves_plain_values_out() -> None:
    shown = rendered_reading(SHOWN["ssn reversed"][0].encode())
    assert shown is not None and SSN.encode() in shown
    # Right-to-left letters alone reorder runs, none within: only the runs that show so.
    assert rendered_reading("مرحبا jo@example.com شكرا".encode()) is None
    shown = rendered_reading(SHOWN["card groups after a Hebrew letter"][0].encode())
    assert shown is not None and b"4111 1111 1111 1111" in shown


def test_a_stream_that_opens_an_override_in_one_piece_and_reverses_a_value_in_the_next_is_refused() -> None:
    pieces = [f"ssn {RLO}9876-".encode(), f"54-321{PDF} ok".encode()]
    assert not any(DETECTORS.scan(piece) for piece in pieces)
    assert not any(hidden_by_folding([piece], DETECTORS) for piece in pieces), "no piece shows it alone"
    assert straddled(DETECTORS, pieces) == "us_ssn"
    # A token stream in Arabic with an email is read as before: nothing split, nothing refused.
    assert straddled(DETECTORS, ["مرحبا jo@exa".encode(), "mple.com شكرا".encode()]) == "email"
    assert straddled(DETECTORS, ["مرحبا jo@example.com".encode(), " شكرا".encode()]) is None
