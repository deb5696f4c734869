"""The signed subject assertion (issue 13, gap 4), with a real gateway and demo backend.

The backend records the metadata of every call (``_debug-metadata``): the call made through
the gateway carries ``x-labelgate-subject-assertion``, a JWT that verifies against the JWKS
the gateway publishes at its admin listener (audience: the backend, subject: the qualified
id, the caller's groups and the gateway's request id, ~60 s), while the caller's own token
and a forged assertion never arrive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
import yaml

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.auth.assertion import (
    ASSERTION_HEADER,
    SubjectAsserter,
    SubjectAssertionSettings,
    write_key_file,
)
from labelgate.auth.devkeys import mint_dev_token
from labelgate.auth.subject import Subject
from labelgate.oip import tensors
from tests.support.procs import REPO, free_port, labelgate_command, running, wait_until


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(gateway address, backend address, admin base URL)."""
    folder: Path = tmp_path_factory.mktemp("assertion")
    key_file = write_key_file(folder / "assertion.pem")
    backend_port, port, admin_port = free_port(), free_port(), free_port()
    backend = f"127.0.0.1:{backend_port}"
    config = folder / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "admin_listen": f"127.0.0.1:{admin_port}",
                "upstream": {"address": backend, "subject_assertion": {"key_file": str(key_file)}},
                "engine": "embedded",
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
                "masking": {"hash_key": "assertion-test-key"},
                "auth": {"jwt": {"trust_dev_key": True}},
                "approvals": {"enabled": False},
            }
        )
    )
    admin = f"http://127.0.0.1:{admin_port}"
    with (
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
        running(labelgate_command("serve", "--config", str(config)), folder / "gateway.log", port=port),
    ):
        wait_until(lambda: _up(admin), 20, "the admin listener")
        yield f"127.0.0.1:{port}", backend, admin


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _infer(address: str, model: str, metadata: list[tuple[str, str]]) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name=model)
    if model == "customer-profile":
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = "customer_ids", "INT64"
        tensor.shape.append(1)
        tensor.contents.int64_contents.append(3)
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=15)


def _last_call_seen_by(backend: str) -> list[tuple[str, str]]:
    outputs = {t.name: t.values for t in tensors.decode_outputs(_infer(backend, "_debug-metadata", []))}
    return [tuple(pair) for pair in json.loads(outputs["recent"][0])["metadata"]]


def test_the_upstream_gets_a_verifiable_assertion_and_never_the_callers_credentials(stack) -> None:
    gateway, backend, admin = stack
    caller_token = mint_dev_token("ann", ["analysts"], 300)
    forged = jwt.encode({"sub": "jwt:labelgate-dev#ciso"}, "x" * 32, algorithm="HS256")
    _infer(
        gateway,
        "customer-profile",
        [
            ("authorization", f"Bearer {caller_token}"),
            (ASSERTION_HEADER, forged),
            ("x-forwarded-user", "ciso"),
        ],
    )
    seen = _last_call_seen_by(backend)
    values = [value for key, value in seen if key == ASSERTION_HEADER]
    assert len(values) == 1 and values[0] != forged
    assert not any(caller_token in value for _, value in seen)
    assert "x-forwarded-user" not in dict(seen)

    jwks = httpx.get(f"{admin}/.well-known/jwks.json", timeout=5)
    assert jwks.status_code == 200
    keys = jwt.PyJWKSet.from_dict(jwks.json())
    kid = jwt.get_unverified_header(values[0])["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(values[0], key.key, algorithms=["ES256"], audience=backend, issuer="labelgate")
    assert claims["sub"] == "jwt:labelgate-dev#ann" and claims["name"] == "ann"
    assert claims["groups"] == ["analysts"] and claims["auth"] == "jwt"
    assert len(claims["request_id"]) == 32
    assert claims["exp"] - claims["iat"] == 60 and abs(claims["iat"] - time.time()) < 30
    # Another upstream (audience) refuses it.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(values[0], key.key, algorithms=["ES256"], audience="127.0.0.1:1")


def test_a_stream_carries_the_assertion_too(stack) -> None:
    gateway, backend, admin = stack
    caller_token = mint_dev_token("ann", ["analysts"], 300)
    request = pb.ModelInferRequest(model_name="customer-profile")
    tensor = request.inputs.add(name="customer_ids", datatype="INT64", shape=[1])
    tensor.contents.int64_contents.append(3)
    with grpc.insecure_channel(gateway) as channel:
        replies = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
            iter([request]), metadata=[("authorization", f"Bearer {caller_token}")], timeout=15
        )
        assert [reply.error_message for reply in replies] == [""]
    seen = _last_call_seen_by(backend)
    values = [value for key, value in seen if key == ASSERTION_HEADER]
    assert len(values) == 1, "the stream opened upstream with the caller's assertion"
    assert not any(caller_token in value for _, value in seen)
    keys = jwt.PyJWKSet.from_dict(httpx.get(f"{admin}/.well-known/jwks.json", timeout=5).json())
    kid = jwt.get_unverified_header(values[0])["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(values[0], key.key, algorithms=["ES256"], audience=backend, issuer="labelgate")
    assert claims["sub"] == "jwt:labelgate-dev#ann"


def test_an_assertion_signed_with_another_key_does_not_verify(tmp_path: Path) -> None:
    mine = SubjectAsserter.from_settings(
        SubjectAssertionSettings(key_file=write_key_file(tmp_path / "a.pem"))
    )
    other = SubjectAsserter.from_settings(
        SubjectAssertionSettings(key_file=write_key_file(tmp_path / "b.pem"))
    )
    assert mine is not None and other is not None
    token = other.assertion(Subject.proven("mtls", "svc"), "r1", "backend:1")
    (published,) = jwt.PyJWKSet.from_dict(mine.jwks()).keys
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, published.key, algorithms=["ES256"], audience="backend:1")
