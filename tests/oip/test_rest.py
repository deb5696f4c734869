"""The KServe v2 REST binding as pure conversions: JSON and Triton's binary extension."""

from __future__ import annotations

import json
import struct

import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput, ResourceExhausted, Unsupported, UpstreamError
from labelgate.oip import extensions, rest
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_inputs, decode_outputs, encode_outputs, tensor_to_raw

LIMIT = 1 << 24  # limits.max_message_bytes, far above what these requests need
MAX_INPUTS = 1024  # limits.max_inputs's default


def body_of(document: dict, binary: bytes = b"") -> tuple[bytes, str | None]:
    header = json.dumps(document).encode()
    return header + binary, (str(len(header)) if binary else None)


def test_json_inputs_become_the_grpc_request() -> None:
    body, length = body_of(
        {
            "id": "r1",
            "parameters": {"priority": 2},
            "inputs": [
                {"name": "ids", "datatype": "INT64", "shape": [2, 1], "data": [[1], [2]]},
                {"name": "q", "datatype": "BYTES", "shape": [1], "data": ["héllo"]},
            ],
            "outputs": [{"name": "ssn"}],
        }
    )
    request, reply_format = rest.infer_request(
        "customer-profile", "", body, length, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS
    )
    assert (request.model_name, request.id) == ("customer-profile", "r1")
    assert request.parameters["priority"].int64_param == 2
    assert [(t.name, t.values) for t in decode_inputs(request)] == [
        ("ids", [1, 2]),
        ("q", ["héllo".encode()]),
    ]
    assert [o.name for o in request.outputs] == ["ssn"]
    assert not reply_format.is_binary("ssn")


def test_binary_inputs_are_read_in_order_as_tritonclient_sends_them() -> None:
    ids = tensor_to_raw(Tensor("ids", "INT64", [3], [4, 5, 6]))
    text = tensor_to_raw(Tensor("q", "BYTES", [2], [b"a", b"bc"]))
    body, length = body_of(
        {
            "inputs": [
                {
                    "name": "ids",
                    "datatype": "INT64",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(ids)},
                },
                {
                    "name": "q",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(text)},
                },
            ],
            "parameters": {"binary_data_output": True},
        },
        ids + text,
    )
    request, reply_format = rest.infer_request(
        "m", "1", body, length, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS
    )
    assert [t.values for t in decode_inputs(request)] == [[4, 5, 6], [b"a", b"bc"]]
    assert "binary_data_size" not in request.inputs[0].parameters
    assert "binary_data_output" not in request.parameters
    assert reply_format.is_binary("anything")


def test_an_empty_input_list_is_the_upstreams_to_judge_as_over_grpc() -> None:
    request, _ = rest.infer_request(
        "m", "", json.dumps({"inputs": []}).encode(), None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS
    )
    assert list(request.inputs) == [] and request.model_name == "m"


@pytest.mark.parametrize(
    ("document", "binary", "length", "reason"),
    [
        ({"inputs": {}}, b"", None, "REST_REQUEST_INVALID"),
        ({}, b"", None, "REST_REQUEST_INVALID"),
        (
            {"inputs": [{"name": "x", "datatype": "NOPE", "shape": [1], "data": [1]}]},
            b"",
            None,
            "REST_REQUEST_INVALID",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}
                ]
            },
            b"\x00" * 4,
            "auto",
            "REST_REQUEST_INVALID",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]},
            b"extra",
            "auto",
            "REST_REQUEST_INVALID",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2], "data": [1]}]},
            b"",
            None,
            "REST_REQUEST_INVALID",
        ),
    ],
)
def test_malformed_requests_are_clear_errors(
    document: dict, binary: bytes, length: str | None, reason: str
) -> None:
    body, auto = body_of(document, binary)
    with pytest.raises(InvalidInput) as refused:
        rest.infer_request(
            "m", "", body, auto if length == "auto" else length, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS
        )
    assert refused.value.reason == reason


INPUT = '{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}'


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [18446744073709551616], "data": [1]}]}',
        b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [true], "data": [1]}]}',
        b'{"id": "\\ud800", "inputs": [' + INPUT.encode() + b"]}",
        b'{"inputs": [{"name": "\\ud800", "datatype": "INT64", "shape": [1], "data": [1]}]}',
        b'{"parameters": {"p": "\\ud800"}, "inputs": [' + INPUT.encode() + b"]}",
        b'{"parameters": {"\\udc00": 1}, "inputs": [' + INPUT.encode() + b"]}",
        b'{"inputs": [' + INPUT.encode() + b'], "outputs": [{"name": "\\ud800"}]}',
    ],
    ids=["shape-2**64", "shape-true", "id", "input-name", "parameter", "parameter-name", "output-name"],
)
def test_values_protobuf_cannot_carry_are_clear_errors(body: bytes) -> None:
    """Numbers past int64, bools as dimensions and lone surrogates (valid JSON escapes, no UTF-8
    form) are the caller's 400, not protobuf's ValueError (a 500 with a traceback)."""
    with pytest.raises(InvalidInput) as refused:
        rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    assert refused.value.reason == "REST_REQUEST_INVALID"


def test_repository_parameters_protobuf_cannot_carry_are_clear_errors() -> None:
    for body in (b'{"parameters": {"\\ud800": "x"}}', b'{"parameters": {"config": "\\ud800"}}'):
        with pytest.raises(InvalidInput) as refused:
            extensions.repository_parameters(body, ext.RepositoryModelLoadRequest().parameters)
        assert refused.value.reason == "REST_REQUEST_INVALID"
    with pytest.raises(InvalidInput, match="must be base64"):  # not ASCII: not base64 either
        extensions.repository_parameters(
            b'{"parameters": {"file:m": "caf\\u00e9"}}', ext.RepositoryModelLoadRequest().parameters
        )


def test_not_json_and_nan_are_refused() -> None:
    for body in (b"{not json", b'{"inputs": NaN}', b"\xff\xfe"):
        with pytest.raises(InvalidInput):
            rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)


def test_shared_memory_is_refused_as_uninspectable() -> None:
    body, _ = body_of(
        {
            "inputs": [
                {"name": "x", "datatype": "INT64", "shape": [1], "parameters": {"shared_memory_region": "r"}}
            ]
        }
    )
    with pytest.raises(Unsupported) as refused:
        rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    assert refused.value.reason == "SHARED_MEMORY_UNSUPPORTED"


def reply() -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name="m", model_version="1", id="r1")
    encode_outputs(
        message,
        [Tensor("score", "FP32", [2], [0.5, 0.25]), Tensor("text", "BYTES", [1], [b"hi"])],
        raw=True,
    )
    message.outputs[0].parameters["labelgate.masked"].string_param = "null"
    return message


def test_replies_in_json() -> None:
    body, length = rest.infer_response(reply(), rest.ReplyFormat())
    assert length is None
    document = json.loads(body)
    assert document["outputs"][0] == {
        "name": "score",
        "datatype": "FP32",
        "shape": [2],
        "data": [0.5, 0.25],
        "parameters": {"labelgate.masked": "null"},
    }
    assert document["outputs"][1]["data"] == ["hi"]


def test_replies_in_binary_follow_the_header() -> None:
    body, length = rest.infer_response(reply(), rest.ReplyFormat(binary={"score"}))
    assert length is not None
    document = json.loads(body[:length])
    size = document["outputs"][0]["parameters"]["binary_data_size"]
    assert struct.unpack("<2f", body[length : length + size]) == (0.5, 0.25)
    assert "data" not in document["outputs"][0] and document["outputs"][1]["data"] == ["hi"]


def test_bytes_that_are_not_text_need_binary() -> None:
    """The upstream's bytes, not the caller's request: an upstream error (502), not a 400."""
    message = pb.ModelInferResponse(model_name="m")
    encode_outputs(message, [Tensor("blob", "BYTES", [1], [b"\xff"])], raw=True)
    with pytest.raises(UpstreamError) as refused:
        rest.infer_response(message, rest.ReplyFormat())
    assert (refused.value.reason, refused.value.http_status) == ("REST_OUTPUT_NOT_TEXT", 502)
    assert "upstream" in refused.value.message
    body, length = rest.infer_response(message, rest.ReplyFormat(all_binary=True))
    assert body[length:] == b"\x01\x00\x00\x00\xff"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_need_binary(value: float) -> None:
    """``json.dumps`` spells them NaN and Infinity, which no JSON parser reads: the caller got
    a 200 it could not parse (found by review). The upstream's values: a 502."""
    message = pb.ModelInferResponse(model_name="m")
    encode_outputs(message, [Tensor("score", "FP32", [2], [0.5, value])], raw=True)
    with pytest.raises(UpstreamError) as refused:
        rest.infer_response(message, rest.ReplyFormat())
    assert (refused.value.reason, refused.value.http_status) == ("REST_OUTPUT_NOT_JSON", 502)
    body, length = rest.infer_response(message, rest.ReplyFormat(all_binary=True))
    assert (
        length is not None and json.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"] == 8
    )


# -- toward a REST upstream -------------------------------------------------------------------


def test_an_admitted_request_becomes_plain_v2_json() -> None:
    request = pb.ModelInferRequest(model_name="m", id="r9")
    request.parameters["priority"].int64_param = 3
    ids = request.inputs.add(name="ids", datatype="INT64", shape=[2])
    ids.contents.int64_contents.extend([4, 5])
    text = request.inputs.add(name="q", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append("héllo".encode())
    request.outputs.add(name="ssn")
    assert json.loads(rest.upstream_infer_body(request)) == {
        "id": "r9",
        "parameters": {"priority": 3},
        "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [2], "data": [4, 5]},
            {"name": "q", "datatype": "BYTES", "shape": [1], "data": ["héllo"]},
        ],
        "outputs": [{"name": "ssn"}],
    }
    binary = pb.ModelInferRequest(model_name="m")
    binary.inputs.add(name="q", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    with pytest.raises(InvalidInput) as caught:
        rest.upstream_infer_body(binary)
    assert caught.value.reason == "REST_UPSTREAM_INPUT_NOT_TEXT"


def test_an_upstream_reply_keeps_only_what_the_protocol_names() -> None:
    document = {
        "model_name": "m",
        "id": "x",
        "parameters": {"trace": "t", "headers": {"x-a": "secret"}, "labelgate.labels": "restricted"},
        "outputs": [
            {"name": "n", "datatype": "INT64", "shape": [2, 1], "data": [[1], [2]], "debug": "secret"},
            {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["ok"], "parameters": {"p": [1]}},
        ],
        "unknown": {"row": "secret"},
    }
    for raw in (True, False):
        reply = rest.upstream_infer_reply(json.dumps(document).encode(), None, raw)
        assert [(t.name, t.values) for t in decode_outputs(reply)] == [("n", [1, 2]), ("s", [b"ok"])]
        assert bool(reply.raw_output_contents) == raw
        assert set(reply.parameters) == {"trace", "labelgate.labels"}, "objects are left behind"
        assert "secret" not in str(reply)


def test_an_upstream_reply_with_binary_tensors() -> None:
    header = json.dumps(
        {
            "outputs": [
                {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}}
            ]
        }
    ).encode()
    body = header + struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    reply = rest.upstream_infer_reply(body, str(len(header)), True)
    assert decode_outputs(reply)[0].values == [b"ab", b"c"]


@pytest.mark.parametrize(
    ("body", "length"),
    [
        (b"not json", None),
        (b"[1]", None),
        (b'{"outputs": [{"name": "n", "datatype": "INT64", "shape": [3], "data": [1]}]}', None),
        (b'{"outputs": [{"name": "n", "datatype": "NOPE", "shape": [1], "data": [1]}]}', None),
        (b'{"outputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": ["1"]}]}', None),
        (b'{"outputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [1.5]}]}', None),
        (b'{"outputs": [{"name": "s", "datatype": "BYTES", "shape": [1], "data": [1]}]}', None),
        (b'{"parameters": {"labelgate.labels": ["public"]}, "outputs": []}', None),
        (b'{"outputs": []}trailing', "15"),
        (b'{"outputs": []}', "PLTlength"),
    ],
)
def test_an_upstream_reply_that_does_not_parse_is_malformed(body: bytes, length: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        rest.upstream_infer_reply(body, length, True)
    assert caught.value.reason == "UPSTREAM_MALFORMED"


SMUGGLED = 8775189971295653954952255461945496337279125397783676024143793713714  # text, as a number


@pytest.mark.parametrize(
    "document",
    [
        {"outputs": [{"name": "n", "datatype": "INT64", "shape": [SMUGGLED], "data": [1]}]},
        {"outputs": [{"name": "n", "datatype": "INT64", "shape": [2**63], "data": [1]}]},
        {"id": "\ud800", "outputs": []},
        {"model_name": "\udc00", "outputs": []},
        {"outputs": [{"name": "\ud800", "datatype": "INT64", "shape": [1], "data": [1]}]},
        {"parameters": {"\ud800": 1}, "outputs": []},
        {"parameters": {"p": "\ud800"}, "outputs": []},
    ],
    ids=["shape-smuggled", "shape-2**63", "id", "model-name", "output-name", "parameter-name", "parameter"],
)
def test_upstream_values_protobuf_cannot_carry_are_malformed_in_fixed_text(document: dict) -> None:
    """protobuf's own error ("Value out of range: <number>") would carry the upstream's number
    to the caller (bytes of the caller-visible status chosen by the upstream): the reply is
    malformed, in text that quotes nothing of it."""
    with pytest.raises(InvalidInput) as caught:
        rest.upstream_infer_reply(json.dumps(document).encode(), None, True)
    assert caught.value.reason == "UPSTREAM_MALFORMED"
    assert str(SMUGGLED)[:12] not in caught.value.message and "ud800" not in caught.value.message


@pytest.mark.parametrize(
    ("body", "response_type"),
    [
        (b'{"name": "\\ud800"}', pb.ModelMetadataResponse),
        (b'{"name": "m", "inputs": [{"name": "\\ud800", "datatype": "FP32"}]}', pb.ModelMetadataResponse),
        (b'{"name": "s", "extensions": ["\\ud800"]}', pb.ServerMetadataResponse),
        (b'[{"name": "m", "state": "\\ud800"}]', None),
        (b'[{"name": "m", "reason": "\\udfff"}]', None),
    ],
    ids=["metadata-name", "metadata-input", "server-extension", "index-state", "index-reason"],
)
def test_upstream_metadata_and_index_with_lone_surrogates_are_malformed(
    body: bytes, response_type: type | None
) -> None:
    with pytest.raises(InvalidInput) as caught:
        if response_type is None:
            rest.upstream_index(body)
        else:
            rest.upstream_metadata(body, response_type)
    assert caught.value.reason == "UPSTREAM_MALFORMED"


def test_upstream_metadata_reads_the_protocols_keys_only() -> None:
    body = json.dumps(
        {
            "name": "m",
            "versions": ["1"],
            "platform": "p",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3], "parameters": {"a": "secret"}}],
            "outputs": [],
            "parameters": {"secret": "secret"},
        }
    ).encode()
    message = rest.upstream_metadata(body, pb.ModelMetadataResponse)
    assert message == pb.ModelMetadataResponse(
        name="m",
        versions=["1"],
        platform="p",
        inputs=[pb.ModelMetadataResponse.TensorMetadata(name="x", datatype="FP32", shape=[-1, 3])],
    )
    server = rest.upstream_metadata(
        b'{"name": "s", "version": "1", "extensions": ["a"]}', pb.ServerMetadataResponse
    )
    assert server == pb.ServerMetadataResponse(name="s", version="1", extensions=["a"])
    with pytest.raises(InvalidInput):
        rest.upstream_metadata(b'{"name": 3}', pb.ModelMetadataResponse)


@pytest.mark.parametrize(
    ("datatype", "count", "data"),
    [("INT64", 100, [0] * 100), ("FP64", 100, [0.0] * 100), ("BYTES", 30, ["ab"] * 30)],
)
def test_an_input_larger_than_the_limit_as_raw_bytes_is_refused_before_it_is_built(
    datatype: str, count: int, data: list
) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [count], "data": data}]}
    ).encode()
    with pytest.raises(ResourceExhausted) as refused:
        rest.infer_request("m", "", body, None, max_raw_bytes=179, max_inputs=MAX_INPUTS)
    assert refused.value.reason == "REQUEST_TOO_LARGE" and "inputs[0]" in refused.value.message
    request, _ = rest.infer_request("m", "", body, None, max_raw_bytes=800, max_inputs=MAX_INPUTS)
    assert len(request.raw_input_contents[0]) <= 800


def test_the_binary_part_and_earlier_inputs_count_against_the_limit() -> None:
    document = {
        "inputs": [
            {"name": "a", "datatype": "INT8", "shape": [100], "parameters": {"binary_data_size": 100}},
            {"name": "b", "datatype": "INT8", "shape": [50], "data": [0] * 50},
            {"name": "c", "datatype": "INT8", "shape": [50], "data": [0] * 50},
        ]
    }
    body, length = body_of(document, bytes(100))
    with pytest.raises(ResourceExhausted) as refused:
        rest.infer_request("m", "", body, length, max_raw_bytes=199, max_inputs=MAX_INPUTS)
    assert "inputs[2]" in refused.value.message
    assert (
        len(
            rest.infer_request("m", "", body, length, max_raw_bytes=200, max_inputs=MAX_INPUTS)[
                0
            ].raw_input_contents
        )
        == 3
    )


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_json_nested_too_deeply_is_refused_in_plain_words(depth: int) -> None:
    """Python's decoder says "maximum recursion depth exceeded while decoding a JSON array
    from a unicode string": the caller gets the gateway's words, not the interpreter's."""
    body = b'{"inputs":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidInput) as caught:
        rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    assert caught.value.reason == "REST_REQUEST_INVALID"
    assert caught.value.message == "the request nests too deeply to read as JSON"


def test_an_integer_too_long_for_any_tensor_is_refused_in_plain_words() -> None:
    """Python refuses an integer string past 4,300 digits naming its own setting
    (``sys.set_int_max_str_digits``); the caller gets the gateway's words."""
    body = b'{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[' + b"9" * 5000 + b"]}]}"
    with pytest.raises(InvalidInput) as caught:
        rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    assert caught.value.reason == "REST_REQUEST_INVALID"
    assert "set_int_max_str_digits" not in caught.value.message
    assert "more than 64 digits" in caught.value.message
    ordinary = b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[1],"data":[18446744073709551615]}]}'
    assert (
        rest.infer_request("m", "", ordinary, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)[0]
        .inputs[0]
        .name
        == "x"
    )


def test_a_number_out_of_a_doubles_range_is_refused_not_read_as_infinity() -> None:
    """Review, seventh round: ``1e400`` from a REST upstream became ``inf`` for a gRPC caller."""
    body = b'{"inputs":[{"name":"x","datatype":"FP64","shape":[1],"data":[1e400]}]}'
    with pytest.raises(InvalidInput) as caught:
        rest.infer_request("m", "", body, None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    assert caught.value.reason == "REST_REQUEST_INVALID"
    assert "out of a double's range" in caught.value.message
    assert rest.parse_json(b"[1e308, -2.5e-300, 0.1]") == [1e308, -2.5e-300, 0.1]


@pytest.mark.parametrize("datatype", ["INT64", "BYTES"])
def test_a_shape_of_many_huge_dimensions_is_refused_with_a_short_message(datatype: str) -> None:
    """Review (thirteenth round): the dimensions were multiplied out in full before the rank was
    checked, a number growing by 62 bits a dimension (1 MiB of them held the event loop 8 s,
    gzip made that 5 KB of wire), and the refusal quoted Python's integer-digit limit or echoed
    a 20,000-dimension shape whole."""
    shape = ", ".join(["4611686018427387903"] * 240 + ["1"] * 20_000)
    body = f'{{"inputs": [{{"name": "x", "datatype": "{datatype}", "shape": [{shape}], "data": ["a"]}}]}}'
    with pytest.raises((InvalidInput, ResourceExhausted)) as refused:
        rest.infer_request("m", "", body.encode(), None, max_raw_bytes=LIMIT, max_inputs=MAX_INPUTS)
    message = refused.value.message
    assert "digits" not in message and "sys." not in message, message
    assert len(message) < 400, message
