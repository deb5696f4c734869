"""Streamed text held on across replies, read once, piece by piece: pure.

The carry-over (``carryover``) holds some text on as more of it arrives: one run a cut never
falls in (``carry_runs``), text ending in a PEM block whose END marker has not come, text held
whole (not ASCII, escapes, JSON). What it needs to know of such text changes only with what
is appended, and an untrusted upstream can stream megabytes of it: read whole again on every
reply, it costs quadratic time. So what the text is (a run, an open block, a JSON object) is
followed as pieces are appended, each piece read with at most a few bytes before it, and a
JSON object is parsed once, when its nesting says its outermost object closed.
"""

from __future__ import annotations

import re

from labelgate.classify import credentials, jsonpaths
from labelgate.classify.carry_runs import RunFollower

# A JSON text's structure, for following its nesting without parsing it (``ObjectScan``).
_STRING_BODY = re.compile(rb'(?:[^"\\]|\\.)*', re.DOTALL)
_STRUCTURE = re.compile(rb'"|[{\[]+|[}\]]+')
_JSON_SPACE = b" \t\n\r"


class ObjectScan:
    """Where a text that opens like a JSON object stands: inside a string or not, and how
    deep. Fed piece by piece (a regular expression a string or a run of brackets, never a
    Python step per byte of a string), it tells when the outermost object closes. Only then
    can the text be a whole object, and if it is not then, no later text is: a parser reads
    every valid text's structure as this does, so the close is at the same place in it."""

    __slots__ = ("depth", "escaped", "in_string")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def closes(self, data: bytes) -> bool:
        """Take the next bytes of the text; whether the outermost object closed in them."""
        at, size = 0, len(data)
        while at < size:
            if self.in_string:
                if self.escaped:
                    self.escaped, at = False, at + 1
                    continue
                body = _STRING_BODY.match(data, at)
                at = body.end() if body is not None else at
                if at < size:  # a closing quote, or a backslash that ends the data
                    self.in_string = data[at] != 0x22
                    self.escaped = self.in_string
                    at += 1
                continue
            found = _STRUCTURE.search(data, at)
            if found is None:
                return False
            at, token = found.end(), found[0]
            if token == b'"':
                self.in_string = True
            elif token[0] in b"{[":
                self.depth += len(token)
            else:
                self.depth -= len(token)
                if self.depth <= 0:
                    return True
        return False


# A text held on whose first bytes are JSON space: whether it opens like an object is not known.
_UNSEEN = "unseen"


class HeldReader:
    """What the carry-over reads of an element's held text, followed as pieces are appended
    to it (``CarryOver._held_on``), each piece read once: whether the text is one run a cut
    never falls in (``carry_runs.RunFollower``), the END marker a PEM block it leaves open
    awaits (``credentials.PemScan``), and where it stands as a JSON object (``ObjectScan``; an
    object's close is the one place it may become one). Read whole from the held text once,
    the first time it is held on; ``CarryOver._carry``, which cuts the text again, drops it."""

    __slots__ = ("object", "pem", "runs")

    def __init__(self, held: bytes | bytearray) -> None:
        self.runs = RunFollower()
        self.object: ObjectScan | str | None = _UNSEEN
        self.pem = credentials.PemScan()
        self.add(bytes(held))

    def add(self, piece: bytes) -> bool:
        """Take the next piece; whether the text's outermost object closed in it."""
        self.runs.add(piece)
        scan = self.object
        if scan is _UNSEEN:
            if only_space(piece):
                return False
            # As ``jsonpaths.opens_object`` reads the text: its first byte past JSON space.
            scan = ObjectScan() if piece.lstrip(_JSON_SPACE)[:1] == b"{" else None
        if not isinstance(scan, ObjectScan):
            self.object = None
            return False
        closed = scan.closes(piece)
        self.object = None if closed else scan  # one object now, or never (``ObjectScan``)
        return closed

    def run(self, secrets: bool) -> bytes:
        """``carry_runs.run_of`` of the text."""
        return self.runs.run(secrets)


def joined_end(tail: bytearray, piece: bytes, before: int) -> bytes:
    """``piece`` with up to ``before`` bytes held before it: where a marker may now end."""
    return b"".join((tail[max(0, len(tail) - before) :], piece)) if before > 0 else piece


def only_space(text: bytes) -> bool:
    """Whether ``text`` is JSON space only: whether it opens like an object is not known yet."""
    return not text.strip(_JSON_SPACE)


def object_scan(text: bytes) -> ObjectScan | None:
    """How ``text``, held whole, stands as a JSON object (``ObjectScan``): None when it does
    not open like one, or its outermost object closed already (its reply parsed it then)."""
    if not jsonpaths.opens_object(text):
        return None
    scan = ObjectScan()
    return None if scan.closes(text) else scan
