"""The call types' shortcuts agree with their plain definitions."""

from __future__ import annotations

import dataclasses
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.calls import (
    Call,
    CallRecord,
    Outcome,
    infer_target,
    peer_address,
    request_digest,
    rest_peer,
    target_summary,
    transport_peer,
)
from labelgate.errors import PermissionDenied
from labelgate.policy.contract import Decision

KEY = b"calls-test-digest-key-0123456789"
CALL = Call(
    method="/inference.GRPCInferenceService/ModelInfer",
    peer="ipv4:127.0.0.1:1",
    metadata=(("authorization", "Bearer x"),),
    auth_context={},
    session_id="s",
    request_id="r",
)


def test_a_record_made_by_of_is_the_one_its_fields_make() -> None:
    outcome = Outcome(subject=Subject("nora", ("analysts",)), model="m", upstream_status="OK")
    outcome.decisions.append(("request", Decision(allow=True, reason="ok")))
    outcome.labels.update({"restricted", "internal"})
    outcome.masked.append({"path": "outputs.ssn", "strategy": "null", "label": "restricted"})
    for error in (None, PermissionDenied("POLICY_DENIED", "no"), RuntimeError("boom")):
        record = CallRecord.of(CALL, outcome, error)
        values = {f.name: getattr(record, f.name) for f in dataclasses.fields(CallRecord)}
        assert CallRecord(**values) == record
        assert set(vars(record)) == set(values)  # every field set, nothing else
    assert not hasattr(CallRecord, "__post_init__")  # of() skips __init__: nothing to skip
    assert CallRecord.of(CALL, outcome, None).labels == ("internal", "restricted")


def test_a_target_summary_is_the_request_summary() -> None:
    request = pb.ModelInferRequest(model_name="customer-profile", model_version="2", id="mine")
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[2, 3])
    request.inputs.add(name="note", datatype="BYTES", shape=[1])
    request.outputs.add(name="ssn")
    request.outputs.add(name="customer_id")
    summary = request_summary(request)
    assert target_summary(infer_target(request, CALL.method, KEY)) == summary
    assert summary["inputs"][0]["shape"] == [2, 3]
    empty = pb.ModelInferRequest(model_name="m")
    assert target_summary(infer_target(empty, CALL.method, KEY)) == request_summary(empty)


def request_summary(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The plain definition ``target_summary`` must agree with, read from the request itself."""
    return {
        "model": request.model_name,
        "model_version": request.model_version,
        "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in request.inputs],
        "outputs": [o.name for o in request.outputs],
    }


def test_every_binding_writes_a_peer_the_same_way() -> None:
    assert transport_peer("ipv6:%5B::1%5D:35686") == rest_peer("::1", 35686) == "ipv6:[::1]:35686"
    assert transport_peer("ipv4:10.1.2.3:5000") == rest_peer("10.1.2.3", 5000) == "ipv4:10.1.2.3:5000"
    assert transport_peer("unix:/run/x%5B.sock") == "unix:/run/x%5B.sock"


def test_the_policy_input_names_the_callers_address_without_its_port() -> None:
    # The port changes with every connection: the cache would key a client's calls apart.
    assert peer_address("ipv4:10.1.2.3:54270") == "ipv4:10.1.2.3"
    assert peer_address("ipv6:[::1]:54270") == "ipv6:[::1]"
    assert peer_address("ipv6:[2001:db8::7]:443") == "ipv6:[2001:db8::7]"
    for kept in ("unix:/run/labelgate.sock", "unix-abstract:x", "rest", "ipv4:10.1.2.3", "ipv4:h:²"):
        assert peer_address(kept) == kept
    call = Call(
        method="/inference.GRPCInferenceService/ModelInfer",
        peer="ipv4:10.1.2.3:5000",
        metadata=(),
        auth_context={},
        session_id="s",
        request_id="r",
    )
    request = pb.ModelInferRequest(model_name="m")
    assert infer_target(request, call.method, KEY).to_policy(call)["peer"] == "ipv4:10.1.2.3"


def test_the_request_digest_is_keyed_so_a_guessed_value_cannot_be_confirmed() -> None:
    # It reaches approvers, webhooks, logs and the policy input, where the values never do: a
    # plain hash of a request whose one unknown is a short value gives that value back.
    def asking(customer_id: int) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name="customer-profile", id="mine")
        request.inputs.add(name="customer_ids", datatype="INT64", shape=[1]).contents.int64_contents.append(
            customer_id
        )
        return request

    digest = request_digest(asking(734219), KEY)
    assert digest == request_digest(asking(734219), KEY)  # the same query, the same digest
    assert digest != request_digest(asking(734218), KEY)
    # Without the key the digest cannot be recomputed, so candidates cannot be tried against it.
    assert digest != request_digest(asking(734219), b"another gateway's key, 32 bytes!")


def test_no_hash_mask_under_the_same_key_is_a_request_digest() -> None:
    # The hash mask shows callers HMAC-SHA256 under the masking key of bytes an upstream wrote;
    # the digest is keyed with a key derived from it, so no such bytes give a digest.
    import hashlib
    import hmac

    from labelgate.calls import _DIGEST_DOMAIN, digest_subkey

    request = pb.ModelInferRequest(model_name="m")
    digest = request_digest(request, KEY)
    digest_input = _DIGEST_DOMAIN + b"M" + (1).to_bytes(8, "big") + b"m" + b"V" + (0).to_bytes(8, "big")
    assert hmac.new(KEY, digest_input, hashlib.sha256).hexdigest() != digest
    assert hmac.new(digest_subkey(KEY), digest_input, hashlib.sha256).hexdigest() == digest
