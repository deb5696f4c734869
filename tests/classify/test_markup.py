"""Markup a browser or a Markdown renderer drops between a value's characters (found by review,
rev-rest-render 1): read rendered (``markup.rendered``, with the folded form), and a value
only that reading shows masks the whole element; ordinary text with markup is masked no more
than before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelgate.classify import DetectorSet, classify_outputs, native
from labelgate.classify.folding import may_hide
from labelgate.classify.markup import gates_forced, may_render, rendered
from labelgate.enforce import apply_masks
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor
from tests.classify.test_folding import CATALOG, KEY, SSN
from tests.classify.test_folding_hidden import text_tensor_of_bytes
from tests.classify.test_hidden_forms import MASKS, MODEL

DETECTORS = DetectorSet.default()

SHOWN = {
    b"ssn 123<b></b>-45-6789": b"ssn 123-45-6789",
    b"ssn 123<!-- x -->-45-6789": b"ssn 123-45-6789",
    b"card 4111<span></span>1111<span></span>1111<span></span>1111": b"card 4111111111111111",
    b"card 4111<!---->1111<!---->1111<!---->1111": b"card 4111111111111111",
    b"ssn 123\\-45\\-6789": b"ssn 123-45-6789",
    b"ssn 12**3**-45-6789": b"ssn 123-45-6789",
    b"ssn 12`3`-45-6789": b"ssn 123-45-6789",
    b"ssn 12*3*-45~~-~~6789": b"ssn 123-45-6789",
    b"ssn _123_-__45__-6789": b"ssn 123-45-6789",
    b"sk_live_5 and v1_2 _3_": b"sk_live_5 and v1_2 3",  # within a word: none
    b"ssn 12[3](https://example.com/)-45-6789": b"ssn 123-45-6789",
    b"ssn 12![x](y.png)3-45-6789": b"ssn 123-45-6789",
    b"ssn 123<b title='>'>-45-6789": b"ssn 123-45-6789",
    b"ssn 123<style>p{}</style>-45<span hidden>0</span>-6789": b"ssn 123-45-6789",
    b"ssn 123<?x>-45<!x>-67</ 1>89": b"ssn 123-45-6789",
    b"a \\* b 2\\*3 \\_": b"a * b 2*3 _",  # escaped markers show as themselves
    b"<p>123</p><p>45</p>": b"\n123\n\n45\n",  # blocks are lines apart
    b"<td>4111</td><td>1111</td>": b"\t4111\t1111",  # cells a tab apart
    b'<div style="display:inline">4111</div><p>1111</p>': b"41111111",  # styled: maybe inline
}


@pytest.mark.parametrize("text", SHOWN)
def test_rendered_reads_text_as_a_renderer_shows_it(text: bytes) -> None:
    assert rendered(text) == SHOWN[text]


ORDINARY = [
    b"mail john_doe@example.com or jane.doe_x@example.org",
    b"price $1,234.50 and 12%",
    b"* first item\n* second item\n- third",
    b"<p>Hello <b>world</b>, see <a href='x'>this</a> now</p>",
    b'{"text": "line 1\\nline 2\\n", "path": "C:\\\\Users\\\\me"}',
    b"snake_case_name and __init__, sk_live_54A2kl and v1_2",
    b"x < y and y > z",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_does_not_ask_for_the_rendered_reading(text: bytes) -> None:
    assert not may_render(text)


# Values as written beside markup: the raw scan finds them, the rendered reading shows them
# at the same places (pieces rendered alike), so each is masked in its span as before.
NEAR_MARKUP = [
    f"<tr><td>{SSN}</td><td>ok</td></tr>".encode(),
    f"**SSN:** {SSN}. *Card*: `4111 1111 1111 1111`".encode(),
    b"Email: john_1990@example.com, price $1,234.50",
    f"1. **Step 1**: pay $1,234.50\n2. _then_ {SSN}\n* item".encode(),
    f"<p>Hello <b>world</b></p> {SSN}<br>".encode(),
]


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("raw", [True, False])
def test_values_beside_markup_are_masked_in_their_spans_as_before(use_native: bool, raw: bool) -> None:
    with native.forced(use_native):
        tensor = Tensor("notes", "BYTES", [len(NEAR_MARKUP)], list(NEAR_MARKUP))
        tensor = text_tensor_of_bytes(tensor) if raw else tensor
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    scanned = {name: hits for name, hits in DETECTORS.scan_each(list(NEAR_MARKUP)).items() if name != 2}
    assert result.spans["notes"] == scanned, "the raw scan's spans (but emails: internal), none whole"
    for value, shown in zip(NEAR_MARKUP, masked.values, strict=True):
        assert shown != b"[REDACTED]" and shown.count(b"[REDACTED]") == value.count(b"-45-") + value.count(
            b"4111 "
        ), shown
    assert masked.values[2] == NEAR_MARKUP[2], "no SSN or card: as written"


@pytest.mark.parametrize("use_native", [True, False])
def test_a_json_element_hiding_a_value_in_markup_is_masked_whole(use_native: bool) -> None:
    hidden = json.dumps({"contact": {"id": "ssn 12**3**-45-6789"}, "n": 1})
    plain = json.dumps({"contact": {"id": f"<b>{SSN}</b> **bold**"}, "n": 1})
    with native.forced(use_native):
        tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [2], [hidden.encode(), plain.encode()]))
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    assert masked.values[0] == b"[REDACTED]"
    assert json.loads(masked.values[1]) == {"contact": {"id": "<b>[REDACTED]</b> **bold**"}, "n": 1}


def test_the_native_scan_and_the_python_path_agree_on_markup() -> None:
    values = [
        b"ssn 123<b></b>-45-6789 and " + SSN.encode(),
        b"card 4111<!---->1111<!---->1111<!---->1111",
        *NEAR_MARKUP,
        *ORDINARY,
    ]
    spans = []
    for use_native in (True, False):
        with native.forced(use_native):
            tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [len(values)], values))
            spans.append(classify_outputs(MODEL, [tensor], CATALOG, DETECTORS).spans)
    assert spans[0] == spans[1]
    whole = [(hit.detector, hit.start, hit.end) for hit in spans[0]["notes"][0] if hit.start == 0]
    assert whole == [("us_ssn", 0, len(values[0]))], "shown only rendered: the whole element"


def test_an_output_name_hiding_a_value_in_markup_fails_the_reply() -> None:
    with pytest.raises(UpstreamError) as refused:
        classify_outputs(
            MODEL, [Tensor("card 4111<i></i>1111<i></i>1111<i></i>1111", "FP32", [0], [])], CATALOG, DETECTORS
        )
    assert refused.value.reason == "OUTPUT_NAME_DETECTED"


def test_the_native_raw_scan_reads_markup_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    # ASCII text without "{", a backslash or a control character: the one-call native scan
    # of the raw buffer (``spans_raw``) reads it as written; the rendered reading follows it.
    values = [
        b"ssn 123<b></b>-45-6789",
        b"card 4111<!---->1111<!---->1111<!---->1111",
        b"ssn 12**3**-45-6789",
        b"plain " + SSN.encode(),
    ]
    calls: list[Any] = []
    spans_raw = DetectorSet.spans_raw

    def spied(self: DetectorSet, *args: Any, **kwargs: Any) -> Any:
        calls.append(spans_raw(self, *args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(DetectorSet, "spans_raw", spied)
    with native.forced(True):
        tensor = text_tensor_of_bytes(Tensor("notes", "BYTES", [len(values)], values))
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
        if native.active():
            assert calls and calls[0] is not None, "the native raw scan read the tensor"
    assert masked.values == [b"[REDACTED]"] * 3 + [b"plain [REDACTED]"]


# Reference links (found by review, rev-fixes 2): CommonMark shows the text of ``[text][label]``,
# ``[text][]`` and ``[text]`` (with a definition line) without its brackets, as it does an
# inline link's.
REFERENCE_LINKS = {
    b"ssn 12[3][r]-45-6789\n\n[r]: http://x": b"ssn 123-45-6789\n\nr: http://x",
    b"ssn 12[3][]-45-6789\n\n[3]: http://x": b"ssn 123-45-6789\n\n3: http://x",
    b"ssn 12[3]-45-6789\n\n[3]: http://x": b"ssn 123-45-6789\n\n3: http://x",
    b"card 4111[1111][a]1111[1111][a]\n\n[a]: /": b"card 4111111111111111\n\na: /",
    b"ssn 123[][r]-45-6789": b"ssn 123-45-6789",
}


@pytest.mark.parametrize("text", REFERENCE_LINKS)
def test_rendered_drops_the_brackets_of_reference_links(text: bytes) -> None:
    assert rendered(text) == REFERENCE_LINKS[text]


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "values"])
def test_a_value_a_reference_link_splits_is_masked(use_native: bool, raw: bool) -> None:
    values = list(REFERENCE_LINKS)
    with native.forced(use_native):
        tensor = Tensor("notes", "BYTES", [len(values)], values)
        tensor = text_tensor_of_bytes(tensor) if raw else tensor
        result = classify_outputs(MODEL, [tensor], CATALOG, DETECTORS)
        [masked] = apply_masks([tensor], result, MASKS, KEY)
    for value, shown in zip(values, masked.values, strict=True):
        assert shown != value, value
        assert b"6789" not in shown and b"4111" not in shown, shown


# Bytes each gate looks at, and their neighbours: a digit, a letter, a separator, markup, a
# punctuation a backslash escapes, a space, a dropped control, a byte past ASCII. Few, so
# that every pattern of three of them turns up among the examples.
GATE_PIECES = [bytes([code]) for code in b"1a-_)]<\\*! \x00\xff"]
# Each way the two gates answer: a parenthesis alone opens no gate, a bracket does.
GATE_EXAMPLES = [b"(555)1", b"])1", b"sk_live_ )1", b"sk_live_5)1", b"1\xff", b"a\x001", b"1\\!", b"1\\a"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(GATE_PIECES), max_size=12).map(b"".join))
def test_the_native_gates_answer_as_the_python_ones(text: bytes) -> None:
    with gates_forced(False):
        expected = may_render(text), may_hide(text)
    with gates_forced(True):
        assert (may_render(text), may_hide(text)) == expected


@pytest.mark.parametrize("text", [*SHOWN, *GATE_EXAMPLES])
def test_the_native_gates_agree_on_the_rendered_examples(text: bytes) -> None:
    with gates_forced(False):
        expected = may_render(text), may_hide(text)
    with gates_forced(True):
        assert (may_render(text), may_hide(text)) == expected
