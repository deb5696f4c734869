"""The native scan (``labelgate_native``) finds exactly what the Python reference finds.

``labelgate.classify.patterns`` is the reference: for every text and every subset of the
built-ins, the extension must give the same hits in the same order (and so ``DetectorSet``
the same detections), for a hand corpus of edge cases and for generated texts. The
detector tests of ``test_detectors`` run here once more on each path.

The extension is required: the Makefile installs it, and a missing one fails here.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import string
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.iso7064 import mod_97_10

from labelgate.classify import Catalog, classify_outputs, native, patterns
from labelgate.classify.detectors import (
    BUILTIN_LABELS,
    CustomPattern,
    Detection,
    DetectorSet,
    _merge_overlaps,
)
from labelgate.oip.tensor import Tensor
from tests.classify import test_detectors as detector_tests
from tests.classify.secret_values import (
    BASE64URL,
    JSON_LEADS,
    JWT_PIECES,
    SECRET_FORMS,
    jwe_value,
    jwt_value,
    pem_value,
    ssh2_value,
)
from tests.classify.sensitive import card_value, iban_value, ssn_value

BUILTINS = sorted(BUILTIN_LABELS)
EVERY_SUBSET = [
    frozenset(subset)
    for size in range(len(BUILTINS) + 1)
    for subset in itertools.combinations(BUILTINS, size)
]

# --- the detector tests, on both paths ---------------------------------------------------

for _name in dir(detector_tests):
    if _name.startswith("test_"):
        globals()[_name] = getattr(detector_tests, _name)


@pytest.fixture(autouse=True)
def scan_path(request: pytest.FixtureRequest) -> Iterator[None]:
    """The path the imported detector tests take (the tests of this module choose their own)."""
    path = getattr(request, "param", None)
    if path is None:
        yield
        return
    with native.forced(path == "native"):
        yield


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__module__ == detector_tests.__name__:
        metafunc.parametrize("scan_path", ["native", "python"], indirect=True)


# --- the reference ---------------------------------------------------------------------


def reference_each(texts: Sequence[bytes], wanted: frozenset[str]) -> list[tuple[int, str, int, int]]:
    """What the Python scan finds in ``texts`` (NUL-joined, as ``DetectorSet.scan_each``
    scans them), as (element index, detector, start, end). A hit that runs on past the end of
    its text (a PEM block: ``credentials``) is one piece per text it covers, empty ones left out."""
    starts = list(itertools.accumulate([len(text) + 1 for text in texts], initial=0))
    found = []
    for name, start, end in patterns.builtin_hits(b"\x00".join(texts), wanted):
        index = bisect_right(starts, start) - 1
        found.append((index, name, start - starts[index], min(end, starts[index + 1] - 1) - starts[index]))
        for later in range(index + 1, len(texts)):
            if starts[later] >= end:
                break
            if min(end, starts[later + 1] - 1) > starts[later]:
                found.append((later, name, 0, min(end, starts[later + 1] - 1) - starts[later]))
    return found


def native_each(texts: Sequence[bytes], wanted: frozenset[str]) -> list[tuple[int, str, int, int]]:
    with native.forced(True):
        found = native.hits_each(texts, wanted)
    assert found is not None
    return found


def scan_each_on(path: str, detectors: DetectorSet, texts: Sequence[bytes]) -> list[tuple[int, Any]]:
    with native.forced(path == "native"):
        return list(detectors.scan_each(texts).items())


def assert_same(texts: Sequence[bytes], wanted: frozenset[str]) -> None:
    expected = reference_each(texts, wanted)
    assert native_each(texts, wanted) == expected, (texts, sorted(wanted))
    for text in texts:  # alone: no block runs into it from the texts before
        alone = [(name, start, end) for _, name, start, end in reference_each([text], wanted)]
        with native.forced(True):
            assert native.builtin_hits(text, wanted) == alone, (text, sorted(wanted))
    # And through DetectorSet: the same detections, merged, in the same dict order.
    detectors = DetectorSet({name: BUILTIN_LABELS[name] for name in wanted})
    assert scan_each_on("native", detectors, texts) == scan_each_on("python", detectors, texts)


def test_the_extension_is_installed_and_active_unless_turned_off() -> None:
    assert native.available(), "labelgate_native is missing: pip install ./proxy/native (make venv does)"
    assert native.active() == (os.environ.get("LABELGATE_NATIVE", "1") != "0")


def test_forcing_a_path_lasts_for_the_block() -> None:
    before = native.active()
    with native.forced(False):
        assert not native.active()
        assert native.hits_each([b"123-45-6789"], frozenset(BUILTINS)) is None
    with native.forced(True):
        assert native.active()
        assert native.hits_each([b"123-45-6789"], frozenset(BUILTINS)) == [(0, "us_ssn", 0, 11)]
    assert native.active() == before


# --- a hand corpus of edge cases --------------------------------------------------------

_RNG = random.Random(20240611)
_CARD = card_value(_RNG)
LONG = (
    " ".join(f"x{index} {ssn_value(_RNG)} {card_value(_RNG, 'spaces')} a@b.io" for index in range(3000))
).encode()

_KEY = pem_value(_RNG, "EC PRIVATE KEY", 2)
_JWT = jwt_value(_RNG)
_SSH2_KEY = ssh2_value(_RNG, 2)
SECRET_CORPUS = [
    f"key {_KEY} and {_KEY.replace('EC ', '')} done",
    f"{_KEY[:60]}",
    f"{_KEY[:60]}\x00{_KEY[60:]}\x00{_KEY[60:]}\x00{_KEY}",
    f"{_KEY.replace('END EC', 'END RSA')} tail -----END EC PRIVATE KEY----- -----BEGIN RSA PRIVATE KEY-----",
    "-----END EC PRIVATE KEY----- x -----END RSA PRIVATE KEY-----\n-----BEGIN DSA PRIVATE KEY-----x",
    "PRIVATE KEY -----BEGIN PRIVATE KEY----- -----BEGIN PGP PRIVATE KEY BLOCK----- -----END PRIVATE KEY-----",
    "a PRIVATE KEY, its rest:\nabc\n-----END RSA PRIVATE KEY----- PRIVATE KEY -----END EC PRIVATE KEY-----",
    "-----BEGIN A B C D PRIVATE KEY----- -----BEGIN ABCDEFGHIJ PRIVATE KEY----- -----BEGIN  PRIVATE KEY-----",
    "-----BEGIN A B C PRIVATE KEY-----\n-----END A B C PRIVATE KEY-----BEGIN X PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY BLOCK----- -----BEGIN RSA PRIVATE KEY--- PRIVATE KEY-----",
    # SSH2 (RFC 4716) markers: closed, closed by a PEM END marker (not), mixed kinds, END alone.
    f"{_SSH2_KEY} x {_SSH2_KEY.replace('---- END', '-----END')} y ---- END SSH2 PRIVATE KEY ----",
    "---- BEGIN SSH2 PRIVATE KEY-----\n---- BEGIN A PRIVATE KEY -----\n-----BEGIN A PRIVATE KEY ----"
    "\n---- BEGIN A PRIVATE KEY BLOCK ----\n---- END A PRIVATE KEY ----",
    f"jwt {_JWT} and {_JWT.rsplit('.', 1)[0]}. and x{_JWT}.x.{_JWT}",
    "eyJhbGci.eyJzdWIx. eyJhbGc.eyJzdWIx. eyJhbGci.eyJzdWI. eyJhbGci.eyJzdWIx eyJeyJhbGci.eyJzdWIx.-",
    "xeyJhbGci.eyJzdWIx.eyJ3aGF0.eyJtb3Jl.sig eyJhbGci..eyJzdWIx.x eyJhbGci.eyJzdWIx..",
    "AKIAIOSFODNN7EXAMPLE ASIAIOSFODNN7EXAMPLE. AKIAIOSFODNN7EXAMPL AKIAIOSFODNN7EXAMPLE1",
    "xAKIAIOSFODNN7EXAMPLE 1AKIAIOSFODNN7EXAMPLE",
    "AKIAIOSFODNN7EXAMPLE-x AKIAIOSFODNN7EXAMPLE_ AKIAIOSFODNN7EXAMPLe AIza" + "a" * 35 + " AIza" + "-" * 35,
    "AIza"
    + "a" * 34
    + " AIza"
    + "a" * 36
    + " "
    + "ghp_"
    + "a" * 36
    + " gho_"
    + "a" * 251
    + " ghu_"
    + "a" * 252,
    "ghs_" + "a" * 35 + " ghr_" + "a" * 40 + "_x github_pat_" + "a_" * 11 + " github_pat_" + "_" * 244,
    "glpat-"
    + "-" * 20
    + " glpat-"
    + "a" * 249
    + "|glpat-"
    + "a" * 250
    + " xoxb-1-2-3-4-5-6 xoxr-"
    + "-" * 250,
    "xoxs-" + "a" * 251 + " sk_live_" + "a" * 20 + " rk_live_" + "a" * 247 + " sk_live_" + "a" * 248,
    "xsk_live_" + "a" * 20 + " pk_live_" + "a" * 20 + " sk_live__" + "a" * 20 + " ssk_live_" + "a" * 20,
    f"-----BEGIN OPENSSH PRIVATE KEY-----\nAKIAIOSFODNN7EXAMPLE\n{_JWT}\n-----END OPENSSH PRIVATE KEY-----",
    "é AKIAIOSFODNN7EXAMPLE 号 ghp_" + "é" * 36 + " eyJhbGci.eyJzdWIx.é",
    # JWTs padded, with whitespace in their JSON, JWEs; padding and dots out of place.
    " ".join(
        jwt_value(_RNG, signed, lead, padded)
        for lead in JSON_LEADS
        for signed in (True, False)
        for padded in (False, True)
    ),
    " ".join(jwe_value(_RNG, lead, padded) for lead in JSON_LEADS for padded in (False, True)),
    "eyJhbGci=.eyJzdWIxMg==.c2ln= eyJhbGci===.eyJzdWIx.s eyJhbGci.eyJzdWIx===.s eyJhbGci.eyJzdWIx.s===",
    "eyJhbGci..a.b.c eyJhbGci.a..b.c eyJhbGci.a.b.c. eyJhbGci.a.b.c eyJhbGci.eyJzdWIx.sig.more.tag.x.y",
    "=eyJhbGci=.=eyJzdWIx.s .eyJhbGci.eyJzdWIx. xxeyAgICJhbGci.ewogICJzdWIx.= eyAgICAgICAg.eyJzdWIx.s",
    "keyAgreement.keyAgreement.x eyAbcdefgh.eyAbcdefgh.sig ewokabcd.ewokabcd.sig ewogICAgfQ.ewogICAgfQ.x",
    "eyJeyJeyJeyJeyJ.eyJeyJeyJ.eyJ eyIiOjB9.eyIiOjB9. eyLDqSI6.eyKAgICJh.x ew0KDQoiYQ.ewkJCQkiYQ.z",
    "eyJhbGci\x00.eyJzdWIx.s eyJhbGci.\x00eyJzdWIx.s eyJhbGci.eyJzdWIx.\x00s é.eyJhbGci.eyJzdWIx.é",
    # Headers of "{" or "[", whitespace (or a byte that is none), then a key or not, in every alignment.
    " ".join(
        base64.urlsafe_b64encode(opening + lead + after).rstrip(b"=").decode() + ".eyJzdWIx.s"
        for opening in (b"{", b"[")
        for lead in (b"", b" ", b"\t", b"\r\n", b"\n   ", b" \t\r\n", b"\n" * 7)
        for after in (b'"a":1}', b"}", b'\x0b"a":1', b'a":1}', b'"":0}', b"\xc3\xa9")
    ),
]
CORPUS: list[bytes] = [
    # Cards: grouped with a fifth group (swallowed or not), Luhn failing then a real card.
    b"card 4111 1111 1111 1111 10:30",
    b"card 4111 1111 1111 1111 123",
    b"card 4111-1111-1111-1111-1",
    b"card 4111-1111-1111-1111-12345",
    b"#4521 5171 4992 5639 3378",
    b"4111111111111112 4111111111111111",
    b"41111111111111124111111111111111",
    b"4111 1111 1111 1112 4111 1111 1111 1111",
    b"3782 822463 10005 3782-822463-10005 3782 822463 1000 3056 930902 5904",
    b"1111111111111117 9111111111111111 2221000000000009 6011000000000004",
    f"{_CARD} {_CARD}-{_CARD}.{_CARD}x{_CARD}".encode(),
    b"4111111111111111111111 41111111111111111111",
    b"4111 1111 1111 1111 1111 1111",
    b"4111 1111-1111 1111 4111  1111 1111 1111",
    # SSNs: the denylist, 000/666/9xx areas, 00 groups, 0000 serials, separators.
    b"078-05-1120 457-55-5462 219-09-9999 078-05-1121 219 09 9998",
    b"666-12-3456 900-12-3456 999 12 3456 000-12-3456 123-00-4567 123-45-0000 665-12-3456",
    b"123-45 6789 123 45-6789 123-45-6789-0 0-123-45-6789 123-45-67890 1.123-45-6789",
    b"at 10:30 123 45 6789 was given",
    # US phones: +1 prefixes, parens, N11, glued.
    b"+1 212-555-1234 +1-212-555-1234 +1.212.555.1234 +1212-555-1234 1-212-555-1234 1 212.555.1234",
    b"(212) 555-1234 (212)555.1234 +1 (212) 555 1234 1 (212) 555-1234 (211) 555-1234 (212) 511-1234",
    b"(212)  555-1234 (21) 555-1234 x(212) 555-1234 (212) 555-12345 5-(212) 555-1234",
    b"212-555-1234 212.555.1234 212-555.1234 112-555-1234 212-155-1234 2-212-555-1234",
    b"+44 20 7946 0958 +14155552671 +0123456789012 +1 2 3 4 5 6 7 8 9 0 +123456789012345678",
    b"+44-20-7946-0958-1-2 +4420 7946 0958. +44 20 7946 0958- 9 1+44 20 7946 0958",
    # A rejected candidate resumes the search past the next separator: here a '+'.
    b"+12+14155552671 +1-2+1 415 555 2671 (211) 555-1234(212) 555-1234 ++14155552671",
    # E-mails: leading dots, long local parts, trailing dots, several '@'.
    b"mail ..bob@example.com .a@b.co a.@b.co @example.com bob@ bob@example bob@example.c",
    b"bob.smith+tag@mail.example.co.uk. x@a-b.example.org x@-ab.org x@ab-.org x@a..org",
    b"a@b.co@c.de a@@b.co 123-45-6789@corp.example.com a@b.c0m a@b.com1 a@b.com.x1",
    ("l" * 70 + "@example.com " + "m" * 64 + "@example.com").encode(),
    ("a@" + "b" * 63 + ".com a@" + "c" * 64 + ".com a@b." + "t" * 63 + " a@b." + "t" * 64).encode(),
    # IPv4: leading zeros, four-digit octets, more octets, glued.
    b"from 192.168.1.10 and 8.8.8.8. 01.02.03.04 10.0.0.01 1.2.3.4.5 256.1.1.1 1.2.3.4000",
    b"1234.1.1.1 1.1234.1.1 1.1.1.1234 12345.1.1.1 v1.2.3.4 1.2.3.4-5 1-1.2.3.4 0.0.0.0 255.255.255.255",
    b"10.0.0.1:8080 [10.0.0.1] 10.0.0.1.5 1.2.3 999.999.999.999 100.200.250.255",
    # IPv6 and IBANs (still confirmed in Python) next to the native forms.
    b"v6 fe80::1ff:fe23:4567:890a, ::1 and 2001:db8::8a2e:370:7334. 10.0.0.1 a::b",
    b"2001:0db8:85a3:0000:0000:8a2e:0370:7334 1:2 10:30:45 1:abcde:f 1:abcd:f",
    b"pay DE89 3704 0044 0532 0130 00 now GB82WEST12345698765432. 123-45-6789",
    f"iban {iban_value(_RNG, grouped=True)} ABCD 4111111111111111".encode(),
    # Non-ASCII neighbours, invalid UTF-8, NUL bytes inside elements.
    "电话号码 123-45-6789，邮箱 é@example.com 和 a@example.com 卡4111111111111111号".encode(),
    b"\xff\xfe ssn 123-45-6789 \xc3\xa9212-555-1234\xc3",
    b"123-45-6789\x00212-555-1234\x004111111111111111\x00a@b.co\x0010.0.0.1\x00",
    b"123-45\x00-6789 4111 1111\x00 1111 1111 a\x00@b.co",
    # Digits glued by '-' or '.'.
    b"1-123-45-6789 123-45-6789-1 1.123-45-6789 123-45-6789.1 a-123-45-6789 123-45-6789-a",
    b"9-4111111111111111 4111111111111111.9 1.212.555.1234 212.555.1234.5",
    # Cards written as floats: whole, not whole, exponents, glued, too long, too short.
    b"4111111111111111.0 [4.111111111111111e15] 4.111111111111111E+15 41111111111111110e-1",
    b"0.4111111111111111e16 4111111111111111.000 -4111111111111111.0 4111111111111111.5",
    b"4111111111111111. 4111111111111111e 4111111111111111.0.1 x4111111111111111.0 5.e15",
    b"1e99999 4.1e15 1.2.3 12e 12.e3 4111111111111111e0000000015 9e-99999 4111111111111111.0e",
    b"4.111111111111111e+0015 6011000000000004e0 .4111111111111111e16 4111111111111111.0a",
    b"4111111111111111.0e-0 41111111111111110e-00001 4111111111111111e+0 4111111111111111.0E-",
    # Floats that a double parse rounds to a card (and ones it does not).
    b"4111111111111111.1 4.1111111111111109e15 7,4111111111111110.9 4111111111111111.25 6011000000000004.4",
    b"4111111111111111.5 4111111111111111.7 41111111111111111111.1 9999999999999999999.9 1e19",
    b"18446744073709551615.0 18446744073709551616.0 6011000000000004.00000000000000000001",
    # Zero-padded cards: the run however long, the padding in the span; grouped, as floats.
    b"pan 0004111111111111111 ok",
    b"04111111111111111 0000004111111111111111 000000000000000000000000006011000990139424",
    b"0004 1111 1111 1111 111",
    b"0004-1111-1111-1111-1 00004111111111 0004111111111111112 x0004111111111111111 00000",
    b"0004111111111111111.0 0004111111111111111.5",
    b"0000000000000000000000000004111111111111111-1 0000000000000000000",
    # Cards with a fraction: the exact integer part, or the whole value a double parse reads.
    b"4111111111111111.5 4111111111111111.25e0",
    b"41111111111111112.5e-1 4.1111111111111115E15 6011000990139424.999",
    b"4111111111111112.5 4111111111111111.5.1 4111111111111111.5e-1",
    b"1700000000000.5 -4111111111111111.75. 1.5e18",
    # Cards grouped in thousands: every separator, zero-padded, with a fraction, and numbers
    # that go on before or after, mixed separators, first groups of four digits.
    b"4,111,111,111,111,111 4 111 111 111 111 111 4.111.111.111.111.111",
    b"4'111'111'111'111'111 4_111_111_111_111_111",
    b"4\t111\t111\t111\t111\t111 00,000,004,111,111,111,111,111 378,282,246,310,005 6,011,000,990,139,424",
    b"4,111,111,111,111,111.50 4.111.111.111.111.111,50 4'111'111'111'111'111.5 4 111 111 111 111 111,25",
    b"4,111,111,111,111,112 4,111,111,111,111,111,1",
    b"4,111,111,111,111,1111 12,4,111,111,111,111,111 4,111.111,111,111,111",
    b"4111,111,111,111,111 1.4,111,111,111,111,111",
    b"4,111,111,111,111,111.50.3 x4,111,111,111,111,111 ,111,111,111,111,411",
    b"4111 1111 1111 1111 7,111,111,111,111,111 1 234 567 890 123 456 789",
    b"4111 1111 1111 1111 711,111,111,111,111 4111 1111 1111 1111 5,555,555,555,554,444",
    b"4,111,111,111,111,111,111,111,111 4,111,111,111",
    b"111,111,111,111,111 ,4,111,111,111,111,111, 4,111,111,111,111,111-1",
    b"0,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000,000,004,111,111,111,111,111",
    b"1,000,000,000,000 2.000.000.000.000.000",
    b"9_999_999_999_999_999 5,555,555,555,554,444 5,555,555,555,554,444e0",
    # Tabs read as spaces: grouped cards and SSNs in the columns of a TSV, mixed separators.
    b"4111\t1111\t1111\t1111 123\t45\t6789 4111 1111\t1111 1111 123\t45-6789 3782\t822463\t10005",
    b"4111\t1111\t1111\t1111\t12 4111\t\t1111\t1111\t1111 212\t555\t1234 \t123\t45\t6789\t",
    # Secrets: PEM blocks closed, open (to the end, or a NUL), closed by another label, END
    # markers alone; marker near misses; JWTs and their segments; tokens at and past their
    # bounds, glued, inside PEM bodies and JWTs.
    *(text.encode() for text in SECRET_CORPUS),
    b"",
    b" ",
    b"\x00",
    LONG,
]


@pytest.mark.parametrize("text", CORPUS, ids=range(len(CORPUS)))
def test_the_hand_corpus_agrees_for_every_subset_of_detectors(text: bytes) -> None:
    for wanted in EVERY_SUBSET:
        assert_same([text], wanted)


def test_the_hand_corpus_agrees_as_one_tensor() -> None:
    texts = [text for text in CORPUS if text is not LONG]
    for wanted in EVERY_SUBSET:
        assert_same(texts, wanted)
    assert_same(CORPUS, frozenset(BUILTINS))  # with the long element: the GIL-free scan


def test_the_corpus_finds_what_the_rules_say() -> None:
    """The reference is not vacuous: the corpus exercises every native detector."""
    found = {name for _, name, _, _ in reference_each(CORPUS, frozenset(BUILTINS))}
    assert found == set(BUILTINS)


def test_other_bytes_likes_are_read_as_the_join_reads_them() -> None:
    texts: list[Any] = [bytearray(b"ssn 123-45-6789"), memoryview(b"card 4111111111111111"), b"a@b.co"]
    wanted = frozenset(BUILTINS)
    assert native_each(texts, wanted) == reference_each([bytes(text) for text in texts], wanted)
    with native.forced(True), pytest.raises(TypeError):
        native.hits_each(["a str is not bytes"], wanted)  # type: ignore[list-item]


# --- generated texts ---------------------------------------------------------------------

_LUHN_BODIES = st.text(alphabet="0123456789", min_size=12, max_size=18)
_VALID_CARDS = _LUHN_BODIES.map(lambda body: body + luhn.calc_check_digit(body))


def _as_float(digits: str, point: int, fraction: str, exponent: int | str | None) -> str:
    """``digits`` with a dot ``point`` places in (``fraction`` zeros added) and an exponent
    that gives the value back (an int), or an odd exponent spelling (a str)."""
    point = min(point, len(digits))
    text = f"{digits[: len(digits) - point]}.{digits[len(digits) - point :]}{fraction}" if point else digits
    if exponent is None:
        return text if point or fraction else f"{text}.{fraction}"
    if isinstance(exponent, str):
        return text + exponent
    return f"{text}e{exponent + point}" if exponent % 2 else f"{text}E{exponent + point:+d}"


def _grouped(digits: str, separator: str) -> str:
    return separator.join(digits[index : index + 4] for index in range(0, len(digits), 4))


def _in_thousands(digits: str, separator: str, width: int, suffix: str) -> str:
    """``digits`` as number formatting writes them grouped in thousands (zero-padded to
    ``width``), with ``separator`` for ``,`` and ``suffix`` after (a fraction, or not)."""
    return format(int(digits), f"0{width},").replace(",", separator) + suffix


def _joined(groups: list[str], separators: str) -> str:
    """``groups`` of digits joined by the ``separators`` in turn: near misses of the above."""
    return "".join(group + separators[index % len(separators)] for index, group in enumerate(groups))


_THOUSANDS_SEPARATORS = ",. '_\t"


def _padded_and_grouped_cards(tails: list[str]) -> tuple[st.SearchStrategy[str], ...]:
    """Zero-padded cards, and cards grouped in thousands followed by one of ``tails``."""
    return (
        st.builds(lambda zeros, card: "0" * zeros + card, st.integers(1, 8), _VALID_CARDS),
        st.builds(
            _in_thousands,
            _VALID_CARDS,
            st.sampled_from(_THOUSANDS_SEPARATORS),
            st.integers(0, 30),
            st.sampled_from(tails),
        ),
    )


# Secrets whole and in pieces: markers and prefixes alone, runs of their characters of
# lengths about their bounds, the forms themselves.
_SECRET_PIECES = [
    "-----BEGIN ", "-----END ", "PRIVATE KEY", "-----", " BLOCK-----", "RSA ", "PGP ", "A B ", "\n",
    "---- BEGIN ", "---- END ", " ----", "SSH2 ",
    "eyJ", "eyJhbGci", ".", "..", "AKIA", "ASIA", "AIza", "ghp_", "github_pat_", "glpat-", "xoxb-",
    "sk_live_", "rk_live_", "_", "-", "x", "\x00",
    # JSON objects' openings in base64url ("{" and whitespace: eyA, ewo, ewk, ew0), whitespace
    # groups, near misses, padding.
    "eyI", "eyK", "eyL", "eyA", "ewo", "ewk", "ew0", "eyAg", "ewog", "ICAg", "ICJ", "Cg", "CQ", "DQo",
    "eyAiYWxn", "ewogICJh", "ewkiYWxn", "ew0KICJh", "eyAgICAgICJh", "eyAbcdef", "ewogICAgfQ",
    "=", "==", "===",
]  # fmt: skip
_SECRET_TOKENS = st.one_of(
    st.sampled_from(_SECRET_PIECES),
    st.builds(
        lambda char, count: char * count,
        st.sampled_from(["a", "A", "1", "_", "-", "aA1_-"]),
        st.sampled_from([4, 5, 9, 15, 16, 17, 19, 20, 21, 22, 35, 36, 244, 247, 249, 250, 251, 252]),
    ),
    st.text(alphabet=BASE64URL + ".=", min_size=1, max_size=40),
    st.builds(
        lambda form, seed: SECRET_FORMS[form](random.Random(seed)),
        st.sampled_from(sorted(SECRET_FORMS)),
        st.integers(),
    ),
)
_TOKENS = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.sampled_from(
        [" ", "-", ".", "(", ")", "+", ":", "@", "_", "%", "\x00", "é", "号", "  ", "+1 ", "1-", "\t"]
    ),
    st.sampled_from(["a", "Z", "DE", "GB", "ex", "example", "com", "co", "x.y", "fe80", "::", "AB12", "ff"]),
    _VALID_CARDS,
    st.tuples(_VALID_CARDS, st.sampled_from(" -\t")).map(lambda card: _grouped(*card)),
    # Cards (and other digits) written as floats: a dot, an exponent, or both.
    st.builds(
        lambda digits, point, fraction, exponent: _as_float(digits, point, fraction, exponent),
        st.one_of(_VALID_CARDS, st.text(alphabet="0123456789", min_size=1, max_size=20)),
        st.integers(0, 20),
        st.text(alphabet="0", max_size=3),
        st.one_of(st.none(), st.integers(-25, 25), st.sampled_from(["e", "E+", "e-", "e00015"])),
    ),
    # A card with fraction digits (its integer part; a double parse may round them away).
    st.builds(
        lambda card, fraction: f"{card}.{fraction}",
        _VALID_CARDS,
        st.text(alphabet="0123456789", min_size=1, max_size=4),
    ),
    # Zero-padded cards, and cards grouped in thousands.
    *_padded_and_grouped_cards(["", "", ".50", ",5", ".0", "e0", ",1", "-1"]),
    st.builds(
        lambda area, group, serial, separator: f"{area:03d}{separator}{group:02d}{separator}{serial:04d}",
        st.integers(0, 999),
        st.integers(0, 99),
        st.integers(0, 9999),
        st.sampled_from("- \t"),
    ),
    st.builds(
        lambda area, exchange, line, form: form.format(area, exchange, line),
        st.integers(100, 999),
        st.integers(100, 999),
        st.integers(0, 9999),
        st.sampled_from(
            ["{}-{}-{:04d}", "{}.{}.{:04d}", "({}) {}-{:04d}", "({}){}.{:04d}", "+1 {} {} {:04d}"]
        ),
    ),
    st.builds(
        lambda octets, zero: ".".join(
            ("0" if zero and i == 1 else "") + str(o) for i, o in enumerate(octets)
        ),
        st.lists(st.integers(0, 1100), min_size=3, max_size=5),
        st.booleans(),
    ),
    st.builds(
        lambda local, domain: f"{local}@{domain}",
        st.text(alphabet="ab.+_-%9", min_size=0, max_size=8),
        st.text(alphabet="ab-.c9", min_size=0, max_size=12),
    ),
    _SECRET_TOKENS,
)
_TEXTS = st.lists(_TOKENS, max_size=25).map(lambda tokens: "".join(tokens).encode("utf-8", "surrogatepass"))
_RAW = st.binary(max_size=60)
# Numbers alone: cards grouped in thousands or padded, runs of digits, groups of 1-4 digits
# after separators in turn, and the bytes around numbers.
_NUMBER_TOKENS = st.one_of(
    _VALID_CARDS,
    *_padded_and_grouped_cards(["", ".50", ",5", "e0"]),
    st.builds(
        _joined,
        st.lists(st.text(alphabet="0123456789", min_size=1, max_size=4), min_size=1, max_size=8),
        st.text(alphabet=_THOUSANDS_SEPARATORS + "-", min_size=1, max_size=3),
    ),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.sampled_from([" ", ",", ".", "'", "_", "\t", "-", "x", "e", "\x00", "é"]),
)
_NUMBER_TEXTS = st.lists(_NUMBER_TOKENS, max_size=12).map(lambda tokens: "".join(tokens).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.one_of(_TEXTS, _RAW), min_size=1, max_size=6),
    wanted=st.sets(st.sampled_from(BUILTINS)).map(frozenset),
)
def test_generated_texts_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    assert_same(texts, wanted)


@settings(max_examples=300, deadline=None)
@given(text=_TEXTS)
def test_generated_texts_agree_for_every_subset_of_detectors(text: bytes) -> None:
    for wanted in EVERY_SUBSET:
        assert native_each([text], wanted) == reference_each([text], wanted)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(_NUMBER_TEXTS, min_size=1, max_size=6),
    wanted=st.sets(st.sampled_from(BUILTINS)).map(frozenset),
)
def test_generated_numbers_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    """Padded, fractional and thousands-grouped cards among near misses of each."""
    assert_same(texts, wanted | {"credit_card"})
    assert_same(texts, wanted)


_SECRET_TEXTS = st.lists(
    st.one_of(_SECRET_TOKENS, st.sampled_from([" ", "é", "号", "\x00", "{", '"'])), max_size=14
).map(lambda tokens: "".join(tokens).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(_SECRET_TEXTS, min_size=1, max_size=6),
    wanted=st.sets(st.sampled_from(BUILTINS)).map(frozenset),
)
def test_generated_secret_texts_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    """Keys, JWTs and tokens, whole and in pieces, among near misses of each."""
    assert_same(texts, wanted | {"secret"})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.lists(st.sampled_from(JWT_PIECES), max_size=30).map(b"".join), min_size=1, max_size=4)
)
def test_generated_jwt_texts_agree(texts: list[bytes]) -> None:
    """JWS and JWE tokens from their pieces: openings whole, cut short and near misses, dots,
    padding (the Rust scan finds them from their openings, Python from their dots)."""
    assert_same(texts, frozenset({"secret"}))


# Keys one line per element: closed elements later, left open (to the tensor's end), closed
# by another label's marker (not at all), around empty elements and other detectors' values,
# a BEGIN marker inside an open block, END markers alone, NULs inside elements.
_LINES_KEY = [line.encode() for line in pem_value(random.Random(7), "RSA PRIVATE KEY", 3).split("\n")]
_EC_KEY = [line.encode() for line in _KEY.split("\n")]
KEY_LINE_TENSORS: list[list[bytes]] = [
    [b"before 123-45-6789", *_LINES_KEY, b"after a@b.co"],
    [*_LINES_KEY[:-1], b"", b"123-45-6789", b"a@b.co AKIAIOSFODNN7EXAMPLE"],
    [_LINES_KEY[0], _EC_KEY[-1], b"x", _LINES_KEY[-1], b"y", _EC_KEY[-1]],
    [b"x " + _LINES_KEY[0], *_EC_KEY, b"z", _LINES_KEY[-1] + b" 123-45-6789 " + _EC_KEY[0], b"w"],
    [b"a\x00" + _LINES_KEY[0] + b"\x00b", b"c\x00" + _LINES_KEY[-1] + b"\x00d", b"e"],
    [_LINES_KEY[-1], *_EC_KEY[:-1], b"", _EC_KEY[-1] + b"\n" + _LINES_KEY[0], b"", b"tail"],
    [b"".join(_LINES_KEY[:2]), b"\n".join(_LINES_KEY[2:])],
    [_LINES_KEY[0]],
    [_LINES_KEY[0], b""],
    [b"", _LINES_KEY[0][:-1], _LINES_KEY[-1]],
]


@pytest.mark.parametrize("texts", KEY_LINE_TENSORS, ids=range(len(KEY_LINE_TENSORS)))
def test_keys_one_line_per_element_agree(texts: list[bytes]) -> None:
    for wanted in EVERY_SUBSET:
        assert_same(texts, wanted)
    every = DetectorSet()
    spans_both_ways(every, texts)
    spans_both_ways(every, texts, [2 * index + 1 for index in range(len(texts))])
    raw = b"".join(len(text).to_bytes(4, "little") + text for text in texts)
    with native.forced(True):
        built = every.spans_raw(raw, len(texts), lambda: texts)
    assert built is not None
    with native.forced(False):
        assert list(built[0].items()) == sorted(every.scan_each(texts).items())
    classified_both_ways(texts)
    documents = [json.dumps({"line": text.decode(), "n": [text.decode()]}).encode() for text in texts]
    classified_both_ways(documents)
    # Some elements the native reader leaves to Python (a float), the rest it reads: a block
    # runs on from one kind into the other all the same.
    for step in (2, 3):
        mixed = [
            json.dumps(
                {"line": text.decode(), "score": 0.5} if index % step == 0 else {"line": text.decode()}
            )
            for index, text in enumerate(texts)
        ]
        classified_both_ways([text.encode() for text in mixed])
        classified_both_ways([text.encode() for text in mixed[1:]])


_BLOCK_BROKEN_BY_AN_ELEMENT = {
    # The middle element holds a character reference: Python reads it, the reader carried the
    # block across it all the same (its line was left uncovered natively).
    "reference": [{"a": _LINES_KEY[0].decode()}, {"a": "MIIE &amp; x"}, {"a": "xyz"}],
    # A key the scan finds makes the middle element opaque, with the block's END marker in it.
    "detected key": [
        {"a": _LINES_KEY[0].decode()},
        {"123-45-6789": "x", "a": _LINES_KEY[-1].decode()},
        {"a": "xyz"},
    ],
    # Folded (a NUL dropped), the middle element shows a value its text does not: opaque too.
    "folded text": [
        {"a": _LINES_KEY[0].decode()},
        {"a": _LINES_KEY[-1].decode() + " 123-45-678\x009"},
        {"a": "xyz"},
    ],
}


@pytest.mark.parametrize(
    "documents", _BLOCK_BROKEN_BY_AN_ELEMENT.values(), ids=_BLOCK_BROKEN_BY_AN_ELEMENT.keys()
)
def test_an_element_the_reader_cannot_keep_leaves_the_block_to_python(
    documents: list[dict[str, str]],
) -> None:
    """An element the native reader read that becomes Python's (or opaque) after its read
    broke the reader's carry of a PEM block: the elements after it, and it, are covered as
    the Python path covers them (open where the Python scan sees the block open)."""
    elements = [json.dumps(document).encode() for document in documents]
    classified_both_ways(elements)
    with native.forced(True):
        result = classify_outputs(
            "m", [Tensor("t", "BYTES", [3], elements)], Catalog.from_data({"entries": []}), DetectorSet()
        )
    leaves = result.json_elements["t"]
    assert [leaf.detections[0].detector for leaf in leaves[2]] == ["secret"]
    if 1 in leaves:
        assert [leaf.detections[0].detector for leaf in leaves[1]] == ["secret"]


def test_a_key_one_line_per_element_is_found_in_each_of_its_elements() -> None:
    """The corpus above is not vacuous: a piece of the block in every element of the key."""
    found = {index for index, name, _, _ in reference_each(KEY_LINE_TENSORS[0], frozenset({"secret"}))}
    assert found == set(range(1, len(_LINES_KEY) + 1))


_KEY_LINE_PIECES = [
    *_LINES_KEY,
    *_EC_KEY,
    b"",
    b"\x00",
    b"123-45-6789",
    b"-----BEGIN X PRIVATE KEY-----",
    b"-----END X PRIVATE KEY-----",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.one_of(
            st.sampled_from(_KEY_LINE_PIECES),
            st.lists(st.sampled_from(_KEY_LINE_PIECES), min_size=2, max_size=3).map(b" ".join),
            _SECRET_TEXTS,
        ),
        min_size=1,
        max_size=8,
    ),
    wanted=st.sets(st.sampled_from(BUILTINS)).map(frozenset),
)
def test_generated_key_lines_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    assert_same(texts, wanted | {"secret"})
    spans_both_ways(DetectorSet({name: BUILTIN_LABELS[name] for name in wanted | {"secret"}}), texts)


def test_the_order_of_hits_within_an_element_does_not_change_the_merged_detections() -> None:
    """``scan_each`` merges each element's hits after sorting them, so the native scan could
    hand them over in any order: shuffled, the merged detections stay the same."""
    rng = random.Random(11)
    detectors = DetectorSet.default()
    order = {name: index for index, name in enumerate(detectors.names)}
    texts = [*CORPUS, b"write 123-45-6789@corp.example.com 4111111111111111 10.0.0.1"]
    for text in texts:
        found = [
            Detection(name, BUILTIN_LABELS[name], start, end)
            for name, start, end in patterns.builtin_hits(text, frozenset(BUILTINS))
        ]
        if len(found) < 2:
            continue
        expected = _merge_overlaps(list(found), order)
        for _ in range(5):
            rng.shuffle(found)
            assert _merge_overlaps(list(found), order) == expected, text


# --- IBANs: every registry country, national rules, the shapes of the candidate regex -------

_REGISTRY_FORMATS, _PYTHON_DECIDES = native.iban_registry()
_BBAN_CHARS = {
    "n": "0123456789",
    "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "c": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
}
# Valid IBANs of the countries where python-stdnum has national rules (from its tests).
NATIONAL_IBANS = ["BE71096123456769", "ES9121000418450200051332", "NO9386011117947", "ME25505000012345678951"]


def _with_check_digits(country: str, bban: str) -> str:
    return country + mod_97_10.calc_check_digits(bban + country) + bban


def _random_bban(rng: random.Random, runs: list[tuple[int, str]]) -> str:
    return "".join(rng.choice(_BBAN_CHARS[kind]) for count, kind in runs for _ in range(count))


def _grouped_iban(value: str) -> str:
    return " ".join(value[index : index + 4] for index in range(0, len(value), 4))


def _corrupted(rng: random.Random, value: str) -> str:
    """One character of the BBAN or check digits changed (mod 97 then fails, or the format)."""
    position = rng.randrange(2, len(value))
    replacement = rng.choice([char for char in "0123456789AZ" if char != value[position]])
    return value[:position] + replacement + value[position + 1 :]


def _iban_variants(rng: random.Random, value: str) -> list[bytes]:
    grouped = _grouped_iban(value)
    texts = [
        value,
        grouped,
        f"pay {grouped} ABCD now",  # a swallowed trailing word
        f"{grouped} ABCD EFGH 12",
        f"iban:{value}. and {_corrupted(rng, value)} then {_grouped_iban(_corrupted(rng, value))}",
        f"x{value} {value}9 9{grouped} {value.lower()} {grouped.lower()}",
        f"{value[:2].lower()}{value[2:]} {value}-{value} {value}.{value}",
        f"{value}{value} {grouped} {grouped}",
        f"{_corrupted(rng, value)} {value[:-1]} {grouped[:-2]} {value[4:]}",
        f"{value}\x00{grouped}\x00{value}é {grouped}号",
    ]
    return [text.encode() for text in texts]


def _country_ibans(rng: random.Random) -> dict[str, list[str]]:
    ibans = {
        country: [_with_check_digits(country, _random_bban(rng, runs)) for _ in range(2)]
        for country, runs in _REGISTRY_FORMATS
    }
    for value in NATIONAL_IBANS:
        ibans[value[:2]] = [value]
    for country in sorted(_PYTHON_DECIDES - {value[:2] for value in NATIONAL_IBANS}):
        ibans[country] = []
    return ibans


_IBAN_RNG = random.Random(20261205)
COUNTRY_IBANS = _country_ibans(_IBAN_RNG)
IBAN_TEXTS = {
    country: [text for value in values for text in _iban_variants(_IBAN_RNG, value)]
    for country, values in COUNTRY_IBANS.items()
}


def test_the_registry_handed_to_the_extension_covers_stdnum_and_the_valid_ibans_are_valid() -> None:
    assert {country for country, _ in _REGISTRY_FORMATS} | _PYTHON_DECIDES == {
        country
        for country in map("".join, itertools.product(string.ascii_uppercase, repeat=2))
        if patterns._iban_country(country)[0] is not None
    }
    assert {value[:2] for value in NATIONAL_IBANS} <= _PYTHON_DECIDES
    for values in COUNTRY_IBANS.values():
        for value in values:
            assert stdnum_iban.is_valid(value), value


IBAN_EDGE_CASES = [
    # A rejected grouped candidate resumes past its first group: it swallowed a real start.
    b"DE12 DE89 3704 0044 0532 0130 00 and DE12 3456 DE89 3704 0044 0532 0130 00",
    b"GB82 WEST 1234 5698 7654 32 DE89 3704 0044 0532 0130 00 ABCD EFGH",
    b"DE89370400440532013000DE89370400440532013000 DE8937040044053201300 DE893704004405320130000",
    b"BE71 0961 2345 6769 DE89 3704 0044 0532 0130 00 BE71096123456768 ES91 2100 0418 4502 0005 1332",
    b"NO9386011117947 1 ME25505000012345678951 AB00 1234 5678 9012 3 ZZ00123456789012345",
    b"de89 3704 0044 0532 0130 00 DE89 3704 0044 0532 0130 00x xDE89 3704 0044 0532 0130 00",
]


@pytest.mark.parametrize("text", IBAN_EDGE_CASES, ids=range(len(IBAN_EDGE_CASES)))
def test_iban_edge_cases_agree_for_every_subset_of_detectors(text: bytes) -> None:
    for wanted in EVERY_SUBSET:
        assert_same([text], wanted)
    assert_same(IBAN_EDGE_CASES, frozenset({"iban"}))


@pytest.mark.parametrize("country", sorted(IBAN_TEXTS))
def test_every_registry_country_agrees_for_every_subset_of_detectors(country: str) -> None:
    texts = IBAN_TEXTS[country]
    for wanted in EVERY_SUBSET:
        assert_same(texts, wanted)
    found = reference_each(texts, frozenset({"iban"}))
    assert bool(found) == bool(COUNTRY_IBANS[country]), country  # the corpus is not vacuous


def test_all_countries_agree_as_one_tensor() -> None:
    texts = [text for country in sorted(IBAN_TEXTS) for text in IBAN_TEXTS[country]]
    for wanted in (frozenset({"iban"}), frozenset(BUILTINS), frozenset({"iban", "ip_address"})):
        assert_same(texts, wanted)
    random.Random(3).shuffle(texts)  # national-rule elements between the extension's own
    assert_same(texts, frozenset(BUILTINS))


def _kernel_scan(
    texts: list[bytes],
) -> tuple[list[tuple[int, str, int, int]], int, int, list[int], list[int]]:
    kernel = native._SWITCH.kernel
    assert kernel is not None
    return kernel.scan_elements(texts, native._mask(frozenset({"iban"})))


def test_the_extension_confirms_ibans_itself_and_defers_only_national_rules() -> None:
    own = [_grouped_iban(values[0]).encode() for _, values in sorted(COUNTRY_IBANS.items()) if values]
    own = [text for text in own if text[:2].decode() not in _PYTHON_DECIDES]
    hits, iban_at, iban_count, iban_pending, _ = _kernel_scan(own)
    assert (iban_at, iban_count, iban_pending) == (0, len(own), [])
    assert [index for index, *_ in hits] == list(range(len(own)))
    national = [f"a {value} b".encode() for value in NATIONAL_IBANS]
    # A national-rule candidate that fails mod 97 needs no national rule.
    failing = [_corrupted(random.Random(index), value).encode() for index, value in enumerate(NATIONAL_IBANS)]
    hits, _, iban_count, iban_pending, _ = _kernel_scan([own[0], *national, *failing])
    assert (iban_count, iban_pending) == (1, [1, 2, 3, 4])
    assert native_each([own[0], *national], frozenset({"iban"})) == [
        (0, "iban", 0, len(own[0])),
        *((index, "iban", 2, 2 + len(value)) for index, value in enumerate(NATIONAL_IBANS, start=1)),
    ]


def test_a_bad_registry_is_refused_and_the_registry_can_be_handed_over_again() -> None:
    kernel = native._SWITCH.kernel
    assert kernel is not None
    try:
        with pytest.raises(ValueError, match="class"):
            kernel.set_iban_registry([("DE", [(18, "x")])], set())
        with pytest.raises(ValueError, match="country code"):
            kernel.set_iban_registry([("de", [(18, "n")])], set())
        with pytest.raises(ValueError, match="country code"):
            kernel.set_iban_registry([], {"DEU"})
        kernel.set_iban_registry([], set())  # no IBAN country at all
        assert native_each([b"DE89370400440532013000"], frozenset({"iban"})) == []
    finally:
        kernel.set_iban_registry(*native.iban_registry())
    assert native_each([b"DE89370400440532013000"], frozenset({"iban"})) == [(0, "iban", 0, 22)]


_ANY_IBAN = st.sampled_from([value for values in COUNTRY_IBANS.values() for value in values])
_IBAN_TOKENS = st.one_of(
    _ANY_IBAN,
    _ANY_IBAN.map(_grouped_iban),
    st.tuples(_ANY_IBAN, st.randoms(use_true_random=False)).map(lambda pair: _corrupted(pair[1], pair[0])),
    _ANY_IBAN.map(lambda value: value[: len(value) - 3]),
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.text(alphabet="ABCDEZ019 ", min_size=1, max_size=8),
    st.sampled_from([" ", "  ", "-", ".", "\x00", "é", "x", "DE89", " 3704", " ABCD", " 12", "be71", "ES91"]),
)
_IBAN_HEAVY = st.lists(_IBAN_TOKENS, max_size=12).map(lambda tokens: "".join(tokens).encode())
_IBAN_SHAPES = st.text(alphabet="AZ09 a.\x00", max_size=80).map(str.encode)  # random shapes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.one_of(_IBAN_HEAVY, _IBAN_SHAPES), min_size=1, max_size=6),
    wanted=st.sets(st.sampled_from(BUILTINS)).map(frozenset),
)
def test_generated_iban_texts_agree(texts: list[bytes], wanted: frozenset[str]) -> None:
    assert_same(texts, wanted | {"iban"})
    assert_same(texts, wanted)


# --- spans built natively (DetectorSet.spans_at: the classifier's plain-text elements) ----


def spans_both_ways(
    detectors: DetectorSet, texts: Sequence[bytes], keys: list[int] | None = None
) -> dict[int, list[Detection]]:
    """``spans_at`` natively against ``scan_each`` in Python, re-keyed and in key order:
    the same detections (``Detection``s, merged), in the same order, the same names."""
    keys = list(range(len(texts))) if keys is None else keys
    with native.forced(True):
        built = detectors.spans_at(texts, keys)
    assert built is not None
    with native.forced(False):
        assert detectors.spans_at(texts, keys) is None  # the classifier then runs scan_each
        expected = {keys[index]: hits for index, hits in sorted(detectors.scan_each(texts).items())}
    spans, names = built
    assert list(spans.items()) == list(expected.items()), texts
    assert all(type(hit) is Detection for hits in spans.values() for hit in hits)
    assert names == {hit.detector for hits in expected.values() for hit in hits}
    return spans


# Several hits in one element, overlapping or not; passes left to Python (IPv6, IBANs of
# national rules) in elements with and without native hits; hits at both edges.
SPAN_CORPUS = [
    *(text for text in CORPUS if text is not LONG),
    b"123-45-6789",
    b"4111111111111111 123-45-6789 212-555-1234 a@b.co 10.0.0.1",
    b"+1 4111111111111111",  # a phone inside a card: merged under the card
    b"v6 2001:db8::1 and 123-45-6789",
    b"only v6 fe80::1ff:fe23:4567:890a",
    *(f"pay {value} now".encode() for value in NATIONAL_IBANS),
    *(f"{value} 123-45-6789 {value}".encode() for value in NATIONAL_IBANS),
    "é 123-45-6789 号".encode(),
]


def test_native_spans_agree_for_the_hand_corpus() -> None:
    every = DetectorSet()
    spans = spans_both_ways(every, SPAN_CORPUS)
    assert any(len(hits) > 1 for hits in spans.values())  # merging is exercised
    # Keys other than positions, each subset of the built-ins, one element at a time.
    spans_both_ways(every, SPAN_CORPUS, [3 * index + 2 for index in range(len(SPAN_CORPUS))])
    for wanted in EVERY_SUBSET[1:]:
        detectors = DetectorSet({name: BUILTIN_LABELS[name] for name in wanted})
        spans_both_ways(detectors, SPAN_CORPUS)
    for text in SPAN_CORPUS:
        spans_both_ways(every, [text])
    spans_both_ways(every, [LONG, b"123-45-6789"])  # the GIL-free scan


def test_native_spans_give_way_to_custom_detectors_and_other_bytes_likes_are_read() -> None:
    custom = DetectorSet(custom=[CustomPattern("ticket", r"T-\d+", "internal")])
    with native.forced(True):
        assert custom.spans_at([b"T-1 123-45-6789"], [0]) is None
        assert DetectorSet.none().spans_at([b"123-45-6789"], [0]) is None
    texts: list[Any] = [bytearray(b"ssn 123-45-6789"), memoryview(b"card 4111111111111111"), b"a@b.co"]
    with native.forced(True):
        built = DetectorSet().spans_at(texts, [0, 1, 2])
    assert built is not None
    assert built[0] == DetectorSet().scan_each([bytes(text) for text in texts])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(st.one_of(_TEXTS, _IBAN_HEAVY, _RAW), min_size=1, max_size=8),
    wanted=st.sets(st.sampled_from(BUILTINS), min_size=1).map(frozenset),
    gaps=st.lists(st.integers(0, 3), min_size=8, max_size=8),
)
def test_generated_native_spans_agree(texts: list[bytes], wanted: frozenset[str], gaps: list[int]) -> None:
    keys = list(itertools.accumulate(gap + 1 for gap in gaps[: len(texts)]))
    spans_both_ways(DetectorSet({name: BUILTIN_LABELS[name] for name in wanted}), texts, keys)


def classified_both_ways(elements: list[bytes]) -> None:
    """A text tensor classified with the native scan and without: the same fields, and the
    same spans in the same order."""
    tensor = Tensor("t", "BYTES", [len(elements)], elements)
    results = []
    for use_native in (True, False):
        with native.forced(use_native):
            results.append(classify_outputs("m", [tensor], Catalog.from_data({"entries": []}), DetectorSet()))
    on, off = results
    assert on.fields == off.fields
    assert [(name, list(spans.items())) for name, spans in on.spans.items()] == [
        (name, list(spans.items())) for name, spans in off.spans.items()
    ]
    assert on.json_elements == off.json_elements


def test_text_tensors_classify_the_same_with_native_spans() -> None:
    plain = [text for text in SPAN_CORPUS if b"{" not in text and b"\\" not in text]
    classified_both_ways(plain)
    json = [b'{"a": "123-45-6789"}', b'{"a": 1.5, "b": "4111111111111111"}', b'{"a": "\\ud800 x"}']
    escaped = [b"esc \\u0031\\u0032\\u0033-45-6789", b'{"a": "\\u0031"} 123-45-6789']
    classified_both_ways([*json, *plain, *json])
    classified_both_ways([*plain[:5], *escaped, *plain[5:]])
    classified_both_ways([b"{ not json 123-45-6789", *plain])
    classified_both_ways([b"nothing here", b"nor here"])
