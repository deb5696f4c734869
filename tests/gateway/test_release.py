"""The release path: the gateway builds every reply itself from classified parts (issue 11).

Integration tests with real peers: ``labelgate serve`` child processes with a real audit
writer and session recording, in front of the real demo backend or of a programmable,
misbehaving upstream (``planted_upstream.py``) that the test drives through the request.
Each of issue 11's eight cases has its tests here:

1. ids shared on one stream: each reply is decided against its own request's model;
2. a stream reply with ``error_message`` passes nothing of the upstream's;
3. side doors (parameters, ids, unknown fields, metadata, error text) stay shut;
4. JSON classification fails closed (too many keys, a detector on a key, a duplicate key)
   and sees through JSON escapes;
5. upstream JSON keys never reach audit records, logs or recordings;
6. a value split across decoupled replies is masked as one span, text around it readable;
7. bounds: too many requested outputs (and fields, and too long paths) are refused while
   the gateway keeps serving everyone else;
8. a masked output says so: output parameter ``labelgate.masked``.

Tokens planted by the tests (``PLT...``) stand for anything an upstream may put on the
wire: none may reach the caller unless the policy released that field.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import unknown_fields

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.config import LimitSettings
from labelgate.demo.data import customer
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs
from tests.gateway.expected import confidential_and_restricted, customer_request, partial
from tests.gateway.harness import (
    AuditedStack,
    Received,
    TokenIssuer,
    capture_stream,
    capture_unary,
    run_audited_gateway,
    run_planted_upstream,
)
from tests.gateway.planted_upstream import REPORT_MODEL, plant_parameter, plant_request, unknown
from tests.support.procs import wait_until
from tests.support.triton import run_probe

# Models of the test's own catalog (written next to the gateway's config).
PUBLIC_MODEL = "release-public"  # outputs.* public
DOCS_MODEL = "release-docs"  # outputs.doc public, outputs.doc[].secret restricted
SCORES_MODEL = "release-scores"  # outputs.score (FP32) restricted, outputs.label public
UNKNOWN_MODEL = "release-uncatalogued"  # not in the catalog: the default label, internal
TEST_CATALOG_ENTRIES = [
    {"model": PUBLIC_MODEL, "path": "outputs.*", "labels": ["public"]},
    {"model": DOCS_MODEL, "path": "outputs.doc", "labels": ["public"]},
    {"model": DOCS_MODEL, "path": "outputs.doc[].secret", "labels": ["restricted"]},
    {"model": SCORES_MODEL, "path": "outputs.score", "labels": ["restricted"]},
    {"model": SCORES_MODEL, "path": "outputs.label", "labels": ["public"]},
]
RELEASED_RESPONSE_PARAMETERS = {"triton_final_response"}
MASKED_PARAMETER = "labelgate.masked"
SSN = "123-45-6789"
UPSTREAM_ERROR_TEXT = f"row for ssn {SSN}"
CARD = "4111 1111 1111 1111"  # Luhn-valid


def token(tag: str = "") -> str:
    """A fresh value no detector recognises, to plant where only the policy may release it."""
    return f"PLT{tag}{uuid.uuid4().hex[:16]}"


def digits(value: str) -> str:
    return re.sub(r"\D", "", value)


_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")


def readable(data: bytes) -> bytes:
    """``data`` plus the same bytes with JSON ``\\uXXXX`` escapes decoded: what a client
    that parses the JSON it received would read."""
    return data + b"\n" + _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "replace"), data)


def leaked(data: bytes, values: list[str]) -> list[str]:
    haystack = readable(data)
    return [value for value in values if value.encode() in haystack]


def unknown_fields_in(message: Any, where: str = "reply") -> list[str]:
    """Where a parsed message (and every message inside it) holds unknown fields."""
    found = [where] if len(unknown_fields.UnknownFieldSet(message)) else []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        name = f"{where}.{descriptor.name}"
        if descriptor.message_type.GetOptions().map_entry:
            if descriptor.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    found += unknown_fields_in(item, f"{name}[{key}]")
        elif descriptor.is_repeated:
            for index, item in enumerate(value):
                found += unknown_fields_in(item, f"{name}[{index}]")
        else:
            found += unknown_fields_in(value, name)
    return found


def parameter_values(parameters: Any) -> dict[str, Any]:
    return {
        key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        for key, value in parameters.items()
    }


# --- the real parts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[AuditedStack]:
    """The gateway in front of the planted upstream."""
    directory = tmp_path_factory.mktemp("release-planted")
    with (
        run_planted_upstream(directory) as (address, _),
        run_audited_gateway(directory, address, token_issuer, TEST_CATALOG_ENTRIES) as stack,
    ):
        yield stack


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer
) -> Iterator[AuditedStack]:
    """The gateway in front of the real demo backend."""
    with run_audited_gateway(tmp_path_factory.mktemp("release-demo"), backend, token_issuer) as stack:
        yield stack


async def upstream_events(upstream: str) -> list[dict[str, Any]]:
    """What the planted upstream received (asked directly, not through the gateway)."""
    received = await capture_unary(upstream, pb.ModelInferRequest(model_name=REPORT_MODEL))
    return json.loads(
        pb.ModelInferResponse.FromString(received.messages[0]).parameters["events"].string_param
    )


def stream_replies(received: Received) -> list[pb.ModelStreamInferResponse]:
    return [pb.ModelStreamInferResponse.FromString(message) for message in received.messages]


def outputs(response: pb.ModelInferResponse) -> dict[str, Tensor]:
    return {tensor.name: tensor for tensor in decode_outputs(response)}


def text_values(tensor: Tensor) -> list[str]:
    return [bytes(value).decode("utf-8", "replace") for value in tensor.values]


def bytes_output(name: str, *values: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "values": list(values), **extra}


def sentiment_request(texts: list[str], request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="sentiment", id=request_id)
    encode_inputs(request, [Tensor("text", "BYTES", [len(texts)], [t.encode() for t in texts])], raw=True)
    return request


# --- 1. ids shared on one stream ------------------------------------------------------------------

MANY_ROWS = list(range(3000))


async def test_1_streamed_requests_sharing_an_id_are_each_decided_against_their_own_model(
    demo: AuditedStack,
) -> None:
    """Issue 11 case 1, against the real demo backend: a big customer-profile request, then a
    sentiment request, both with id "", on one stream. The no-group caller never sees an
    account secret or a name in clear, and the audit names the right model for each reply."""
    session = f"s-{uuid.uuid4().hex}"
    requests = [customer_request(MANY_ROWS, request_id=""), sentiment_request(["great service"], "")]
    received = await capture_stream(demo.address, requests, demo.headers("no-group", session), deadline=60)

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    replies = stream_replies(received)
    assert len(replies) == 2 and not any(reply.error_message for reply in replies)
    assert [reply.infer_response.id for reply in replies] == ["", ""]
    profile = outputs(replies[0].infer_response)
    assert set(text_values(profile["account_secret"])) == {""}, "restricted: emptied"
    assert set(text_values(profile["name"])) == {"[REDACTED]"}, "internal: redacted for no group"
    assert text_values(outputs(replies[1].infer_response)["label"]) == ["positive"], "public"

    secrets = sorted({customer(i).account_secret for i in MANY_ROWS} | {customer(i).name for i in MANY_ROWS})
    found = leaked(received.blob(), secrets)
    assert not found, f"{len(found)} account secrets or names reached the no-group caller"

    def response_records() -> list[dict[str, Any]]:
        return [r for r in demo.records(session) if r.get("phase") == "response"]

    wait_until(lambda: len(response_records()) >= 2, 20, "the audit records of both replies")
    models = sorted(record["model"] for record in response_records())
    assert models == ["customer-profile", "sentiment"]
    (profile_record,) = [r for r in response_records() if r["model"] == "customer-profile"]
    assert "restricted" in profile_record["labels"]
    assert any(m["path"] == "outputs.account_secret" for m in profile_record["masked"])


async def test_1_replies_are_routed_by_the_gateways_own_ids_not_the_callers_or_the_model_name(
    planted: AuditedStack,
) -> None:
    """The same with the planted upstream, deterministically: two requests with the same
    caller id; the upstream answers the second first and lies about the first reply's model.
    Upstream ids are the gateway's own (distinct), and the caller gets its id back."""
    score_token = 1234.5  # an FP32 value restricted under SCORES_MODEL
    first = plant_request(
        {"stream": []},  # answered by the second request's plant, after it arrived
        model=SCORES_MODEL,
        request_id="",
    )
    second = plant_request(
        {
            "stream": [
                {"reply": {"id": {"request": 1}, "outputs": [bytes_output("label", "second")]}},
                {
                    "reply": {
                        "id": {"request": 0},
                        "model_name": PUBLIC_MODEL,  # a lie: decisions follow the request's model
                        "outputs": [
                            {"name": "score", "datatype": "FP32", "values": [score_token]},
                            bytes_output("label", "first"),
                        ],
                    }
                },
            ]
        },
        model=PUBLIC_MODEL,
        request_id="",
    )
    received = await capture_stream(planted.address, [first, second], planted.headers("analyst"))
    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    replies = [reply.infer_response for reply in stream_replies(received)]
    assert [reply.id for reply in replies] == ["", ""]
    assert [reply.model_name for reply in replies] == [PUBLIC_MODEL, SCORES_MODEL]
    assert text_values(outputs(replies[0])["label"]) == ["second"]
    first_reply = outputs(replies[1])
    assert first_reply["score"].values == [0.0], "restricted under the first request's model"
    assert text_values(first_reply["label"]) == ["first"]

    seen = [e for e in await upstream_events(planted.upstream) if e["method"] == "ModelStreamInfer"][-2:]
    upstream_ids = [event["id"] for event in seen]
    assert all(upstream_ids) and len(set(upstream_ids)) == 2, (
        f"the gateway's own ids upstream: {upstream_ids}"
    )


@pytest.mark.parametrize("fault", ["foreign", "missing", "duplicate"])
async def test_1_a_reply_for_no_open_request_ends_the_stream_as_malformed(
    planted: AuditedStack, fault: str
) -> None:
    secret = token("id")
    leak = bytes_output("text", f"leaked {secret}")
    if fault == "foreign":
        stream = [{"reply": {"id": f"other-{secret}", "outputs": [leak]}}]
    elif fault == "missing":
        stream = [{"reply": {"id": "", "outputs": [leak]}}]
    else:  # the request's final reply, then one more with its id
        stream = [
            {"reply": {"outputs": [bytes_output("text", "fine")]}, "final": True},
            {"reply": {"outputs": [leak]}, "final": True},
        ]
    request = plant_request({"stream": stream}, model=PUBLIC_MODEL, request_id="caller-1")
    received = await capture_stream(planted.address, [request], planted.headers("analyst"))
    assert (received.code, received.reason()) == (grpc.StatusCode.INTERNAL, "UPSTREAM_MALFORMED")
    assert not leaked(received.blob(), [secret])


# --- 2. a stream reply with error_message -----------------------------------------------------------


async def test_2_a_stream_error_message_passes_nothing_of_the_upstreams(planted: AuditedStack) -> None:
    secrets = [token("err"), token("model"), token("param"), token("out"), token("unknown"), token("meta")]
    error_text, model_lie, parameter, output, field, meta = secrets
    request = plant_request(
        {
            "initial_metadata": [["x-upstream-note", meta]],
            "stream": [
                {
                    "error_message": f"{UPSTREAM_ERROR_TEXT} ({error_text})",
                    "reply": {
                        "model_name": model_lie,
                        "model_version": model_lie,
                        "parameters": {"debug": parameter, "triton_final_response": True},
                        "outputs": [bytes_output("text", output, parameters={"trace": parameter})],
                        "unknown": [unknown(1000, field)],
                    },
                    "unknown": [unknown(99, field)],
                }
            ],
        },
        model=PUBLIC_MODEL,
        request_id="caller-2",
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_stream(planted.address, [request], planted.headers("analyst", session))

    assert not leaked(received.blob(), [*secrets, SSN, UPSTREAM_ERROR_TEXT])
    replies = stream_replies(received)
    assert len(replies) == 1, (received.code, received.details, replies)
    (reply,) = replies
    assert "UPSTREAM_STREAM_ERROR" in reply.error_message
    expected = pb.ModelInferResponse(id="caller-2", model_name=PUBLIC_MODEL)
    assert reply.infer_response == expected
    assert unknown_fields_in(reply) == []

    at_rest = planted.at_rest_after(session)
    assert not leaked(at_rest, [*secrets, SSN, UPSTREAM_ERROR_TEXT])
    records = planted.records(session)
    assert {r["model"] for r in records if r["model"]} == {PUBLIC_MODEL}
    replies_recorded = [r for r in records if r["model"] == PUBLIC_MODEL and r.get("phase") != "request"]
    assert replies_recorded, "the error reply is audited like any call, under its request's model"


# --- 3. side doors ------------------------------------------------------------------------------------


async def test_3_side_doors_of_a_reply_stay_shut(planted: AuditedStack) -> None:
    """Response parameters, output parameters, the reply's id, model name and version,
    unknown fields at every level, backend labels and upstream metadata: the caller gets
    the outputs the policy released and nothing else."""
    secrets = {name: token(name) for name in ("id", "model", "version", "rparam", "oparam", "unk", "meta")}
    reply = {
        "id": secrets["id"],
        "model_name": secrets["model"],
        "model_version": secrets["version"],
        "parameters": {
            "sql": secrets["rparam"],
            secrets["rparam"]: "key",
            "nested": {"string": "x", "unknown": [unknown(50, secrets["unk"])]},
            "triton_final_response": True,
        },
        "outputs": [
            bytes_output(
                "label",
                "positive",
                parameters={
                    "labelgate.labels": "public",
                    "trace": secrets["oparam"],
                    "labelgate.masked": secrets["oparam"],  # only the gateway says what it masked
                },
                unknown=[unknown(77, secrets["unk"]), unknown(78, secrets["unk"][:8], "fixed64")],
                contents_unknown=[unknown(40, secrets["unk"])],
            )
        ],
        "raw": False,
        "unknown": [unknown(1000, secrets["unk"]), unknown(536870911, secrets["unk"])],
    }
    request = plant_request(
        {
            "reply": reply,
            "initial_metadata": [["x-upstream-debug", secrets["meta"]]],
            "trailing_metadata": [["x-upstream-trace", secrets["meta"]]],
        },
        model=PUBLIC_MODEL,
        request_id="caller-3",
        model_version="",
    )
    received = await capture_unary(planted.address, request, planted.headers("no-group"))

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    assert not leaked(received.blob(), list(secrets.values()))
    response = pb.ModelInferResponse.FromString(received.messages[0])
    assert (response.id, response.model_name, response.model_version) == ("caller-3", PUBLIC_MODEL, "")
    assert set(response.parameters) <= RELEASED_RESPONSE_PARAMETERS
    assert [(o.name, dict(o.parameters)) for o in response.outputs] == [("label", {})]
    assert text_values(outputs(response)["label"]) == ["positive"]
    assert unknown_fields_in(response) == []
    metadata_keys = {key for key, _ in received.initial_metadata + received.trailing_metadata}
    assert not {key for key in metadata_keys if key.startswith("x-upstream")}


@pytest.mark.parametrize("where", ["reply", "output"])
async def test_3_backend_labels_that_do_not_parse_are_not_quoted_back(
    planted: AuditedStack, where: str
) -> None:
    """``labelgate.labels`` naming labels that do not exist: whatever the gateway does with
    the reply, the upstream's text is not in what the caller gets."""
    secret = token("label")
    labels = {"labelgate.labels": f"restricted,{secret}"}
    reply: dict[str, Any] = {"outputs": [bytes_output("label", "positive")]}
    if where == "reply":
        reply["parameters"] = labels
    else:
        reply["outputs"][0]["parameters"] = labels
    request = plant_request({"reply": reply}, model=PUBLIC_MODEL, request_id="caller-3l")
    received = await capture_unary(planted.address, request, planted.headers("analyst"))
    assert not leaked(received.blob(), [secret])


async def test_3_an_upstream_error_keeps_its_code_and_loses_its_text(planted: AuditedStack) -> None:
    secrets = [token("detail"), token("debug"), token("trailer")]
    request = plant_request(
        {
            "error": {
                "code": "INVALID_ARGUMENT",
                "message": UPSTREAM_ERROR_TEXT,
                "details": [
                    {
                        "type": "ErrorInfo",
                        "reason": "BAD_ROW",
                        "domain": "db",
                        "metadata": {"row": secrets[0]},
                    },
                    {"type": "DebugInfo", "detail": secrets[1]},
                ],
                "trailing_metadata": [["x-upstream-trace", secrets[2]]],
            }
        },
        model=PUBLIC_MODEL,
        request_id="caller-3e",
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_unary(planted.address, request, planted.headers("analyst", session))

    assert (received.code, received.reason()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UPSTREAM_INVALID_ARGUMENT",
    )
    assert not leaked(received.blob(), [UPSTREAM_ERROR_TEXT, SSN, "BAD_ROW", *secrets])
    assert not leaked(planted.at_rest_after(session), [UPSTREAM_ERROR_TEXT, SSN, *secrets])


async def test_3_an_upstream_error_ending_a_stream_keeps_its_code_and_loses_its_text(
    planted: AuditedStack,
) -> None:
    secret = token("trailer")
    request = plant_request(
        {
            "stream": [{"reply": {"outputs": [bytes_output("text", "first part")]}, "final": False}],
            "error": {
                "code": "FAILED_PRECONDITION",
                "message": UPSTREAM_ERROR_TEXT,
                "details": [{"type": "DebugInfo", "detail": secret}],
                "trailing_metadata": [["x-upstream-trace", secret]],
            },
        },
        model=PUBLIC_MODEL,
        request_id="caller-3s",
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_stream(planted.address, [request], planted.headers("analyst", session))

    assert (received.code, received.reason()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "UPSTREAM_FAILED_PRECONDITION",
    )
    assert not leaked(received.blob(), [UPSTREAM_ERROR_TEXT, SSN, secret])
    assert not leaked(planted.at_rest_after(session), [UPSTREAM_ERROR_TEXT, SSN, secret])


async def test_3_an_upstream_ending_its_stream_ends_the_callers_and_records_what_it_left(
    planted: AuditedStack,
) -> None:
    """The upstream ends its stream (OK) while the caller's is open: the caller hung to its
    deadline, the held text was never released, and the record blamed the caller (found by
    review). Now what was held is classified and released, the request the upstream never
    answered is recorded, and the stream ends with the upstream's fault."""
    first = plant_request(
        {
            "stream": [
                {
                    "reply": {"outputs": [bytes_output("text", f"held ssn {SSN} ok")]},
                    "final": False,
                    "after_requests": 2,
                }
            ],
            "end": True,
        },
        model=PUBLIC_MODEL,
        request_id="caller-3u",
    )
    second = plant_request({"stream": []}, model=PUBLIC_MODEL, request_id="caller-3v")
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_stream(
        planted.address, [first, second], planted.headers("analyst", session), half_close=False
    )
    assert (received.code, received.reason()) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ENDED"), (
        received.code,
        received.details,
    )
    released = b"".join(reply.SerializeToString() for reply in stream_replies(received))
    assert b"held ssn" in released and SSN.encode() not in released, "held text released, masked"
    ended = [record for record in planted.records(session) if record["reason"] == "UPSTREAM_STREAM_ENDED"]
    assert [record["request_id"].rsplit(".", 1)[-1] for record in ended] == ["2"], ended


async def test_3_a_stream_ended_by_a_malformed_reply_records_each_request_it_left(
    planted: AuditedStack,
) -> None:
    """A reply naming no request ends the stream (UPSTREAM_MALFORMED, recorded for the
    stream); the requests it left unanswered went unrecorded (found by review)."""
    first = plant_request(
        {"stream": [{"reply": {"id": "no-such-request"}, "after_requests": 2}]},
        model=PUBLIC_MODEL,
        request_id="caller-3m",
    )
    second = plant_request({"stream": []}, model=PUBLIC_MODEL, request_id="caller-3n")
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_stream(
        planted.address, [first, second], planted.headers("analyst", session), half_close=False
    )
    assert received.reason() == "UPSTREAM_MALFORMED", (received.code, received.details)
    malformed = [record for record in planted.records(session) if record["reason"] == "UPSTREAM_MALFORMED"]
    messages = [record["request_id"] for record in malformed if "." in record["request_id"]]
    assert sorted(request_id.rsplit(".", 1)[-1] for request_id in messages) == ["1", "2"], malformed


# --- 4. JSON fails closed --------------------------------------------------------------------------


def many_keys_doc(secret: str) -> str:
    document = {f"k{i:03d}": f"v{i}" for i in range(300)}
    document["secret"] = secret
    return json.dumps(document)


ABANDONED_DOCS = {
    "300 keys": many_keys_doc,
    "a detector fires on a key": lambda secret: json.dumps({SSN: "who", "secret": secret}),
    "a duplicate key": lambda secret: '{"secret": "%s", "secret": "decoy", "note": "x"}' % secret,  # noqa: UP031
}


@pytest.mark.parametrize("persona", ["no-group", "analyst"])
@pytest.mark.parametrize("shape", ["3 keys (the control)", *ABANDONED_DOCS])
async def test_4_a_json_element_classified_as_a_whole_keeps_its_most_sensitive_label(
    planted: AuditedStack, shape: str, persona: str
) -> None:
    """``outputs.doc`` is public, ``outputs.doc[].secret`` restricted. Whether or not the
    gateway classifies the element key by key, the secret never reaches the caller and the
    call is audited with the restricted label."""
    secret = token("secret")
    make = ABANDONED_DOCS.get(shape, lambda s: json.dumps({"a": 1, "b": "two", "secret": s}))
    request = plant_request(
        {"reply": {"outputs": [bytes_output("doc", make(secret))]}}, model=DOCS_MODEL, request_id="caller-4"
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_unary(planted.address, request, planted.headers(persona, session))

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    assert not leaked(received.blob(), [secret, SSN])
    (record,) = [r for r in planted.records(session) if r.get("phase") == "response"]
    assert "restricted" in record["labels"], record


# The upstream puts an array or an object where the catalog labels a key (review s11 F1).
WRAPPED_SECRETS = {
    "in []": lambda secret: json.dumps({"a": 1, "secret": [secret]}),
    "in {}": lambda secret: json.dumps({"a": 1, "secret": {"v": secret}}),
    "in [{}]": lambda secret: json.dumps({"a": 1, "secret": [{"v": secret}]}),
    "as a key": lambda secret: json.dumps({"a": 1, "secret": {secret: {}}}),
}


@pytest.mark.parametrize("persona", ["no-group", "analyst"])
@pytest.mark.parametrize("wrapped", WRAPPED_SECRETS)
async def test_4_a_catalogued_json_key_holding_an_array_or_object_is_masked_whole(
    planted: AuditedStack, wrapped: str, persona: str
) -> None:
    """``outputs.doc[].secret`` is restricted, and the upstream wraps the secret in ``[]`` or
    ``{}`` (or writes it as a key in there): the leaves below got the default label and no
    field carried ``restricted``, so the secret went out in clear. The default policy pack
    masks the node whole now, leaves the rest of the document as the caller may see it, and
    the call is audited with the restricted label and the mask on the catalogued path."""
    secret = token("wrapped")
    request = plant_request(
        {"reply": {"outputs": [bytes_output("doc", WRAPPED_SECRETS[wrapped](secret))]}},
        model=DOCS_MODEL,
        request_id="caller-4w",
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_unary(planted.address, request, planted.headers(persona, session))

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    assert not leaked(received.blob(), [secret])
    (document,) = text_values(outputs(pb.ModelInferResponse.FromString(received.messages[0]))["doc"])
    released = json.loads(document)
    assert released == {"a": released["a"], "secret": None}
    assert released["a"] == (1 if persona == "analyst" else "[REDACTED]"), "internal: in clear for analysts"
    (record,) = [r for r in planted.records(session) if r.get("phase") == "response"]
    assert "restricted" in record["labels"], record
    assert "outputs.doc[].secret" in [m["path"] for m in record["masked"]], record


ESCAPED_SSN = "".join(f"\\u{ord(c):04x}" if c.isdigit() and i < 3 else c for i, c in enumerate(SSN))


@pytest.mark.parametrize("keys", [3, 300])
async def test_4_json_escapes_are_decoded_before_detectors_scan(planted: AuditedStack, keys: int) -> None:
    """An SSN spelt with JSON escapes in a public document is found and masked, whether the
    element is classified key by key or as a whole."""
    assert ESCAPED_SSN.startswith("\\u0031\\u0032\\u0033-")
    fields = ", ".join(f'"k{i:03d}": "v{i}"' for i in range(keys - 1))
    document = '{%s, "note": "call %s today"}' % (fields, ESCAPED_SSN)  # noqa: UP031
    assert json.loads(document)["note"] == f"call {SSN} today"
    request = plant_request(
        {"reply": {"outputs": [bytes_output("doc", document)]}}, model=PUBLIC_MODEL, request_id="caller-4e"
    )
    received = await capture_unary(planted.address, request, planted.headers("no-group"))

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    assert not leaked(received.blob(), [SSN, ESCAPED_SSN, digits(SSN)])


# --- 5. upstream JSON keys stay out of audit records, logs and recordings ---------------------------


async def test_5_an_upstream_json_key_never_reaches_audit_logs_or_recordings(planted: AuditedStack) -> None:
    keys = [f"sk_live_{uuid.uuid4().hex}", f"sk_live_{uuid.uuid4().hex}"]
    document = json.dumps({keys[0]: SSN, "profile": {keys[1]: {"card": CARD}}, "ok": "fine"})
    request = plant_request(
        {"reply": {"outputs": [bytes_output("doc", document)]}}, model=UNKNOWN_MODEL, request_id="caller-5"
    )
    session = f"s-{uuid.uuid4().hex}"
    received = await capture_unary(planted.address, request, planted.headers("no-group", session))

    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    assert not leaked(received.blob(), [*keys, SSN, CARD])
    at_rest = planted.at_rest_after(session)
    assert planted.records(session), "the call is audited"
    assert b"sk_live_" not in at_rest, (
        "an upstream JSON key is in the audit log, the gateway log or a recording"
    )
    assert not leaked(at_rest, [SSN, CARD])


# --- 6. a value split across decoupled replies ---------------------------------------------------

PIECES = ["Please charge 4111 11", "11 1111 ", "1111 today, thanks."]
assert "".join(PIECES) == f"Please charge {CARD} today, thanks."


def decoupled_plant(pieces: list[str]) -> dict[str, Any]:
    return {
        "stream": [
            {"reply": {"outputs": [bytes_output("text", piece)]}, "final": index == len(pieces) - 1}
            for index, piece in enumerate(pieces)
        ]
    }


@pytest.mark.parametrize(("persona", "model"), [("analyst", UNKNOWN_MODEL), ("no-group", PUBLIC_MODEL)])
def test_6_a_card_split_across_decoupled_replies_is_masked_as_one_span(
    planted: AuditedStack, persona: str, model: str
) -> None:
    """The real Triton client, streaming: ``4111 11`` / ``11 1111 `` / ``1111``. The caller
    gets the readable text around the card; an analyst sees the card's last 4 characters."""
    call = {
        "op": "stream_infer",
        "headers": planted.headers(persona),
        "until_final": True,
        "requests": [
            {
                "model": model,
                "request_id": "card-1",
                "text": ["charge my card"],
                "parameters": {"plant": plant_parameter(decoupled_plant(PIECES))},
            }
        ],
    }
    (result,) = run_probe([call], url=planted.address)
    responses = result["responses"]
    errors = [r["error"] for r in responses if "error" in r]
    assert not errors, errors
    assert [r["id"] for r in responses] == ["card-1"] * len(responses)
    assert responses[-1]["parameters"].get("triton_final_response") is True
    whole = "".join(r["outputs"]["text"]["values"][0] for r in responses if "text" in r["outputs"])

    received = json.dumps(responses)
    assert not leaked(received.encode(), [CARD, digits(CARD)])
    assert CARD not in whole and digits(CARD) not in digits(whole)
    if persona == "analyst":
        assert whole == f"Please charge {partial(CARD)} today, thanks."
    else:
        assert whole.startswith("Please charge ") and whole.endswith(" today, thanks."), whole


# --- 7. bounds ------------------------------------------------------------------------------------

# Thousands, far past limits.max_requested_outputs (256 at most by default). Kept moderate: today's gateway
# decides over every requested output, and a few such calls at once exhaust its memory.
TOO_MANY_OUTPUTS = 2000
MAX_FIELDS = 4096  # at least limits.max_fields' default
GREEDY_CALLERS = 2


async def test_7_thousands_of_requested_outputs_are_refused_while_others_are_served(
    planted: AuditedStack,
) -> None:
    greedy_model = f"greedy-{uuid.uuid4().hex[:8]}"  # names the refused calls upstream, if any
    greedy = plant_request(
        None,
        model=greedy_model,
        request_id="greedy",
        outputs=[f"out{i}" for i in range(TOO_MANY_OUTPUTS)],
    )
    polite = plant_request(
        {"reply": {"outputs": [bytes_output("label", "fine")]}}, model=PUBLIC_MODEL, request_id="polite"
    )

    async def one_polite_caller() -> list[Received]:
        served: list[Received] = []
        while len(served) < 8 and (not served or served[-1].code == grpc.StatusCode.OK):
            served.append(await capture_unary(planted.address, polite, planted.headers("no-group")))
        return served

    results = await asyncio.gather(
        *[capture_unary(planted.address, greedy, planted.headers("analyst")) for _ in range(GREEDY_CALLERS)],
        one_polite_caller(),
    )
    *refusals, served = results
    for refusal in refusals:
        assert (refusal.code, refusal.reason()) == (grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_OUTPUTS"), (
            refusal.code,
            refusal.details,
        )
    for received in served:
        assert received.code == grpc.StatusCode.OK, (received.code, received.details)
        assert text_values(outputs(pb.ModelInferResponse.FromString(received.messages[0]))["label"]) == [
            "fine"
        ]
    assert not [e for e in await upstream_events(planted.upstream) if e["model_name"] == greedy_model], (
        "a refused request must not reach the upstream"
    )


async def test_7_a_reply_with_more_fields_than_the_limit_is_refused(planted: AuditedStack) -> None:
    # The upstream's reply is past the bound: its fault (UNAVAILABLE), not the caller's, and
    # the text does not say how many fields it had (a number of the upstream's choosing).
    secret = token("many")
    request = plant_request(
        {"reply": {"outputs": [bytes_output("col", secret, copies=MAX_FIELDS + 100)]}},
        model=PUBLIC_MODEL,
        request_id="caller-7f",
    )
    received = await capture_unary(planted.address, request, planted.headers("analyst"))
    assert (received.code, received.reason()) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_TOO_MANY_FIELDS")
    assert re.findall(r"\d+", received.details) == [str(LimitSettings().max_fields)], received.details
    assert not leaked(received.blob(), [secret])


@pytest.mark.parametrize("side", ["requested", "replied"])
async def test_7_a_field_path_longer_than_the_limit_is_refused(planted: AuditedStack, side: str) -> None:
    long_name = "o" * 600
    secret = token("long")
    request = plant_request(
        {"reply": {"outputs": [bytes_output(long_name, secret)]}},
        model=PUBLIC_MODEL,
        request_id="caller-7p",
        outputs=[long_name] if side == "requested" else [],
    )
    received = await capture_unary(planted.address, request, planted.headers("analyst"))
    if side == "requested":  # the caller's request: its fault
        assert (received.code, received.reason()) == (grpc.StatusCode.INVALID_ARGUMENT, "PATH_TOO_LONG")
    else:  # the upstream's reply: its fault, and the length it chose is not told
        assert (received.code, received.reason()) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_PATH_TOO_LONG")
        assert re.findall(r"\d+", received.details) == [str(LimitSettings().max_path_bytes)], received.details
    assert not leaked(received.blob(), [secret])


# --- 8. a masked output says so --------------------------------------------------------------------


SCORES = [0.25, 0.5, 0.75]


def scores_plant() -> dict[str, Any]:
    return {
        "reply": {
            "outputs": [
                {"name": "score", "datatype": "FP32", "values": SCORES},
                bytes_output("label", "a", "b", "c"),
            ]
        }
    }


def test_8_a_masked_fp32_output_arrives_with_labelgate_masked(planted: AuditedStack) -> None:
    """Through the real Triton client: the restricted FP32 output is nulled and says so;
    the public output next to it is untouched and carries no such parameter."""
    call = {
        "op": "infer",
        "model": SCORES_MODEL,
        "request_id": "caller-8",
        "text": ["score these"],
        "headers": planted.headers("analyst"),
        "parameters": {"plant": plant_parameter(scores_plant())},
    }
    (result,) = run_probe([call], url=planted.address)
    assert "error" not in result, result
    score, label = result["outputs"]["score"], result["outputs"]["label"]
    assert score["datatype"] == "FP32" and score["values"] == [0.0] * len(SCORES)
    assert score["parameters"] == {MASKED_PARAMETER: "null"}
    assert label["values"] == ["a", "b", "c"] and label["parameters"] == {}


@pytest.mark.parametrize("raw", [True, False])
async def test_8_masked_outputs_say_how(planted: AuditedStack, raw: bool) -> None:
    """The in-process client, raw and typed: ``null`` on the nulled FP32 output, ``spans``
    on a text output of which only the SSN inside was masked."""
    plant = scores_plant()
    plant["reply"]["raw"] = raw
    request = plant_request(plant, model=SCORES_MODEL, request_id="caller-8a")
    scores = await capture_unary(planted.address, request, planted.headers("analyst"))
    assert scores.code == grpc.StatusCode.OK, (scores.code, scores.details)
    response = pb.ModelInferResponse.FromString(scores.messages[0])
    by_name = {output.name: parameter_values(output.parameters) for output in response.outputs}
    assert by_name == {"score": {MASKED_PARAMETER: "null"}, "label": {}}
    assert outputs(response)["score"].values == [0.0] * len(SCORES)

    note = f"ssn {SSN} on file"
    spans = plant_request(
        {"reply": {"raw": raw, "outputs": [bytes_output("note", note, "nothing here")]}},
        model=PUBLIC_MODEL,
        request_id="caller-8b",
    )
    received = await capture_unary(planted.address, spans, planted.headers("analyst"))
    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    response = pb.ModelInferResponse.FromString(received.messages[0])
    (output,) = response.outputs
    assert parameter_values(output.parameters) == {MASKED_PARAMETER: "spans"}
    assert text_values(outputs(response)["note"]) == [f"ssn {partial(SSN)} on file", "nothing here"]


# --- a large reply ----------------------------------------------------------------------------------


async def test_a_large_reply_arrives_masked_and_as_upb_would_write_it(demo: AuditedStack) -> None:
    """3,000 rows make a reply past the size from which the gateway joins the raw outputs
    itself instead of letting upb re-buffer them (``replies.serialized_infer_response``):
    the bytes received are exactly the message's own serialization, and masked."""
    request = customer_request(MANY_ROWS, request_id="caller-large")
    received = await capture_unary(demo.address, request, demo.headers("analyst"), deadline=60)
    assert received.code == grpc.StatusCode.OK, (received.code, received.details)
    (blob,) = received.messages
    response = pb.ModelInferResponse.FromString(blob)
    assert response.SerializeToString() == blob
    assert response.id == "caller-large" and len(response.raw_output_contents) == len(response.outputs)
    by_name = outputs(response)
    assert by_name["customer_id"].values == MANY_ROWS
    assert text_values(by_name["ssn"]) == [partial(customer(i).ssn) for i in MANY_ROWS]
    for secret in confidential_and_restricted(MANY_ROWS[:50]):
        assert secret.encode() not in blob
