"""A private key whose BEGIN marker and lines a stream or a reply puts apart stays covered.

ModelStreamInfer (``carryover``): an element that is a whole JSON object was released at once,
and the block it left open was recorded nowhere, so its later pieces reached the classifier
without their BEGIN marker; a block that closed in its own element released the lines held
in a later element in clear; and a block opened in one output never reached another (in one
reply, ``classifier._outputs_opening``, or across replies). Each stream here is run through
the carry-over, the classifier and masking, reply by reply, for a caller who may see
everything but ``restricted``: no line of the key may reach it.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from labelgate.classify import Catalog, DetectorSet, classify_outputs, native
from labelgate.classify.carryover import CarryOver, CoveredTensor
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor
from tests.classify.secret_values import pem_value

DETECTORS = DetectorSet.default()
HASH_KEY = b"0123456789abcdef0123456789abcdef"
CATALOG = Catalog.from_data({"default_label": "internal", "entries": []})
VISIBLE = frozenset({"public", "internal", "confidential"})

_LINES = pem_value(random.Random(7), "RSA PRIVATE KEY", 4).split("\n")
BEGIN, BODY, END = _LINES[0], _LINES[1:-1], _LINES[-1]
AFTER = "PLTafter7c1d"


def obj(value: str) -> bytes:
    return json.dumps({"t": value}).encode()


def line(value: str) -> bytes:
    return (value + "\n").encode()


# Each stream: replies, each a dict output name -> the elements it brings.
Reply = dict[str, list[bytes]]
STREAMS: dict[str, list[Reply]] = {
    # 1. A whole JSON object opens the block; the element's later pieces hold its lines.
    "json object, then text lines": [
        {"t": [obj(BEGIN)]},
        *({"t": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
        {"t": [b" " + AFTER.encode()]},
    ],
    "json object, then json objects": [
        {"t": [obj(BEGIN)]},
        *({"t": [obj(body)]} for body in BODY),
        {"t": [obj(END)]},
    ],
    "json object, text lines, no END marker": [
        {"t": [obj(BEGIN)]},
        *({"t": [line(body)]} for body in BODY),
        {},
    ],
    "json object with an escaped marker, then text lines": [
        {"t": [b'{"t": "' + BEGIN.replace("-", "\\u002d").encode() + b'"}']},
        *({"t": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
    ],
    "json object, a reply without outputs, text lines": [
        {"t": [obj(BEGIN)]},
        {},
        *({"t": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
    ],
    # 2. The block closes in its own element; a later element held the lines meanwhile.
    "block closing in its own element": [
        {"t": [line(BEGIN), b"".join(map(line, BODY))]},
        {"t": [END.encode(), b""]},
        {"t": [b"", b""]},
    ],
    "opener in element 1, lines in element 0 later": [
        {"t": [b"hello ", line(BEGIN)]},
        *({"t": [line(body), b""]} for body in BODY),
        {"t": [b"", END.encode()]},
    ],
    # A BEGIN marker split across replies of one element (found by review, rev-fixes 1): the
    # held text and the next piece are read as one.
    "BEGIN marker split across two replies": [
        {"t": [BEGIN[:18].encode()]},
        {"t": [line(BEGIN[18:])]},
        *({"t": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
    ],
    "BEGIN marker one character a reply": [
        *({"t": [character.encode()]} for character in BEGIN),
        {"t": [b"\n"]},
        *({"t": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
    ],
    # 3. Another output.
    "BEGIN in one output, lines in another, later replies": [
        {"t": [line(BEGIN)]},
        *({"u": [line(body)]} for body in BODY),
        {"t": [END.encode()]},
    ],
    "json BEGIN in one output, lines in another": [
        {"t": [obj(BEGIN)]},
        *({"u": [line(body)]} for body in BODY),
        {"t": [obj(END)]},
    ],
}


def clear_bytes(out: bytes) -> int:
    """How many bytes of the key's lines the caller got: every 12-byte run of a line found."""
    shown = 0
    for body in BODY:
        data = body.encode()
        covered: set[int] = set()
        for at in range(len(data) - 11):
            if data[at : at + 12] in out:
                covered.update(range(at, at + 12))
        shown += len(covered)
    return shown


def run(replies: list[Reply], use_native: bool = True) -> tuple[bytes, list[list[Tensor]]]:
    """What the caller gets of each reply's text, joined, and what the carry-over released."""
    carry = CarryOver(DETECTORS, 256)
    seen: list[bytes] = []
    released_all: list[list[Tensor]] = []
    for position, outputs in enumerate(replies):
        final = position == len(replies) - 1
        tensors = [Tensor(name, "BYTES", [len(values)], list(values)) for name, values in outputs.items()]
        released = carry.release("r", tensors, final)
        released_all.append(released)
        with native.forced(use_native):
            classification = classify_outputs("m", released, CATALOG, DETECTORS)
        masks: list[dict[str, Any]] = [
            {"path": field.path, "strategy": "null", "params": {}}
            for field in classification.fields
            if not field.labels <= VISIBLE
        ]
        for tensor in apply_masks(released, classification, masks, HASH_KEY):
            seen += [bytes(value) for value in tensor.values if value is not None]
    return b"\x00".join(seen), released_all


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("name", STREAMS)
def test_no_line_of_a_key_streamed_apart_from_its_marker_reaches_the_caller(
    name: str, use_native: bool
) -> None:
    out, _ = run(STREAMS[name], use_native)
    assert clear_bytes(out) == 0, (name, out[:600])


def test_text_past_the_end_marker_of_a_released_block_stays_readable() -> None:
    out, _ = run(STREAMS["json object, then text lines"])
    assert AFTER.encode() in out


def test_a_stream_without_a_key_is_released_as_before() -> None:
    """Nothing marks a reply of a stream without a PEM marker (the common path)."""
    replies: list[Reply] = [
        {"t": [b"hello ", obj("a")]},
        {"t": [b"world", b"x"], "u": [b"y"]},
        {"t": [b"!", b""]},
    ]
    _, released = run(replies)
    assert not any(isinstance(tensor, CoveredTensor) for reply in released for tensor in reply)
    carry = CarryOver(DETECTORS, 256)
    carry.release("r", [Tensor("t", "BYTES", [1], [obj(BEGIN + "\n" + "\n".join(BODY) + "\n" + END)])], False)
    assert carry._keys == {}  # a block its own element closes leaves nothing open


def test_a_block_left_open_is_forgotten_at_the_final_reply() -> None:
    carry = CarryOver(DETECTORS, 256)
    carry.release("r", [Tensor("t", "BYTES", [1], [obj(BEGIN)])], False)
    assert carry._keys
    carry.release("r", [Tensor("t", "BYTES", [1], [b"x"])], True)
    assert carry._keys == {}


def test_held_text_a_block_ran_over_is_covered_when_the_stream_ends() -> None:
    """The stream ends before the final reply: the held lines come back covered."""
    carry = CarryOver(DETECTORS, 256)
    carry.release("r", [Tensor("t", "BYTES", [1], [obj(BEGIN)])], False)
    carry.release("r", [Tensor("t", "BYTES", [1], [b"".join(map(line, BODY))])], False)
    [(_, tensors)] = carry.flush()
    [tensor] = tensors
    assert isinstance(tensor, CoveredTensor) and tensor.key_cover == {0: len(tensor.values[0])}


# One reply: a block an output opens and does not close covers every other text output.
def one_reply(outputs: dict[str, list[bytes]], use_native: bool = True) -> bytes:
    tensors = [Tensor(name, "BYTES", [len(values)], list(values)) for name, values in outputs.items()]
    with native.forced(use_native):
        classification = classify_outputs("m", tensors, CATALOG, DETECTORS)
    masks = [
        {"path": field.path, "strategy": "null", "params": {}}
        for field in classification.fields
        if not field.labels <= VISIBLE
    ]
    masked = apply_masks(tensors, classification, masks, HASH_KEY)
    return b"\x00".join(bytes(value) for tensor in masked for value in tensor.values if value is not None)


ONE_REPLY: dict[str, dict[str, list[bytes]]] = {
    "text BEGIN, text lines in another output": {
        "t": [line(BEGIN)],
        "u": [b"".join(map(line, BODY))],
    },
    "lines in an earlier output": {"u": [line(body) for body in BODY], "t": [line(BEGIN)]},
    "json lines in another output": {"t": [obj(BEGIN)], "u": [obj(body) for body in BODY]},
    "escaped BEGIN, lines in another output": {
        "t": [BEGIN.replace("-", "\\u002d").encode()],
        "u": [line(body) for body in BODY],
    },
}


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("name", ONE_REPLY)
def test_a_block_one_output_leaves_open_covers_the_other_outputs(name: str, use_native: bool) -> None:
    out = one_reply(ONE_REPLY[name], use_native)
    assert clear_bytes(out) == 0, (name, out[:600])


def test_a_block_closed_in_its_own_output_covers_no_other() -> None:
    key = "\n".join(_LINES).encode()
    for use_native in (True, False):
        out = one_reply({"t": [key], "u": [AFTER.encode()]}, use_native)
        assert AFTER.encode() in out
        assert clear_bytes(out) == 0
