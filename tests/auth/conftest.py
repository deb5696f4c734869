"""Keys and settings shared by the auth tests (RSA generation is slow: made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.auth import Authenticator, AuthSettings, JwtSettings
from labelgate.auth.jwt_verifier import JwtVerifier
from tests.support.pki import SigningKey, ec_signing_key, rsa_signing_key, write_jwks

ISSUER = "https://idp.test"
AUDIENCE = "labelgate"


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return rsa_signing_key("rsa-1")


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    return ec_signing_key("ec-1")


@pytest.fixture(scope="session")
def stranger_key() -> SigningKey:
    """Same kid as ``rsa_key`` but a different key: what an attacker would sign with."""
    return rsa_signing_key("rsa-1")


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: SigningKey, ec_key: SigningKey) -> Path:
    return write_jwks(tmp_path / "jwks.json", rsa_key, ec_key)


@pytest.fixture
def jwt_settings(jwks_file: Path) -> JwtSettings:
    return JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file)


@pytest.fixture
def verifier(jwt_settings: JwtSettings) -> JwtVerifier:
    return JwtVerifier.from_settings(jwt_settings)


@pytest.fixture
def jwt_authenticator(jwt_settings: JwtSettings) -> Authenticator:
    return Authenticator.from_settings(AuthSettings(jwt=jwt_settings))
