"""``sessions show|replay`` render recorded text for a terminal (review s12, finding 2): what a
caller, a token or an upstream chose reaches the terminal with its control, C1, bidi and OSC
characters as escapes, and its Rich markup shown rather than parsed.

The three payloads are the review's: an upstream's released cell text (SGR conceal, C1 CSI,
a bidi override, an OSC title), a caller's model name holding the same, and an output named
``col[/]`` (which made ``replay`` exit with a MarkupError).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from rich.console import Console

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import CallRecord
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs
from labelgate.recording.entries import call_entry
from labelgate.recording.replay import calls_table, print_replay, sessions_table
from labelgate.recording.store import SessionInfo
from labelgate.untrusted_text import shown
from tests.recording.conftest import Clock, make_call, make_outcome

CELL = "\x1b[8mhidden \u009b2J flipped\u202e \x1b]0;TITLE-SET\x07 end"
MODEL = "m\u009b2J\x1b]0;TITLE-SET\x07"
OUTPUT = "col[/]"
# What a terminal obeys: ESC, BEL, a C1 control (CSI), a bidi override.
RAW = ("\x1b", "\x07", "\u009b", "\u202e")


def response() -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name=MODEL, id="r1")
    tensors = [
        Tensor(OUTPUT, "BYTES", [2], [CELL.encode(), b"plain"]),
        Tensor("n\u202eame", "INT64", [2], [1, 2]),
    ]
    for tensor in tensors:
        reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    encode_outputs(reply, tensors, raw=True)
    return reply


def entries() -> list[dict[str, Any]]:
    call = make_call(session_id="s\u202e1", method="/inference.GRPCInferenceService/Model\x1b[2JInfer")
    outcome = make_outcome(delivered=response(), model=MODEL)
    entry = call_entry(CallRecord.of(call, outcome, None, Clock()()), record_input_values=False)
    entry["peer"] = "ipv4:\x1b]0;PEER\x07"
    entry["decision"]["reason"] = "denied \u009b2J"
    entry["replay"] = {"outcome": "allow\x1b[8m", "reason": "viewer \u202e", "masked": []}
    damaged = {"kind": "damaged", "request_id": "req-\x1b[2J", "note": "missing \u009b"}
    return [entry, damaged]


def rendered(*renderables: Any, replay: bool = False) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None, highlight=False, soft_wrap=False)
    if replay:
        print_replay(console, "s\u202e1 [/]", entries())
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def assert_inert(text: str) -> None:
    assert not [char for char in RAW if char in text], ascii([char for char in RAW if char in text])


def test_replay_shows_recorded_text_as_escapes_and_markup_as_text() -> None:
    text = rendered(replay=True)  # before the fix: MarkupError on the output name
    assert_inert(text)
    assert OUTPUT in text
    assert shown(MODEL) in text  # the caller's model name, readable
    assert "\\x1b]0;TITLE-SET\\x07" in text  # the upstream's OSC in a cell, readable
    assert "\\u202e" in text and "\\x9b2J" in text


def test_show_and_list_show_recorded_text_as_escapes() -> None:
    info = SessionInfo(
        session_id="s\x1b]0;T\x07", started="2026\u202e", last="x\u009b", calls=1, bytes=10, truncated=False
    )
    text = rendered(calls_table("s\u009b1", entries()), sessions_table([info]))
    assert_inert(text)
    assert "\\x9b2J" in text  # the model column


def test_a_non_inference_response_keeps_its_lines_and_loses_its_controls() -> None:
    entry = entries()[0]
    reply = pb.ModelMetadataResponse(name="m\u202e\x1b[8m", platform="p\u009b")
    entry["method"] = "/inference.GRPCInferenceService/ModelMetadata"
    entry["response"] = {
        "type": "inference.ModelMetadataResponse",
        "base64": base64.b64encode(reply.SerializeToString()).decode(),
        "bytes": reply.ByteSize(),
    }
    console = Console(file=io.StringIO(), width=200, color_system=None, highlight=False)
    print_replay(console, "s", [entry])
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert_inert(text)
    assert 'name: "m\\u202e' in text
