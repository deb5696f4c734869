"""The subject assertion as an upstream verifies it: a compact ES256 JWS that PyJWT accepts
with the published JWKS, one per call (its own ``jti`` and the call's ``request_id``)."""

from __future__ import annotations

import jwt
import pytest

from labelgate.auth.assertion import SubjectAsserter, SubjectAssertionSettings
from labelgate.auth.subject import Subject


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
