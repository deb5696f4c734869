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
    assert Subject("alice", ("b", "a", "b", " c "), "jwt").groups == ("a", "b", "c")


def test_to_policy_matches_the_input_schema() -> None:
    subject = Subject("alice", ("b", "a"), "mtls", {"cert_sha256": "ab", "also_verified": {"jwt": "x"}})
    policy = subject.to_policy()
    assert policy == {
        "id": "alice",
        "groups": ["a", "b"],
        "auth": "mtls",
        "attributes": {"cert_sha256": "ab", "also_verified": {"jwt": "x"}},
    }
    jsonschema.validate(policy, SCHEMA["properties"]["subject"])
    json.dumps(policy)  # plain JSON, no read-only proxies


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
