"""Bearer JWT verification: the accepted shapes, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from labelgate.auth import JwtSettings, reasons
from labelgate.auth.jwks import KeyIndex, parse_jwks
from labelgate.auth.jwt_verifier import JwtVerifier, groups_from_claim
from labelgate.auth.subject import group_name_problem
from labelgate.errors import ConfigError, Unauthenticated
from tests.auth.conftest import AUDIENCE, ISSUER
from tests.support.pki import (
    SigningKey,
    claims,
    forge_alg_none,
    forge_hs256_with_public_key,
    jwks,
    rsa_signing_key,
    write_jwks,
)


def refused(verifier: JwtVerifier, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    error = caught.value
    # Whatever went wrong, the refusal never carries the token or a piece of it.
    text = f"{error} {error.message} {error.details}"
    for piece in [token, *[part for part in token.split(".") if len(part) > 8]]:
        assert piece not in text
    return error


def test_a_valid_rs256_token_gives_the_subject(verifier: JwtVerifier, rsa_key: SigningKey) -> None:
    body = claims("alice", groups=["data-stewards", "analysts", "analysts"])
    subject = verifier.verify(rsa_key.sign(body))
    assert subject.name == "alice"
    assert subject.auth == "jwt"
    assert subject.groups == ("analysts", "data-stewards")
    assert dict(subject.attributes) == {
        "iss": ISSUER,
        "exp": body["exp"],
        "kid": "rsa-1",
        "key_source": "jwks_file",
        "jti": body["jti"],
    }


def test_a_valid_es256_token_gives_the_subject(verifier: JwtVerifier, ec_key: SigningKey) -> None:
    assert verifier.verify(ec_key.sign(claims("bob", groups=[]))).name == "bob"


def test_an_audience_list_that_includes_the_gateway_is_accepted(verifier, rsa_key) -> None:
    assert verifier.verify(rsa_key.sign(claims(aud=["other", AUDIENCE]))).name == "alice"


def test_clock_skew_within_the_leeway_is_tolerated(verifier, rsa_key) -> None:
    now = time.time()
    assert verifier.verify(rsa_key.sign(claims(now=now - 310, ttl=300))).name == "alice"  # expired 10 s ago
    assert verifier.verify(rsa_key.sign(claims(now=now + 10))).name == "alice"  # valid in 10 s


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"now": time.time() - 3600}, reasons.TOKEN_EXPIRED),
        ({"now": time.time() + 600}, reasons.TOKEN_NOT_YET_VALID),
        ({"aud": "another-service"}, reasons.TOKEN_BAD_AUDIENCE),
        ({"aud": ["x", "y"]}, reasons.TOKEN_BAD_AUDIENCE),
        ({"iss": "https://evil.test"}, reasons.TOKEN_BAD_ISSUER),
        ({"sub": 42}, reasons.TOKEN_BAD_SUBJECT),
        ({"sub": ""}, reasons.TOKEN_BAD_SUBJECT),
        ({"exp": "tomorrow"}, reasons.TOKEN_MALFORMED),
    ],
)
def test_claims_that_are_refused(verifier, rsa_key, change, reason) -> None:
    assert refused(verifier, rsa_key.sign(claims(**change))).reason == reason


def test_a_token_not_yet_valid_by_nbf_alone_is_refused(verifier, rsa_key) -> None:
    body = claims(nbf=int(time.time()) + 600)
    assert refused(verifier, rsa_key.sign(body)).reason == reasons.TOKEN_NOT_YET_VALID


@pytest.mark.parametrize("claim", ["exp", "nbf", "iss", "aud", "sub"])
def test_every_required_claim_must_be_present(verifier, rsa_key, claim) -> None:
    body = claims()
    del body[claim]
    error = refused(verifier, rsa_key.sign(body))
    assert error.reason == reasons.TOKEN_MISSING_CLAIM
    assert repr(claim) in error.message


def test_a_token_signed_by_another_key_under_a_trusted_kid_is_refused(verifier, stranger_key) -> None:
    assert refused(verifier, stranger_key.sign(claims())).reason == reasons.TOKEN_BAD_SIGNATURE


def test_a_token_with_an_unknown_kid_is_refused(verifier) -> None:
    assert refused(verifier, rsa_signing_key("nobody").sign(claims())).reason == reasons.TOKEN_UNKNOWN_KEY


def test_a_tampered_payload_is_refused(verifier, rsa_key) -> None:
    header, _, signature = rsa_key.sign(claims("alice")).split(".")
    other_payload = rsa_key.sign(claims("mallory", groups=["admins"])).split(".")[1]
    assert refused(verifier, f"{header}.{other_payload}.{signature}").reason == reasons.TOKEN_BAD_SIGNATURE


def test_alg_none_is_refused(verifier) -> None:
    token = forge_alg_none(claims(), kid="rsa-1")
    assert refused(verifier, token).reason == reasons.TOKEN_ALGORITHM_NOT_ALLOWED


def test_hs256_signed_with_the_rsa_public_key_is_refused(verifier, rsa_key) -> None:
    token = forge_hs256_with_public_key(claims(), rsa_key.public_pem, kid="rsa-1")
    assert refused(verifier, token).reason == reasons.TOKEN_ALGORITHM_NOT_ALLOWED


def test_hs256_confusion_fails_even_if_hs256_were_on_the_allow_list(rsa_key) -> None:
    """Defence in depth below the settings check: a key is bound to one algorithm when loaded,
    so an RSA key is never offered to HMAC whatever the allow-list says."""
    algorithms = ["RS256", "HS256"]  # the settings refuse this mix; build the verifier by hand
    keys, problems = parse_jwks(
        jwks(rsa_key), algorithms=algorithms, issuer=ISSUER, audience=AUDIENCE, source="t"
    )
    assert problems == []
    verifier = JwtVerifier(KeyIndex(keys), algorithms=algorithms)
    token = forge_hs256_with_public_key(claims(), rsa_key.public_pem, kid="rsa-1")
    assert refused(verifier, token).reason == reasons.TOKEN_UNKNOWN_KEY
    assert verifier.verify(rsa_key.sign(claims())).name == "alice"  # the same verifier does work


def test_an_algorithm_the_key_was_not_published_for_is_refused(tmp_path: Path, rsa_key) -> None:
    # The JWK says alg RS256; a PS256 token under its kid must not be verified with it.
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=write_jwks(tmp_path / "k.json", rsa_key),
        algorithms=["RS256", "PS256"],
    )
    verifier = JwtVerifier.from_settings(settings)
    token = jwt.encode(claims(), rsa_key.key, algorithm="PS256", headers={"kid": "rsa-1"})
    assert refused(verifier, token).reason == reasons.TOKEN_UNKNOWN_KEY


def test_a_jwk_without_alg_serves_every_allowed_algorithm_of_its_type(tmp_path: Path, rsa_key) -> None:
    path = write_jwks(tmp_path / "k.json", rsa_key, with_alg=False)
    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, algorithms=["RS256", "PS256"])
    verifier = JwtVerifier.from_settings(settings)
    token = jwt.encode(claims(), rsa_key.key, algorithm="PS256", headers={"kid": "rsa-1"})
    assert verifier.verify(token).name == "alice"


def test_a_token_without_kid_is_accepted_only_when_one_key_fits(tmp_path: Path, rsa_key) -> None:
    body = claims()
    token = jwt.encode(body, rsa_key.key, algorithm="RS256")  # no kid
    alone = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_file=write_jwks(tmp_path / "one.json", rsa_key)
    )
    assert JwtVerifier.from_settings(alone).verify(token).name == "alice"
    two = write_jwks(tmp_path / "two.json", rsa_key, rsa_signing_key("rsa-2"))
    crowded = JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=two))
    assert refused(crowded, token).reason == reasons.TOKEN_UNKNOWN_KEY


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "e30.e30.",  # {} header: no alg
        "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.AAAA",  # kid is a number
        "x" * 20000,
    ],
)
def test_malformed_tokens_are_refused(verifier, token) -> None:
    assert refused(verifier, token).reason == reasons.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("groups_claim", "extra", "expected"),
    [
        ("groups", {"groups": ["b", "a", "a"]}, ("a", "b")),
        ("groups", {"groups": "analysts"}, ("analysts",)),  # one string: one name
        ("groups", {"groups": "Data Stewards"}, ("Data Stewards",)),
        ("groups", {"groups": "b,a"}, ("b,a",)),
        ("groups", {"groups": None}, ()),
        ("groups", {}, ()),
        ("roles", {"roles": ["r1"], "groups": ["ignored"]}, ("r1",)),
        ("realm_access.roles", {"realm_access": {"roles": ["stewards"]}}, ("stewards",)),
        ("https://labelgate.dev/groups", {"https://labelgate.dev/groups": ["ns"]}, ("ns",)),
    ],
)
def test_groups_claim_variants(tmp_path, rsa_key, groups_claim, extra, expected) -> None:
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=write_jwks(tmp_path / "k.json", rsa_key),
        groups_claim=groups_claim,
    )
    token = rsa_key.sign({**claims(groups=None), **extra})
    assert JwtVerifier.from_settings(settings).verify(token).groups == expected


@pytest.mark.parametrize("value", [42, ["ok", 7], {"a": 1}, ["ok", " "], "", " "])
def test_groups_of_the_wrong_shape_are_refused(verifier, rsa_key, value) -> None:
    assert refused(verifier, rsa_key.sign(claims(groups=value))).reason == reasons.TOKEN_BAD_GROUPS


@pytest.mark.parametrize(
    "value",
    [
        ["approvers\u3000"],  # ideographic space: "approvers" once trimmed
        ["\u00a0break-glass"],  # NBSP
        ["analysts", "security\x1f"],  # a control character str.strip() also removes
        ["ap\u200bprovers"],  # zero-width space: invisible, never removed
        ["approvers "],
        [" approvers"],
        ["data\tstewards"],
        [""],
        "approvers\u3000",  # the string form is one name, checked as a list entry is
        "analysts, \u00a0approvers",
        "analysts,security\x1c",
        " approvers",
        "approvers ",
    ],
)
def test_a_group_name_trimming_would_change_makes_the_token_invalid(verifier, rsa_key, value) -> None:
    """Names are compared exactly, so one a provider tells apart from ``approvers`` must never
    become ``approvers`` here: the token is refused, and the refusal does not quote the name."""
    error = refused(verifier, rsa_key.sign(claims(groups=value)))
    assert error.reason == reasons.TOKEN_BAD_GROUPS
    assert "approvers" not in error.message and "security" not in error.message


def test_a_group_name_with_a_space_inside_is_kept_whole_in_list_form(verifier, rsa_key) -> None:
    token = rsa_key.sign(claims(groups=["Data Stewards", "analysts"]))
    assert verifier.verify(token).groups == ("Data Stewards", "analysts")


@pytest.mark.parametrize(
    ("value", "group"),
    [
        ("former data-owners", "former data-owners"),
        ("data-owners (revoked)", "data-owners (revoked)"),
        ("not,approvers", "not,approvers"),
        ("not, approvers", "not, approvers"),
    ],
)
def test_a_groups_claim_sent_as_one_string_is_one_group_never_split(verifier, rsa_key, value, group) -> None:
    """ADFS and SAML bridges send a single-valued claim as a bare string. Split at spaces or
    commas, a member of ``former data-owners`` would have been in ``data-owners``."""
    assert verifier.verify(rsa_key.sign(claims(groups=value))).groups == (group,)
    assert groups_from_claim(value) == [group]


@pytest.mark.parametrize(
    "sub",
    [
        "alice\nINFO forged log line",
        "alice\x1b[2J",  # ANSI escape
        "alice\x00",
        "alice\u200b",  # zero-width space: looks like alice
        "\u202eecila",  # right-to-left override: shows as alice
        "ali\u2066ce",  # bidi isolate
        "alice\ufeff",
        " alice",
        "alice ",
        "\u00a0alice",  # NBSP
        "alice\u3000",
        "ali\tce",
    ],
)
def test_a_subject_with_control_bidi_or_invisible_characters_is_refused(verifier, rsa_key, sub) -> None:
    """The rule group names follow: ``alice`` + U+200B would be another person who looks like
    alice in the inbox; it is refused, never trimmed into alice, and the refusal does not
    quote it."""
    error = refused(verifier, rsa_key.sign(claims(sub)))
    assert error.reason == reasons.TOKEN_BAD_SUBJECT
    assert "ali" not in error.message and "ecila" not in error.message


def test_a_custom_subject_claim_follows_the_same_rule(tmp_path, rsa_key) -> None:
    path = write_jwks(tmp_path / "k.json", rsa_key)
    verifier = JwtVerifier.from_settings(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, subject_claim="email")
    )
    token = rsa_key.sign(claims(email="alice@example.com\u200b"))
    assert refused(verifier, token).reason == reasons.TOKEN_BAD_SUBJECT


def test_a_dotted_subject_claim_is_read_as_the_inbox_reads_it(tmp_path, rsa_key) -> None:
    # One setting, one value in both places (the inbox's sign-in follows a dotted path too),
    # else one person would be two ids there and could approve their own request.
    path = write_jwks(tmp_path / "k.json", rsa_key)
    verifier = JwtVerifier.from_settings(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, subject_claim="profile.user")
    )
    assert verifier.verify(rsa_key.sign(claims(profile={"user": "alice"}))).name == "alice"


@pytest.mark.parametrize("sub", ["Alice Smith", "Zoë", "alice@example.com", "a#b", "mtls:spiffe://x"])
def test_printable_subjects_are_taken_as_they_are(verifier, rsa_key, sub) -> None:
    assert verifier.verify(rsa_key.sign(claims(sub))).name == sub


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", lambda now: str(now + 600)),  # PyJWT takes a numeric string
        ("nbf", lambda now: str(now)),
        ("iat", lambda now: str(now)),
        ("nbf", lambda now: True),  # PyJWT takes a bool as 1
        ("iat", lambda now: True),
    ],
)
def test_time_claims_that_are_not_json_numbers_make_the_token_malformed(
    verifier, rsa_key, name, value
) -> None:
    """A subject keeping ``exp`` as a string would outlive it: what ends a stream at ``exp``
    compares numbers only."""
    now = int(time.time())
    token = rsa_key.sign(claims(now=now, **{name: value(now)}))
    assert refused(verifier, token).reason == reasons.TOKEN_MALFORMED


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", 10**400),  # int too large to convert to float: was an OverflowError (a 500)
        ("exp", 1e308),
        ("exp", 253402300800),  # 10000-01-01: past what a date can be
        ("nbf", -(10**400)),
        ("nbf", -1),
        ("iat", -(10**400)),
        ("iat", -1e308),
    ],
    ids=[
        "exp-1e400",
        "exp-1e308",
        "exp-year-10000",
        "nbf-minus-1e400",
        "nbf-minus-1",
        "iat-minus-1e400",
        "iat-minus-1e308",
    ],
)
def test_time_claims_that_are_no_date_make_the_token_malformed(verifier, rsa_key, name, value) -> None:
    token = rsa_key.sign(claims(**{name: value}))
    assert refused(verifier, token).reason == reasons.TOKEN_MALFORMED


def test_time_claims_may_be_fractional(verifier, rsa_key) -> None:
    now = time.time()
    subject = verifier.verify(rsa_key.sign(claims(now=now, exp=now + 600.5, iat=now - 0.5)))
    assert subject.attributes["exp"] == now + 600.5


def test_a_custom_subject_claim(tmp_path, rsa_key) -> None:
    path = write_jwks(tmp_path / "k.json", rsa_key)
    verifier = JwtVerifier.from_settings(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, subject_claim="email")
    )
    assert verifier.verify(rsa_key.sign(claims(email="alice@example.com"))).name == "alice@example.com"
    assert refused(verifier, rsa_key.sign(claims())).reason == reasons.TOKEN_MISSING_CLAIM


def test_unusable_jwks_files_are_refused_at_start_with_every_problem(tmp_path: Path) -> None:
    small = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=1024), "small", "RS256")  # noqa: S505 - the weak key is the point
    document = jwks(small)
    document["keys"] += [
        "not-an-object",
        {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "AQAB", "alg": "RS256"},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as caught:
        JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path))
    message = caught.value.message
    assert "1024 bits" in message
    assert "keys[1] is not an object" in message
    assert "broken" in message


def test_a_jwks_file_that_is_not_json_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path))


def test_a_jwks_with_no_key_for_the_allowed_algorithms_is_refused(tmp_path: Path, ec_key) -> None:
    path = write_jwks(tmp_path / "ec.json", ec_key)
    with pytest.raises(ConfigError, match="no signing key usable"):
        JwtVerifier.from_settings(
            JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, algorithms=["RS256"])
        )


def test_hmac_alone_works_with_a_shared_secret_jwks(tmp_path: Path) -> None:
    secret = b"s" * 32
    path = tmp_path / "hs.json"
    key = {"kty": "oct", "kid": "h1", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}
    path.write_text(json.dumps({"keys": [key]}))
    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, algorithms=["HS256"])
    verifier = JwtVerifier.from_settings(settings)
    token = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "h1"})
    assert verifier.verify(token).name == "alice"
    assert refused(
        verifier, jwt.encode(claims(), b"t" * 32, algorithm="HS256", headers={"kid": "h1"})
    ).reason == (reasons.TOKEN_BAD_SIGNATURE)


ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 10**400, -(10**400), 1e308, -1e308, 2**64, math.nan, math.inf,
    "", " ", "\x00", "\u200b", "a" * 300, "1796490140", "labelgate", "https://idp.test",
    [], [None], [1], [[]], ["labelgate"], [10**400], {}, {"a": 1}, {"roles": "x"}, {"roles": [1]},
    {"roles": ["ok", "\u3000"]},
]  # fmt: skip
ODD_CLAIMS = ["iss", "aud", "sub", "email", "exp", "nbf", "iat", "jti", "groups", "realm_access", "azp"]


def signed_as_is(key: SigningKey, body: Mapping[str, Any]) -> str:
    """Signed with the claims exactly as given (``jwt.encode`` refuses some, NaN is kept)."""
    payload = json.dumps(dict(body)).encode()
    return jwt.PyJWS().encode(payload, key.key, algorithm=key.alg, headers={"kid": key.kid})


@pytest.mark.parametrize("claim", ODD_CLAIMS)
def test_odd_claim_values_in_a_signed_token_give_a_subject_or_a_refusal(tmp_path, rsa_key, claim) -> None:
    """Whatever a trusted issuer puts in a claim, verify answers with a Subject or an
    Unauthenticated refusal, never another exception (a 500 instead of a 401)."""
    path = write_jwks(tmp_path / "k.json", rsa_key)
    verifiers = [
        JwtVerifier.from_settings(JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path)),
        JwtVerifier.from_settings(
            JwtSettings(
                issuer=ISSUER,
                audience=AUDIENCE,
                jwks_file=path,
                subject_claim="email",
                groups_claim="realm_access.roles",
            )
        ),
    ]
    problems = []
    for verifier in verifiers:
        for value in ODD_VALUES:
            body = {**claims(email="alice@example.com", realm_access={"roles": ["r1"]}), claim: value}
            try:
                subject = verifier.verify(signed_as_is(rsa_key, body))
            except Unauthenticated:
                continue
            except Exception as error:  # what the test looks for: anything but a refusal
                problems.append(f"{claim}={value!r:.40}: raised {type(error).__name__}")
                continue
            names = [subject.name, *subject.groups]
            if any(group_name_problem(name) is not None for name in names):
                problems.append(f"{claim}={value!r:.40}: accepted a name that is not printable")
            if not 0 <= subject.attributes["exp"] <= 253402300799:
                problems.append(f"{claim}={value!r:.40}: accepted exp {subject.attributes['exp']!r:.40}")
    assert problems == []
