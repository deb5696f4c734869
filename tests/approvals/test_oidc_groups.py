"""Inbox sign-in: the ID token's groups claim is read as a bearer token's is, never trimmed,
and its subject follows the rule group names do (printable, no space at either end).

``OidcSignin._subject`` is what ``finish`` makes of an ID token's verified claims; the whole
flow, with a real provider and browser, is in ``test_oidc_signin.py``.
"""

from __future__ import annotations

import pytest

from labelgate.approvals import reasons
from labelgate.approvals.oidc import OidcSignin
from labelgate.config import OidcSettings
from labelgate.errors import Unauthenticated

ISSUER = "https://login.example.com"


def signin() -> OidcSignin:
    return OidcSignin(OidcSettings(issuer=ISSUER, client_id="labelgate-inbox"))


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["data-owners", "Data Stewards", "data-owners"], ("Data Stewards", "data-owners")),
        ("data-owners, analysts", ("data-owners, analysts",)),  # one string: one name, never split
        (None, ()),
    ],
)
def test_the_groups_claim_in_list_and_string_form(groups: object, expected: tuple[str, ...]) -> None:
    claims = {"sub": "olivia"} if groups is None else {"sub": "olivia", "groups": groups}
    subject = signin()._subject(claims)
    assert subject.id == f"jwt:{ISSUER}#olivia" and subject.groups == expected


@pytest.mark.parametrize(
    "groups",
    [
        ["approvers\u3000"],  # "approvers" once trimmed
        ["\u00a0data-owners"],
        ["data-owners\x1f"],
        ["data-owners "],
        ["data\u200bowners"],
        "analysts, data-owners\u3000",
        [""],
    ],
)
def test_a_group_name_trimming_would_change_refuses_the_sign_in(groups: object) -> None:
    with pytest.raises(Unauthenticated) as caught:
        signin()._subject({"sub": "olivia", "groups": groups})
    assert caught.value.reason == reasons.OIDC_BAD_GROUPS
    assert "owners" not in caught.value.message and "approvers" not in caught.value.message


@pytest.mark.parametrize(
    "sub",
    [
        "olivia\u200b",  # zero-width space: looks like "olivia" in the inbox, is someone else
        "\u202eaivilo",  # right-to-left override
        "olivia\nINFO forged log line",
        "olivia\x1b[2J",
        "olivia\x00",
        "olivia\u00a0",
        " olivia",
        "olivia ",
    ],
)
def test_a_subject_that_is_not_plain_printable_text_refuses_the_sign_in(sub: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        signin()._subject({"sub": sub, "groups": ["data-owners"]})
    assert caught.value.reason == reasons.OIDC_BAD_SUBJECT
    assert caught.value.message.startswith("the ID token's 'sub' claim ")
    assert "olivia" not in caught.value.message and "aivilo" not in caught.value.message


def test_a_subject_with_inner_spaces_is_taken_as_it_is() -> None:
    assert signin()._subject({"sub": "Olivia Smith"}).id == f"jwt:{ISSUER}#Olivia Smith"
