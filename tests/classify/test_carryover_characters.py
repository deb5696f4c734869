"""Integers read as characters are carried across a stream's replies (``carryover``,
``carried_forms.CharacterReader``; the residual of ``docs/THREAT-MODEL.md``: "on
ModelStreamInfer, integers read as characters are classified reply by reply, not carried
across replies"). A model streaming code points as INT32, a few a reply, sent an SSN in
full-width digits (``１２３－４５－６７８９``), or any digits folding reads as ASCII ones, in
pieces no reply alone showed as a value, and each went out. (ASCII code points were carried
as text packed into the numbers' bytes, NULs dropped; short runs then ended the stream.)

Each stream runs through the carry-over, the classifier and masking, reply by reply, for a
caller who may see ``public`` and ``internal`` only (``test_carryover_packed.run``); what the
caller gets is read back as a client reads it (``chr`` of each code point, UTF-16 for 16-bit
outputs).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from labelgate.classify import carried_forms, carry_runs, characters, reasons
from labelgate.classify.carryover import CarryOver
from labelgate.errors import ResourceExhausted, UpstreamError
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import tensor_to_raw
from tests.classify.test_carryover_packed import DETECTORS, run

NUMPY = {"INT16": "<i2", "UINT16": "<u2", "INT32": "<i4", "UINT32": "<u4", "INT64": "<i8", "UINT64": "<u8"}
WIDE = ["INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64"]
SSN, CARD = "123-45-6789", "4111 1111 1111 1111"


def digits_from(zero: int, dash: str = "-") -> Callable[[str], str]:
    """Text with its ASCII digits written from ``zero`` on (and ``-`` as ``dash``)."""
    return lambda text: text.translate({ord(d): zero + int(d) for d in "0123456789"} | {ord("-"): dash})


FORMS: dict[str, Callable[[str], str]] = {
    "full-width": digits_from(0xFF10, "\uff0d"),
    "arabic-indic": digits_from(0x0660),
    "devanagari": digits_from(0x0966, "\u2010"),
    "bengali": digits_from(0x09E6, "\u2013"),
    "circled": digits_from(0x245F),  # (no zero in the values)
    "math bold (astral)": digits_from(0x1D7CE, "\u2212"),
    "zero-width spaces between": lambda text: "\u200b".join(text),
    "ascii": lambda text: text,
}


def encoded(datatype: str, text: str) -> bytes:
    """``text`` as a client writes it into the datatype: UTF-16 code units, or code points."""
    if NUMPY[datatype][-1] == "2":
        return text.encode("utf-16-le")
    return np.array([ord(char) for char in text], dtype=NUMPY[datatype]).tobytes()


def decoded(datatype: str, data: bytes) -> str:
    """What a client reads back of the bytes of a released (maybe masked) output."""
    if NUMPY[datatype][-1] == "2":
        return data.decode("utf-16-le", "replace")
    return "".join(chr(v) if 0 <= v < 0x110000 else "\ufffd" for v in np.frombuffer(data, NUMPY[datatype]))


def tensor_of(datatype: str, data: bytes, build: str = "raw", batch: bool = True) -> Tensor:
    """An output of the elements whose raw bytes are ``data``, decoded from a raw reply or
    built from its values, ``[1, n]`` (``[n]`` without ``batch``)."""
    values = np.frombuffer(data, NUMPY[datatype]).tolist()
    shape = [1, len(values)] if batch else [len(values)]
    if build == "raw":
        return Tensor.decoded("t", datatype, shape, data, len(values), lambda: values)
    return Tensor("t", datatype, shape, values)


def split_at(datatype: str, text: str, cuts: list[int]) -> list[bytes]:
    """``text`` written into the datatype and cut at ``cuts`` (offsets into its elements)."""
    data = encoded(datatype, text)
    size = int(NUMPY[datatype][-1])
    bounds = [0, *(cut * size for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def caller_text(datatype: str, pieces: list[bytes]) -> str:
    seen, _ = run([[tensor_of(datatype, piece)] for piece in pieces])
    return decoded(datatype, seen["t"])


def elements(datatype: str, text: str) -> int:
    return len(encoded(datatype, text)) // int(NUMPY[datatype][-1])


@pytest.mark.parametrize("datatype", WIDE)
@pytest.mark.parametrize("form", FORMS)
def test_a_value_in_characters_split_across_two_replies_does_not_reach_the_caller(
    form: str, datatype: str
) -> None:
    for value in (SSN, CARD):
        written = FORMS[form](value)
        before = elements(datatype, "Note!\nthe ssn ")
        text = f"Note!\nthe ssn {written}\nthat is all"
        for cut in range(before, before + elements(datatype, written) + 1):
            got = caller_text(datatype, split_at(datatype, text, [cut]))
            assert written not in got, (form, datatype, cut, got)


@pytest.mark.parametrize("datatype", ["INT16", "INT32", "UINT64"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("step", [1, 3])
def test_a_value_in_characters_a_few_a_reply_does_not_reach_the_caller(
    form: str, datatype: str, step: int
) -> None:
    written = FORMS[form](SSN)
    text = f"Dear customer!\nyour number is {written}\nthanks"
    size = elements(datatype, text)
    got = caller_text(datatype, split_at(datatype, text, list(range(step, size, step))))
    assert written not in got, (form, datatype, got)


# Values hidden by what the character reading decodes or drops, split inside it: a JSON
# escape, a character reference, an ANSI colour, a cursor movement, a control character.
HIDDEN = {
    "a json escape": ("ssn \\u0031\\u0032\\u0033-45-6789\n", "\\u00"),
    "a character reference": ("ssn &#49;&#50;&#51;-45-6789\n", "&#5"),
    "an ansi colour": ("ssn 123\x1b[1;31m-45-6789\x1b[0m\n", "\x1b[1"),
    "a control character": ("ssn 123\x01-45-6789\n", "\x01"),
}


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("datatype", ["INT16", "INT32"])
def test_a_value_hidden_by_what_is_decoded_or_dropped_and_split_inside_it_is_masked(
    hidden: str, datatype: str
) -> None:
    text, inside = HIDDEN[hidden]
    text = "Note!\n" + text + "end"
    where = text.index(inside) + len(inside) - 1
    for cut in range(where - 1, where + 2):
        got = caller_text(datatype, split_at(datatype, text, [cut]))
        assert "6789" not in got, (hidden, cut, got)


@pytest.mark.parametrize("datatype", ["INT16", "UINT16"])
def test_a_utf16_pair_split_across_replies_is_released_whole(datatype: str) -> None:
    """Math bold digits are two code units each: a reply ending between them holds the first
    back, whatever the character before it (here one that is no value's)."""
    written = FORMS["math bold (astral)"](SSN)
    for text in (f"ssn€{written}€done", f"ssn {written} done"):
        data = encoded(datatype, text)
        for cut in range(2, len(data) // 2 - 1):
            pieces = [data[: 2 * cut], data[2 * cut :]]
            assert written not in caller_text(datatype, pieces), (text, cut)
            carry = CarryOver(DETECTORS, 64)
            first = tensor_to_raw(carry.release("r", [tensor_of(datatype, pieces[0])], False)[0])
            if first:  # never a first unit the next reply pairs
                assert not 0xD800 <= int.from_bytes(first[-2:], "little") < 0xDC00, (text, cut)


@pytest.mark.parametrize("build", ["raw", "values"])
@pytest.mark.parametrize("datatype", WIDE)
def test_characters_come_back_once_in_order_in_their_datatype_and_rank(datatype: str, build: str) -> None:
    text = f"Note!\nthe ssn {FORMS['full-width'](SSN)}\nand {FORMS['arabic-indic'](CARD)} ok"
    pieces = split_at(datatype, text, list(range(2, elements(datatype, text), 5)))
    for batch in (True, False):
        carry = CarryOver(DETECTORS, 64)
        out = b""
        for position, piece in enumerate(pieces):
            tensor = tensor_of(datatype, piece, build, batch)
            (released,) = carry.release("r", [tensor], position == len(pieces) - 1)
            assert released.datatype == datatype and len(released.shape) == len(tensor.shape)
            assert released.shape[-1] * int(NUMPY[datatype][-1]) == len(tensor_to_raw(released))
            out += tensor_to_raw(released)
        assert out == b"".join(pieces)


def test_text_before_a_value_is_released_before_the_value_arrives() -> None:
    """Held only while it may be the start of a value: a character no value holds (a newline,
    ``!``, a letter of another script) releases what came before it."""
    text = f"Hello!\nssn {FORMS['full-width'](SSN)}\n€€€ more text€"
    carry = CarryOver(DETECTORS, 64)
    released = ""
    for at, char in enumerate(text):
        (tensor,) = carry.release("r", [tensor_of("INT32", encoded("INT32", char))], at == len(text) - 1)
        released += decoded("INT32", tensor_to_raw(tensor))
        if char in "!\n€":
            assert released == text[: at + 1], (at, released)
    assert released == text


def test_characters_held_are_released_when_the_stream_ends() -> None:
    carry = CarryOver(DETECTORS, 64)
    piece = encoded("INT32", "Note!\nssn １２３－")
    (first,) = carry.release("r", [tensor_of("INT32", piece)], False)
    assert decoded("INT32", tensor_to_raw(first)) == "Note!\n"
    [(request, [tensor])] = carry.flush()
    assert (request, tensor.datatype, decoded("INT32", tensor_to_raw(tensor))) == (
        "r",
        "INT32",
        "ssn １２３－",
    )


def test_characters_held_for_an_output_a_final_reply_does_not_carry_are_released() -> None:
    carry = CarryOver(DETECTORS, 64)
    carry.release("r", [tensor_of("INT64", encoded("INT64", "Note!\nssn １２３－"))], False)
    last = carry.release("r", [Tensor("other", "BYTES", [1], [b"done"])], True)
    assert [(t.name, t.datatype) for t in last] == [("other", "BYTES"), ("t", "INT64")]
    assert decoded("INT64", tensor_to_raw(last[1])) == "ssn １２３－"


def test_an_output_changing_form_while_characters_are_held_fails_the_reply() -> None:
    carry = CarryOver(DETECTORS, 64)
    carry.release("r", [tensor_of("INT32", encoded("INT32", "Note!\nssn １２３－"))], False)
    with pytest.raises(UpstreamError) as raised:
        carry.release("r", [tensor_of("INT64", encoded("INT64", "４５－６７８９"))], False)
    assert raised.value.reason == reasons.STREAM_OUTPUT_CHANGED


def test_a_run_of_characters_that_never_ends_fails_past_the_hold_limit() -> None:
    carry = CarryOver(DETECTORS, 64, hold_limit=4096)
    piece = tensor_of("INT32", encoded("INT32", "１" * 64))
    with pytest.raises(ResourceExhausted) as raised:
        for _ in range(100):
            carry.release("r", [piece], False)
    assert raised.value.reason == reasons.STREAM_HELD_TOO_LARGE


def test_a_short_ascii_run_completed_by_the_next_reply_is_held_not_refused() -> None:
    """ASCII code points after a character no value holds: ``123-`` was sent on as the start of
    the numbers' bytes and the stream refused when ``45-6789`` completed it."""
    pieces = split_at("INT32", "Note!\n123-45-6789 ok", [10])
    got = caller_text("INT32", pieces)
    assert SSN not in got and "45-6789" not in got


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Elements the carry-over reads as characters, bytes its cuts read (as
    ``test_carryover_packed_linear``), and bytes it holds anew (held text copied again on
    every reply counts again)."""
    counted: list[int] = []

    def count(function: Callable[..., object], at: int) -> Callable[..., object]:
        def counting(*args: object) -> object:
            argument = args[at]
            counted.append(argument if isinstance(argument, int) else len(argument))  # type: ignore[arg-type]
            return function(*args)

        return counting

    monkeypatch.setattr(characters, "code_points", count(characters.code_points, 0))
    monkeypatch.setattr(CarryOver, "_cut", count(CarryOver._cut, 1))
    monkeypatch.setattr(CarryOver, "_hold", count(CarryOver._hold, 1))
    monkeypatch.setattr(carry_runs, "run_of", count(carry_runs.run_of, 0))
    return counted


@pytest.mark.parametrize("run_of", ["１", "1", "a "], ids=["full-width digits", "ascii digits", "words"])
@pytest.mark.parametrize("per_reply", [1, 16])
def test_a_run_held_is_not_read_again_on_every_reply(run_of: str, per_reply: int, reads: list[int]) -> None:
    carry = CarryOver(DETECTORS, 64)
    replies = 4096 // per_reply
    piece = tensor_of("INT32", encoded("INT32", (run_of * per_reply)[:per_reply]))
    out = tensor_to_raw(carry.release("r", [tensor_of("INT32", encoded("INT32", "Note!\nssn "))], False)[0])
    for _ in range(replies):
        out += tensor_to_raw(carry.release("r", [piece], False)[0])
    out += tensor_to_raw(carry.release("r", [tensor_of("INT32", encoded("INT32", "\nend"))], True)[0])
    assert out == encoded("INT32", "Note!\nssn " + (run_of * per_reply)[:per_reply] * replies + "\nend")
    total = 14 + replies * per_reply  # elements, of 4 bytes
    assert sum(reads) <= 2 * 4 * total, "held characters are read again on every reply"


def test_a_large_output_of_ids_is_read_only_at_its_end(reads: list[int]) -> None:
    ids = np.random.default_rng(3).integers(0, 50_000, 1 << 16).astype("<i4")
    ids[-1] = 0x4E00  # a character no value holds
    tensor = tensor_of("INT32", ids.tobytes())
    (released,) = CarryOver(DETECTORS, 64).release("r", [tensor], False)
    assert released is tensor and sum(reads) <= 64


def streams_of_ids(datatype: str, high: int | None, per_reply: int, count: int) -> Iterator[Tensor]:
    rng = np.random.default_rng(2026)
    for _ in range(count):
        if high is None:
            ids = rng.integers(np.iinfo(NUMPY[datatype]).min, np.iinfo(NUMPY[datatype]).max, per_reply)
        else:
            ids = rng.integers(0, high, per_reply)
        yield tensor_of(datatype, ids.astype(NUMPY[datatype]).tobytes())


# Token ids (uniform below a vocabulary's size; any value), 1 or 16 a reply, 20,000 replies
# (measured, 1 in how many replies ended with ids held; held at most how many replies in a
# row): INT16 below 32,768 1 in 31 to 33 (4), UINT16 below 65,536 1 in 32 to 33 (3), INT32
# below 50,000 1 in 50 (2), below 128,256 1 in 58 (3), INT64 below 150,000 1 in 65 to 71 (3);
# UINT32 and INT64 of any value 1 in 5,000 or fewer (1). (Before what folds to several
# characters was read as what ends it, ``CharacterReader._longer``: 1 in 26-29, 30-31, 43,
# 54, 61-65.) A reply ends held when its last id reads as a digit, a letter, or a character
# folding makes several of that ends in one (about 2 in 100 ids below 50,000; 95% of them not
# ASCII), or as one a value goes on with after such a run (a mark, a space, a dash); the next
# id that reads as none releases it. Asserted with some slack over 4,000 replies.
ID_STREAMS = {
    "INT16 ids": ("INT16", 32_768, 1 / 20, 8),
    "UINT16 ids": ("UINT16", 65_536, 1 / 20, 8),
    "INT32 ids": ("INT32", 50_000, 1 / 30, 6),
    "INT32 llama ids": ("INT32", 128_256, 1 / 30, 6),
    "INT64 ids": ("INT64", 150_000, 1 / 30, 6),
    "UINT32 values": ("UINT32", None, 1 / 1000, 2),
    "INT64 values": ("INT64", None, 1 / 1000, 2),
}


@pytest.mark.parametrize("per_reply", [1, 16])
@pytest.mark.parametrize("kind", ID_STREAMS)
def test_streams_of_ids_are_held_seldom_and_briefly(kind: str, per_reply: int) -> None:
    datatype, high, rate, longest = ID_STREAMS[kind]
    count = 4000
    carry = CarryOver(DETECTORS, 64)
    held = in_a_row = most = 0
    sent = out = b""
    for position, tensor in enumerate(streams_of_ids(datatype, high, per_reply, count)):
        (released,) = carry.release("r", [tensor], position == count - 1)
        holding = any(rest.tails for rest in carry._held.get("r", {}).values())
        held += holding
        in_a_row = in_a_row + 1 if holding else 0
        most = max(most, in_a_row)
        sent, out = sent + tensor_to_raw(tensor), out + tensor_to_raw(released)
    assert held <= rate * count and most <= longest, (kind, held, most)
    assert out == sent
    assert carry.flush() == []


def test_the_c_level_reading_of_ascii_agrees_with_the_character_reading() -> None:
    """An output of ASCII code points only (a mask, small counts) is read whole with byte
    operations (``CharacterReader._read_ascii``): it finds the run ``_read`` finds."""
    rng = np.random.default_rng(11)
    alphabet = np.array([*range(0x20), *b" -.,:;!?/\\&#@_+()%='\"aZ09\x7f"])
    reader = carried_forms.CharacterReader(custom_patterns=False)
    compared = 0
    for _ in range(3000):
        units = rng.choice(alphabet, int(rng.integers(1, 12))).astype("<i4")
        if 0x1B in units or 0x08 in units:
            continue
        tensor = tensor_of("INT32", units.tobytes())
        before = carried_forms.PackedEnd(
            characters=int(rng.integers(0, 3)), character_value=bool(rng.random() < 0.5)
        )
        ascii_end, read_end = dataclasses.replace(before), dataclasses.replace(before)
        assert reader._read_ascii(tensor, ascii_end) == reader._read(units, read_end), units.tolist()
        compared += 1
    assert compared > 2000


def test_a_large_reply_of_ids_held_is_not_read_for_markers_in_every_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply of ids held back for its last one (``CarryOver`` with ``secret``) is read for PEM
    markers as the classifier reads such bytes (``carried_keys._binary_forms``), not folded,
    rendered and decoded as UTF-16 and UTF-32 text a character at a time (``key_blocks``:
    about 30 ms for 16 KB of ids)."""
    from labelgate.classify import key_blocks

    read: list[int] = []
    original = key_blocks.awaited_after

    def counted(text: bytes) -> frozenset[bytes]:
        read.append(len(text))
        return original(text)

    monkeypatch.setattr(key_blocks, "awaited_after", counted)
    ids = np.random.default_rng(3).integers(0, 50_000, 4096).astype("<i4")
    ids[-1] = 0xFF11  # a full-width digit: held back
    carry = CarryOver(DETECTORS, 64)
    for at in range(8):
        ids[-2] = at  # (a new reply each time)
        carry.release("r", [tensor_of("INT32", ids.tobytes())], False)
        assert carry._held["r"]["t"].tails
    assert sum(read) == 0, read


@pytest.mark.parametrize("datatype", ["INT16", "INT32"])
def test_a_marker_in_full_width_code_points_covers_the_key_lines_of_later_replies(datatype: str) -> None:
    from labelgate.classify.carried_keys import CoveredTensor

    marker = "－－－－－ＢＥＧＩＮ ＲＳＡ ＰＲＩＶＡＴＥ ＫＥＹ－－－－－"
    carry = CarryOver(DETECTORS, 64)
    carry.release("r", [tensor_of(datatype, encoded(datatype, "Note!\n" + marker))], False)
    carry.release("r", [tensor_of(datatype, encoded(datatype, "\n"))], False)
    line, *_ = carry.release("r", [Tensor("k", "BYTES", [1], [b"MIIEowIBAAKCAQEA7bq98Y\n"])], True)
    assert isinstance(line, CoveredTensor) and line.key_cover == {0: len(line.values[0])}


@pytest.mark.parametrize("datatype", ["INT16", "INT32"])
def test_a_character_folded_to_several_is_held_only_when_a_value_may_begin_in_what_ends_it(
    datatype: str,
) -> None:
    """``㋀`` folds to ``1`` and a character no value holds, ``㈀`` to ``(一)``, ``…`` to
    ``...``: no value goes on from them into the next reply. ``⑴`` (``(1)``), ``¼``
    (``1⁄4``) and ``㎏`` (``kg``) may begin one."""
    for char, held in (("㋀", False), ("㈀", False), ("…", False), ("⑴", True), ("¼", True), ("㎏", True)):
        carry = CarryOver(DETECTORS, 64)
        (released,) = carry.release("r", [tensor_of(datatype, encoded(datatype, "Note!\n" + char))], False)
        assert decoded(datatype, tensor_to_raw(released)) == ("Note!\n" if held else "Note!\n" + char), char
