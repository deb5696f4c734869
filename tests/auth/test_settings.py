"""Settings validation: a config that can never work says everything that is wrong at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from labelgate.auth import ApiKeySettings, AuthSettings, JwtSettings, MtlsSettings


def problems_of(model: type, **fields) -> str:
    with pytest.raises(ValidationError) as caught:
        model(**fields)
    return str(caught.value)


def test_jwt_settings_list_every_problem(tmp_path: Path) -> None:
    text = problems_of(
        JwtSettings,
        jwks_file=tmp_path / "missing.json",
        jwks_url="http://idp.example.com/jwks",
        algorithms=["none", "HS256", "RS256", "XX512", "RS256"],
    )
    for expected in [
        "must not contain 'none'",
        "unknown algorithms ['XX512']",
        "mixes HMAC ['HS256'] with public-key ['RS256']",
        "lists an algorithm twice",
        "set jwks_file or jwks_url, not both",
        "issuer is required",
        "audience is required",
        "missing.json' does not exist",
        "must be https://",
    ]:
        assert expected in text, expected


def test_jwt_settings_need_a_key_source() -> None:
    assert "no verification keys" in problems_of(JwtSettings, issuer="i", audience="a")


def test_an_empty_algorithm_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("{}")
    assert "at least one algorithm" in problems_of(
        JwtSettings, issuer="i", audience="a", jwks_file=path, algorithms=[]
    )


@pytest.mark.parametrize("algorithms", [["None"], ["NONE", "ES256"]])
def test_none_is_refused_in_any_spelling(algorithms) -> None:
    assert "'none'" in problems_of(JwtSettings, trust_dev_key=True, algorithms=algorithms)


def test_the_dev_key_needs_its_algorithm_and_its_jwks(tmp_path: Path) -> None:
    text = problems_of(JwtSettings, trust_dev_key=True, algorithms=["RS256"], dev_keys_dir=tmp_path)
    assert "needs ES256 in algorithms" in text
    assert "jwks.json' does not exist" in text


def test_valid_jwt_settings(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("{}")
    assert JwtSettings(issuer="i", audience="a", jwks_file=path).algorithms == ["RS256", "ES256"]
    assert JwtSettings(issuer="i", audience="a", jwks_url="https://idp.example.com/jwks").jwks_url
    assert JwtSettings(issuer="i", audience="a", jwks_url="http://127.0.0.1:9/jwks").jwks_url  # loopback
    assert JwtSettings(trust_dev_key=True).trust_dev_key  # the quickstart: the shipped dev JWKS
    assert JwtSettings(
        issuer="i", audience="a", jwks_file=path, algorithms=["HS256", "HS512"]
    )  # HMAC alone is fine


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    assert "extra_forbidden" in problems_of(JwtSettings, trust_dev_key=True, issuers="typo")


def test_mtls_and_api_key_settings_check_their_files(tmp_path: Path) -> None:
    text = problems_of(MtlsSettings, ca_file=tmp_path / "ca.pem", groups_file=tmp_path / "groups.yaml")
    assert "ca_file" in text and "groups_file" in text
    assert "keys_file" in problems_of(ApiKeySettings, keys_file=tmp_path / "keys.yaml")
    text = problems_of(MtlsSettings, ca_file=tmp_path, identity_from="email")
    assert "identity_from" in text


def test_auth_settings_report_problems_in_every_section(tmp_path: Path) -> None:
    text = problems_of(
        AuthSettings,
        jwt={"algorithms": ["none"], "trust_dev_key": True},
        mtls={"ca_file": str(tmp_path / "ca.pem")},
        api_keys={"keys_file": str(tmp_path / "keys.yaml")},
    )
    assert "'none'" in text and "ca_file" in text and "keys_file" in text


def test_auth_settings_need_a_sound_order() -> None:
    text = problems_of(AuthSettings, jwt={"trust_dev_key": True}, order=["api_key", "api_key"])
    assert "lists a method twice" in text
    assert "missing ['jwt']" in text


def test_auth_settings_enabled_methods(tmp_path: Path) -> None:
    settings = AuthSettings(jwt={"trust_dev_key": True}, api_keys={}, order=["jwt", "api_key"])
    assert settings.enabled() == ["jwt", "api_key"]
