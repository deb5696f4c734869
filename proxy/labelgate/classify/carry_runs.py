"""The runs of streamed text that a cut between replies never falls in: pure.

The carry-over (``carryover``) releases streamed text up to ``window`` bytes before its end,
since every match a detector makes fits the window. Some values have no length bound, and a
cut inside one would show two halves no scan calls a value:

- a number-like run (a maximal run of digits, dots, ``e``/``E`` and signs that holds a
  digit): a number written as a float (``4.111111111111111e``, 300 zeros, ``15``) is a card
  whatever its length (``patterns._float_cards``);
- a run of email characters that holds an ``@``: an email's domain has no length bound
  (``patterns._emails``), so ``a@`` and 300 characters of domain cut in two would show two
  halves no scan called an email. (Before its ``@`` a local part is 64 characters at most,
  which the window holds.)
- with the ``secret`` detector on, a run of token characters (letters, digits, ``_ - .`` and
  the ``=`` that pads a JWT's segments) holding a secret's prefix before the cut
  (``credentials.PREFIXES``: ``eyJ``, ``ewo``, ``AKIA``, ``ghp_``...): a JWT has no length
  bound, and a token may be longer than the window.

So a cut moves back to the start of such a run (``run_start``), and text held as one such run
is held on whole while what follows is made of its bytes (``run_of``, ``run_members``,
followed piece by piece by ``RunFollower``). The runs are found by C-level byte operations,
never a Python loop per byte: a stream of digits is held whole, and a loop over it on every
reply costs quadratic time.
"""

from __future__ import annotations

import re
from collections.abc import Container

from labelgate.classify import credentials, patterns

# What a number written as a float is made of (``patterns._float_cards``).
_NUMBER_BYTES = b"0123456789.eE+-"
_DIGIT = re.compile(rb"[0-9]")
# Byte -> its kind, for finding a run with memchr: a digit, another number byte, or other.
_OTHER, _DIGIT_KIND = b"\x00", b"\x02"
_BYTE_KINDS = bytes(2 if 0x30 <= byte <= 0x39 else 1 if byte in _NUMBER_BYTES else 0 for byte in range(256))
# What an email is made of (``patterns._emails``: local part, "@", domain), and byte -> its
# kind: "@", another email byte, or other.
_EMAIL_BYTES = frozenset(patterns._EMAIL_LOCAL_CHARS + b"@")
_AT_KIND = b"\x02"
_EMAIL_KINDS = bytes(2 if byte == 0x40 else 1 if byte in _EMAIL_BYTES else 0 for byte in range(256))
_EMAIL_RUN = bytes(sorted(_EMAIL_BYTES))
# What a token or a JWT is made of, and byte -> whether it is one of those.
_SECRET_BYTES = frozenset(credentials.RUN_BYTES)
_SECRET_KINDS = bytes(1 if byte in _SECRET_BYTES else 0 for byte in range(256))
_LONGEST_PREFIX = max(len(prefix) for prefix in credentials.PREFIXES)


def run_of(held: bytes, secrets: bool) -> bytes:
    """The bytes that extend ``held`` when it is one run a cut never falls in (with
    ``secrets``: the ``secret`` detector scans), else nothing."""
    if not held.lstrip(_NUMBER_BYTES) and _DIGIT.search(held):
        return _NUMBER_BYTES
    if not held.lstrip(_EMAIL_RUN) and b"@" in held:
        return _EMAIL_RUN
    if secrets and not held.lstrip(credentials.RUN_BYTES) and _holds_prefix(held):
        return credentials.RUN_BYTES
    return b""


def run_members(rest: bytes, secrets: bool) -> bytes:
    """For text whose cut falls at the start of ``rest``: the bytes that, appended, cannot
    move that cut forward, since the cut of the longer text falls in ``rest``'s run and moves
    back to its start or before: ``rest`` is one number-like run with a digit, one email run
    with an ``@``, or (with ``secrets``) one token run with a secret's prefix in its first
    bytes. Else nothing."""
    if not rest.lstrip(_NUMBER_BYTES) and _DIGIT.search(rest):
        return _NUMBER_BYTES
    if not rest.lstrip(_EMAIL_RUN) and b"@" in rest:
        return _EMAIL_RUN
    if secrets and not rest.lstrip(credentials.RUN_BYTES) and _holds_prefix(rest[:_LONGEST_PREFIX]):
        return credentials.RUN_BYTES
    return b""


class RunFollower:
    """Whether a text is one run a cut never falls in (``run_of``), followed as pieces are
    appended to it, each piece read once: a held run of megabytes read whole on every reply
    costs quadratic time."""

    __slots__ = ("at", "digit", "email", "end", "number", "prefix", "token")

    def __init__(self) -> None:
        self.number = self.email = self.token = True  # made of such bytes only
        self.digit = self.at = self.prefix = False  # holds a digit, an "@", a secret's prefix
        self.end = b""  # its last bytes, where a secret's prefix may have begun

    def add(self, piece: bytes) -> None:
        """Take the next piece of the text."""
        if self.number and piece.lstrip(_NUMBER_BYTES):
            self.number = False
        self.digit = self.digit or _DIGIT.search(piece) is not None
        if self.email and piece.lstrip(_EMAIL_RUN):
            self.email = False
        self.at = self.at or b"@" in piece
        if self.token and piece.lstrip(credentials.RUN_BYTES):
            self.token = False
        if self.token and not self.prefix:
            joined = self.end + piece
            self.prefix = _holds_prefix(joined)
            self.end = joined[-(_LONGEST_PREFIX - 1) :]

    def run(self, secrets: bool) -> bytes:
        """``run_of`` of the text."""
        if self.number and self.digit:
            return _NUMBER_BYTES
        if self.email and self.at:
            return _EMAIL_RUN
        if secrets and self.token and self.prefix:
            return credentials.RUN_BYTES
        return b""


def run_start(text: bytes, cut: int, secrets: bool) -> int:
    """``cut``, moved back to the start of the number-like run, email-like run or (with
    ``secrets``) secret run that straddles it, until none does."""
    moved = -1
    while cut != moved:
        moved = cut
        cut = _email_start(text, _number_start(text, cut))
        if secrets:
            cut = _secret_start(text, cut)
    return cut


def _secret_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the run of token characters that straddles it when a secret's
    prefix begins in the run before ``cut`` (a token or JWT may go on past it)."""
    if not 0 < cut < len(text) or text[cut - 1] not in _SECRET_BYTES or text[cut] not in _SECRET_BYTES:
        return cut
    marked = text.translate(_SECRET_KINDS)
    start = marked.rfind(_OTHER, 0, cut) + 1
    end = marked.find(_OTHER, cut)
    end = len(text) if end < 0 else end
    return start if _holds_prefix(text[start : min(end, cut + _LONGEST_PREFIX - 1)]) else cut


def _holds_prefix(run: bytes) -> bool:
    """Whether a secret's prefix occurs in ``run`` (C-level searches, one per prefix)."""
    return any(prefix in run for prefix in credentials.PREFIXES)


def _email_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the run of email characters, holding an ``@``, that straddles it."""
    return _run_holding(text, cut, _EMAIL_BYTES, _EMAIL_KINDS, _AT_KIND)


def _number_start(text: bytes, cut: int) -> int:
    """``cut``, or the start of the number-like run (``_NUMBER_BYTES``, with a digit) that
    straddles it. (A line of dashes or "eee" is no number: the window's cut stands.)"""
    return _run_holding(text, cut, _NUMBER_BYTES, _BYTE_KINDS, _DIGIT_KIND)


def _run_holding(text: bytes, cut: int, members: Container[int], kinds: bytes, needed: bytes) -> int:
    """``cut``, or the start of the run of ``members`` that straddles it when the run holds a
    byte ``kinds`` maps to ``needed`` (other members map to 1, anything else to 0). C-level
    byte operations only: the run may be megabytes of digits."""
    if not 0 < cut < len(text) or text[cut - 1] not in members or text[cut] not in members:
        return cut
    marked = text.translate(kinds)
    start = marked.rfind(_OTHER, 0, cut) + 1
    end = marked.find(_OTHER, cut)
    return start if marked.find(needed, start, len(text) if end < 0 else end) >= 0 else cut
