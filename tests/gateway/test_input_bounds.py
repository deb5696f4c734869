"""A request's inputs are bounded before policy, as its requested outputs are: how many
(``limits.max_inputs``) and how long a name (``limits.max_path_bytes``).

Found by review (REST front): nothing bounded either. Each input's name, datatype and shape
went into the target, then into both phases' policy inputs, the cache key, the request digest
and the record; one 15 MiB REST body of 270,000 empty BOOL inputs held the event loop 2.6 s
and made a 138 MB recording entry (gRPC: 5.3 MB, 3.7 s), and an input named with 15 MiB of
``a`` was allowed and recorded whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import httpx
import pydantic
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import (
    INPUT_NAME_BYTES_KEPT,
    INPUT_RANK_KEPT,
    INPUTS_KEPT,
    OUTPUTS_KEPT,
    infer_target,
    target_summary,
    with_digest,
)
from labelgate.config import GatewaySettings, LimitSettings
from labelgate.errors import InvalidInput, LabelgateError
from labelgate.gateway.bounds import check_request_inputs, check_target
from labelgate.gateway.server import Gateway
from tests.gateway import aio
from tests.gateway.harness import run_backend
from tests.gateway.test_pipeline import make_call, make_pipeline, upstream_returning
from tests.gateway.test_rest import DEV_KEYS, token
from tests.support.procs import REPO, free_port

INFER = "/inference.GRPCInferenceService/ModelInfer"
KEY = b"input-bounds-test-hash-key-01234"
LIMITS = LimitSettings(max_inputs=4, max_path_bytes=32)


def request_with(count: int, name: str = "") -> pb.ModelInferRequest:
    """``count`` empty BOOL inputs (the reviewer's), each named ``name`` or by its number."""
    message = pb.ModelInferRequest(model_name="customer-profile")
    for n in range(count):
        message.inputs.add(name=name or f"{n:x}", datatype="BOOL", shape=[0])
    message.raw_input_contents.extend([b""] * count)
    return message


def test_the_default_is_far_above_any_model_and_the_bound_has_a_ceiling() -> None:
    assert LimitSettings().max_inputs == 1024
    LimitSettings(max_inputs=INPUTS_KEPT, max_path_bytes=INPUT_NAME_BYTES_KEPT)
    with pytest.raises(pydantic.ValidationError):
        LimitSettings(max_inputs=INPUTS_KEPT + 1)
    with pytest.raises(pydantic.ValidationError):
        LimitSettings(max_path_bytes=INPUT_NAME_BYTES_KEPT + 1)


def test_more_inputs_than_the_limit_are_refused_before_policy() -> None:
    check_target(infer_target(request_with(4), INFER, None), LIMITS)
    with pytest.raises(InvalidInput) as refused:
        check_target(infer_target(request_with(5), INFER, None), LIMITS)
    assert refused.value.reason == "TOO_MANY_INPUTS"
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.max_inputs" in refused.value.message


def test_an_input_name_is_bounded_like_an_output_name() -> None:
    check_target(infer_target(request_with(1, "a" * 32), INFER, None), LIMITS)
    for name in ("a" * 33, "é" * 17):  # bytes, not characters: 34 of them
        with pytest.raises(InvalidInput) as refused:
            check_target(infer_target(request_with(1, name), INFER, None), LIMITS)
        assert refused.value.reason == "PATH_TOO_LONG"
        assert "input name" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        check_request_inputs(request_with(1, "é" * 17), LIMITS)
    assert refused.value.reason == "PATH_TOO_LONG"


@pytest.mark.parametrize(
    ("count", "name"),
    [(INPUTS_KEPT + 1, ""), (1, "a" * (INPUT_NAME_BYTES_KEPT + 1))],
    ids=["count", "name"],
)
def test_a_target_past_any_configurable_bound_copies_nothing_of_its_inputs(count: int, name: str) -> None:
    """The pipeline makes the target, its digest and the record's summary before the bounds are
    checked: past what any configuration allows, none of them grows with the request."""
    message = request_with(count, name)
    target = infer_target(message, INFER, KEY)
    assert (target.inputs, target.request_digest) == ((), "")
    assert with_digest(target, message, KEY).request_digest == ""
    assert target_summary(target)["inputs"] == []
    limits = LimitSettings(max_inputs=INPUTS_KEPT, max_path_bytes=INPUT_NAME_BYTES_KEPT)
    with pytest.raises(InvalidInput) as refused:
        check_target(target, limits)
    assert refused.value.reason == ("TOO_MANY_INPUTS" if count > 1 else "PATH_TOO_LONG")


@pytest.mark.parametrize(
    ("shape", "datatype"),
    [([1] * (INPUT_RANK_KEPT + 1), "BOOL"), ([1] * 2_000_000, "BOOL"), ([0], "B" * (1 << 20))],
    ids=["33-dimensions", "2m-dimensions", "long-datatype"],
)
async def test_an_input_of_more_dimensions_or_a_longer_datatype_than_any_model_takes_is_refused_uncopied(
    shape: list[int], datatype: str
) -> None:
    """Review (tenth round): an input's shape and datatype were copied into the target whatever
    their size (8 MB of shape: 0.7 s before policy, then in every policy input and record)."""
    message = pb.ModelInferRequest(model_name="customer-profile")
    message.inputs.add(name="x", datatype=datatype, shape=shape)
    target = infer_target(message, INFER, KEY)
    assert (target.inputs, target.request_digest) == ((), "")
    with pytest.raises(InvalidInput) as refused:
        check_target(target, LIMITS)
    assert refused.value.reason == "MALFORMED_TENSOR"
    pipeline, journal, _, recorder = make_pipeline()
    with pytest.raises(LabelgateError) as refused:
        await pipeline.infer(make_call(), message, upstream_returning(pb.ModelInferResponse(), journal))
    assert refused.value.reason == "MALFORMED_TENSOR"
    assert "upstream" not in journal.kinds()
    (record,) = recorder.records
    assert record.request_summary["inputs"] == []


def test_an_input_of_as_many_dimensions_as_any_model_takes_is_kept() -> None:
    message = pb.ModelInferRequest(model_name="customer-profile")
    message.inputs.add(name="x", datatype="UINT64", shape=[1] * INPUT_RANK_KEPT)
    target = infer_target(message, INFER, KEY)
    assert target.inputs == (("x", "UINT64", (1,) * INPUT_RANK_KEPT),)
    check_target(target, LIMITS)


def test_requested_outputs_past_any_configurable_bound_are_not_all_copied() -> None:
    message = pb.ModelInferRequest(model_name="customer-profile")
    for n in range(OUTPUTS_KEPT + 50):
        message.outputs.add(name=f"{n:x}")
    target = infer_target(message, INFER, None)
    assert len(target.requested_outputs) == OUTPUTS_KEPT + 1
    with pytest.raises(InvalidInput) as refused:
        check_target(target, LimitSettings(max_requested_outputs=OUTPUTS_KEPT))
    assert refused.value.reason == "TOO_MANY_OUTPUTS"
    assert f"more than {OUTPUTS_KEPT} outputs" in refused.value.message


def test_a_target_within_the_bounds_keeps_its_inputs_and_digest() -> None:
    message = request_with(3)
    target = infer_target(message, INFER, KEY)
    assert [name for name, _, _ in target.inputs] == ["0", "1", "2"]
    assert target.request_digest and with_digest(target, message, KEY).request_digest == target.request_digest


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (request_with(1025), "TOO_MANY_INPUTS"),
        (request_with(270_000), "TOO_MANY_INPUTS"),  # the reviewer's
        (request_with(1, "a" * 1024 * 1024), "PATH_TOO_LONG"),  # the reviewer's, 15 MiB of it
    ],
    ids=["1025", "270000", "long-name"],
)
async def test_the_pipeline_refuses_and_records_no_decision_and_no_oversized_summary(
    message: pb.ModelInferRequest, reason: str
) -> None:
    pipeline, journal, _, recorder = make_pipeline()
    with pytest.raises(LabelgateError) as refused:
        await pipeline.infer(make_call(), message, upstream_returning(pb.ModelInferResponse(), journal))
    assert refused.value.reason == reason
    assert "decide" not in journal.kinds() and "upstream" not in journal.kinds()
    (record,) = recorder.records
    assert record.refusal == reason and not record.decision_inputs
    inputs = record.request_summary["inputs"]
    assert len(inputs) <= 1025 and all(len(i["name"]) <= INPUT_NAME_BYTES_KEPT for i in inputs)


# -- over the wire: gRPC and REST, the same refusals ---------------------------------------


@dataclass(frozen=True)
class Listens:
    grpc: str
    rest: str
    admin: str


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_backend(tmp_path_factory.mktemp("input-bounds-backend")) as (address, _):
        yield address


@pytest.fixture
async def listens(backend: str) -> AsyncIterator[Listens]:
    """A gateway serving gRPC, the REST binding and the admin listener, default limits."""
    at = Listens(*(f"127.0.0.1:{free_port()}" for _ in range(3)))
    settings = GatewaySettings(
        listen=at.grpc,
        rest_listen=at.rest,
        admin_listen=at.admin,
        upstream={"address": backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "input-bounds-test-hash-key-0123"},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield at
    finally:
        await gateway.stop(0)


def json_inputs(count: int, name: str = "") -> dict:
    return {
        "inputs": [
            {"name": name or f"{n:x}", "datatype": "BOOL", "shape": [0], "data": []} for n in range(count)
        ]
    }


@pytest.mark.parametrize(
    ("count", "name", "reason"),
    [(1025, "", "TOO_MANY_INPUTS"), (1, "a" * 513, "PATH_TOO_LONG")],
    ids=["count", "name"],
)
async def test_grpc_and_rest_refuse_the_same_excess_alike(
    listens: Listens, count: int, name: str, reason: str
) -> None:
    caller = token("ana", "analysts")
    refusal = await aio.refused(listens.grpc, request_with(count, name), caller)
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), refusal
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"http://{listens.rest}/v2/models/customer-profile/infer",
            json=json_inputs(count, name),
            headers=caller,
        )
    assert (reply.status_code, reply.json()["reason"]) == (400, reason), reply.text


async def test_the_limit_itself_is_not_refused_for_its_count(listens: Listens) -> None:
    caller = token("ana", "analysts")
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"http://{listens.rest}/v2/models/customer-profile/infer",
            json=json_inputs(1024, "a" * 512),
            headers=caller,
        )
    # The demo model has other inputs: whatever it answers, the bounds passed it.
    assert reply.json().get("reason") not in ("TOO_MANY_INPUTS", "PATH_TOO_LONG"), reply.text
