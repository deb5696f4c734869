from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from labelgate.classify.folding import UNFOLDABLE, folded
from labelgate.classify.other_encodings import wide_folded
from labelgate.enforce.strategies import (
    HASH_KEY_INVALID,
    MASK_INVALID,
    STRATEGIES,
    Mask,
    Masker,
    MaskIndex,
    covering,
    covers,
    replace_spans,
    strategy_rank,
    strongest,
    zero_of,
)
from labelgate.errors import ConfigError, PolicyUnavailable

KEY = b"k" * 32


def mask(strategy: str, **params: object) -> Mask:
    return Mask("p", strategy, params)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"path": "p", "strategy": "shuffle", "params": {}}, "unknown strategy 'shuffle'"),
        ({"path": "", "strategy": "null", "params": {}}, "non-empty string"),
        ({"strategy": "null"}, "non-empty string"),
        ({"path": "p", "strategy": "partial", "params": {"keep_last": -1}}, "keep_last"),
        ({"path": "p", "strategy": "partial", "params": {"keep_last": True}}, "keep_last"),
        ({"path": "p", "strategy": "redact", "params": {"replacement": 3}}, "replacement"),
        ({"path": "p", "strategy": "redact", "params": {"colour": "red"}}, "unknown params ['colour']"),
        ("outputs.x", "must be an object"),
    ],
)
def test_invalid_masks_raise_a_deny(value: object, problem: str) -> None:
    with pytest.raises(PolicyUnavailable) as caught:
        Mask.coerce(value)  # type: ignore[arg-type]
    assert caught.value.reason == MASK_INVALID
    assert problem in caught.value.message


def test_masks_coerce_from_policy_result_items() -> None:
    item = {"path": "outputs.ssn", "strategy": "partial", "params": {"keep_last": 2}}
    assert Mask.coerce(item) == Mask("outputs.ssn", "partial", {"keep_last": 2})
    assert Mask.coerce({"path": "x", "strategy": "null"}).params == {}
    same = Mask("x", "null")
    assert Mask.coerce(same) is same


def test_the_most_protective_mask_wins_per_path() -> None:
    masks = [
        Mask("a", "partial", {"keep_last": 4}),
        Mask("a", "partial", {"keep_last": 2}),
        Mask("b", "hash"),
        Mask("b", "redact"),
        Mask("c", "redact"),
        Mask("c", "null"),
    ]
    chosen = strongest(masks)
    assert chosen["a"].keep_last == 2
    assert chosen["b"].strategy == "redact"
    assert chosen["c"].strategy == "null"


def test_mask_index_matches_exact_paths_and_globs() -> None:
    index = MaskIndex(
        [Mask("outputs.ssn", "hash"), Mask("outputs.*", "partial"), Mask("outputs.doc[].a", "null")]
    )
    assert index.lookup("outputs.ssn").strategy == "hash"  # type: ignore[union-attr]
    assert index.lookup("outputs.name").strategy == "partial"  # type: ignore[union-attr]
    assert index.lookup("outputs.doc[].a").strategy == "null"  # type: ignore[union-attr]
    assert index.lookup("other") is None
    assert not MaskIndex([])


def test_redact() -> None:
    masker = Masker(KEY)
    assert masker.text("secret", mask("redact")) == "[REDACTED]"
    assert masker.raw(b"secret", mask("redact", replacement="<gone>")) == b"<gone>"


@pytest.mark.parametrize(
    ("value", "keep_last", "expected"),
    [
        ("4111111111111111", 4, "************1111"),
        ("123-45-6789", 4, "*******6789"),
        ("abc", 4, "***"),
        ("abcd", 4, "****"),
        ("secret", 0, "******"),
        ("", 4, ""),
    ],
)
def test_partial_never_shows_a_whole_value(value: str, keep_last: int, expected: str) -> None:
    assert Masker(KEY).text(value, mask("partial", keep_last=keep_last)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A card and an SSN in circled numbers, two digits a character: found folded, and
        # what is kept reads as at most four characters.
        ("\u32b6\u246a\u246a\u246a\u246a\u246a\u246a\u246a", "******\u246a\u246a"),
        ("\u246b3-\u32ba-\u246b\u325e", "*****\u246b\u325e"),
        ("１２３-４５-６７８９", "*******６７８９"),
        ("4\u200b1\u200b1\u200b1", "*******"),  # four digits in all: never the whole value
    ],
)
def test_partial_keeps_what_reads_as_at_most_keep_last_characters(value: str, expected: str) -> None:
    assert Masker(KEY).text(value, mask("partial", keep_last=4)) == expected
    assert Masker(KEY).raw(value.encode(), mask("partial", keep_last=4)) == expected.encode()


def test_partial_defaults_to_the_last_four() -> None:
    assert Masker(KEY).raw(b"4111111111111111", mask("partial")) == b"************1111"


def test_partial_keeps_undecodable_bytes_intact_in_the_kept_tail() -> None:
    assert Masker(KEY).raw(b"\xfe\xfeabc\xff", mask("partial", keep_last=2)) == b"****c\xff"


def test_hash_is_a_keyed_stable_hmac() -> None:
    masker = Masker(KEY, [mask("hash")])
    expected = "hmac:" + hmac.new(KEY, b"123-45-6789", hashlib.sha256).hexdigest()
    assert masker.text("123-45-6789", mask("hash")) == expected
    assert masker.raw(b"123-45-6789", mask("hash")) == expected.encode()
    assert masker.json_value("123-45-6789", mask("hash")) == expected
    assert Masker(b"other-key-of-16-bytes").text("123-45-6789", mask("hash")) != expected


def test_hash_of_a_json_value_ignores_key_order() -> None:
    masker = Masker(KEY)
    assert masker.json_value({"a": 1, "b": 2}, mask("hash")) == masker.json_value(
        {"b": 2, "a": 1}, mask("hash")
    )


def test_hash_needs_a_real_key() -> None:
    with pytest.raises(ConfigError) as caught:
        Masker(b"short", [mask("hash")])
    assert caught.value.reason == HASH_KEY_INVALID
    Masker(b"", [mask("redact")])  # no hash mask, no key needed


def test_null() -> None:
    masker = Masker(KEY)
    assert masker.text("x", mask("null")) == ""
    assert masker.raw(b"x", mask("null")) == b""
    assert masker.json_value({"a": 1}, mask("null")) is None


def test_json_values_by_type() -> None:
    masker = Masker(KEY)
    assert masker.json_value("4111111111111111", mask("partial")) == "************1111"
    assert masker.json_value({"nested": "x"}, mask("partial")) is None
    assert masker.json_value([1, 2], mask("redact")) == "[REDACTED]"
    assert masker.json_value(None, mask("redact")) is None


@pytest.mark.parametrize("keep_last", [0, 4, 40])
def test_partial_on_a_json_boolean_number_or_null_writes_null(keep_last: int) -> None:
    """Starred, ``false`` read ``*alse`` and ``true`` ``****`` (review: confidential booleans
    shown whole to analysts), and a number kept its magnitude (``85000`` -> ``*5000``). As
    the module says: a strategy that cannot apply to a type becomes null."""
    masker = Masker(KEY)
    for value in (True, False, None, 42, 85000, -7, 4111111111111111, 2.5, 4.111111111111111e18):
        assert masker.json_value(value, mask("partial", keep_last=keep_last)) is None, value
    # A string keeps its tail, as before.
    assert masker.json_value("85000", mask("partial", keep_last=2)) == "***00"
    # The other strategies are unchanged: a boolean's hash joins, redact writes its text.
    assert masker.json_value(True, mask("redact")) == "[REDACTED]"
    assert masker.json_value(False, mask("hash")).startswith("hmac:")


def _mongolian(text: str) -> str:
    """``text`` with its digits written as Mongolian digits (U+1810..U+1819): in UTF-16 or
    UTF-32 every byte of one is an ASCII control character."""
    return "".join(chr(0x1810 + int(char)) if char.isdigit() else char for char in text)


def _digits_shown(data: bytes) -> int:
    """The most ASCII digits any reading the classifier uses shows of ``data``: as it is,
    folded (UTF-8), and decoded as the UTF-16 or UTF-32 it reads as, then folded."""
    forms = [data]
    for form in (folded(data), wide_folded(data)):
        if form is not None and form is not UNFOLDABLE:
            forms.append(form)
    return max(len(re.findall(rb"[0-9]", form)) for form in forms)


SSN_TEXT = "SSN " + _mongolian("123-45-6789")
CARD_TEXT = "card " + _mongolian("4111111111111111")
WIDE_VALUES = {
    "utf-16-le bom": b"\xff\xfe" + SSN_TEXT.encode("utf-16-le"),
    "utf-16-be bom": b"\xfe\xff" + SSN_TEXT.encode("utf-16-be"),
    "utf-32-le bom": b"\xff\xfe\x00\x00" + CARD_TEXT.encode("utf-32-le"),
    "utf-32-be bom": b"\x00\x00\xfe\xff" + CARD_TEXT.encode("utf-32-be"),
    "utf-16-le after an e-acute": "\u00e9".encode() + CARD_TEXT.encode("utf-16-le"),
    "utf-16-le, no mark (ASCII bytes)": CARD_TEXT.encode("utf-16-le"),
}


@pytest.mark.parametrize("value", WIDE_VALUES.values(), ids=WIDE_VALUES)
def test_partial_stars_text_that_reads_as_utf16_or_utf32_whole(value: bytes) -> None:
    """Review (F1): in UTF-16 or UTF-32 a Mongolian digit is two or four ASCII control
    characters, which the UTF-8 count (``folding.read_length``) takes for none: ``partial``
    kept every digit of an SSN or a card the classifier found in that reading."""
    assert _digits_shown(value) >= 9  # the value is there to find
    masker = Masker(KEY)
    stars = value.decode("utf-8", "surrogateescape")
    for keep_last in (0, 4):
        partial = mask("partial", keep_last=keep_last)
        masked = masker.raw(value, partial)
        assert masked == b"*" * len(stars)
        assert masker.raw_all([value, b"4111111111111111"], partial) == [
            masked,
            masker.raw(b"4111111111111111", partial),
        ]
        # A span of it, the whole element or a part (the element is what reads so).
        assert replace_spans(value, [(0, len(value), partial)], masker) == masked
        spanned = replace_spans(value, [(2, len(value), partial)], masker)
        assert spanned is not None and _digits_shown(spanned) <= keep_last
        assert replace_spans(value, [(0, 4, mask("redact")), (4, len(value), partial)], masker) is not None
    text = value.decode("utf-8", "surrogatepass") if _is_utf8(value) else None
    if text is not None:  # a string field, a JSON leaf
        assert masker.text(text, mask("partial")) == "*" * len(text)
        assert masker.json_value(text, mask("partial")) == "*" * len(text)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_partial_still_keeps_the_tail_of_text_that_does_not_read_wide() -> None:
    masker = Masker(KEY)
    assert masker.raw(b"SSN 123-45-6789", mask("partial")) == b"***********6789"
    assert masker.raw("caf\u00e9 4111111111111111".encode(), mask("partial")) == b"*" * 17 + b"1111"
    assert masker.raw(b"123\x00-45-6789", mask("partial")) == b"********6789"  # one NUL: not UTF-16
    assert masker.text("\u00e9 123-45-6789", mask("partial")) == "*********6789"


def test_zero_values() -> None:
    assert zero_of("BOOL") is False
    assert zero_of("FP32") == 0.0 and isinstance(zero_of("BF16"), float)
    assert zero_of("INT8") == 0 and isinstance(zero_of("UINT64"), int)


def test_replace_spans_rewrites_from_original_offsets_and_merges_overlaps() -> None:
    masker = Masker(KEY)
    data = b"ssn 123-45-6789 and card 4111111111111111!"
    spans = [(4, 15, mask("redact")), (25, 41, mask("partial", keep_last=4))]
    assert replace_spans(data, spans, masker) == b"ssn [REDACTED] and card ************1111!"
    overlapping = [(0, 6, mask("partial", keep_last=1)), (4, 10, mask("null"))]
    assert replace_spans(b"abcdefghij", overlapping, masker) == b""
    assert replace_spans(b"abc", [(1, 9, mask("null"))], masker) is None
    assert replace_spans(b"abc", [(2, 2, mask("null"))], masker) is None


def test_the_strategy_order_is_the_packs() -> None:
    """The enforcer never reads the policy's data: its order of strategies is written twice."""
    tables = Path(__file__).resolve().parents[2] / "rego" / "labelgate" / "tables" / "data.json"
    permissiveness = json.loads(tables.read_text())["mask_permissiveness"]
    assert list(STRATEGIES) == sorted(permissiveness, key=permissiveness.__getitem__)
    assert strategy_rank("unheard-of") < strategy_rank("null")  # fail closed


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        (mask("null"), mask("null"), True),
        (mask("null"), mask("partial"), True),
        (mask("partial", keep_last=4), mask("null"), False),
        (mask("partial", keep_last=4), mask("redact"), False),
        (mask("partial", keep_last=4), mask("hash"), False),
        (mask("partial", keep_last=4), mask("partial", keep_last=2), False),
        # A part no longer than its own keep_last is starred whole: the whole's last
        # characters would be its (an AWS key masked partial 20 showed ...MPLE under partial 4).
        (mask("partial", keep_last=4), mask("partial", keep_last=4), True),
        (mask("partial", keep_last=4), mask("partial", keep_last=20), False),
        (mask("partial", keep_last=0), mask("partial", keep_last=20), True),
        (mask("hash"), mask("redact"), False),
        (mask("hash"), mask("partial", keep_last=0), True),
        (mask("redact", replacement="[A]"), mask("redact", replacement="[B]"), True),
        (mask("redact"), mask("hash"), True),
    ],
)
def test_a_whole_value_mask_covers_parts_masked_no_more_protectively(
    outer: Mask, inner: Mask, covered: bool
) -> None:
    assert covers(outer, inner) is covered
    chosen = covering(outer, [inner, None])
    if covered:
        assert chosen is outer
    elif inner.strategy == "partial" and inner.keep_last:
        assert chosen.strategy == "redact", "no partial of the whole covers a partial part"
    else:
        assert chosen is inner


def test_covering_takes_the_most_protective_part() -> None:
    outer = mask("partial", keep_last=4)
    parts = [mask("partial", keep_last=1), mask("hash"), mask("redact"), mask("partial", keep_last=9)]
    assert covering(outer, parts) is parts[2]
    assert covering(outer, []) is outer
    # Only partial parts: no partial covers them, the value is redacted.
    assert covering(outer, [mask("partial", keep_last=20)]).strategy == "redact"
