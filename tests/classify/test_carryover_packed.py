"""Text packed into the raw bytes of wider numbers is carried across a stream's replies
(``carryover``; found by a fix helper, fifth round: ``numbers.packed_detections`` read an
FP32 or INT32 output's bytes as text reply by reply only, so an SSN packed as ``123-45-`` in
one reply's FP32 output and ``6789`` in the next went out in pieces).

Each stream is run through the carry-over, the classifier and masking, reply by reply, for a
caller who may see ``public`` and ``internal`` only; what it gets of each output is read as a
client reads it back (``tobytes()``). Ordinary numbers (embeddings, softmax, scores, token
ids) pass as they came: a reply's bytes are asked whether they end in text, a bounded read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from labelgate.classify import Catalog, DetectorSet, classify_outputs, native, numbers
from labelgate.classify.carried_keys import CoveredTensor
from labelgate.classify.carryover import CarryOver
from labelgate.enforce import apply_masks
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import tensor_to_raw
from tests.classify.test_carryover_keys import BEGIN, BODY, END, clear_bytes, line
from tests.classify.test_numbers_packed import SIZES, floats, raw_tensor, values_tensor

DETECTORS = DetectorSet.default()
HASH_KEY = b"0123456789abcdef0123456789abcdef"
CATALOG = Catalog.from_data({"default_label": "internal", "entries": []})
VISIBLE = frozenset({"public", "internal"})
SSN, CARD = b"123-45-6789", b"4111111111111111"


@pytest.fixture(params=[True, False], ids=["native", "python"])
def scan_path(request: pytest.FixtureRequest) -> Iterator[None]:
    with native.forced(request.param):
        yield


def packed(name: str, datatype: str, data: bytes, build: str = "raw", batch: bool = True) -> Tensor:
    """``data`` (whole elements) packed into a ``datatype`` output ``[1, n]`` (``[n]``
    without ``batch``), decoded from a raw reply or built from typed values."""
    made = (raw_tensor if build == "raw" else values_tensor)(datatype, data)
    shape = [1, made.size] if batch else [made.size]
    if build == "raw":
        raw = made.raw_form() or b""
        return Tensor.decoded(name, datatype, shape, raw, made.size, lambda: made.values)
    return Tensor(name, datatype, shape, list(made.values))


def elements(data: bytes, pad: bytes = b" ") -> bytes:
    """``data`` padded at its start to whole elements of every width (8 bytes)."""
    return pad * (-len(data) % 8) + data


def tail_padded(data: bytes) -> bytes:
    return data + b" " * (-len(data) % 8)


def client_bytes(tensor: Tensor) -> bytes:
    """What a client reads back of a released (maybe masked) tensor."""
    if tensor.datatype == "BYTES":
        return b"".join(bytes(value) for value in tensor.values if value is not None)
    return tensor_to_raw(tensor)


def run(
    replies: list[list[Tensor]], carry: CarryOver | None = None
) -> tuple[dict[str, bytes], list[list[Tensor]]]:
    """What the caller gets of each output over the stream (joined in arrival order), and
    what the carry-over released per reply."""
    carry = carry or CarryOver(DETECTORS, 64)
    seen: dict[str, bytes] = {}
    released_all: list[list[Tensor]] = []
    for position, tensors in enumerate(replies):
        released = carry.release("r", tensors, position == len(replies) - 1)
        released_all.append(released)
        classification = classify_outputs("m", released, CATALOG, DETECTORS)
        masks: list[dict[str, Any]] = [
            {"path": field.path, "strategy": "null", "params": {}}
            for field in classification.fields
            if not field.labels <= VISIBLE
        ]
        for tensor in apply_masks(released, classification, masks, HASH_KEY):
            seen[tensor.name] = seen.get(tensor.name, b"") + client_bytes(tensor)
    return seen, released_all


SPLITS: dict[str, tuple[list[bytes], bytes]] = {
    "an SSN over two replies": (
        [elements(b"the customer's number on file: ssn 123-45-"), tail_padded(b"6789 thanks")],
        SSN,
    ),
    "a card over three replies": (
        [elements(b"please charge the card 4111 11"), elements(b"11 1111 ", b"1"), tail_padded(b"1111 now")],
        b"4111 1111 1111 1111",
    ),
}
# Token streaming: the text a few bytes a reply (read as text from its first 16 bytes on).
_TEXT = tail_padded(b"Dear customer, your number is 123-45-6789 as we have it on file.")
SPLITS["an SSN eight bytes a reply"] = ([_TEXT[at : at + 8] for at in range(0, len(_TEXT), 8)], SSN)


@pytest.mark.usefixtures("scan_path")
@pytest.mark.parametrize("build", ["raw", "values"])
@pytest.mark.parametrize("datatype", sorted(SIZES))
@pytest.mark.parametrize("split", SPLITS)
def test_a_value_split_across_replies_packed_in_wider_numbers_does_not_reach_the_caller(
    split: str, datatype: str, build: str
) -> None:
    pieces, value = SPLITS[split]
    replies = [[packed("t", datatype, piece, build)] for piece in pieces]
    seen, _ = run(replies)
    assert value not in seen["t"], seen["t"]
    # Unmasked, every byte comes back once, in order, in the output's datatype and rank.
    carry = CarryOver(DETECTORS, 64)
    out = b""
    for position, piece in enumerate(pieces):
        (tensor,) = carry.release("r", [packed("t", datatype, piece, build)], position == len(pieces) - 1)
        assert tensor.datatype == datatype and len(tensor.shape) == 2 and tensor.shape[0] == 1
        out += tensor_to_raw(tensor)
    assert out == b"".join(pieces)


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "FP16"])
def test_packed_text_in_one_dimension_is_carried_in_its_own_shape(datatype: str) -> None:
    pieces = SPLITS["an SSN over two replies"][0]
    carry = CarryOver(DETECTORS, 16)
    first = carry.release("r", [packed("t", datatype, pieces[0], batch=False)], False)[0]
    assert first.datatype == datatype and len(first.shape) == 1
    assert first.shape == [len(tensor_to_raw(first)) // SIZES[datatype]]
    last = carry.release("r", [packed("t", datatype, pieces[1], batch=False)], True)[0]
    assert tensor_to_raw(first) + tensor_to_raw(last) == b"".join(pieces)
    assert SSN in tensor_to_raw(last)


def test_packed_text_held_is_released_when_the_stream_ends() -> None:
    carry = CarryOver(DETECTORS, 64)
    piece = elements(b"the customer's number on file: ssn 123-45-")
    carry.release("r", [packed("t", "FP32", piece)], False)
    [(request, [tensor])] = carry.flush()
    assert (request, tensor.datatype, tensor_to_raw(tensor)) == ("r", "FP32", piece)


def test_held_packed_text_is_released_whole_once_its_bytes_no_longer_end_in_text() -> None:
    """Text, then floats: the held text goes with them (not held to the final reply)."""
    carry = CarryOver(DETECTORS, 64)
    text = elements(b"the customer's number on file: ssn 123-45-")
    noise = floats("FP32", np.random.default_rng(3).standard_normal(256))
    first = carry.release("r", [packed("t", "FP32", text)], False)[0]
    second = carry.release("r", [packed("t", "FP32", b"6789" + noise[4:])], False)[0]
    assert tensor_to_raw(first) + tensor_to_raw(second) == text + b"6789" + noise[4:]
    assert SSN in tensor_to_raw(second)
    assert carry.flush() == []


def test_an_output_changing_form_while_packed_text_is_held_fails_the_reply() -> None:
    carry = CarryOver(DETECTORS, 64)
    carry.release("r", [packed("t", "FP32", elements(b"the customer's number on file: ssn 123-45-"))], False)
    with pytest.raises(UpstreamError):
        carry.release("r", [Tensor("t", "BYTES", [1], [b"6789"])], False)


Ordinary = Callable[[np.random.Generator], tuple[str, bytes]]
ORDINARY: dict[str, Ordinary] = {
    "embedding FP32": lambda rng: ("FP32", floats("FP32", rng.standard_normal(1024) * 0.03)),
    "softmax FP32": lambda rng: ("FP32", floats("FP32", (x := np.exp(rng.standard_normal(512))) / x.sum())),
    "a score FP32": lambda rng: ("FP32", floats("FP32", rng.standard_normal(1))),
    "two uniform FP32": lambda rng: ("FP32", floats("FP32", rng.random(2))),
    "a logprob FP16": lambda rng: ("FP16", floats("FP16", np.log(rng.random(1)))),
    "uniform FP16": lambda rng: ("FP16", floats("FP16", rng.random(8))),
    "a mask FP16": lambda rng: ("FP16", floats("FP16", rng.integers(0, 2, 16).astype(float))),
    "a BF16 score": lambda rng: ("BF16", floats("BF16", rng.standard_normal(1))),
    "a token id INT32": lambda rng: ("INT32", rng.integers(0, 50_000, 1).astype("<i4").tobytes()),
    "a token id INT64": lambda rng: ("INT64", rng.integers(0, 150_000, 1).astype("<i8").tobytes()),
    "FP64 values": lambda rng: ("FP64", floats("FP64", rng.standard_normal(4))),
}


# Replies of these kinds now and then end in a run of bytes a value may be made of
# (``carried_forms._VALUE_RUN``): held then, with their values unchanged, until a reply that does
# not (measured: about 1 uniform FP16 reply in 100). A token id now and then reads as a
# character a value may begin with (``carried_forms.CharacterReader``: a digit or letter of
# another script, a circled or full-width one, one folding makes several of): held then, and
# released with the next reply, so two replies differ from what came. Measured over 20,000
# replies of one id (this test's streams): INT32 ids below 50,000 1 reply in 26 not as it came
# (1 in 22 before ``_longer`` read what folds to several characters), INT64 below 150,000 1 in
# 36 (1 in 33). Every other kind passes every reply.
SOMETIMES_HELD = {"uniform FP16": 0.03, "a token id INT32": 0.06, "a token id INT64": 0.045}


@pytest.mark.parametrize("kind", sorted(ORDINARY))
def test_ordinary_numbers_pass_every_reply_as_they_came(kind: str) -> None:
    rng = np.random.default_rng(2026)
    carry = CarryOver(DETECTORS, 64)
    sent, out, held = b"", b"", 0
    for position in range(400):
        datatype, data = ORDINARY[kind](rng)
        tensor = packed("t", datatype, data)
        (released,) = carry.release("r", [tensor], position == 399)
        if released is tensor:
            assert not tensor.values_built  # read as its raw bytes, not its values
        else:
            held += 1
        sent, out = sent + data, out + tensor_to_raw(released)
    assert held <= SOMETIMES_HELD.get(kind, 0) * 400, (kind, held)
    assert out == sent
    assert carry.flush() == []


@pytest.mark.parametrize("build", ["raw", "values"])
def test_an_embeddings_bytes_are_read_only_at_their_end(monkeypatch: pytest.MonkeyPatch, build: str) -> None:
    """Whether a reply's numbers end in text is asked of a bounded number of their last
    bytes: a large embedding costs what a small one does (and a JSON or typed reply's values
    are not turned into bytes whole)."""
    read: list[int] = []
    original = numbers.packed_bytes

    def counted(tensor: Tensor, last: int | None = None) -> bytes | None:
        data = original(tensor, last)
        read.append(len(data or b""))
        return data

    monkeypatch.setattr(numbers, "packed_bytes", counted)
    data = floats("FP32", np.random.default_rng(5).standard_normal(1 << 16))
    tensor = packed("e", "FP32", data, build)
    zeros = packed("z", "FP32", bytes(1 << 18), build)
    released = CarryOver(DETECTORS, 64).release("r", [tensor, zeros], False)
    assert released[0] is tensor and released[1] is zeros
    assert read[0] <= 256 and sum(read[1:]) <= 2 * (1 << 18), read  # zeros: about twice


def test_key_lines_packed_in_floats_after_a_marker_a_reply_released_are_covered() -> None:
    noise = floats("FP32", np.random.default_rng(9).standard_normal(128))
    body = tail_padded(b"".join(map(line, BODY)))
    replies = [
        [Tensor("t", "BYTES", [1], [line(BEGIN)]), packed("f", "FP32", noise)],
        [Tensor("t", "BYTES", [1], [b""]), packed("f", "FP32", noise[:256] + body + noise[256:])],
        [Tensor("t", "BYTES", [1], [END.encode()]), packed("f", "FP32", noise)],
    ]
    seen, released = run(replies)
    assert clear_bytes(b"\0".join(seen.values())) == 0
    assert isinstance(released[1][1], CoveredTensor)


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "FP64"])
def test_a_marker_packed_in_one_reply_covers_the_lines_of_later_ones(datatype: str) -> None:
    replies = [
        [packed("k", datatype, elements(b"key follows:\n" + line(BEGIN)))],
        *([Tensor("t", "BYTES", [1], [line(body)])] for body in BODY),
        [Tensor("t", "BYTES", [1], [END.encode()])],
    ]
    seen, _ = run(replies)
    assert clear_bytes(b"\0".join(seen.values())) == 0
    lines = [[packed("k", datatype, tail_padded(line(body)))] for body in BODY]
    seen, _ = run([[Tensor("t", "BYTES", [1], [line(BEGIN)])], *lines, [Tensor("t", "BYTES", [1], [b"x"])]])
    assert clear_bytes(b"\0".join(seen.values())) == 0


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT16"])
def test_the_cut_falls_between_elements_and_never_inside_a_value(datatype: str) -> None:
    """Wherever a value ends before a run the cut moves back to (a run of digits straddling
    the window's cut), moving it on to an element's start moves it off the value too: the
    value comes back whole in one reply."""
    size = SIZES[datatype]
    for offset in range(16):
        first = elements(b"x" * offset + b"the note: ssn 123-45-6789 " + b"5" * 20, b"y")
        second = tail_padded(b" and the rest of the note")
        carry = CarryOver(DETECTORS, 16)
        released = [
            tensor_to_raw(carry.release("r", [packed("t", datatype, piece)], final)[0])
            for piece, final in ((first, False), (second, True))
        ]
        assert b"".join(released) == first + second
        assert all(len(piece) % size == 0 for piece in released)
        assert any(SSN in piece for piece in released), (offset, released)
