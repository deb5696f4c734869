"""The subject assertion as an upstream verifies it: a compact ES256 JWS that PyJWT accepts
with the published JWKS, one per call (its own ``jti`` and the call's ``request_id``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from labelgate.auth import reasons
from labelgate.auth.assertion import SubjectAsserter, SubjectAssertionSettings, generate_key_pem
from labelgate.auth.subject import Subject
from labelgate.errors import ConfigError


@pytest.fixture(scope="module")
def asserter() -> SubjectAsserter:
    made = SubjectAsserter.from_settings(SubjectAssertionSettings())
    assert made is not None
    return made


def test_every_assertion_verifies_with_the_published_key(asserter: SubjectAsserter) -> None:
    subject = Subject.proven("jwt", "ann", issuer="idp", groups=["analysts", "auditors"])
    (published,) = jwt.PyJWKSet.from_dict(asserter.jwks()).keys
    # Enough signatures that some have an R or S shorter than 32 bytes (about 1 in 128).
    tokens = [asserter.assertion(subject, f"{n:032x}", "backend:1", now=1_700_000_000) for n in range(600)]
    for n, token in enumerate(tokens):
        assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": asserter.kid, "typ": "JWT"}
        claims = jwt.decode(
            token,
            published.key,
            algorithms=["ES256"],
            audience="backend:1",
            issuer="labelgate",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["request_id"] == f"{n:032x}"
        assert claims["sub"] == "jwt:idp#ann" and claims["groups"] == ["analysts", "auditors"]
        assert claims["exp"] - claims["iat"] == 60 and claims["nbf"] == claims["iat"] == 1_700_000_000
    assert len({jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}) == len(tokens)


def test_a_changed_claim_does_not_verify(asserter: SubjectAsserter) -> None:
    token = asserter.assertion(Subject.proven("mtls", "svc"), "r1", "backend:1")
    header, _, signature = token.split(".")
    other = asserter.assertion(Subject.proven("mtls", "admin"), "r1", "backend:1").split(".")[1]
    (published,) = jwt.PyJWKSet.from_dict(asserter.jwks()).keys
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{header}.{other}.{signature}", published.key, algorithms=["ES256"], audience="backend:1")


def _payload(token: str) -> bytes:
    encoded = token.split(".")[1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def test_the_claims_are_each_calls_own_and_written_as_json_dumps_writes_them(
    asserter: SubjectAsserter,
) -> None:
    """The subject's part of the claims is made once: it must still follow the subject, its
    groups and the audience of each call, and the whole stay exactly JSON."""
    ann = Subject.proven("jwt", "ann", issuer="idp", groups=["analysts"])
    cases = [
        (ann, 'r"1\\é', "backend:1"),
        (ann, "r2", "backend:2"),
        (Subject.proven("jwt", "ann", issuer="idp", groups=["admins"]), "r3", "backend:1"),
        (Subject("api_key:bob", auth="api_key", name='Bøb "the" builder'), "r4", "backend:1"),
        (ann, "r5", "backend:1"),
    ]
    for subject, request_id, audience in cases:
        payload = _payload(asserter.assertion(subject, request_id, audience, now=1_700_000_000))
        claims = json.loads(payload)
        assert list(claims) == [
            "iss", "aud", "sub", "name", "auth", "groups", "request_id", "iat", "nbf", "exp", "jti",
        ]  # fmt: skip
        assert payload == json.dumps(claims, separators=(",", ":")).encode()
        assert (claims["sub"], claims["name"], claims["auth"], claims["groups"]) == (
            subject.id,
            subject.name,
            subject.auth,
            list(subject.groups),
        )
        assert (claims["request_id"], claims["aud"]) == (request_id, audience)


def _next_key_jwk(kid: str) -> dict[str, str]:
    """The full JWK (private ``d`` included) of a new P-256 key, as a careless rotation writes it."""
    key = serialization.load_pem_private_key(generate_key_pem(), None)
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "kid": kid}


def test_extra_public_keys_are_published_beside_the_signing_key(tmp_path: Path) -> None:
    public = {k: v for k, v in _next_key_jwk("next").items() if k != "d"}
    (tmp_path / "extra.json").write_text(json.dumps({"keys": [public]}))
    asserter = SubjectAsserter.from_settings(
        SubjectAssertionSettings(extra_jwks_file=tmp_path / "extra.json")
    )
    assert asserter is not None
    assert [key["kid"] for key in asserter.jwks()["keys"]] == [asserter.kid, "next"]


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_an_extra_key_with_private_members_is_refused_at_start(tmp_path: Path, member: str) -> None:
    """The JWKS is published unauthenticated: a rotation file holding the next key in full would
    hand out the key the gateway is about to sign with."""
    public = {k: v for k, v in _next_key_jwk("next").items() if k != "d"}
    (tmp_path / "extra.json").write_text(
        json.dumps({"keys": [public, {**public, "kid": "full", member: "AQAB"}]})
    )
    with pytest.raises(ConfigError) as caught:
        SubjectAsserter.from_settings(SubjectAssertionSettings(extra_jwks_file=tmp_path / "extra.json"))
    assert caught.value.reason == reasons.ASSERTION_KEY_INVALID
    assert "'full'" in caught.value.message and "private" in caught.value.message
    assert f"({member})" in caught.value.message


def test_an_extra_key_that_is_not_an_object_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "extra.json").write_text(json.dumps({"keys": ["next"]}))
    with pytest.raises(ConfigError) as caught:
        SubjectAsserter.from_settings(SubjectAssertionSettings(extra_jwks_file=tmp_path / "extra.json"))
    assert caught.value.reason == reasons.ASSERTION_KEY_INVALID
