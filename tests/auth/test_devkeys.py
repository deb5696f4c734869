"""The quickstart dev key: minting, the shipped pair, and when the gateway trusts it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from labelgate.auth import (
    Authenticator,
    AuthSettings,
    JwtSettings,
    default_dev_key_dir,
    dev_token_command,
    mint_dev_token,
    parse_ttl,
    reasons,
)
from labelgate.auth.__main__ import main as auth_main
from labelgate.auth.devkeys import DEV_KID_PREFIX, JWKS_NAME, PRIVATE_KEY_NAME, generate
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.errors import ConfigError, InvalidInput, Unauthenticated
from tests.auth.conftest import AUDIENCE, ISSUER

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "quickstart" / "dev-keys"


def test_the_shipped_pair_is_where_the_code_looks_and_clearly_insecure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without $LABELGATE_DEV_KEYS: the quickstart's folder under the working directory (the
    # package itself does not know where the repository is).
    monkeypatch.delenv("LABELGATE_DEV_KEYS", raising=False)
    monkeypatch.chdir(REPO)
    assert default_dev_key_dir() == SHIPPED
    monkeypatch.setenv("LABELGATE_DEV_KEYS", "/somewhere/else")
    assert default_dev_key_dir() == Path("/somewhere/else")
    assert (SHIPPED / PRIVATE_KEY_NAME).is_file()
    assert "INSECURE" in PRIVATE_KEY_NAME
    (key,) = json.loads((SHIPPED / JWKS_NAME).read_text())["keys"]
    assert key["kid"].startswith(DEV_KID_PREFIX)
    assert "d" not in key  # the JWKS holds only the public half


def test_a_dev_token_verifies_when_the_dev_key_is_trusted() -> None:
    verifier = JwtVerifier.from_settings(JwtSettings(trust_dev_key=True))
    subject = verifier.verify(dev_token_command("alice", "analysts, data-stewards,,", "1h"))
    assert subject.name == "alice"
    assert subject.groups == ("analysts", "data-stewards")
    assert subject.attributes["key_source"] == "dev"
    assert subject.attributes["iss"] == "labelgate-dev"


def test_a_dev_token_is_refused_when_the_dev_key_is_not_trusted(jwks_file: Path) -> None:
    verifier = JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file))
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(mint_dev_token("alice", ["analysts"], 60))
    assert caught.value.reason == reasons.TOKEN_UNKNOWN_KEY


def test_the_dev_key_cannot_vouch_for_the_real_issuer(jwks_file: Path) -> None:
    """With both the real JWKS and the dev key trusted, a dev-signed token claiming the real
    issuer is refused: the dev key only speaks for ``labelgate-dev``."""
    verifier = JwtVerifier.from_settings(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file, trust_dev_key=True)
    )
    genuine = jwt.decode(mint_dev_token("alice", [], 60), options={"verify_signature": False})
    header = jwt.get_unverified_header(mint_dev_token("alice", [], 60))
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key((SHIPPED / PRIVATE_KEY_NAME).read_bytes(), None)
    forged = jwt.encode(
        {**genuine, "iss": ISSUER}, private, algorithm="ES256", headers={"kid": header["kid"]}
    )
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(forged)
    assert caught.value.reason == reasons.TOKEN_BAD_ISSUER
    assert verifier.verify(mint_dev_token("alice", [], 60)).name == "alice"


def test_dev_tokens_work_end_to_end_through_the_authenticator() -> None:
    authenticator = Authenticator.from_settings(AuthSettings(jwt={"trust_dev_key": True}))
    token = dev_token_command("bob", "analysts", "30m")
    subject = authenticator.authenticate([("authorization", f"Bearer {token}")], None)
    assert (subject.name, subject.groups, subject.auth) == ("bob", ("analysts",), "jwt")


def test_dev_token_claims() -> None:
    now = time.time()
    body = jwt.decode(mint_dev_token("alice", ["b", "a"], 90, now=now), options={"verify_signature": False})
    assert body["iss"] == "labelgate-dev" and body["aud"] == "labelgate"
    assert body["groups"] == ["a", "b"]
    assert body["exp"] - body["nbf"] == 90 and body["nbf"] == int(now)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("45s", 45), ("30m", 1800), ("1h", 3600), (" 2H ", 7200), ("7d", 604800)],
)
def test_parse_ttl(text, seconds) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "-5", "1.5h", "h", "0", "8d", "1h30m"])
def test_parse_ttl_refuses_what_it_cannot_read(text) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ttl(text)
    assert caught.value.reason == "TTL_INVALID"
    assert repr(text) in caught.value.message


@pytest.mark.parametrize(
    ("sub", "groups", "ttl", "reason"),
    [
        ("", [], 60, "DEV_TOKEN_BAD_SUBJECT"),
        ("alice", ["has space"], 60, "DEV_TOKEN_BAD_GROUPS"),
        ("alice", ["a,b"], 60, "DEV_TOKEN_BAD_GROUPS"),
        ("alice", [], 0, "TTL_INVALID"),
        ("alice", [], True, "TTL_INVALID"),
    ],
)
def test_mint_refuses_bad_input(sub, groups, ttl, reason) -> None:
    with pytest.raises(InvalidInput) as caught:
        mint_dev_token(sub, groups, ttl)
    assert caught.value.reason == reason


def test_generate_writes_a_pair_that_mints_and_verifies(tmp_path: Path) -> None:
    private, _ = generate(tmp_path)
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    token = mint_dev_token("carol", ["x"], 60, key_dir=tmp_path)
    verifier = JwtVerifier.from_settings(JwtSettings(trust_dev_key=True, dev_keys_dir=tmp_path))
    assert verifier.verify(token).name == "carol"
    # ...and the shipped JWKS does not trust this new key.
    with pytest.raises(Unauthenticated):
        JwtVerifier.from_settings(JwtSettings(trust_dev_key=True)).verify(token)


def test_generate_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    generate(tmp_path)
    before = (tmp_path / JWKS_NAME).read_text()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate(tmp_path)
    generate(tmp_path, force=True)
    assert (tmp_path / JWKS_NAME).read_text() != before


def test_a_private_key_that_the_jwks_does_not_publish_is_refused(tmp_path: Path) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    (tmp_path / "a" / JWKS_NAME).write_text((tmp_path / "b" / JWKS_NAME).read_text())
    with pytest.raises(ConfigError) as caught:
        mint_dev_token("alice", [], 60, key_dir=tmp_path / "a")
    assert caught.value.reason == "DEV_KEYS_MISMATCH"


def test_missing_dev_keys_say_where_they_were_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        mint_dev_token("alice", [], 60, key_dir=tmp_path)
    assert caught.value.reason == "DEV_KEYS_MISSING"
    assert str(tmp_path) in caught.value.message and "LABELGATE_DEV_KEYS" in caught.value.message


def test_the_dev_key_dir_can_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    generate(tmp_path)
    monkeypatch.setenv("LABELGATE_DEV_KEYS", str(tmp_path))
    assert default_dev_key_dir() == tmp_path
    token = mint_dev_token("dave", [], 60)
    assert JwtVerifier.from_settings(JwtSettings(trust_dev_key=True)).verify(token).name == "dave"


def test_the_generate_command(tmp_path: Path, capsys) -> None:
    auth_main(["generate-dev-keys", str(tmp_path)])
    assert PRIVATE_KEY_NAME in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        auth_main(["generate-dev-keys", str(tmp_path)])
    assert exited.value.code == 2
    assert "DEV_KEYS_EXIST" in capsys.readouterr().err


def test_a_jwks_file_reusing_the_dev_kid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text((SHIPPED / JWKS_NAME).read_text())
    with pytest.raises(ConfigError, match="both publish kid"):
        JwtVerifier.from_settings(
            JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, trust_dev_key=True)
        )


def test_a_dev_token_can_never_be_a_production_identity(jwks_file: Path, rsa_key) -> None:
    """Both keys trusted, the same ``sub``: two different subjects (issue 13, gap 3)."""
    from tests.support.pki import claims

    verifier = JwtVerifier.from_settings(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file, trust_dev_key=True)
    )
    dev = verifier.verify(mint_dev_token("olivia", ["data-owners"], 60))
    real = verifier.verify(rsa_key.sign(claims("olivia")))
    assert (dev.name, real.name) == ("olivia", "olivia")
    assert dev.id == "jwt:labelgate-dev#olivia"
    assert real.id == f"jwt:{ISSUER}#olivia"
    assert dev.id != real.id


def test_a_production_issuer_cannot_be_the_dev_issuer(jwks_file: Path) -> None:
    with pytest.raises(ValueError, match="development key"):
        JwtSettings(issuer="labelgate-dev", audience=AUDIENCE, jwks_file=jwks_file)
    with pytest.raises(ValueError, match="must not contain '#'"):
        JwtSettings(issuer="https://idp#x", audience=AUDIENCE, jwks_file=jwks_file)


@pytest.mark.parametrize("sub", ["alice\n", "ali\u200bce", "\u202eecila", " alice", "alice\x1b[2J"])
def test_a_dev_token_is_not_minted_for_a_subject_the_gateway_would_refuse(sub: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        mint_dev_token(sub, ["analysts"], 60)
    assert refused.value.reason == "DEV_TOKEN_BAD_SUBJECT"
