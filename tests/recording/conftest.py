"""Recording test helpers: calls and outcomes built from the pipeline's real dataclasses,
delivered responses built with the real tensor codec, a controllable clock, PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.calls import Call, Outcome
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs
from labelgate.policy.contract import DecidedMask, Decision
from labelgate.recording.entries import recording_key
from tests.support.postgres import PostgresServer, running_postgres

INFER = "/inference.GRPCInferenceService/ModelInfer"
PEER = "ipv4:127.0.0.1:50123"
NORA = Subject.proven("jwt", "nora", issuer="labelgate-dev", groups=("analysts",))
_requests = itertools.count(1)


def key(session_id: str, subject: Subject | None = NORA, peer: str = PEER) -> str:
    """The key a session is recorded under (``recording_key``): the client's id bound to the
    caller; by default the caller of ``make_call`` and ``make_outcome`` (nora, over ``PEER``)."""
    return recording_key(subject, peer, session_id)


class Clock:
    """An injected clock: time moves only when a test says so."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_call(session_id: str = "session-a", method: str = INFER) -> Call:
    return Call(
        method=method,
        peer=PEER,
        metadata=(("authorization", "Bearer not-recorded"),),
        auth_context={},
        session_id=session_id,
        request_id=f"req-{next(_requests)}",
    )


def delivered_response(ssn: str = "***-**-6789", notes: str = "plain note") -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="customer-profile", id="r1")
    tensors = [
        Tensor("customer_id", "INT64", [2], [1, 2]),
        Tensor("ssn", "BYTES", [2], [ssn.encode(), b"[REDACTED]"]),
        Tensor("risk_score", "FP32", [2], [0.5, 0.25]),
        Tensor("notes", "BYTES", [2], [notes.encode(), b"ok"]),
    ]
    for tensor in tensors:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    encode_outputs(response, tensors, raw=True)
    return response


def make_outcome(delivered: Any = None, **overrides: Any) -> Outcome:
    decision = Decision(
        allow=True,
        reason="confidential fields masked",
        masks=(DecidedMask("outputs.ssn", "partial", {"keep_last": 4}),),
        engine="embedded",
        revision="rev-7",
        decision_id="d-1",
    )
    outcome = Outcome(
        subject=NORA,
        model="customer-profile",
        upstream_status="OK",
        request_summary={
            "model": "customer-profile",
            "model_version": "",
            "inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [2]}],
            "outputs": [],
        },
        delivered=delivered_response() if delivered is None else delivered,
        decisions=[("request", Decision(allow=True, reason="ok", engine="embedded")), ("response", decision)],
        masked=[{"path": "outputs.ssn", "strategy": "partial", "label": "confidential"}],
        labels={"confidential", "internal"},
    )
    for key, value in overrides.items():
        setattr(outcome, key, value)
    return outcome


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server
