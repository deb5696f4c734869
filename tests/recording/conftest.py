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
from labelgate.calls import Call, CallRecord, Outcome
from labelgate.classify import Catalog, Classifier, DetectorSet, to_policy_fields
from labelgate.config import GatewaySettings
from labelgate.enforce import Mask, apply_masks
from labelgate.enforce.replies import infer_response
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs
from labelgate.policy.contract import DecidedMask, Decision
from labelgate.recording.entries import call_entry, recording_key
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.procs import REPO, free_port

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


GLUED_SSN = "536-22-1234"
STEWARD = Subject.proven("jwt", "stella", issuer="labelgate-dev", groups=("data-stewards",))
_PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "-----END RSA PRIVATE KEY-----"
)


def masked_before_recording(hash_key: bytes = b"live-call-hash-key-0123456789abcd") -> dict[str, Any]:
    """A data steward's call to ``sentiment`` (public by the catalog) whose reply held two SSNs
    (confidential: the steward sees them), a private key block right after the second one and
    a cloud key split around another (restricted: nulled for the steward). Classified and masked
    by the data path's own code (the repository's catalog, the default detectors); the
    recording holds the reply as delivered, the key blocks gone, so ``.5`` now follows the
    second SSN and a scan of the recorded bytes no longer reads it as one."""
    text = f"first 537-33-5678 then {GLUED_SSN}{_PEM}.5 key AKIA{_PEM}ABCDEFGHIJKLMNOP end".encode()
    classifier = Classifier(
        Catalog.from_file(REPO / "rego/labelgate/catalog/data.json"), DetectorSet.default()
    )
    upstream = [Tensor("label", "BYTES", [1], [text])]
    live = classifier.classify_response("sentiment", upstream)
    nulled = Mask("outputs.label{secret}", "null")
    delivered = apply_masks(upstream, live, [nulled], hash_key)
    response = infer_response(
        model="sentiment", model_version="", caller_id="1", tensors=delivered, raw=False
    )
    masked = [{"path": nulled.path, "strategy": "null", "label": "restricted"}]
    outcome = make_outcome(
        response,
        subject=STEWARD,
        model="sentiment",
        masked=masked,
        labels={label for item in live.fields for label in item.labels},
        decision_inputs=[("response", "h", {"fields": to_policy_fields(live.fields)})],
    )
    return call_entry(CallRecord.of(make_call(), outcome, None, Clock()()), record_input_values=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def gateway_settings(demo_backend: str, **sections: Any) -> GatewaySettings:
    """A gateway in front of the demo backend with the repository's policy and catalog and the
    dev key trusted, on a free port; ``sections`` (recording, audit, ...) added as given."""
    return GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": demo_backend},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "recording-test-hash-key"},
        auth={"jwt": {"trust_dev_key": True}},
        **sections,
    )
