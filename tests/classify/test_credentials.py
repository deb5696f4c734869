"""The ``secret`` detector's rules: PEM markers, JWT segments, vendor token bounds."""

from __future__ import annotations

import random

import pytest

from labelgate.classify import credentials
from tests.classify.secret_values import SECRET_FORMS, TOKEN_FORMS, jwt_value, pem_value


def spans(data: bytes) -> list[bytes]:
    hits: list[tuple[str, int, int]] = []
    credentials.secret_hits(data, hits)
    assert all(name == "secret" for name, _, _ in hits)
    return [data[start:end] for _, start, end in hits]


@pytest.mark.parametrize(
    ("marker", "is_one"),
    [
        (b"-----BEGIN PRIVATE KEY-----", True),
        (b"-----BEGIN RSA PRIVATE KEY-----", True),
        (b"-----BEGIN SSH2 ENCRYPTED RSA PRIVATE KEY-----", True),  # three words at most
        (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", True),  # nine characters a word at most
        (b"-----BEGIN PGP PRIVATE KEY BLOCK-----", True),
        (b"-----BEGIN A B C D PRIVATE KEY-----", False),
        (b"-----BEGIN ENCRYPTEDX PRIVATE KEY-----", False),
        (b"-----BEGIN RSA  PRIVATE KEY-----", False),
        (b"-----BEGIN rsa PRIVATE KEY-----", False),
        (b"-----BEGIN RSA PRIVATE KEY----", False),
        (b"-----BEGIN RSA PRIVATE KEY BLOCKS-----", False),
        (b"----BEGIN RSA PRIVATE KEY-----", False),
        (b"-----BEGINRSA PRIVATE KEY-----", False),
    ],
)
def test_a_begin_marker_is_dashes_begin_up_to_three_words_and_private_key(
    marker: bytes, is_one: bool
) -> None:
    text = marker + b"\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    assert spans(text) == ([text] if is_one else [])


def test_a_block_ends_at_the_end_marker_of_its_own_label() -> None:
    key = pem_value(random.Random(1), "EC PRIVATE KEY").encode()
    assert spans(b"a " + key + b" b " + key + b" c") == [key, key]
    mixed = key.replace(b"END EC", b"END RSA")
    assert spans(mixed + b" tail") == [mixed + b" tail"]


def test_an_end_marker_alone_runs_from_the_end_of_the_last_block_or_the_start() -> None:
    first = b"the PRIVATE KEY is: abc\n-----END RSA PRIVATE KEY-----"
    second = b" and PRIVATE KEY def\n-----END EC PRIVATE KEY-----"
    assert spans(first + second + b" end") == [first, second], "mentions of PRIVATE KEY do not count"


def test_an_open_block_ends_at_a_nul_the_end_of_a_joined_element() -> None:
    key = pem_value(random.Random(2)).encode()
    head, rest = key[:50], key[50:]
    assert spans(head + b"\x00" + rest) == [head, rest]
    assert spans(b"x\x00" + rest) == [rest], "an END marker alone runs from the last NUL"


def test_jwt_segments_open_json_objects_and_are_long_enough_to_hold_a_key() -> None:
    # "eyJ" is base64url for '{"'; 8 characters are the shortest object with a key ({"":0}).
    assert spans(b"eyJhbGci.eyJzdWIx.") == [b"eyJhbGci.eyJzdWIx."]
    assert spans(b"eyJhbGc.eyJzdWIx. eyJhbGci.eyJzdWI. eyJhbGci.eyJzdWIx") == []
    assert spans(b"a.eyJhbGci.eyJzdWIx.sig.more") == [b"eyJhbGci.eyJzdWIx.sig"]
    # What precedes "eyJ" does not matter: no other string has two such segments and dots.
    assert spans(b"xeyJhbGci.eyJzdWIx.eyJ3aGF0.eyJtb3Jl.sig") == [b"eyJhbGci.eyJzdWIx.eyJ3aGF0"]


@pytest.mark.parametrize("form", sorted(SECRET_FORMS))
def test_every_form_starts_with_a_known_prefix_or_marker(form: str) -> None:
    rng = random.Random(form)
    for _ in range(20):
        value = SECRET_FORMS[form](rng).encode()
        assert spans(value) == [value]
        if form != "pem":
            assert value.startswith(credentials.PREFIXES), "the carry-over holds runs opened by these"
            assert not value.translate(None, credentials.RUN_BYTES)


def test_open_pem_names_the_end_marker_an_open_block_awaits() -> None:
    key = pem_value(random.Random(3), "OPENSSH PRIVATE KEY").encode()
    opened = key[: key.index(b"-----END")]
    assert credentials.open_pem(b"text " + opened) == b"-----END OPENSSH PRIVATE KEY-----"
    assert credentials.open_pem(b"text " + key) is None
    assert credentials.open_pem(key + b" and " + opened[:60]) == b"-----END OPENSSH PRIVATE KEY-----"
    assert credentials.open_pem(b"no key here") is None
    assert credentials.open_pem(b"-----BEGIN OPENSSH PRIVATE KE") is None


def test_tokens_and_jwts_are_found_in_position_order() -> None:
    rng = random.Random(4)
    jwt = jwt_value(rng).encode()
    values = [TOKEN_FORMS[form](rng).encode() for form in sorted(TOKEN_FORMS)] + [jwt]
    rng.shuffle(values)
    text = b" ".join(values)
    hits: list[tuple[str, int, int]] = []
    credentials.secret_hits(text, hits)
    # Pass by pass (the JWTs', then the tokens'), each in position order.
    assert [text[start:end] for _, start, end in hits] == [jwt, *(value for value in values if value != jwt)]
