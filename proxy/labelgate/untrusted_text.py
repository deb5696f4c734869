"""Text people write (a caller's justification, an approver's reason, a model name) as a
service keeps it, and such text as a terminal shows it.

``cleaned`` is applied where such text is accepted (``x-labelgate-justification``, the REST
API's and the web inbox's vote reasons): a control character (C0, DEL and C1, U+0080-U+009F,
among them the one-character CSI U+009B that a REST header decoded as latin-1 can hold), a
line or paragraph separator, or a run of them, becomes one space; a format character (Unicode
category Cf: bidi overrides and isolates such as U+202E, zero-width characters) and a lone
surrogate are dropped; the result is trimmed. Text is cleaned rather than refused: a
justification comes with a call that should not fail over it, and a reason typed into the
inbox's text area may hold line breaks.

``shown`` is applied where a terminal gets such text (the approvals CLI, ``make run``'s
call lines): every character
``str.isprintable`` refuses (controls, format characters, separators but the space,
unassigned code points) is written as its Python escape (``\\x1b``, ``\\u202e``), so text
stored before it was cleaned, or sent by another server, cannot move the cursor, erase a
line, set a title or reorder what an approver reads. (``labelgate.logs`` only drops ESC-led
sequences from log lines, which leaves C1 controls, carriage returns and bidi characters.)

``error_line`` is what every command prints after ``error: `` (or a config's path): its
message ``shown`` line by line, so a message that lists problems one a line keeps its lines
while a path, libpq's text or a server's detail inside one cannot set a title or move the
cursor, then `` (REASON)``.

``bounded`` is applied where such text becomes a log field or a span attribute: past a length
it is replaced by that length and a digest (the form ``gateway.record.recorded_text`` gives a
record, so a log line, a span and an audit record name one long text alike).
"""

from __future__ import annotations

import hashlib
import unicodedata

_SPACED = frozenset({"Cc", "Zl", "Zp"})
_DROPPED = frozenset({"Cf", "Cs"})


def cleaned(text: str) -> str:
    """``text`` without control, format and line-separator characters, trimmed (see above)."""
    if text.isprintable():  # False for every character of _SPACED and _DROPPED: nothing to do
        return text.strip()
    kept: list[str] = []
    spaced = False
    for char in text:
        category = unicodedata.category(char)
        if category in _DROPPED:
            continue
        if category in _SPACED:
            if not spaced:
                kept.append(" ")
            spaced = True
            continue
        kept.append(char)
        spaced = False
    return "".join(kept).strip()


def shown(text: str) -> str:
    """``text`` for a terminal: each character that is not printable as its escape."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text
    )


def error_line(message: str, reason: str | None) -> str:
    """``message`` for a terminal, each of its lines ``shown`` (the line breaks between them
    kept), then `` (REASON)`` when there is a reason."""
    said = "\n".join(shown(line) for line in message.split("\n"))
    return f"{said} ({shown(reason)})" if reason is not None else said


# The longest text ``bounded`` keeps as it is (records, log lines and spans alike).
BOUNDED_TEXT = 1024


def bounded(text: str, limit: int = BOUNDED_TEXT) -> str:
    """``text`` if at most ``limit`` characters, else its length and a digest instead (no
    prefix: a long name may be data; the digest is plain sha256, of a text too long to guess)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"<{len(text)} characters, sha256 {digest}>"


def bearer_token_problem(token: str) -> str | None:
    """What keeps ``token`` from travelling in one header as a bearer token does (printable
    ASCII, no spaces), in words for the command that took it; None when nothing does. A
    control character would split the header; anything else failed late, in words about
    something else (an encoding error, an invalid-metadata status, a JSON answer)."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in token):
        return "--token (or LABELGATE_TOKEN) holds a control character (a newline?)"
    if not all("!" <= char <= "~" for char in token):
        return (
            "--token (or LABELGATE_TOKEN) holds a space or a character outside ASCII: "
            "a bearer token (a JWT) is printable ASCII"
        )
    return None
