"""A stream ends when the first of its caller's credentials expires, whichever is the subject.

Found by review (fail-open): with a client certificate and a bearer token, the certificate
is the subject (mTLS comes first in the default order) and only the token's id was kept
beside it, so the per-message check (``still_valid``) saw no expiry at all: the stream went
on releasing replies for a user whose token had expired, while the token alone was refused
TOKEN_EXPIRED. The real authenticator here (a real certificate and a signed token), the
pipeline's stream as in ``test_pipeline``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from labelgate.auth import Authenticator, AuthMethod, JwtSettings
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.mtls import MtlsIdentifier
from labelgate.calls import Call
from labelgate.errors import Unauthenticated
from tests.gateway.test_pipeline import (
    STREAM,
    FakeStream,
    customer_reply,
    make_pipeline,
    request,
    requests_of,
    stream_reply,
)
from tests.support.pki import SigningKey, claims, create_ca, rsa_signing_key, write_jwks

ISSUER, AUDIENCE = "https://idp.test", "labelgate"


@pytest.fixture(scope="module")
def signing() -> SigningKey:
    return rsa_signing_key("rsa-1")


def authenticator(directory: Path, signing: SigningKey, order: Sequence[AuthMethod]) -> Authenticator:
    jwks = write_jwks(directory / "jwks.json", signing)
    return Authenticator(
        mtls=MtlsIdentifier(),
        jwt=JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks)),
        order=order,
    )


def stream_call(token: str, certificate: bytes | None) -> Call:
    tls = {"transport_security_type": [b"ssl"], "x509_pem_cert": [certificate]} if certificate else {}
    return Call(
        method=STREAM,
        peer="ipv4:127.0.0.1:1",
        metadata=(("authorization", f"Bearer {token}"),),
        auth_context=tls,
        session_id="s",
        request_id="r",
    )


async def streamed(
    directory: Path, signing: SigningKey, presented: str, seconds_left: float
) -> tuple[list[Any], FakeStream]:
    """One message through a stream opened with ``presented`` credentials whose token has
    ``seconds_left``: the replies released, and the upstream's side of the stream."""
    order: Sequence[AuthMethod] = ("jwt", "mtls") if presented == "token first" else ("mtls", "jwt")
    pipeline, _, _, _ = make_pipeline()
    pipeline.authenticator = authenticator(directory, signing, order)
    # Issued 300 s before it expires; the verifier's 30 s leeway still accepts it 2 s late.
    expires = time.time() + seconds_left
    token = signing.sign(claims(iss=ISSUER, aud=AUDIENCE, ttl=300, now=expires - 300))
    certificate = None if presented == "token" else create_ca().issue("w", uris=["spiffe://t/w"]).cert_pem
    upstream = FakeStream(lambda sent: [stream_reply(customer_reply(sent.id))])
    replies = [
        reply
        async for reply in pipeline.stream_infer(
            stream_call(token, certificate), requests_of(request()), upstream
        )
    ]
    return replies, upstream


@pytest.mark.parametrize("presented", ["token", "certificate and token", "token first"])
async def test_a_stream_ends_when_any_of_its_tokens_expired(
    tmp_path: Path, signing: SigningKey, presented: str
) -> None:
    """``token first``: the token is the subject, the certificate beside it (order jwt, mtls)."""
    with pytest.raises(Unauthenticated) as refused:
        await streamed(tmp_path, signing, presented, seconds_left=-2)
    assert refused.value.reason == "TOKEN_EXPIRED"


async def test_nothing_goes_upstream_for_a_certificate_beside_an_expired_token(
    tmp_path: Path, signing: SigningKey
) -> None:
    pipeline, _, _, recorder = make_pipeline()
    pipeline.authenticator = authenticator(tmp_path, signing, ("mtls", "jwt"))
    token = signing.sign(claims(iss=ISSUER, aud=AUDIENCE, ttl=300, now=time.time() - 302))
    certificate = create_ca().issue("w", uris=["spiffe://t/w"]).cert_pem
    upstream = FakeStream(lambda sent: [stream_reply(customer_reply(sent.id))])
    subject = pipeline.authenticate(stream_call(token, certificate))
    assert subject.auth == "mtls", "the certificate is the subject: the token is beside it"
    with pytest.raises(Unauthenticated):
        async for _ in pipeline.stream_infer(
            stream_call(token, certificate), requests_of(request()), upstream
        ):
            pass
    assert upstream.sent == [], "nothing went upstream after the expiry"
    assert recorder.records[-1].refusal == "TOKEN_EXPIRED"


@pytest.mark.parametrize("presented", ["token", "certificate and token", "token first"])
async def test_a_stream_whose_tokens_are_valid_is_served(
    tmp_path: Path, signing: SigningKey, presented: str
) -> None:
    """The control: the same credentials with time left are served (the refusals above are the
    expiry's, not the credentials')."""
    replies, upstream = await streamed(tmp_path, signing, presented, seconds_left=300)
    assert len(replies) == 1 and len(upstream.sent) == 1
