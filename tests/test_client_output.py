"""What ``labelgate infer`` prints of what a server sent: names and values are text, never
rich markup and never terminal controls; ``--json`` is JSON even for NaN and infinities; a
REST answer without the protocol's keys, and a model whose input or output names hold
controls, end in one ``error:`` line, never ``internal error``.

The server is a hostile stand-in (gRPC or REST, in this process on loopback) that ``infer``
(a real process) calls directly: what a gateway releases of an upstream's reply is the same
names and values.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.client import Spec, check_outputs, typed_inputs
from labelgate.errors import InvalidInput
from tests.support.procs import REPO, labelgate_command

# Values and names that, printed raw or as markup, act on a terminal.
CLIPBOARD = "\x1b]52;c;ZWNobyBwd25lZA==\x1b\\ok"  # OSC 52: write the clipboard
TITLE = "\x1b]0;PWNED-TITLE\x07title"  # OSC 0: set the window title
LINK = "[link=https://evil.example/]https://good.example/[/link]"  # markup: an OSC 8 link
REVERSED = "x\u202eevil"  # right-to-left override
UNBALANCED = "oops [/] here"  # markup that does not parse: rich raised MarkupError
HOSTILE_VALUES = [CLIPBOARD, TITLE, LINK, REVERSED, UNBALANCED, "plain"]
HOSTILE_NAME = "label[link=https://evil.example/]n[/link]\x1b]0;NAME-TITLE\x07"
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and bold: the table's own styles on a terminal


@dataclass
class Upstream:
    """What the stand-in gRPC server answers: its metadata, and its reply's outputs."""

    inputs: list[tuple[str, str]] = field(default_factory=lambda: [("text", "BYTES")])
    outputs: list[pb.ModelInferResponse.InferOutputTensor] = field(default_factory=list)
    model_name: str = "sentiment"

    def metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            inputs=[tensor(name=name, datatype=datatype, shape=[-1]) for name, datatype in self.inputs],
            outputs=[tensor(name=o.name, datatype=o.datatype, shape=list(o.shape)) for o in self.outputs],
        )

    def infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return pb.ModelInferResponse(model_name=self.model_name, id=request.id, outputs=self.outputs)


def bytes_output(name: str, values: list[str]) -> pb.ModelInferResponse.InferOutputTensor:
    return pb.ModelInferResponse.InferOutputTensor(
        name=name,
        datatype="BYTES",
        shape=[len(values)],
        contents=pb.InferTensorContents(bytes_contents=[v.encode() for v in values]),
    )


@pytest.fixture
def upstream() -> Iterator[tuple[str, Upstream]]:
    answers = Upstream()

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        def ModelMetadata(self, request: Any, context: Any) -> Any:
            return answers.metadata(request, context)

        def ModelInfer(self, request: Any, context: Any) -> Any:
            return answers.infer(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", answers
    finally:
        server.stop(0)


@pytest.fixture
def rest_upstream() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A REST server answering each path with the body the test put in the dict (200, JSON)."""
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("content-length") or 0))
            body = bodies.get(self.path, b"{}")
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def infer(*args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LABELGATE_TOKEN", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "COLUMNS")
    }
    environment["COLUMNS"] = "300"  # wide: no value is folded across lines
    if terminal:  # rich writes as to a terminal: styles, and links as OSC 8
        environment["TTY_COMPATIBLE"] = "1"
    return subprocess.run(
        labelgate_command("infer", "--model", "sentiment", *args),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",
        timeout=60,
        cwd=REPO,
        env=environment,
        check=False,
    )


def assert_one_error_line(done: subprocess.CompletedProcess[str], exit_code: int, reason: str) -> None:
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert done.stderr.rstrip("\n").endswith(f"({reason})"), done.stderr
    assert "internal error" not in done.stderr and "\x1b" not in done.stderr, done.stderr


# -- 1. the result table ----------------------------------------------------------------------
@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_names_and_values_are_shown_as_text(upstream: tuple[str, Upstream], terminal: bool) -> None:
    """Review: an upstream's output name and BYTES values reached rich as markup and as raw
    escapes (a clipboard write, a window title, an OSC 8 link from ``[link=...]``, U+202E), and
    a value ``oops [/] here`` ended in ``internal error (MarkupError)`` after the call was
    released."""
    target, answers = upstream
    answers.model_name = "sentiment[link=https://evil.example/]\x1b]0;MODEL\x07"
    answers.outputs = [bytes_output(HOSTILE_NAME, HOSTILE_VALUES)]
    done = infer("--target", target, "--input", "text=hi", terminal=terminal)
    assert done.returncode == 0, done.stderr
    printed = SGR.sub("", done.stdout)
    assert "\x1b" not in printed and "\u202e" not in printed, repr(done.stdout)
    assert "\x07" not in printed and "]8;" not in printed, repr(done.stdout)
    for literal in (LINK, UNBALANCED, "x\\u202eevil", "\\x1b]52;c;ZWNobyBwd25lZA==\\x1b\\ok"):
        assert literal in printed, printed
    assert "label[link=https://evil.example/]n[/link]\\x1b]0;NAME-TITLE\\x07" in printed, printed
    assert "sentiment[link=https://evil.example/]\\x1b]0;MODEL\\x07 through" in printed, printed


# -- 2. --json --------------------------------------------------------------------------------
def _not_json(constant: str) -> Any:
    raise ValueError(f"not JSON: {constant}")


def test_json_writes_non_finite_floats_as_strings(upstream: tuple[str, Upstream]) -> None:
    """Review: ``--json`` printed NaN, Infinity and -Infinity bare (json.dumps' default), which
    no strict JSON parser reads. A released reply is still shown: as the strings JSON Schema
    tools and KServe's own clients use for them."""
    target, answers = upstream
    answers.outputs = [
        bytes_output("label", ["plain"]),
        pb.ModelInferResponse.InferOutputTensor(
            name="score",
            datatype="FP32",
            shape=[4],
            contents=pb.InferTensorContents(fp32_contents=[math.nan, math.inf, -math.inf, 1.5]),
        ),
    ]
    done = infer("--target", target, "--input", "text=hi", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout, parse_constant=_not_json)
    scores = {o["name"]: o["data"] for o in printed["outputs"]}["score"]
    assert scores == ["NaN", "Infinity", "-Infinity", 1.5]


def test_json_over_rest_writes_non_finite_floats_as_strings(
    rest_upstream: tuple[str, dict[str, bytes]],
) -> None:
    """A REST server's answer may hold them bare too (Python's json reads them)."""
    url, bodies = rest_upstream
    bodies["/v2/models/sentiment"] = json.dumps(
        {"name": "sentiment", "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}]}
    ).encode()
    bodies["/v2/models/sentiment/infer"] = (
        b'{"model_name": "sentiment", "outputs": [{"name": "y", "datatype": "FP64", "shape": [2, 2],'
        b' "data": [[NaN, 1.0], [-Infinity, Infinity]]}]}'
    )
    done = infer("--rest", url, "--input", "x=[1.0]", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout, parse_constant=_not_json)
    assert printed["outputs"][0]["data"] == [["NaN", 1.0], ["-Infinity", "Infinity"]]


# -- 3. REST answers without the protocol's keys ----------------------------------------------
GOOD_METADATA = {"name": "sentiment", "inputs": [{"name": "a", "datatype": "BYTES", "shape": [-1]}]}


@pytest.mark.parametrize(
    "metadata",
    [
        {"inputs": [{"name": "a"}]},  # the review's: KeyError 'datatype'
        {"inputs": [{"name": "a", "datatype": "BYTES"}]},
        {"inputs": [{"name": "a", "datatype": "BYTES", "shape": "x"}]},
        {"inputs": [{"name": "a", "datatype": "BYTES", "shape": ["x"]}]},
        {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [-1]}], "outputs": [{"nom": "b"}]},
        {"inputs": [1]},
        {"inputs": {"a": "BYTES"}},
        {"inputs": [{"name": ["a"], "datatype": "BYTES", "shape": [-1]}]},
    ],
)
def test_metadata_without_the_protocols_keys_is_one_error_line(
    rest_upstream: tuple[str, dict[str, bytes]], metadata: dict[str, Any]
) -> None:
    url, bodies = rest_upstream
    bodies["/v2/models/sentiment"] = json.dumps(metadata).encode()
    done = infer("--rest", url, "--input", "a=hi")
    assert_one_error_line(done, 1, "ANSWER_INVALID")
    assert "metadata" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "reply",
    [
        {"outputs": [{"name": "b"}]},
        {"outputs": [{"name": "b", "datatype": "BYTES", "shape": None, "data": []}]},
        {"outputs": [{"name": "b", "datatype": "BYTES", "shape": [1], "data": "abc"}]},
        {"outputs": [{"name": "b", "datatype": 7, "shape": [1], "data": ["x"]}]},
        {"outputs": ["b"]},
        {"outputs": {"b": ["x"]}},
    ],
)
def test_a_reply_without_the_protocols_keys_is_one_error_line(
    rest_upstream: tuple[str, dict[str, bytes]], reply: dict[str, Any]
) -> None:
    url, bodies = rest_upstream
    bodies["/v2/models/sentiment"] = json.dumps(GOOD_METADATA).encode()
    bodies["/v2/models/sentiment/infer"] = json.dumps(reply).encode()
    done = infer("--rest", url, "--input", "a=hi")
    assert_one_error_line(done, 1, "ANSWER_INVALID")


# -- 4. errors quoting the model's names ------------------------------------------------------
IN_NAME = "text\nsecond line\x1b]0;IN-TITLE\x07"
OUT_NAME = "out\x1b]52;c;ZWNobyBwd25lZA==\x1b\\\r\n"


def test_names_the_model_gave_are_quoted_escaped_on_one_line() -> None:
    with pytest.raises(InvalidInput) as unknown:
        typed_inputs({"zz": "hi"}, [Spec(IN_NAME, "BYTES", (-1,))])
    assert unknown.value.message == (
        "the model has no input zz (its inputs: text\\nsecond line\\x1b]0;IN-TITLE\\x07)"
    )
    with pytest.raises(InvalidInput) as missing:
        typed_inputs({}, [Spec(IN_NAME, "BYTES", (-1,))])
    assert missing.value.message == "the model also needs input text\\nsecond line\\x1b]0;IN-TITLE\\x07"
    with pytest.raises(InvalidInput) as no_output:
        check_outputs(["no\npe"], [OUT_NAME])
    assert no_output.value.message == (
        "the model has no output no\\npe (its outputs: out\\x1b]52;c;ZWNobyBwd25lZA==\\x1b\\\\r\\n)"
    )


def test_errors_naming_the_models_inputs_and_outputs_are_one_line(upstream: tuple[str, Upstream]) -> None:
    """Review: INPUT_UNKNOWN and OPTION_INVALID quoted the model's names as sent; a newline in
    one split the error over lines (the part after it looked like labelgate's own words)."""
    target, answers = upstream
    answers.inputs = [(IN_NAME, "BYTES")]
    answers.outputs = [bytes_output(OUT_NAME, ["x"])]
    unknown = infer("--target", target, "--input", "zz=hi")
    assert_one_error_line(unknown, 2, "INPUT_UNKNOWN")
    assert "text\\nsecond line\\x1b]0;IN-TITLE\\x07" in unknown.stderr, unknown.stderr
    no_output = infer("--target", target, "--input", f"{IN_NAME}=hi", "--outputs", "nope")
    assert_one_error_line(no_output, 2, "OPTION_INVALID")
    assert "out\\x1b]52;c;ZWNobyBwd25lZA==\\x1b\\\\r\\n" in no_output.stderr, no_output.stderr
