"""The ``secret`` detector's rules: PEM markers, JWT segments, vendor token bounds; a key one line
per element classified and masked whole."""

from __future__ import annotations

import random

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import Catalog, DetectorSet, classify_outputs, credentials, native
from labelgate.enforce import STRATEGIES, apply_masks
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs
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
    # One tensor's block never runs into another: its END marker alone masks only itself.
    assert out_other == [b"[REDACTED]", b"another output"]
