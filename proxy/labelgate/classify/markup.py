"""Text as a renderer shows it: HTML tags and comments, and Markdown's inline markup, show
nothing. Pure.

A browser shows ``ssn 123<b></b>-45-6789`` and ``card 4111<!---->1111<!---->1111<!---->1111``
as the SSN and the card, and every Markdown renderer (a chat UI showing a model's answer)
shows ``123\\-45\\-6789``, ``12**3**-45-6789`` and ``12`3`-45-6789`` so too: markup between a
value's characters splits it past detectors that read text as written. ``rendered`` is the
text with that markup dropped: HTML comments (and the bogus ones, ``<!x>``, ``<?x>``,
``</1>``), tags (a quoted attribute value may hold ``>``), the content of elements a browser
never shows (``script``, ``style``, ``template``, ``title``, ``noscript``, and any with a
``hidden`` attribute or a ``display:none`` style), Markdown's backslash escapes of
punctuation, its emphasis, strikethrough and code markers (``*``, ``_``, ``~``, backticks:
every one, paired or not, so that a piece of a text renders as it does within the whole;
but an underscore between two letters or digits, which CommonMark never reads as one),
links, inline or by reference (their text kept: the brackets of any ``[text]`` and of a
``[label]`` after it are dropped, a definition line's too), and inline images (nothing). A
tag that starts a block or a line (``<p>``, ``<br>``, ``<div>``, ``<li>``) reads as a
newline, a table cell's as a tab, as a browser lays them out (``innerText``), unless the
text holds a style (an attribute, an element), which may make any of them inline: then every
tag reads as nothing. A superset of what a renderer drops, in one reading: a value it shows
that a renderer does not only masks more.

Only text where markup sits next to a digit (or a separator beside one, or a byte past
ASCII: another script's digit) needs the reading (``may_render``). Every text buffer of a
reply is asked: with the native extension, one pass that copies nothing
(``labelgate_native.may_render``, the same answer; in Python, a translated copy and a regular
expression's search cost the benchmark's 10,000-row reply 3 ms, 0.3 µs a row); else a
C-level translate for text without a markup byte or with underscores only within words (most
text), and a regular expression's search for the rest. ``folding.hidden_by_folding`` scans
the reading beside the folded one (``folding.rendered_reading``), and every path that reads
folded or decoded text (tensor elements, JSON elements, message strings, parameters, output
names, streamed and routed text) reads it: a value only it shows that no raw detection
covers spans the whole text. Not read: markup between letters (``jo<b></b>hn@example.com``),
whitespace a browser collapses (``123 <b></b> 45 6789``), styles set elsewhere in a page.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from labelgate.native import NativeSwitch, raise_if_panic


class GateKernel(Protocol):
    """What the extension offers here (``proxy/native/src/markup.rs``)."""

    def may_render(self, text: bytes, /) -> bool: ...

    def may_hide(self, text: bytes, /) -> bool: ...


# The native gates (``may_render`` here, ``folding.may_hide``): the Python code below is the
# reference and the fallback; tests compare the two (``gates_forced``).
GATES: NativeSwitch[GateKernel] = NativeSwitch(
    lambda module: hasattr(module, "may_render") and hasattr(module, "may_hide")
)
gates_forced = GATES.forced

# Bytes that show markup ``rendered`` drops may be there: a tag's or comment's brackets,
# emphasis and code markers, a backslash, a link's ``]`` (its ``)`` is everywhere in prose).
MARKUP_BYTES: Final = b"<>*~`\\[]_"
# What ``may_render`` looks at first, one C-level pass: letters and digits read as ``a``, an
# underscore as itself, the other markup bytes and bytes past ASCII past ASCII, the rest as a
# space. An underscore with ``a`` on both sides is within a word.
_GATE: Final = bytes(
    ord("a")
    if chr(code).isascii() and chr(code).isalnum()
    else code
    if code == ord("_")
    else 0x80
    if code in MARKUP_BYTES or code >= 0x80
    else ord(" ")
    for code in range(256)
)
# Markup matters to a detector next to a digit (or a byte past ASCII: another script's
# digit), or next to a separator detectors read beside one: ``3<``, ``>1``, ``2*``, ``3-<``,
# ``>-4``, ``3\\-``. Not next to letters or spaces alone: ``see <b>bold</b>, and`` asks for
# nothing, and a space on both sides of markup joins nothing (two spaces are no separator).
# Nor an underscore between two letters or digits (``sk_live_5``, ``v1_2``), which CommonMark
# never reads as emphasis.
_DIGIT: Final = rb"[0-9\x80-\xff]"
_SEPARATOR: Final = rb"[.,\-+/()@]"
_OPENER: Final = rb"[<*~`\[]"  # a tag's or comment's start, a marker, a link's start
_CLOSER: Final = rb"[>*~`)]"  # a tag's or comment's end, a marker, a link's end
_PUNCTUATION: Final = rb"[!-/:-@\[-`{-~]"  # what a backslash escapes
# One markup byte, then where it stands, looked at around it: the search is one C-level scan
# for the markup bytes (a pattern opening with a character set; alternatives that each open
# with one would be tried at every byte), and most text has few.
NEAR_VALUE: Final = re.compile(
    rb"[<>*_~`\\\[)](?:(?<!_)(?:"
    # after a digit, or a digit and a separator: an opener, an escape
    rb"(?<=" + _DIGIT + _OPENER + rb")|(?<=" + _DIGIT + _SEPARATOR + _OPENER + rb")"
    rb"|(?<=" + _DIGIT + rb"\\)(?=" + _PUNCTUATION + rb")"
    rb"|(?<=" + _DIGIT + _SEPARATOR + rb"\\)(?=" + _PUNCTUATION + rb")"
    # before one: a closer, a backslash (``\\-4`` escapes the separator)
    rb"|(?<=" + _CLOSER + rb")(?=" + _SEPARATOR + rb"?" + _DIGIT + rb")"
    rb"|(?<=\\)(?=" + _SEPARATOR + rb"?" + _DIGIT + rb")"
    # an underscore, but one between two letters or digits
    rb")|(?<=_)(?:(?<=" + _DIGIT + rb"_)(?![A-Za-z0-9])|(?<=" + _DIGIT + _SEPARATOR + rb"_)"
    rb"|(?<![A-Za-z0-9]_)(?=" + _DIGIT + rb")|(?=" + _SEPARATOR + _DIGIT + rb")))"
)

# HTML comments: ``<!-->`` and ``<!--->`` close at once, ``--!>`` closes one too; and bogus
# comments (``<!x>``, ``<?x>``, ``</`` and no letter), which a browser drops to the next ``>``.
_COMMENT: Final = re.compile(rb"<!--(?:-?>|.*?--!?>)|<(?:[!?]|/(?![A-Za-z]))[^>]*>", re.DOTALL)
# Attributes, atomic (linear time): a quoted value may hold ``>``; a quote not after ``=`` is
# a character of a name, as HTML reads it.
_ATTRIBUTES: Final = rb"""(?>[^>"'=]+|=[ \t\n\f\r]*"[^"]*"|=[ \t\n\f\r]*'[^']*'|[="'])*"""
# Elements whose content a browser never shows, to their first end tag of the same name.
_HIDDEN_ELEMENT: Final = re.compile(
    rb"<(script|style|template|title|noscript)\b" + _ATTRIBUTES + rb">.*?</\1\s*>"
    rb"|<([A-Za-z][A-Za-z0-9]*)\b(?=[^>]*(?:\shidden\b|display\s*:\s*none|visibility\s*:\s*hidden))"
    + _ATTRIBUTES
    + rb">.*?</\2\s*>",
    re.DOTALL | re.IGNORECASE,
)
_TAG: Final = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*)" + _ATTRIBUTES + rb">")
# Tags a browser lays out on a line of their own (innerText: a newline), and table cells (a tab).
_BLOCKS: Final = frozenset(
    b"address article aside blockquote br caption dd details dialog div dl dt fieldset figcaption "
    b"figure footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table "
    b"tbody tfoot thead tr ul".split()
)
_CELLS: Final = frozenset((b"td", b"th"))
_STYLED: Final = re.compile(rb"\sstyle\s*=|<style\b", re.IGNORECASE)

# Markdown: an image (its alt text is an attribute: nothing shows), a link (its text shows),
# a backslash before ASCII punctuation (the punctuation shows), emphasis, strikethrough and
# code markers (nothing shows).
_IMAGE: Final = re.compile(rb"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK: Final = re.compile(rb"\[([^\]\n]*)\]\([^)\n]*\)")
# A reference link's text (``[text][label]``, ``[text][]``): its brackets and the label's
# dropped, link or not (a renderer shows at most that text there, so this only reads more);
# ``[text]`` alone is a link only where a definition line (``[text]: url``) makes it one:
# then every bracketed text loses its brackets. Not otherwise: a JSON array's brackets
# dropped moved its values, and a value the raw scan had found looked new (masked whole).
_REFERENCE: Final = re.compile(rb"(?<!\\)\[([^\]\n]*)\]\[[^\]\n]*\]")
_BRACKETED: Final = re.compile(rb"(?<!\\)\[([^\]\n]*)\]")
_DEFINITION: Final = re.compile(rb"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)
_ESCAPED: Final = re.compile(rb"\\([!-/:-@\[-`{-~])")
_MARKERS: Final = b"*~`"
# Underscores but those between two letters or digits (``snake_case``, ``v1_2``), which
# CommonMark never reads as emphasis.
_UNDERSCORES: Final = re.compile(rb"(?<![A-Za-z0-9_])_+|_+(?![A-Za-z0-9_])")


def may_render(text: bytes) -> bool:
    """Whether ``rendered`` may show ``text`` otherwise than as written in a way that matters
    to a detector: markup next to a character a value is made of (``NEAR_VALUE``). One native
    pass when the extension is on; else a few C-level passes for ASCII text without a markup
    byte or with underscores only within words (``snake_case``, ``sk_live_5``, most text), a
    regular expression's search for the rest."""
    kernel = GATES.kernel
    if GATES.on and kernel is not None and type(text) is bytes:
        try:
            return kernel.may_render(text)
        except BaseException as error:
            raise_if_panic(error)
            raise
    mapped = text.translate(_GATE)
    if mapped.isascii() and (_UNDERSCORE not in mapped or _FLANKING.search(mapped) is None):
        return False
    return NEAR_VALUE.search(text) is not None


_UNDERSCORE: Final = ord("_")  # an int: ``in`` finds it with memchr
# In ``_GATE``'s reading, an underscore not within a word: not before or not after an ``a``
# (a letter or a digit). Opening with the underscore, the search jumps from one to the next.
_FLANKING: Final = re.compile(rb"_(?:(?!a)|(?<!a_))")


def rendered(text: bytes) -> bytes:
    """``text`` as a renderer shows it (see the module docstring)."""
    if b"<" in text:
        text = _COMMENT.sub(b"", text)
        text = _HIDDEN_ELEMENT.sub(b"", text)
        # A style (an attribute, an element) may make any block inline: then every tag
        # reads as nothing, which joins more.
        text = _TAG.sub(b"" if _STYLED.search(text) else _laid_out, text)
    if b"](" in text:
        text = _IMAGE.sub(b"", text)
        text = _LINK.sub(rb"\1", text)
    if b"]" in text:
        text = _REFERENCE.sub(rb"\1", text)
        if _DEFINITION.search(text):
            text = _BRACKETED.sub(rb"\1", text)
    if b"\\" not in text:
        return _unmarked(text)
    # An escaped character shows as itself, a marker too: the pieces between escapes lose
    # their markers, the escaped characters (every other part of the split) are kept.
    parts = _ESCAPED.split(text)
    parts[::2] = map(_unmarked, parts[::2])
    return b"".join(parts)


def _unmarked(text: bytes) -> bytes:
    """``text`` without Markdown's emphasis, strikethrough and code markers."""
    text = text.translate(None, _MARKERS)
    return _UNDERSCORES.sub(b"", text) if b"_" in text else text


def _laid_out(tag: re.Match[bytes]) -> bytes:
    """What a browser lays out for ``tag``: a newline for a block's, a tab before a cell
    (``innerText``), else nothing."""
    name = tag.group(2).lower()
    if name in _BLOCKS:
        return b"\n"
    return b"\t" if name in _CELLS and not tag.group(1) else b""
