"""Authentication at the edge, through real gateways: forged, stale and misdirected tokens are
refused with distinct reasons; metadata a caller sends to claim groups, labels or approvals
changes nothing and never reaches the backend, and neither does the caller's own token.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from tests.gateway.aio import backend_seen, channel, infer, outputs_of, refused, texts
from tests.gateway.expected import (
    customer_request,
)
from tests.gateway.harness import (
    AUDIENCE,
    ISSUER,
    UPSTREAM_TOKEN,
    Gateway,
    MtlsFiles,
    TokenIssuer,
    bearer,
)
from tests.support.pki import (
    SigningKey,
    claims,
    create_ca,
    forge_alg_none,
    forge_hs256_with_public_key,
    rsa_signing_key,
)
from tests.support.triton import run_probe

IDS = [1, 2, 5]  # an SSN, a card number and JSON in the notes
EVERY_GROUP = ["analysts", "data-stewards", "break-glass", "data-owners", "security"]
SPOOFED = (
    ("x-labelgate-groups", "break-glass,data-stewards"),
    ("x-labelgate-subject", "root"),
    ("x-labelgate-labels", "public"),
    ("x-labelgate-decision", "allow"),
)
# Approval options that claim a grant: malformed options, refused on any call that sends them.
SPOOFED_APPROVAL = (
    (("x-labelgate-approval", "granted"), "APPROVAL_MODE_INVALID"),
    (("x-labelgate-approval-id", "fake-grant-0001"), "APPROVAL_ID_INVALID"),
)


@pytest.fixture(scope="module")
def stranger_key(token_issuer: TokenIssuer) -> SigningKey:
    """The trusted key's kid on an attacker's own key."""
    return rsa_signing_key(token_issuer.key.kid)


def bad_credentials(issuer: TokenIssuer, stranger: SigningKey) -> dict[str, tuple[dict[str, str], str]]:
    """name -> (headers, the ErrorInfo reason the gateway must give). Every forged token
    claims every group, so an accepted one would be noticed."""
    kid = issuer.key.kid
    body = claims("mallory", iss=ISSUER, aud=AUDIENCE, groups=EVERY_GROUP)
    token = issuer.token
    return {
        "no token": ({}, "NO_CREDENTIALS"),
        "expired": (bearer(token("mallory", EVERY_GROUP, now=time.time() - 3600)), "TOKEN_EXPIRED"),
        "not yet valid": (
            bearer(token("mallory", EVERY_GROUP, now=time.time() + 3600)),
            "TOKEN_NOT_YET_VALID",
        ),
        "wrong audience": (
            bearer(token("mallory", EVERY_GROUP, aud="another-service")),
            "TOKEN_BAD_AUDIENCE",
        ),
        "wrong issuer": (bearer(token("mallory", EVERY_GROUP, iss="https://evil.test")), "TOKEN_BAD_ISSUER"),
        "wrong key": (bearer(stranger.sign(body)), "TOKEN_BAD_SIGNATURE"),
        "alg none": (bearer(forge_alg_none(body, kid=kid)), "TOKEN_ALGORITHM_NOT_ALLOWED"),
        "HS256 keyed with the RSA public key": (
            bearer(forge_hs256_with_public_key(body, issuer.key.public_pem, kid=kid)),
            "TOKEN_ALGORITHM_NOT_ALLOWED",
        ),
        "not a JWT": (bearer("not-a-jwt"), "TOKEN_MALFORMED"),
        "basic auth": ({"authorization": "Basic bWFsbG9yeTpzZWNyZXQ="}, "AUTHORIZATION_SCHEME_UNSUPPORTED"),
    }


def calls_with_marker(seen: list[dict], marker: str) -> list[dict]:
    return [call for call in seen if ["x-request-id", marker] in call["metadata"]]


async def test_bad_tokens_are_unauthenticated_with_distinct_reasons(
    gateway: Gateway, backend: str, token_issuer: TokenIssuer, stranger_key: SigningKey
) -> None:
    marker = uuid.uuid4().hex
    reasons = {}
    for name, (headers, expected) in bad_credentials(token_issuer, stranger_key).items():
        refusal = await refused(
            gateway.address, customer_request(IDS), [*headers.items(), ("x-request-id", marker)]
        )
        assert refusal.code == grpc.StatusCode.UNAUTHENTICATED, name
        assert refusal.info is not None and refusal.info.domain == "labelgate", name
        reasons[name] = refusal.reason
        assert refusal.reason == expected, name
    # Time, audience, issuer and signature problems each say which one it was.
    distinct = ["expired", "not yet valid", "wrong audience", "wrong issuer", "wrong key", "alg none"]
    assert len({reasons[name] for name in distinct}) == len(distinct)
    assert not calls_with_marker(await backend_seen(backend), marker), "a refused call reached the backend"


def test_bad_tokens_are_refused_for_the_real_client(
    gateway: Gateway, token_issuer: TokenIssuer, stranger_key: SigningKey
) -> None:
    cases = bad_credentials(token_issuer, stranger_key)
    calls = [
        {"op": "infer", "model": "customer-profile", "customer_ids": IDS, "headers": headers}
        for headers, _ in cases.values()
    ]
    for name, result in zip(cases, run_probe(calls, url=gateway.address), strict=True):
        assert result.get("error", {}).get("code") == "UNAUTHENTICATED", (name, result)
        assert "outputs" not in result, name


async def test_spoofed_labelgate_metadata_changes_nothing(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    request = customer_request(IDS)
    plain = await infer(gateway.address, request, token_issuer.headers("analyst"))
    spoofed = await infer(gateway.address, request, [*token_issuer.headers("analyst").items(), *SPOOFED])
    assert outputs_of(spoofed) == outputs_of(plain)
    assert texts(outputs_of(spoofed)["account_secret"]) == [""] * len(IDS)

    nobody = await infer(
        gateway.address,
        request,
        [*token_issuer.headers("no-group").items(), ("x-labelgate-groups", "analysts")],
    )
    assert texts(outputs_of(nobody)["name"]) == ["[REDACTED]"] * len(IDS)

    steward = await refused(gateway.address, request, [*token_issuer.headers("steward").items(), *SPOOFED])
    assert (steward.code, steward.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED")

    # A claimed grant is no option at all: refused whether or not the call would be held
    # (it was ignored where nothing was held: first-user review, seventh round).
    for who in ("analyst", "steward"):
        for header, reason in SPOOFED_APPROVAL:
            claimed = await refused(gateway.address, request, [*token_issuer.headers(who).items(), header])
            assert (claimed.code, claimed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), (who, header)


async def test_neither_spoofed_metadata_nor_the_callers_token_reach_the_backend(
    gateway: Gateway, backend: str, token_issuer: TokenIssuer
) -> None:
    marker = uuid.uuid4().hex
    caller_token = token_issuer.token("ana", ["analysts"])
    identities = [
        ("x-forwarded-user", "mallory"),
        ("x-goog-api-key", "AIza-k"),
        ("authorization-bin", b"\x01"),
    ]
    headers = [
        *bearer(caller_token).items(),
        *SPOOFED,
        ("x-labelgate-approval", "async"),  # a well-formed option: read, never forwarded
        *identities,
        ("x-labelgate-session", "s-1"),
        ("x-request-id", marker),  # allow-listed by default: it travels, and finds the call
    ]
    await infer(gateway.address, customer_request(IDS), headers)

    (seen,) = calls_with_marker(await backend_seen(backend), marker)
    keys = [key for key, _ in seen["metadata"]]
    # The only x-labelgate- header upstream is the gateway's own signed subject assertion.
    assert [key for key in keys if key.startswith("x-labelgate-")] == ["x-labelgate-subject-assertion"], keys
    assert not {name for name, _ in identities} & set(keys), "only allow-listed metadata travels"
    assert dict(seen["metadata"]).get("authorization") == f"Bearer {UPSTREAM_TOKEN}", (
        "the gateway's own token"
    )
    assert keys.count("authorization") == 1
    assert not any(caller_token in value for _, value in seen["metadata"])


async def test_mtls_gateway_refuses_connections_without_a_trusted_certificate(
    mtls_gateway: Gateway, mtls_files: MtlsFiles, tmp_path: Path
) -> None:
    stranger_ca = create_ca("someone else's CA")
    cert_file, key_file = stranger_ca.issue("ana").write(tmp_path, "forged-ana")
    forged = grpc.ssl_channel_credentials(
        root_certificates=mtls_files.ca_file.read_bytes(),
        private_key=key_file.read_bytes(),
        certificate_chain=cert_file.read_bytes(),
    )
    for name, credentials in (("no certificate", mtls_files.channel_credentials(None)), ("other CA", forged)):
        refusal = await refused(
            mtls_gateway.address, customer_request(IDS), credentials=credentials, deadline=5
        )
        assert refusal.code == grpc.StatusCode.UNAVAILABLE, (name, refusal)


async def test_mtls_gateway_refuses_a_bearer_token_it_does_not_accept(
    mtls_gateway: Gateway, mtls_files: MtlsFiles, token_issuer: TokenIssuer
) -> None:
    """A token the mTLS-only gateway cannot check is refused, not ignored (or used)."""
    refusal = await refused(
        mtls_gateway.address,
        customer_request(IDS),
        token_issuer.headers("break-glass"),
        credentials=mtls_files.channel_credentials("no-group"),
    )
    assert (refusal.code, refusal.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_METHOD_NOT_ENABLED")


async def test_metadata_rpcs_need_credentials_too(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    refusal = await _model_ready(gateway.address, ())
    assert refusal == grpc.StatusCode.UNAUTHENTICATED
    assert await _model_ready(gateway.address, tuple(token_issuer.headers("no-group").items())) is None


async def _model_ready(address: str, metadata: tuple) -> grpc.StatusCode | None:
    async with channel(address) as opened:
        try:
            await pb_grpc.GRPCInferenceServiceStub(opened).ModelReady(
                pb.ModelReadyRequest(name="customer-profile"), metadata=metadata, timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return None
