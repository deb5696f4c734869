"""Subject: normalised groups, read-only, and the policy input's subject object."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from labelgate.auth import Subject

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "proto/labelgate/v1/schema/input.json").read_text()
)


def test_groups_are_sorted_and_unique() -> None:
    assert Subject("alice", ("b", "a", "b", "c d"), "jwt").groups == ("a", "b", "c d")


@pytest.mark.parametrize("name", [" c ", "approvers\u3000", "\u00a0break-glass", "security\x1f", "a\u200bb"])
def test_a_group_name_is_never_trimmed_into_another(name: str) -> None:
    """Trimming made ``approvers`` + U+3000 (another group at the provider) ``approvers``."""
    with pytest.raises(ValueError, match="group name"):
        Subject("alice", ("analysts", name), "jwt")


def test_to_policy_matches_the_input_schema() -> None:
    subject = Subject.proven(
        "mtls", "alice", groups=("b", "a"), attributes={"cert_sha256": "ab", "also_verified": {"jwt": "x"}}
    )
    policy = subject.to_policy()
    assert policy == {
        "id": "mtls:alice",
        "name": "alice",
        "groups": ["a", "b"],
        "auth": "mtls",
        "attributes": {"cert_sha256": "ab", "also_verified": {"jwt": "x"}},
    }
    jsonschema.validate(policy, SCHEMA["properties"]["subject"])
    json.dumps(policy)  # plain JSON, no read-only proxies


def test_each_policy_subject_is_a_copy_of_its_own() -> None:
    """Every decision gets its own subject object: changing one (which nothing should) can
    never reach the next decision, nor the subject."""
    subject = Subject.proven("mtls", "alice", attributes={"aud": ("a", "b"), "nested": {"k": ["v"]}})
    first = subject.to_policy()
    expected = {
        "id": "mtls:alice",
        "name": "alice",
        "groups": [],
        "auth": "mtls",
        "attributes": {"aud": ["a", "b"], "nested": {"k": ["v"]}},
    }
    assert first == expected
    first["groups"].append("admins")
    first["attributes"]["aud"].append("c")
    first["attributes"]["nested"]["k"].append("w")
    first["attributes"]["extra"] = 1
    assert subject.to_policy() == expected
    assert subject.attributes["aud"] == ("a", "b") and subject == Subject.proven(
        "mtls", "alice", attributes={"aud": ("a", "b"), "nested": {"k": ["v"]}}
    )


def test_a_subject_is_immutable_and_hashable() -> None:
    subject = Subject("alice", (), "api_key", {"key_id": "k"})
    with pytest.raises(AttributeError):
        subject.id = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        subject.attributes["key_id"] = "other"  # type: ignore[index]
    assert hash(subject) == hash(Subject("alice", (), "api_key", {"key_id": "k"}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "", "groups": (), "auth": "jwt"},
        {"id": "a", "groups": ("",), "auth": "jwt"},
        {"id": "a", "groups": "analysts", "auth": "jwt"},
        {"id": "a", "groups": (), "auth": "password"},
    ],
)
def test_invalid_subjects_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        Subject(**kwargs)


def test_ids_are_qualified_by_how_they_were_proven() -> None:
    jwt = Subject.proven("jwt", "olivia", issuer="https://idp.example.com")
    dev = Subject.proven("jwt", "olivia", issuer="labelgate-dev")
    mtls = Subject.proven("mtls", "olivia")
    key = Subject.proven("api_key", "olivia")
    assert [s.id for s in (jwt, dev, mtls, key)] == [
        "jwt:https://idp.example.com#olivia",
        "jwt:labelgate-dev#olivia",
        "mtls:olivia",
        "api_key:olivia",
    ]
    assert {s.name for s in (jwt, dev, mtls, key)} == {"olivia"}
    assert len({s.id for s in (jwt, dev, mtls, key)}) == 4


def test_the_short_name_is_derived_from_a_qualified_id() -> None:
    assert Subject("jwt:iss#a#b").name == "a#b"  # issuers never hold '#': the first one splits
    assert Subject("mtls:spiffe://t/x", auth="mtls").name == "spiffe://t/x"
    assert Subject("plain").name == "plain"


@pytest.mark.parametrize("issuer", [None, "", "https://idp#frag"])
def test_a_jwt_subject_needs_an_issuer_without_a_hash(issuer) -> None:
    with pytest.raises(ValueError):
        Subject.proven("jwt", "olivia", issuer=issuer)


def test_a_subject_with_other_credentials_matches_the_input_schema() -> None:
    behind = Subject.proven("jwt", "bob", issuer="i", groups=("analysts",), attributes={"exp": 5, "jti": "j"})
    subject = Subject.proven(
        "mtls",
        "alice",
        attributes={
            "cert_sha256": "ab",
            "also_verified": {"jwt": behind.id},
            "also_verified_credentials": {"jwt": behind.to_policy()},
        },
    )
    policy = subject.to_policy()
    jsonschema.validate(policy, SCHEMA["properties"]["subject"])
    assert policy["attributes"]["also_verified_credentials"]["jwt"]["attributes"] == {"exp": 5, "jti": "j"}
