"""When a piece appended to a held path's text leaves the path's cut where it was: pure.

``SplitValues`` cuts a path's text again (``CarryOver.cut_point``) only when new text may move
its cut, since cutting reads the whole text. Bytes that extend a run glued to a closed PEM
block's END marker (``glued_run``) do not move it, nor, while a key block holds the cut, its
lines before the END marker, read with the path's last ``AWAITED_END`` bytes; so long as the
text stays one a raw scan can judge (``stays_cuttable``). Apart from ``split_values`` because
they decide when a path is read again, not how a stream is held.
"""

from __future__ import annotations

from labelgate.classify import credentials
from labelgate.classify.carryover import CarryOver
from labelgate.classify.folding import may_hide
from labelgate.classify.jsonpaths import may_escape

# How many of a path's last bytes an appended piece is read with while a key block holds its
# cut (``CarryOver.keeps_cut``): more than the longest END marker.
AWAITED_END = 128


def glued_run(carry: CarryOver, text: bytes, cut: int) -> bytes:
    """For ``text`` cut at ``cut`` by ``carry``: the bytes that, appended, leave the cut where
    it is because a run glued to a closed PEM block's END marker holds it at the block's start
    or before (``-----END RSA PRIVATE KEY-----1111``...), else nothing. The run's match never
    ends and the window's cut falls in it (its first bytes at most one window after the
    block's end), moves back to the run's start inside the END marker (``-`` is a byte of every
    run), and from there to the block's start, which only the block's own bytes and what comes
    before them decide: no other match or run reaches from before a PEM marker past its
    spaces, and custom matches fit the window. So appended bytes of that run (text a raw scan
    can still judge: ``stays_cuttable``) leave the cut where it was; the cut read again on
    every message read the whole text again each time. A token run needs a secret's prefix
    wholly before the window's cut (a number-like run inside it stops the cut only past it)."""
    window_at = len(text) - carry.window
    if window_at <= cut or credentials.NAME not in carry.detectors.names:
        return b""
    block = credentials.last_block(text)
    if block is None:
        return b""
    start, end, awaited = block
    if awaited is not None or cut > start or end >= window_at:
        return b""
    rest = text[end:]
    members = carry.run_members(rest)
    if members:
        return members
    if not rest.lstrip(credentials.RUN_BYTES) and any(
        prefix in text[end:window_at] for prefix in credentials.PREFIXES
    ):
        return credentials.RUN_BYTES
    return b""


def stays_cuttable(text: bytearray, piece: bytes) -> bool:
    """Whether ``piece``, appended to cuttable ``text``, leaves it text a raw scan can judge
    (``CarryOver.cut_point``): it makes no text to fold, no markup next to a value's
    character (``__1__``), no escape. Their tests look a few bytes around a byte, which the
    text's last ``AWAITED_END`` bytes hold. C-level searches over the piece and a few bytes."""
    joined = bytes(text[-AWAITED_END:]) + piece
    return not may_hide(joined) and not may_escape(joined)
