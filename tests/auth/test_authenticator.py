"""The authenticate stage as a whole: which credential counts, and refusals with stable reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labelgate.auth import (
    ApiKeySettings,
    Authenticator,
    AuthSettings,
    JwtSettings,
    MtlsSettings,
    new_key_entry,
    reasons,
)
from labelgate.auth.api_keys import ApiKeyStore
from labelgate.auth.mtls import MtlsIdentifier
from labelgate.errors import ConfigError, Unauthenticated
from labelgate.expiry import earliest_expiry
from tests.support.pki import SigningKey, claims, create_ca


@pytest.fixture
def api_key(tmp_path: Path) -> tuple[str, Path]:
    key, entry = new_key_entry("ci-pipeline", ["automation"])
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    return key, path


@pytest.fixture
def both(jwt_settings: JwtSettings, api_key) -> Authenticator:
    return Authenticator.from_settings(
        AuthSettings(jwt=jwt_settings, api_keys=ApiKeySettings(keys_file=api_key[1]))
    )


def refusal(authenticator: Authenticator, metadata, auth_context=None) -> str:
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(metadata, auth_context)
    return caught.value.reason


def test_a_bearer_token(jwt_authenticator: Authenticator, rsa_key: SigningKey) -> None:
    subject = jwt_authenticator.authenticate([("authorization", f"Bearer {rsa_key.sign(claims())}")], None)
    assert (subject.name, subject.auth) == ("alice", "jwt")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive_and_bytes_values_work(
    jwt_authenticator, rsa_key, scheme
) -> None:
    value = f"{scheme}  {rsa_key.sign(claims())} ".encode()
    assert jwt_authenticator.authenticate([("authorization", value)], None).name == "alice"


def test_an_api_key(both: Authenticator, api_key) -> None:
    subject = both.authenticate([("x-api-key", api_key[0])], None)
    assert (subject.name, subject.groups, subject.auth) == ("ci-pipeline", ("automation",), "api_key")


def test_no_credentials(both: Authenticator) -> None:
    assert refusal(both, [("x-request-id", "r")]) == reasons.NO_CREDENTIALS
    assert refusal(both, [], {"transport_security_type": [b"insecure"]}) == reasons.NO_CREDENTIALS


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([("authorization", "Basic YWxpY2U6cHc=")], reasons.AUTHORIZATION_SCHEME_UNSUPPORTED),
        ([("authorization", "Bearer")], reasons.TOKEN_MALFORMED),
        ([("authorization", "Bearer   ")], reasons.TOKEN_MALFORMED),
        ([("authorization", b"Bearer \xff\xfe")], reasons.TOKEN_MALFORMED),
        ([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")], reasons.TOKEN_MALFORMED),
        ([("x-api-key", "k" * 40), ("x-api-key", "k" * 40)], reasons.API_KEY_MALFORMED),
        ([("x-api-key", "lgk_" + "0" * 43)], reasons.API_KEY_UNKNOWN),
    ],
)
def test_header_refusals(both: Authenticator, metadata, reason) -> None:
    assert refusal(both, metadata) == reason


def test_several_credentials_must_all_be_valid(both: Authenticator, rsa_key, api_key) -> None:
    good_token = f"Bearer {rsa_key.sign(claims())}"
    bad_token = f"Bearer {rsa_key.sign(claims(aud='elsewhere'))}"
    # A valid key does not rescue an invalid token, nor the other way round.
    assert (
        refusal(both, [("authorization", bad_token), ("x-api-key", api_key[0])]) == reasons.TOKEN_BAD_AUDIENCE
    )
    assert (
        refusal(both, [("authorization", good_token), ("x-api-key", "lgk_" + "1" * 43)])
        == reasons.API_KEY_UNKNOWN
    )
    subject = both.authenticate([("x-api-key", api_key[0]), ("authorization", good_token)], None)
    assert (subject.name, subject.auth) == ("alice", "jwt")  # jwt comes before api_key in the default order
    assert subject.id == "jwt:https://idp.test#alice"
    assert subject.attributes["also_verified"] == {"api_key": "api_key:ci-pipeline"}


def test_the_configured_order_decides_the_subject(jwt_settings, api_key, rsa_key) -> None:
    settings = AuthSettings(
        jwt=jwt_settings, api_keys=ApiKeySettings(keys_file=api_key[1]), order=["api_key", "jwt"]
    )
    subject = Authenticator.from_settings(settings).authenticate(
        [("authorization", f"Bearer {rsa_key.sign(claims())}"), ("x-api-key", api_key[0])], None
    )
    assert (subject.name, subject.attributes["also_verified"]) == (
        "ci-pipeline",
        {"jwt": "jwt:https://idp.test#alice"},
    )


def test_credentials_for_methods_not_enabled_are_refused(jwt_authenticator, api_key, rsa_key) -> None:
    assert refusal(jwt_authenticator, [("x-api-key", api_key[0])]) == reasons.AUTH_METHOD_NOT_ENABLED
    keys_only = Authenticator(api_keys=ApiKeyStore.load(api_key[1]))
    bearer = [("authorization", f"Bearer {rsa_key.sign(claims())}")]
    assert refusal(keys_only, bearer) == reasons.AUTH_METHOD_NOT_ENABLED


def test_a_client_certificate_is_ignored_when_mtls_is_not_configured(jwt_authenticator) -> None:
    cert = create_ca().issue("alice", uris=["spiffe://t/alice"])
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert.cert_pem]}
    assert refusal(jwt_authenticator, [], context) == reasons.NO_CREDENTIALS


def test_the_auth_context_shape_grpc_gives(tmp_path) -> None:
    """Without a server: the dict grpc.aio's auth_context() returns (see test_mtls for the real one)."""
    cert = create_ca().issue("alice", uris=["spiffe://t/alice"])
    authenticator = Authenticator(mtls=MtlsIdentifier())
    context = {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b"alice"],
        "x509_pem_cert": [cert.cert_pem],
    }
    assert authenticator.authenticate([], context).name == "spiffe://t/alice"
    garbage = {
        **context,
        "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    }
    assert refusal(authenticator, [], garbage) == reasons.CERT_UNREADABLE


def test_an_order_that_leaves_out_a_configured_method_is_refused(api_key) -> None:
    with pytest.raises(ValueError, match="leaves out"):
        Authenticator(api_keys=ApiKeyStore.load(api_key[1]), order=["jwt"])


def test_from_settings_reports_every_bad_file(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text("{not json")
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"keys": [{"id": "a", "sha256": "xyz"}]}))
    groups = tmp_path / "groups.yaml"
    groups.write_text(yaml.safe_dump({"alice": "not-a-list"}))
    ca = create_ca().write(tmp_path)
    settings = AuthSettings(
        jwt=JwtSettings(issuer="i", audience="a", jwks_file=jwks),
        api_keys=ApiKeySettings(keys_file=keys),
        mtls=MtlsSettings(ca_file=ca, groups_file=groups),
    )
    with pytest.raises(ConfigError) as caught:
        Authenticator.from_settings(settings)
    message = caught.value.message
    assert "not JSON" in message and "keys.0.sha256" in message and "alice: groups must be a list" in message


def test_with_no_method_configured_every_call_is_refused(rsa_key, api_key) -> None:
    authenticator = Authenticator.from_settings(AuthSettings())
    assert refusal(authenticator, []) == reasons.NO_CREDENTIALS
    assert refusal(authenticator, [("authorization", f"Bearer {rsa_key.sign(claims())}")]) == (
        reasons.AUTH_METHOD_NOT_ENABLED
    )
    assert refusal(authenticator, [("x-api-key", api_key[0])]) == reasons.AUTH_METHOD_NOT_ENABLED


def test_built_directly_from_settings(jwt_settings, rsa_key, api_key) -> None:
    authenticator = Authenticator(AuthSettings(jwt=jwt_settings))
    bearer = [("authorization", f"Bearer {rsa_key.sign(claims())}")]
    assert authenticator.authenticate(bearer, None).name == "alice"
    with pytest.raises(ValueError, match="not both"):
        Authenticator(AuthSettings(jwt=jwt_settings), api_keys=ApiKeyStore.load(api_key[1]))


def test_each_other_credential_is_kept_whole_for_policy(jwt_settings, rsa_key, api_key) -> None:
    """Review (fail-open): only the other credentials' ids were kept, so a token's ``exp`` and
    ``jti`` behind a client certificate were lost to the stream's expiry check, the decision
    cache and any policy refusing a revoked token id."""
    cert = create_ca().issue("workload", uris=["spiffe://t/workload"])
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert.cert_pem]}
    authenticator = Authenticator(
        mtls=MtlsIdentifier(),
        jwt=Authenticator.from_settings(AuthSettings(jwt=jwt_settings)).jwt,
        api_keys=ApiKeyStore.load(api_key[1]),
    )
    token = claims(jti="token-7", groups=("analysts",))
    metadata = [("authorization", f"Bearer {rsa_key.sign(token)}"), ("x-api-key", api_key[0])]
    subject = authenticator.authenticate(metadata, context)
    assert (subject.id, subject.auth) == ("mtls:spiffe://t/workload", "mtls")
    assert subject.attributes["also_verified"] == {  # unchanged: approvals read it
        "jwt": "jwt:https://idp.test#alice",
        "api_key": "api_key:ci-pipeline",
    }
    others = subject.to_policy()["attributes"]["also_verified_credentials"]
    assert others == {
        "jwt": {
            "id": "jwt:https://idp.test#alice",
            "name": "alice",
            "groups": ["analysts"],
            "auth": "jwt",
            "attributes": {
                "iss": "https://idp.test",
                "exp": token["exp"],
                "jti": "token-7",
                "kid": "rsa-1",
                "key_source": others["jwt"]["attributes"]["key_source"],
            },
        },
        "api_key": {
            "id": "api_key:ci-pipeline",
            "name": "ci-pipeline",
            "groups": ["automation"],
            "auth": "api_key",
            "attributes": {"key_id": "ci-pipeline"},
        },
    }
    assert earliest_expiry(subject.attributes) == token["exp"]  # the token's, not "none"
    json.dumps(subject.to_policy())  # plain JSON for every engine


def test_a_single_credential_has_no_others(jwt_authenticator, rsa_key) -> None:
    subject = jwt_authenticator.authenticate([("authorization", f"Bearer {rsa_key.sign(claims())}")], None)
    assert "also_verified" not in subject.attributes
    assert "also_verified_credentials" not in subject.attributes
