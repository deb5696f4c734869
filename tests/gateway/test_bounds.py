"""Bounds before policy: clear reasons, INVALID_ARGUMENT for what the caller sent, an upstream
error for what the upstream's reply classifies to, whose text names only the bound."""

from __future__ import annotations

import re

import grpc
import pytest

from labelgate.calls import Target
from labelgate.classify import Field
from labelgate.config import LimitSettings
from labelgate.errors import InvalidInput, UpstreamError
from labelgate.gateway.bounds import check_fields, check_reply_fields, check_target

LIMITS = LimitSettings(max_requested_outputs=3, max_fields=4, max_path_bytes=32)


def field(path: str) -> Field:
    return Field(path, frozenset({"internal"}), {"internal": {"default"}})


def test_within_bounds_passes() -> None:
    check_target(Target(service="s", requested_outputs=("a", "b", "c")), LIMITS)
    check_fields([field(f"outputs.{n}") for n in "abcd"], LIMITS)
    check_reply_fields([field(f"outputs.{n}") for n in "abcd"], LIMITS)


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
def test_requests_classifying_beyond_bounds_are_the_callers_fault(paths: list[str], reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_fields([field(path) for path in paths], LIMITS)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("paths", "reason", "bound"),
    [
        ([f"outputs.{n}" for n in range(6789)], "UPSTREAM_TOO_MANY_FIELDS", LIMITS.max_fields),
        (["outputs." + "k" * 1234559], "UPSTREAM_PATH_TOO_LONG", LIMITS.max_path_bytes),
    ],
)
def test_replies_beyond_bounds_are_the_upstreams_fault_in_a_fixed_text(
    paths: list[str], reason: str, bound: int
) -> None:
    # Found by review: a reply past a bound was refused INVALID_ARGUMENT, blaming the caller,
    # with the upstream's count or length in the text (6789 fields, a path of 1234567 bytes):
    # a number of the upstream's choosing, carried to the caller past the policy.
    with pytest.raises(UpstreamError) as refused:
        check_reply_fields([field(path) for path in paths], LIMITS)
    assert refused.value.reason == reason
    assert (refused.value.code, refused.value.http_status) == (grpc.StatusCode.UNAVAILABLE, 502)
    assert re.findall(r"\d+", refused.value.message) == [str(bound)], "only the configured bound"


def test_a_model_name_longer_than_a_path_may_be_is_refused() -> None:
    limits = LimitSettings()
    check_target(Target(service="s", model="m" * limits.max_path_bytes), limits)
    with pytest.raises(InvalidInput) as refused:
        check_target(Target(service="s", model="m" * (limits.max_path_bytes + 1)), limits)
    assert refused.value.reason == "PATH_TOO_LONG"
