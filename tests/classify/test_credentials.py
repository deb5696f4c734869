"""The ``secret`` detector's rules: PEM markers, JWT segments, vendor token bounds; a key one line
per element classified and masked whole."""

from __future__ import annotations

import base64
import itertools
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, credentials, native
from labelgate.enforce import STRATEGIES, apply_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs
from tests.classify.secret_values import (
    BASE64URL,
    JSON_LEADS,
    JWT_PIECES,
    SECRET_FORMS,
    TOKEN_FORMS,
    jwt_value,
    pem_value,
    ssh2_value,
)


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
        # ssh.com's keys, with RFC 4716's markers: four dashes and a space.
        (b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", True),
        (b"---- BEGIN SSH2 PRIVATE KEY ----", True),
        (b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY-----", False),
        (b"-----BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", False),
        (b"----BEGIN SSH2 PRIVATE KEY ----", False),
        (b"---- BEGIN SSH2 PRIVATE KEY---", False),
        (b"--- BEGIN SSH2 PRIVATE KEY ----", False),
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


def test_an_ssh2_block_ends_at_its_own_kind_of_end_marker() -> None:
    key = ssh2_value(random.Random(7)).encode()
    assert spans(b"a " + key + b" b") == [key]
    opened, end_marker = key[: key.index(b"---- END")], key[key.index(b"---- END") :]
    pem_end = end_marker.replace(b"---- END ", b"-----END ").replace(b" ----", b"-----")
    assert spans(opened + pem_end + b" tail") == [opened + pem_end + b" tail"], "a PEM END marker is no end"
    assert credentials.open_pem(opened) == end_marker


def test_an_end_marker_alone_runs_from_the_end_of_the_last_block_or_the_start() -> None:
    first = b"the PRIVATE KEY is: abc\n-----END RSA PRIVATE KEY-----"
    second = b" and PRIVATE KEY def\n-----END EC PRIVATE KEY-----"
    assert spans(first + second + b" end") == [first, second], "mentions of PRIVATE KEY do not count"


def test_an_open_block_runs_on_past_nuls_to_its_end_marker() -> None:
    # A NUL is where ``scan_each`` joins elements: a key written one line per element is one block.
    key = pem_value(random.Random(2)).encode()
    lines = b"\x00".join(key.split(b"\n"))
    assert spans(lines + b"\x00after") == [lines]
    head, rest = key[:50], key[50:]
    assert spans(head + b"\x00" + rest + b" tail") == [head + b"\x00" + rest]
    assert spans(b"x\x00" + rest) == [rest], "an END marker alone runs from the last NUL"
    unended = key[: key.index(b"-----END")]
    assert spans(b"a " + unended + b"\x00more\x00\x00text") == [unended + b"\x00more\x00\x00text"]


def test_jwt_segments_open_json_objects_and_are_long_enough_to_hold_a_key() -> None:
    # "eyJ" is base64url for '{"'; 8 characters are the shortest object with a key ({"":0}).
    assert spans(b"eyJhbGci.eyJzdWIx.") == [b"eyJhbGci.eyJzdWIx."]
    assert spans(b"eyJhbGc.eyJzdWIx. eyJhbGci.eyJzdWI. eyJhbGci.eyJzdWIx") == []
    assert spans(b"a.eyJhbGci.eyJzdWIx.sig.more") == [b"eyJhbGci.eyJzdWIx.sig"]
    # What precedes "eyJ" does not matter: no other string has two such segments and dots.
    assert spans(b"xeyJhbGci.eyJzdWIx.eyJ3aGF0.sig") == [b"eyJhbGci.eyJzdWIx.eyJ3aGF0"]


def test_jwt_segments_may_carry_their_base64_padding() -> None:
    assert spans(b"t eyJhbGci=.eyJzdWIxMg==.c2ln= end") == [b"eyJhbGci=.eyJzdWIxMg==.c2ln="]
    assert spans(b"eyJhbGci.eyJzdWIx.==") == [b"eyJhbGci.eyJzdWIx.=="]
    # Base64 pads with two "=" at most.
    assert spans(b"eyJhbGci===.eyJzdWIx.sig eyJhbGci.eyJzdWIx===.sig") == []
    assert spans(b"eyJhbGci.eyJzdWIx.sig===") == [b"eyJhbGci.eyJzdWIx.sig=="]


_ALPHABET = string.ascii_uppercase.encode() + string.ascii_lowercase.encode() + string.digits.encode() + b"-_"


def _opens_object(segment: bytes) -> bool:
    """The rule, read off the decoded bytes: the whole bytes ``segment`` encodes open with
    "{", JSON whitespace, then a quotation mark (of the first key)."""
    bits = "".join(f"{_ALPHABET.index(char):06b}" for char in segment)
    decoded = bytes(int(bits[at : at + 8], 2) for at in range(0, len(bits) - 7, 8))
    rest = decoded[1:].lstrip(b" \t\r\n")
    return decoded.startswith(b"{") and rest.startswith(b'"')


def _encoded(text: bytes) -> bytes:
    return base64.urlsafe_b64encode(text).rstrip(b"=")


# Whitespace runs of every JSON whitespace byte and length up to 4, in every alignment.
_LEADS = [
    b"".join(run)
    for length in range(5)
    for run in itertools.product([b" ", b"\t", b"\r", b"\n"], repeat=length)
]


def test_the_segment_opening_is_exactly_the_base64_of_a_brace_whitespace_and_a_quote() -> None:
    # Every way "{", whitespace and a key's quotation mark encode, and near misses of each: no
    # quotation mark, another byte where it or the brace should be, a byte that is not JSON
    # whitespace (vertical tab, form feed, NUL) among the whitespace.
    for lead in _LEADS:
        for after in (
            b'"alg":"HS256"}',
            b'"":0}',
            b'"\xc3\xa9":1}',
            b'"0":1}',
            b"}",
            b'\x0b"a":1}',
            b'\x0c"a":1}',
            b'\x00"a":1}',
            b"'a':1}",
            b'a":1}',
        ):
            for opening in (b"{", b"[", b"x"):
                segment = _encoded(opening + lead + after + b"0123")
                expected = _opens_object(segment)
                assert (credentials._OPENING.match(segment) is not None) == expected, (opening, lead, after)
                token = segment + b"." + _encoded(b'{"sub":"1"}') + b".c2ln"
                assert spans(b"x " + token) == ([token] if expected else []), (opening, lead, after)
    # And every base64url string of up to three characters after "e", against the rule.
    for length in range(1, 4):
        for tail in itertools.product(BASE64URL.encode(), repeat=length):
            segment = b"e" + bytes(tail)
            assert (credentials._OPENING.match(segment) is not None) == _opens_object(segment), segment


def test_jwts_whose_json_opens_with_whitespace_are_found() -> None:
    for lead in JSON_LEADS:
        for padded in (False, True):
            value = jwt_value(random.Random(lead), lead=lead, padded=padded).encode()
            assert spans(b"Bearer " + value + b" end") == [value], (lead, padded)


@pytest.mark.parametrize(
    "text",
    [
        b"keyAgreement.keyAgreement.x eyAbcdefgh.eyAbcdefgh.sig ewokabcd.ewokabcd.sig",
        b"ew0rdsxyz.ew0rdsxyz.a ewkward1.ewkward1.b eyAgreeing.eyAgreeing.c",
        _encoded(b"{  }        ") + b"." + _encoded(b'{"sub":"1"}') + b".sig",
        _encoded(b"{\n\n\t\t ") + b"." + _encoded(b'{"sub":"1"}') + b".sig",
    ],
)
def test_segments_opening_like_whitespace_json_but_not_a_key_are_not_jwts(text: bytes) -> None:
    assert spans(text) == []


def test_jwe_compact_tokens_are_five_parts_after_a_json_header() -> None:
    header = _encoded(b'{"alg":"RSA-OAEP","enc":"A256GCM"}')
    jwe = header + b".T0tPYXdEbzEz.NDhWMV9BTGI2.NWV5bThUVw.WEZCb01ZVVo"
    assert spans(b"token " + jwe + b" end") == [jwe]
    direct = header + b"..NDhWMV9BTGI2.NWV5bThUVw.WEZCb01ZVVo="  # alg dir: no encrypted key
    assert spans(direct) == [direct]
    # Only the encrypted key may be empty; four dotted runs after a run that is no JSON
    # object's segment (too short, or no "{") are nothing, nor three after one that is.
    for part in range(3, 6):
        parts = direct.split(b".")
        parts[part - 1] = b""
        assert spans(b".".join(parts)) == [], part
    assert spans(b"eyJub3Q.a.b.c.d aGVhZGVyCg.a.b.c.d eyJhbGci.a.b.c") == []
    # Five parts win over the three of a JWS they start with.
    jws_and_more = b"eyJhbGci.eyJzdWIx.sig.more.tag"
    assert spans(jws_and_more) == [jws_and_more]
    assert spans(b"a.eyJhbGci.eyJzdWIx.sig.more") == [b"eyJhbGci.eyJzdWIx.sig"]


def _run_end(data: bytes, start: int) -> int:
    end = start
    while end < len(data) and data[end] in _ALPHABET:
        end += 1
    return end


def _part_end(data: bytes, start: int, least: int = 0) -> int | None:
    """Where a part of a token (base64url characters, up to two "=") from ``start`` ends."""
    end = _run_end(data, start)
    if end - start < least:
        return None
    return end + min(2, len(data[end:]) - len(data[end:].lstrip(b"=")))


def _token_at(data: bytes, start: int) -> int | None:
    """Where the JWS or JWE starting at ``start`` ends, read straight off the rules."""
    header = _part_end(data, start, 8)
    if (
        header is None
        or data[header : header + 1] != b"."
        or not _opens_object(data[start : _run_end(data, start)])
    ):
        return None
    at: int | None = header
    for least in (0, 1, 1, 1):  # a JWE: its encrypted key may be empty
        at = _part_end(data, at + 1, least) if at is not None and data[at : at + 1] == b"." else None
    if at is not None:
        return at
    payload = _part_end(data, header + 1, 8)
    if (
        payload is None
        or data[payload : payload + 1] != b"."
        or not _opens_object(data[header + 1 : _run_end(data, header + 1)])
    ):
        return None
    return _part_end(data, payload + 1)


def _reference_jwts(data: bytes) -> list[bytes]:
    found, start = [], 0
    while start < len(data):
        end = _token_at(data, start)
        if end is None:
            start += 1
        else:
            found.append(data[start:end])
            start = end
    return found


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(JWT_PIECES), max_size=30).map(b"".join))
def test_jwts_are_found_as_the_rules_read_position_by_position(data: bytes) -> None:
    assert spans(data) == _reference_jwts(data)


@pytest.mark.parametrize(
    "text",
    [
        b"eyJ" * 100_000,
        b"eyJhbGciOiJ" * 30_000 + b".",
        b"eyAgICJh" * 40_000 + b".eyJzdWIx",
        (b"eyJhbGci." * 40_000),
        b"eyJhbGci." + b"eyJ" * 100_000 + b".x",
        b"eyJhbGci" * 30_000 + b"." + b"A" * 300_000,
        b"eyAgICAg" * 40_000 + b".eyJzdWIx.x",
    ],
    ids=["openers", "header-run", "spaced-run", "headers", "long-payload", "long-tail", "keyless-run"],
)
def test_runs_of_jwt_openings_are_read_alike_on_both_paths(text: bytes) -> None:
    # Each opening of a run shares what follows the run: it is read once, not once an opening
    # (the scan took minutes on a megabyte of "eyJ"). How long it takes is the bench's to
    # measure (`bench.detector_throughput`), never a timed assertion here.
    found = []
    for path in (False, True):
        with native.forced(path):
            found.append(DetectorSet({"secret": "restricted"}).scan(text))
    assert found[0] == found[1]


@pytest.mark.parametrize("form", sorted(SECRET_FORMS))
def test_every_form_starts_with_a_known_prefix_or_marker(form: str) -> None:
    rng = random.Random(form)
    for _ in range(20):
        value = SECRET_FORMS[form](rng).encode()
        assert spans(value) == [value]
        if form not in ("pem", "ssh2"):
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
    assert credentials.open_pem(opened + b"\x00next") == b"-----END OPENSSH PRIVATE KEY-----"


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


# --- a key one line per element, classified and masked ----------------------------------

CATALOG = Catalog.from_data({"entries": []})
HASH_KEY = b"credentials-test-key-0123456789ab"


def masked(tensors: list[Tensor], strategy: str, raw: bool) -> list[list[bytes]]:
    """``tensors`` classified (as given, or decoded from a raw reply: the native scan of the
    raw buffer) and masked where the ``secret`` detector found something."""
    if raw:
        reply = pb.ModelInferResponse()
        encode_outputs(reply, tensors, raw=True)
        tensors = decode_outputs(reply)
    classification = classify_outputs("m", tensors, CATALOG, DetectorSet.default())
    masks = [{"path": f"outputs.{t.name}{{secret}}", "strategy": strategy, "params": {}} for t in tensors]
    return [
        list(map(bytes, tensor.values)) for tensor in apply_masks(tensors, classification, masks, HASH_KEY)
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["values", "raw"])
@pytest.mark.parametrize("path", ["native", "python"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_key_one_line_per_element_is_masked_whole(strategy: str, path: str, raw: bool) -> None:
    key = pem_value(random.Random(strategy), "PRIVATE KEY", 6)
    lines = [line.encode() for line in key.split("\n")]
    elements = [b"the key follows", *lines, b"that was all", b"-----BEGIN NOTHING-----"]
    with native.forced(path == "native"):
        (out,) = masked([Tensor("lines", "BYTES", [len(elements)], elements)], strategy, raw)
    assert out[0] == elements[0] and out[-2:] == elements[-2:], "the elements around it are kept"
    for line, after in zip(lines, out[1:-2], strict=True):
        assert line != after and (len(line) < 8 or line not in after), (strategy, line)


@pytest.mark.parametrize("path", ["native", "python"])
def test_a_key_without_its_end_marker_masks_every_later_element_of_its_tensor(path: str) -> None:
    key = pem_value(random.Random(6), "EC PRIVATE KEY", 3)
    lines = [line.encode() for line in key.split("\n")][:-1]
    elements = [b"before", *lines, b"", b"and 123-45-6789 after"]
    other = [b"-----END EC PRIVATE KEY-----", b"another output"]
    tensors = [Tensor("lines", "BYTES", [len(elements)], elements), Tensor("other", "BYTES", [2], other)]
    with native.forced(path == "native"):
        out, out_other = masked(tensors, "redact", raw=True)
    assert out == [b"before", *[b"[REDACTED]"] * len(lines), b"", b"[REDACTED]"]
    # A block one output leaves open covers every other text output of the reply, whatever
    # order a caller reads them in (``classifier._outputs_opening``).
    assert out_other == [b"[REDACTED]", b"[REDACTED]"]
