"""Bounds before policy: clear INVALID_ARGUMENT reasons, whatever sent the excess."""

from __future__ import annotations

import pytest

from labelgate.calls import Target
from labelgate.classify import Field
from labelgate.config import LimitSettings
from labelgate.errors import InvalidInput
from labelgate.gateway.bounds import check_fields, check_target

LIMITS = LimitSettings(max_requested_outputs=3, max_fields=4, max_path_bytes=32)


def field(path: str) -> Field:
    return Field(path, frozenset({"internal"}), {"internal": {"default"}})


def test_within_bounds_passes() -> None:
    check_target(Target(service="s", requested_outputs=("a", "b", "c")), LIMITS)
    check_fields([field(f"outputs.{n}") for n in "abcd"], LIMITS)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (Target(service="s", requested_outputs=("a", "b", "c", "d")), "TOO_MANY_OUTPUTS"),
        (Target(service="s", requested_outputs=("x" * 33,)), "PATH_TOO_LONG"),
    ],
)
def test_requests_beyond_bounds_are_refused(target: Target, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_target(target, LIMITS)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("paths", "reason"),
    [([f"outputs.{n}" for n in "abcde"], "TOO_MANY_FIELDS"), (["outputs." + "k" * 30], "PATH_TOO_LONG")],
)
def test_replies_beyond_bounds_are_refused(paths: list[str], reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_fields([field(path) for path in paths], LIMITS)
    assert refused.value.reason == reason


def test_a_model_name_longer_than_a_path_may_be_is_refused() -> None:
    limits = LimitSettings()
    check_target(Target(service="s", model="m" * limits.max_path_bytes), limits)
    with pytest.raises(InvalidInput) as refused:
        check_target(Target(service="s", model="m" * (limits.max_path_bytes + 1)), limits)
    assert refused.value.reason == "PATH_TOO_LONG"
