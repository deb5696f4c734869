"""The built-in detectors' candidates and confirmations, over UTF-8 bytes. Pure.

What each detector accepts is described in ``labelgate.classify.detectors``; this module
is how, and it is built for speed (target: 50 MB/s of free text per core, measured by
``LABELGATE_NATIVE=0 python -m bench.detector_throughput``). It is the reference the Rust
port in ``proxy/native`` is tested against, and the fallback when that is off
(``labelgate.classify.native``).

Python's regex engine finds a literal prefix at memchr speed but steps through a class
like ``[0-9]`` one character at a time, ten times slower. So candidates are searched in a
"shape" of the bytes where every digit is ``0`` and every capital ``A`` ("DE89 3704" ->
``AA00 0000``): cards (grouped in thousands too), SSNs and US phone numbers then share the
literal prefix ``000`` and go in one pass, an IBAN starts with ``AA00``, and a count of
digits plus cheap ``in`` checks skip every pass whose tell-tale sequence is absent. The
shape has the same length, so offsets carry over; validators run only on candidates.

The validators apply python-stdnum's rules (Luhn, the SSA's SSN rules, ISO 7064 mod 97-10
and the IBAN registry's BBAN formats), but the simple ones are written out here over
bytes: stdnum's generic cleaning and exception handling cost 10-100 µs per value, more
than the scan of a whole element. ``tests/classify/test_patterns.py`` checks them
against python-stdnum value by value; for IBANs of countries with national rules, stdnum
itself still has the last word.

The ``secret`` detector's passes (keys, tokens: no digits or checksums to speak of) are in
``labelgate.classify.credentials``; they run after the float cards.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable

from stdnum import iban as stdnum_iban
from stdnum import numdb
from stdnum.util import get_cc_module

from labelgate.classify import credentials

# --- candidates (on the shape: digits are 0, capitals A) -------------------------------

_SHAPE = bytes.maketrans(b"123456789BCDEFGHIJKLMNOPQRSTUVWXYZ", b"000000000" + b"A" * 25)
_DIGIT_LED = re.compile(
    rb"000(?:"
    rb"(?P<card>0(?:0{9,15}"  # 13-19 contiguous digits
    rb"|(?P<a>[ \t-])0000(?P=a)0000(?P=a)0000(?P<tail>(?P=a)0{1,3})?"  # 4-4-4-4, up to 19 digits
    rb"|(?P<b>[ \t-])000000(?P=b)0{4,5}))"  # 4-6-5 (Amex), 4-6-4 (Diners)
    rb"|(?P<ssn>(?P<s>[- \t])00(?P=s)0000)"  # a tab reads as a space (columns of a TSV)
    rb"|(?P<us>(?P<p>[-.])000(?P=p)0000)"
    # Groups of three as number formatting writes them (``_thousands_card``): a card has 13
    # digits or more, so four such groups follow its first one, or the first is one of them.
    rb"|(?P<thousands>(?P<k>[,.' _\t])000(?P=k)000(?P=k)000)"
    rb")"
)
# A run of thousands groups, from its first separator on; what joins such a number to the
# digits around it (``_isolated``), by separator: "-", "." and the separator.
_THOUSANDS_GROUPS = re.compile(rb"(?P<s>[,.' _\t])000(?:(?P=s)000)*")
_THOUSANDS_JOINERS = {separator: b"-." + bytes((separator,)) for separator in b",.' _\t"}
_IPV4 = re.compile(rb"0\.0{1,3}\.0{1,3}\.0{1,3}")
_IBAN = re.compile(rb"AA00(?:[A0]{11,30}|(?: [A0]{4}){2,7}(?: [A0]{1,4})?)")
_PHONE_PAREN = re.compile(rb"\(000\) ?000[-. ]0000")
_PHONE_PLUS = re.compile(rb"\+0{1,15}(?:[ .-]0{1,4}){0,6}")
# On the bytes themselves:
_EMAIL_LOCAL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"
_EMAIL_DOMAIN = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_IPV6_SEED = re.compile(rb":[0-9A-Fa-f]{0,4}:")
_HEX_COLON = re.compile(rb"[0-9A-Fa-f:]{1,39}")
_IPV6_BODY = re.compile(rb"[0-9A-Fa-f:.]{1,45}")
# A run of digits that may open a number written as a float (``_float_cards``).
_FLOAT_LEAD = re.compile(rb"(?<![0-9])[0-9]+[.eE]")
# The longest exponent a float card is read with (digits, leading zeros aside): any longer
# moves the number past 19 digits or below 1.
_FLOAT_EXPONENT_DIGITS = 4
_LARGEST_WHOLE = 2.0**64  # a parsed float from here on is not read as digits

_SEPARATOR = re.compile(rb"[^0-9A-Za-z]")
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset(b"0123456789")
_KEEP_ALL = bytes.maketrans(b"", b"")
# ASCII digit -> its value, and -> the Luhn "doubled" digit sum of its value (2d, minus 9 if > 9).
_DIGIT_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
# ISO 7064 mod 97-10 reads letters as two-digit numbers: A=10 ... Z=35.
_BASE36_DIGIT_PAIRS = {chr(code): str(code - 55) for code in range(ord("A"), ord("Z") + 1)}
_BASE36_DIGITS = str.maketrans(_BASE36_DIGIT_PAIRS)
# python-stdnum's list of SSNs that were published (in advertising) and are never valid.
_SSN_DENIED = frozenset({b"078051120", b"457555462", b"219099999"})
_SSN_DENIED_AREAS = frozenset(number[:3] for number in _SSN_DENIED)
# The IBAN registry python-stdnum ships: country code -> properties including ``bban``.
_IBAN_REGISTRY = numdb.get("iban")
_BBAN_PART = re.compile(r"([1-9][0-9]*)!([nac])")
_BBAN_CLASSES = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Za-z0-9]"}

Hit = tuple[str, int, int]  # (detector, start, end)


def _isolated(data: bytes, start: int, end: int, joiners: bytes = b"-.") -> bool:
    """True when nothing glues the candidate to neighbouring ASCII letters or digits."""
    if start > 0:
        before = data[start - 1]
        if before in _ALNUM or (before in joiners and start > 1 and data[start - 2] in _DIGITS):
            return False
    if end < len(data):
        after = data[end]
        if after in _ALNUM or (after in joiners and end + 1 < len(data) and data[end + 1] in _DIGITS):
            return False
    return True


def _digits(candidate: bytes) -> bytes:
    """The ASCII digits of a candidate, without its separators."""
    return candidate.translate(_KEEP_ALL, b" -.()+")


def _card_ok(digits: bytes) -> bool:
    """``stdnum.luhn.is_valid`` for a non-empty run of ASCII digits: the sum runs in C."""
    odd = sum(digits[-1::-2].translate(_DIGIT_VALUE))  # the check digit and every second one
    even = sum(digits[-2::-2].translate(_LUHN_DOUBLED))
    return (odd + even) % 10 == 0


def _ssn_ok(area: bytes, group: bytes, serial: bytes) -> bool:
    """``stdnum.us.ssn.is_valid`` for ASCII digits: area not 000, 666 or 9xx, group not 00,
    serial not 0000, and not one of the SSNs published in advertising."""
    return (
        area[0] != 0x39  # '9'
        and area != b"000"
        and area != b"666"
        and group != b"00"
        and serial != b"0000"
        and (area not in _SSN_DENIED_AREAS or area + group + serial not in _SSN_DENIED)
    )


def _iban_ok(compact: str) -> bool:
    """``stdnum.iban.is_valid`` for capitals and digits (the shape of an IBAN candidate)."""
    bban = compact[4:]
    if bban.isdigit():  # the usual case: only the country code needs spelling out as digits
        number = bban + _BASE36_DIGIT_PAIRS[compact[0]] + _BASE36_DIGIT_PAIRS[compact[1]] + compact[2:4]
    else:
        number = (bban + compact[:4]).translate(_BASE36_DIGITS)
    if int(number) % 97 != 1:
        return False
    pattern, national = _iban_country(compact[:2])
    if national:
        return stdnum_iban.is_valid(compact)  # national check digits or bank codes: stdnum's call
    return pattern is not None and pattern.match(bban) is not None


@functools.cache
def _iban_country(country: str) -> tuple[re.Pattern[str] | None, bool]:
    """The BBAN format the IBAN registry gives ``country`` (None: not an IBAN country), and
    whether python-stdnum has national rules for it. At most 26 * 26 entries."""
    properties = _IBAN_REGISTRY.info(country)[0][1]
    if not properties:
        return None, False
    parts = _BBAN_PART.sub(
        lambda part: f"{_BBAN_CLASSES[part.group(2)]}{{{part.group(1)}}}", properties.get("bban", "")
    )
    return re.compile(f"^{parts}$"), get_cc_module(country, "iban") is not None


def _nanp_ok(digits: bytes) -> bool:
    """A 10-digit North American number: area code and exchange start 2-9 and are not N11."""
    area, exchange = digits[:3], digits[3:6]
    return area[0] >= 0x32 and exchange[0] >= 0x32 and area[1:] != b"11" and exchange[1:] != b"11"


def _address_ok(candidate: bytes, kind: type) -> bool:
    try:
        kind(candidate.decode("ascii"))
    except ValueError:
        return False
    return True


def _with_country_code(data: bytes, start: int) -> int:
    """Extend a US number backwards over a ``+1 `` / ``+1-`` / ``1-`` prefix."""
    for prefix in (b"+1 ", b"+1-", b"+1.", b"+1", b"1-", b"1 "):
        if start >= len(prefix) and data.startswith(prefix, start - len(prefix)):
            return start - len(prefix)
    return start


def _confirmed(
    pattern: re.Pattern[bytes],
    data: bytes,
    shape: bytes,
    check: Callable[[bytes, re.Match[bytes]], Hit | None],
    hits: list[Hit],
) -> None:
    """Every candidate of ``pattern`` in the shape that ``check`` confirms.

    Unlike ``finditer``, a rejected candidate does not consume its text: the search goes
    on at the next token, because a greedy candidate can swallow the start of a real one
    ("#4521 5171 4992 5639 3378": "4521 5171 4992 5639" fails Luhn, the card is the rest).
    """
    position = 0
    while True:
        # finditer resumes where a match ends, which is right while every candidate is
        # confirmed whole (the common case, and cheaper than a search call per candidate).
        for match in pattern.finditer(shape, position):
            hit = check(data, match)
            if hit is not None and hit[2] == match.end():
                hits.append(hit)
                continue
            if hit is not None:  # confirmed shorter than the match: go on from its end
                hits.append(hit)
                position = hit[2]
            else:
                boundary = _SEPARATOR.search(data, match.start() + 1)
                position = boundary.end() if boundary else len(data)
            break
        else:
            return


@functools.lru_cache(maxsize=64)
def _check_digit_led(wanted: frozenset[str]) -> Callable[[bytes, re.Match[bytes]], Hit | None]:
    def check(data: bytes, match: re.Match[bytes]) -> Hit | None:
        start, end = match.span()
        kind = match.lastgroup  # the outer named group: it closes last
        if kind == "card":
            if "credit_card" not in wanted:
                return None
            if data[start] == 0x30:  # "0"
                return _padded_card(data, match)
            if data[start] not in b"23456":
                return None
            # "4111 1111 1111 1111 10:30": the optional fifth group may belong to what follows.
            for card_end in (end, match.start("tail")) if match.group("tail") else (end,):
                if not _isolated(data, start, card_end):
                    continue
                # Cards are grouped by one space, tab or dash, if at all (cheaper than _digits).
                if _card_ok(data[start:card_end].translate(_KEEP_ALL, b" \t-")):
                    return ("credit_card", start, card_end)
        elif kind == "thousands":
            return _thousands_card(data, match.string, start) if "credit_card" in wanted else None
        elif kind == "ssn":
            # "ddd-dd-dddd", "ddd dd dddd" or tabs: the parts sit at fixed offsets.
            if (
                "us_ssn" in wanted
                and _isolated(data, start, end)
                and _ssn_ok(data[start : start + 3], data[start + 4 : start + 6], data[start + 7 : end])
            ):
                return ("us_ssn", start, end)
        elif "phone" in wanted and _nanp_ok(_digits(data[start:end])):
            start = _with_country_code(data, start)
            if _isolated(data, start, end):
                return ("phone", start, end)
        return None

    return check


def _padded_card(data: bytes, match: re.Match[bytes]) -> Hit | None:
    """A card candidate that starts with ``0``: a card zero-padded to a fixed width (a numeric
    column written out), read past its zeros. A contiguous one is the whole run of digits,
    however many zeros pad it (``0000004111111111111111`` is longer than any card)."""
    start, end = match.span()
    ends = (end, match.start("tail")) if match.group("tail") else (end,)
    if data[start + 4] in _DIGITS:
        ends = (_digit_run_end(data, end),)
    for card_end in ends:
        digits = data[start:card_end].translate(_KEEP_ALL, b" \t-").lstrip(b"0")
        if _isolated(data, start, card_end) and _is_card(digits):
            return ("credit_card", start, card_end)
    return None


def _thousands_card(data: bytes, shape: bytes, at: int) -> Hit | None:
    """A card grouped in thousands, as number formatting writes a card stored as a number:
    ``4,111,111,111,111,111`` (``f"{n:,}"``), ``4 111 111 111 111 111``, ``4.111.111.111.111.111``,
    ``4'111'111'111'111'111``, ``4_111_111_111_111_111``, tabs between the groups. A first group
    of 1-3 digits, then groups of exactly three after one and the same separator; past leading
    zeros (``f"{n:030,}"``) 13-19 digits a card may start with, passing Luhn. A fraction after
    a decimal point or comma other than the separator (``f"{x:,.2f}"``) goes with the number,
    as in ``_float_cards``. Nothing may glue it to its neighbours, and the separator joins as
    ``-`` and ``.`` do: a further ``,1`` or ``,1234`` makes it some longer number.

    ``at`` is where ``_DIGIT_LED`` found three digits and three groups after them: the first
    group, or (a separator and 1-3 digits before it) the second. A run of groups is tried
    from its first group only; the search then resumes after it, or past its first group."""
    separator = data[at + 3]
    joiners = _THOUSANDS_JOINERS[separator]
    start = at
    if at >= 2 and data[at - 1] == separator and data[at - 2] in _DIGITS:
        head = data[max(0, at - 5) : at - 1]
        start = at - 1 - (len(head) - len(head.rstrip(b"0123456789")))
    # Before reading the groups (a long run of them is tried group by group): a number that
    # goes on before, with a first group of four digits or more, or a group before this one.
    if at - start > 4 or (
        start > 0
        and (
            data[start - 1] in _ALNUM
            or (data[start - 1] in joiners and start > 1 and data[start - 2] in _DIGITS)
        )
    ):
        return None
    end = _THOUSANDS_GROUPS.match(shape, at + 3).end()  # type: ignore[union-attr]
    card_end = end
    if end + 1 < len(data) and data[end] in b".," and data[end] != separator and data[end + 1] in _DIGITS:
        card_end = _digit_run_end(data, end + 1)
    digits = data[start:end].translate(_KEEP_ALL, joiners[2:])  # without the separator
    if _isolated(data, start, card_end, joiners) and _is_card(digits.lstrip(b"0")):
        return ("credit_card", start, card_end)
    return None


def _check_ipv4(data: bytes, match: re.Match[bytes]) -> Hit | None:
    start, end = match.span()
    # The match starts at the last digit of the first octet: take up to two more.
    while start > 0 and match.start() - start < 2 and data[start - 1] in _DIGITS:
        start -= 1
    if _isolated(data, start, end, b".") and _address_ok(data[start:end], ipaddress.IPv4Address):
        return ("ip_address", start, end)
    return None


def _check_iban(data: bytes, match: re.Match[bytes]) -> Hit | None:
    start, end = match.span()
    # A grouped IBAN may have swallowed a following 4-character word: drop groups until valid.
    while end - start >= 15:
        candidate = data[start:end].decode("ascii")
        if _isolated(data, start, end, b"") and _iban_ok(candidate.replace(" ", "")):
            return ("iban", start, end)
        if " " not in candidate:
            break
        end = start + candidate.rindex(" ")
    return None


def _check_plus_phone(data: bytes, match: re.Match[bytes]) -> Hit | None:
    start, end = match.span()
    digits = _digits(data[start:end])
    if 10 <= len(digits) <= 15 and digits[0] != 0x30 and _isolated(data, start, end, b"-. "):
        return ("phone", start, end)
    return None


def _check_paren_phone(data: bytes, match: re.Match[bytes]) -> Hit | None:
    end = match.end()
    start = _with_country_code(data, match.start())
    if _nanp_ok(_digits(data[match.start() : end])) and _isolated(data, start, end):
        return ("phone", start, end)
    return None


def _emails(data: bytes, hits: list[Hit]) -> None:
    at = data.find(b"@")
    while at >= 0:
        # The local part: the run of local-part characters right before the '@' (64 at most).
        before = data[max(0, at - 64) : at]
        local = len(before) - len(before.rstrip(_EMAIL_LOCAL_CHARS))
        domain = _EMAIL_DOMAIN.match(data, at + 1) if local else None
        if domain:
            start = at - local
            while start < at and data[start] == 0x2E:  # a local part cannot start with '.'
                start += 1
            if start < at and _isolated(data, start, domain.end(), b""):
                hits.append(("email", start, domain.end()))
        at = data.find(b"@", at + 1)


def _ipv6s(data: bytes, hits: list[Hit]) -> None:
    position = 0
    while (seed := _IPV6_SEED.search(data, position)) is not None:
        left = _HEX_COLON.match(data[max(0, seed.start() - 39) : seed.start()][::-1])
        start = seed.start() - (left.end() if left else 0)
        body = _IPV6_BODY.match(data, seed.start())
        end = body.end() if body else seed.end()
        while end > seed.end() and data[end - 1] == 0x2E:  # a sentence's full stop
            end -= 1
        if (
            _isolated(data, start, end, b"")
            and any(char in _DIGITS for char in data[start:end])
            and _address_ok(data[start:end], ipaddress.IPv6Address)
        ):
            hits.append(("ip_address", start, end))
        position = max(end, seed.start() + 1)


def _digit_run_end(data: bytes, position: int) -> int:
    while position < len(data) and data[position] in _DIGITS:
        position += 1
    return position


def _float_cards(data: bytes, hits: list[Hit]) -> None:
    """Cards written as floats: ``4111111111111111.0``, ``4111111111111111e0`` or
    ``4.111111111111111e15`` is the card a reader (or a JSON or CSV parser, as a JSON leaf's
    number is read, ``jsonpaths.scannable``) reads back, but the card pass sees digits glued
    to a dot or a letter. A token is a run of digits, a dot and digits, an exponent
    (``[eE][+-]?`` digits), or both. One whose exact value has an integer part
    (``_integer_part``: ``4111111111111111.5`` is the card and a half, as a reader takes it),
    or whose value parsed as a double is a whole number (``_parsed_whole``), of 13-19 digits
    that a card may start with and that passes Luhn, and that nothing glues to its
    neighbours, is a card spanning the token. The Rust port (``proxy/native/src/floats.rs``)
    walks the same tokens."""
    position = 0
    while (lead := _FLOAT_LEAD.search(data, position)) is not None:
        start, int_end = lead.start(), lead.end() - 1
        end = frac_end = int_end
        if data[int_end] == 0x2E:  # "."
            end = frac_end = _digit_run_end(data, int_end + 1)
        exponent = b""
        if end < len(data) and data[end] in b"eE":
            sign = end + 1 + (end + 1 < len(data) and data[end + 1] in b"+-")
            exponent_end = _digit_run_end(data, sign)
            if exponent_end > sign:
                exponent, end = data[end + 1 : exponent_end], exponent_end
        if (frac_end == int_end + 1 and not exponent) or end == int_end:
            position = int_end  # "12." or "12e": not a float
            continue
        position = end
        fraction = data[int_end + 1 : frac_end] if frac_end > int_end else b""
        exact = _integer_part(data[start:int_end] + fraction, len(fraction), exponent)
        if (_is_card(exact) or _is_card(_parsed_whole(data[start:end]))) and _isolated(data, start, end):
            hits.append(("credit_card", start, end))


def _is_card(number: bytes | None) -> bool:
    return number is not None and 13 <= len(number) <= 19 and number[0] in b"23456" and _card_ok(number)


def _parsed_whole(token: bytes) -> bytes | None:
    """The digits of the whole number a float parser (a JSON or CSV reader, ``float()``) reads
    ``token`` as, when it reads a whole number below 2**64: ``4111111111111111.1`` rounds to
    the card as a double. Rust's ``f64`` parse rounds the same way (both correctly rounded)."""
    value = float(token)
    if value.is_integer() and value < _LARGEST_WHOLE:
        return str(int(value)).encode("ascii")
    return None


def _integer_part(mantissa: bytes, fraction_digits: int, exponent: bytes) -> bytes | None:
    """The digits of the integer part of ``mantissa`` x 10^(``exponent`` - ``fraction_digits``)
    when it has 1-19 digits (not 0), else None; ``exponent`` is ``[+-]?digits`` or empty. Exact:
    ``4111111111111110.9`` is 4111111111111110 here (a double parse rounds it up)."""
    negative = exponent[:1] == b"-"
    magnitude = exponent.lstrip(b"+-").lstrip(b"0")
    if len(magnitude) > _FLOAT_EXPONENT_DIGITS:
        return None
    value = int(magnitude or b"0")
    shift = (-value if negative else value) - fraction_digits
    significant = mantissa.lstrip(b"0")
    if not significant:
        return None
    if shift >= 0:
        return significant + b"0" * shift if len(significant) + shift <= 19 else None
    kept = len(significant) + shift
    if not 0 < kept <= 19:
        return None  # below 1, or too long
    return significant[:kept]


def builtin_hits(data: bytes, wanted: frozenset[str]) -> list[Hit]:
    """(detector, start, end) of every confirmed candidate of the ``wanted`` built-ins."""
    hits: list[Hit] = []
    shape = data.translate(_SHAPE)
    digits = shape.count(b"0")
    if digits >= 9:  # an SSN's nine is the fewest of the digit-led forms
        _confirmed(_DIGIT_LED, data, shape, _check_digit_led(wanted), hits)
    if digits >= 4 and "ip_address" in wanted and b"0.0" in shape and shape.count(b".") >= 3:
        _confirmed(_IPV4, data, shape, _check_ipv4, hits)
    if digits >= 2 and "iban" in wanted and b"AA00" in shape:
        _confirmed(_IBAN, data, shape, _check_iban, hits)
    if digits >= 10 and "phone" in wanted:
        if b"+0" in shape:
            _confirmed(_PHONE_PLUS, data, shape, _check_plus_phone, hits)
        if b"(000)" in shape:
            _confirmed(_PHONE_PAREN, data, shape, _check_paren_phone, hits)
    if "email" in wanted and b"@" in data:
        _emails(data, hits)
    if digits >= 2 and "credit_card" in wanted and (b"." in data or b"e" in data or b"E" in data):
        _float_cards(data, hits)
    if "secret" in wanted:
        credentials.secret_hits(data, hits)
    if digits and "ip_address" in wanted and data.count(b":") >= 2:
        _ipv6s(data, hits)
    return hits
