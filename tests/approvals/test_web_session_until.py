"""How long an inbox session lasts: at most session_max_seconds, never past the credential."""

from __future__ import annotations

from typing import Any

import pytest

from labelgate.approvals.api import ApprovalsContext
from labelgate.approvals.web import session_until
from labelgate.auth import Subject

NOW = 1_000_000.0


def context() -> ApprovalsContext:
    return ApprovalsContext(service=None, authenticator=None, session_max_seconds=3600)  # type: ignore[arg-type]


def person(**attributes: Any) -> Subject:
    return Subject.proven(
        "jwt", "olivia", issuer="https://idp.test", groups=("data-owners",), attributes=attributes
    )


@pytest.mark.parametrize(
    ("attributes", "until"),
    [
        ({}, NOW + 3600),
        ({"exp": NOW + 60}, NOW + 60),
        ({"exp": NOW + 10**6}, NOW + 3600),
        ({"exp": NOW - 5}, NOW),
        ({"exp": 10**400}, NOW + 3600),
        # Not a number of seconds: passed (review, eighth round: a session of the full length).
        ({"exp": "1000100"}, NOW),
        ({"exp": True}, NOW),
        ({"exp": float("nan")}, NOW),
    ],
)
def test_a_session_ends_with_the_credential_it_was_opened_with(
    attributes: dict[str, Any], until: float
) -> None:
    assert session_until(context(), person(**attributes), NOW) == until
