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
text), and a regular expression's search for the rest. ``hidden_values.hidden_by_folding`` scans
the reading beside the folded one (``shown_text.rendered_reading``), and every path that reads
folded or decoded text (tensor elements, JSON elements, message strings, parameters, output
names, streamed and routed text) reads it: a value only it shows that no raw detection
covers spans the whole text. Not read: markup between letters (``jo<b></b>hn@example.com``),
whitespace a browser collapses (``123 <b></b> 45 6789``), styles set elsewhere in a page.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
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


def native_gate(name: str, text: bytes) -> bool | None:
    """The native gate ``name``'s answer for ``text`` (``GateKernel``); None when the extension
    is off or ``text`` is not ``bytes``: the Python code answers then."""
    kernel = GATES.kernel
    if not GATES.on or kernel is None or type(text) is not bytes:
        return None
    try:
        answer: bool = getattr(kernel, name)(text)
    except BaseException as error:
        raise_if_panic(error)
        raise
    return answer


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


# Each pass of ``rendered`` reads its text in time linear in its length, whatever it holds:
# regular expressions that ran from every opener that never closes to the end of the text
# for its closer cost a 64 KiB ``1<a `` repeated 20 s of the event loop (quadratic; found by
# review, rev-cpu 1). Most text is read by one C-level substitution whose every part stops at
# the next opener (a tag's at a ``<``, a link's at a ``[``), so no attempt reads past the
# next one. A search for an opener it would read otherwise than HTML or Markdown does asks
# first (``_OPEN_TAG``, ``_OPEN_LINK``, ``_OPEN_BRACKET``, ``_comments_close``); where there
# is one, the pass reads the text once left to right, as a browser's tokenizer does: each
# forward scan is one ``_seek`` (tests count the bytes they pass over), a closer asked for
# from increasing positions is found once (``_Next``), and the reading of a tag from a
# boundary on is shared by the tags that reach it (``_Tags``). Either way a pass drops what
# those regular expressions dropped (tests compare the two).
_GT: Final = re.compile(rb">")
# HTML comments: ``<!-->`` and ``<!--->`` close at once, ``--!>`` closes one too; and bogus
# comments (``<!x>``, ``<?x>``, ``</`` and no letter), which a browser drops to the next ``>``.
# ``_COMMENT`` reads each byte once where every comment closes (``_comments_close``).
_COMMENT: Final = re.compile(rb"<!--(?:-?>|.*?--!?>)|<(?:[!?]|/(?![A-Za-z]))[^>]*>", re.DOTALL)
_COMMENT_START: Final = re.compile(rb"<(?:[!?]|/(?![A-Za-z]))")
_COMMENT_END: Final = re.compile(rb"--!?>")
# A tag: ``<``, a name, attributes (a quoted value after ``=`` may hold ``>``; a quote not
# after ``=`` is a character of a name, as HTML reads it), ``>``. ``_SIMPLE_TAG`` reads a tag
# as that does, or not at all when it meets a ``<`` first or a quote it cannot close before
# one; ``_OPEN_TAG`` finds such a tag (then ``_Tags`` reads them all).
_TAG_ATTRIBUTES: Final = rb"""(?:[^<>"'=]++|=[ \t\n\f\r]*+(?:"[^"<]*+"|'[^'<]*+'|(?!["']))|["'])*+>"""
_SIMPLE_TAG: Final = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*+)" + _TAG_ATTRIBUTES)
_OPEN_TAG: Final = re.compile(rb"</?[A-Za-z][A-Za-z0-9]*+(?!" + _TAG_ATTRIBUTES + rb")")
_TAG_START: Final = re.compile(rb"</?[A-Za-z]")
_NAME_END: Final = re.compile(rb"[^A-Za-z0-9]")
_ATTRIBUTE_STOP: Final = re.compile(rb"""[>"'=]""")
_ATTRIBUTE_STOPS: Final = frozenset(b""">"'=""")
_NOT_TAG_SPACE: Final = re.compile(rb"[^ \t\n\f\r]")
_QUOTE_END: Final = {ord('"'): re.compile(rb'"'), ord("'"): re.compile(rb"'")}
# Elements whose content a browser never shows, to their first end tag of the same name:
# those named here, and any with a ``hidden`` attribute or a ``display:none`` style before
# its tag's first ``>``. Read in lower case (a copy: C-level, and every search then has a
# byte to look for).
_HIDDEN_NAMES: Final = frozenset((b"script", b"style", b"template", b"title", b"noscript"))
_HIDING: Final = re.compile(rb"\shidden\b|display\s*:\s*none|visibility\s*:\s*hidden")
_HIDDEN_START: Final = re.compile(rb"<(?:script|style|template|title|noscript)")
_START: Final = re.compile(rb"<[a-z]")
_END_TAG: Final = re.compile(rb"</([a-z][a-z0-9]*)\s*>")
_END_TAGS: Final = {name: re.compile(rb"</" + name + rb"\s*>") for name in _HIDDEN_NAMES}
# Tags a browser lays out on a line of their own (innerText: a newline), and table cells (a tab).
_BLOCKS: Final = frozenset(
    b"address article aside blockquote br caption dd details dialog div dl dt fieldset figcaption "
    b"figure footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table "
    b"tbody tfoot thead tr ul".split()
)
_CELLS: Final = frozenset((b"td", b"th"))
_STYLED: Final = re.compile(rb"\sstyle\s*=|<style\b", re.IGNORECASE)

# Markdown: an image (``![alt](url)``: its alt text is an attribute, nothing shows), a link
# (``[text](url)``: its text shows), a backslash before ASCII punctuation (the punctuation
# shows), emphasis, strikethrough and code markers (nothing shows). Brackets and parentheses
# close on their line. The ``_SIMPLE`` expressions read them so, or not at all when they meet
# another ``[`` first, which the ``_OPEN`` ones find (then the pass reads them one by one).
_IMAGE_SIMPLE: Final = re.compile(rb"!\[[^\]\n[]*+\]\([^)\n[]*+\)")
_LINK_SIMPLE: Final = re.compile(rb"\[([^\]\n[]*+)\]\([^)\n[]*+\)")
_OPEN_LINK: Final = re.compile(rb"\[[^\]\n[]*+(?:\]\([^)\n[]*+)?\[")
_IMAGE_START: Final = re.compile(rb"!\[")
_BRACKET: Final = re.compile(rb"\[")
_BRACKET_END: Final = re.compile(rb"[\]\n]")
_PARENTHESIS_END: Final = re.compile(rb"[)\n]")
_BACKSLASH: Final = ord("\\")
# A reference link's text (``[text][label]``, ``[text][]``): its brackets and the label's
# dropped, link or not (a renderer shows at most that text there, so this only reads more);
# ``[text]`` alone is a link only where a definition line (``[text]: url``) makes it one:
# then every bracketed text loses its brackets. Not otherwise: a JSON array's brackets
# dropped moved its values, and a value the raw scan had found looked new (masked whole).
# A bracket after a backslash is escaped.
_REFERENCE_SIMPLE: Final = re.compile(rb"(?<!\\)\[([^\]\n[]*+)\]\[[^\]\n[]*+\]")
_BRACKETED_SIMPLE: Final = re.compile(rb"(?<!\\)\[([^\]\n[]*+)\]")
_OPEN_BRACKET: Final = re.compile(rb"\[[^\]\n[]*+\[")  # a label's too: it opens with one
_DEFINITION: Final = re.compile(rb"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)
_ESCAPED: Final = re.compile(rb"\\([!-/:-@\[-`{-~])")
_MARKERS: Final = b"*~`"
# Underscores but those between two letters or digits (``snake_case``, ``v1_2``), which
# CommonMark never reads as emphasis. A run of them is dropped whole or kept whole: no match
# starts within one (the byte before its first settles it), so a run is read once, not again
# from each of its bytes (quadratic); and each match opens with the underscore, which the
# search looks for alone.
_UNDERSCORES: Final = re.compile(rb"_(?:(?<![A-Za-z0-9_]_)_*+|(?<=[A-Za-z0-9]_)_*+(?![A-Za-z0-9_]))")


def may_render(text: bytes) -> bool:
    """Whether ``rendered`` may show ``text`` otherwise than as written in a way that matters
    to a detector: markup next to a character a value is made of (``NEAR_VALUE``). One native
    pass when the extension is on; else a few C-level passes for ASCII text without a markup
    byte or with underscores only within words (``snake_case``, ``sk_live_5``, most text), a
    regular expression's search for the rest."""
    answer = native_gate("may_render", text)
    if answer is not None:
        return answer
    mapped = text.translate(_GATE)
    if mapped.isascii() and (_UNDERSCORE not in mapped or _FLANKING.search(mapped) is None):
        return False
    return NEAR_VALUE.search(text) is not None


_UNDERSCORE: Final = ord("_")  # an int: ``in`` finds it with memchr
# In ``_GATE``'s reading, an underscore not within a word: not before or not after an ``a``
# (a letter or a digit). Opening with the underscore, the search jumps from one to the next.
_FLANKING: Final = re.compile(rb"_(?:(?!a)|(?<!a_))")


def rendered(text: bytes) -> bytes:
    """``text`` as a renderer shows it (see the module docstring). Linear in its length."""
    if b"<" in text:
        text = _without_hidden_elements(_without_comments(text))
        # A style (an attribute, an element) may make any block inline: then every tag
        # reads as nothing, which joins more.
        text = _without_tags(text, _STYLED.search(text) is not None)
    if b"](" in text:
        text = _without_links(_without_images(text))
    if b"]" in text:
        text = _without_brackets(text, labelled=True)
        if _DEFINITION.search(text):
            text = _without_brackets(text, labelled=False)
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


def _seek(stop: re.Pattern[bytes], text: bytes, start: int) -> int:
    """Where ``stop`` first matches in ``text`` at or after ``start``, else ``len(text)``: one
    C-level scan. Every scan of the passes that read an opener at a time is one call."""
    found = stop.search(text, start)
    return len(text) if found is None else found.start()


class _Next:
    """The next match of ``stop`` at or after a position, asked from positions that never
    decrease: each byte is passed over once, however many openers ask for the same closer
    (or learn that none follows)."""

    __slots__ = ("_asked", "_found", "_stop", "_text")

    def __init__(self, stop: re.Pattern[bytes], text: bytes) -> None:
        self._stop = stop
        self._text = text
        self._asked = len(text) + 1  # nothing asked yet
        self._found = len(text)

    def __call__(self, start: int) -> int:
        if self._asked <= start <= self._found:
            return self._found  # none in [asked, found): none in [start, found) either
        self._asked = start
        self._found = _seek(self._stop, self._text, start)
        return self._found


class _Tags:
    """Where the attributes after a tag's name and its ``>`` end in ``text``: runs of
    ``[^>"'=]``, quoted values after ``=`` (which may hold ``>``), and ``=`` or a quote alone;
    the first ``>`` between them ends the tag, the text's end leaves it open. The reading from
    one of those boundaries on is the same whichever tag reached it, so each is read once
    (``_ends``): tags that never close share one reading to the end."""

    def __init__(self, text: bytes) -> None:
        self._text = text
        self._run = _Next(_ATTRIBUTE_STOP, text)  # from the names, in increasing order
        self._ends: dict[int, int] = {}  # boundary: the end of its tag, -1 for none

    def end(self, start: int) -> int:
        """The end of the tag whose attributes start at ``start`` (after its ``>``); -1 when
        no ``>`` closes it. ``start``: never less than the last one asked."""
        text, ends = self._text, self._ends
        size = len(text)
        at = start if start >= size or text[start] in _ATTRIBUTE_STOPS else self._run(start)
        path = []
        while True:
            known = ends.get(at)
            if known is not None:
                break
            if at >= size:
                known = -1
                break
            byte = text[at]
            if byte == 0x3E:  # >
                known = at + 1
                break
            path.append(at)
            if byte == 0x3D:  # =, a quoted value after it, else itself alone
                quote = _seek(_NOT_TAG_SPACE, text, at + 1)
                closing = size
                if quote < size and text[quote] in _QUOTE_END:
                    closing = _seek(_QUOTE_END[text[quote]], text, quote + 1)
                at = closing + 1 if closing < size else at + 1
            elif byte in _ATTRIBUTE_STOPS:  # a quote alone
                at += 1
            else:  # a run, from right after one of the above
                at = _seek(_ATTRIBUTE_STOP, text, at)
        for each in path:
            ends[each] = known
        return known


def _comments_close(text: bytes) -> bool:
    """Whether every comment ``_COMMENT`` may try in ``text`` closes: no ``<!--`` without a
    ``-->`` or ``--!>`` after it, no opener without a ``>`` after it. Then each of its matches
    reads no further than its end, and it reads each byte once."""
    if _COMMENT_START.search(text) is None:
        return True
    closed = max(text.rfind(b"-->"), text.rfind(b"--!>"))
    if text.find(b"<!--", max(closed - 3, 0)) >= 0:
        return False
    return _COMMENT_START.search(text, max(text.rfind(b">") - 1, 0)) is None


def _without_comments(text: bytes) -> bytes:
    """``text`` without HTML comments, from ``<!--`` to the first ``-->`` or ``--!>`` after it
    (``<!-->`` and ``<!--->`` close at once), and bogus ones (``<!``, ``<?``, ``</`` and no
    letter) to the next ``>``. A comment that never closes is text."""
    if _comments_close(text):
        return _COMMENT.sub(b"", text)
    size = len(text)
    starts, ends, closers = _Next(_COMMENT_START, text), _Next(_COMMENT_END, text), _Next(_GT, text)

    def comment(at: int) -> tuple[int, bytes] | None:
        if text.startswith(b"<!--", at):
            if text.startswith(b">", at + 4):
                return at + 5, b""
            if text.startswith(b"->", at + 4):
                return at + 6, b""
            closer = ends(at + 4)
            if closer < size:
                return closer + (4 if text[closer + 2] == 0x21 else 3), b""  # --!> or -->
        closer = closers(at + 2)  # bogus, <!-- too when no --> follows
        return (closer + 1, b"") if closer < size else None

    return _replaced(text, starts, comment)


def _without_hidden_elements(text: bytes) -> bytes:
    """``text`` without the elements a browser never shows: named so (``_HIDDEN_NAMES``) or
    hidden by an attribute before their tag's first ``>`` (``_HIDING``), each to the first
    end tag of its name after its tag. One that never closes is text."""
    lowered = text.lower()
    hidden = (b"hidden" in lowered or b"none" in lowered) and _HIDING.search(lowered) is not None
    if not hidden and _HIDDEN_START.search(lowered) is None:
        return text
    # Without an attribute hiding, only elements of those names may hide: the others' tags
    # are not asked.
    starts = _Next(_START if hidden else _HIDDEN_START, lowered)
    closers, hiding = _Next(_GT, lowered), _Next(_HIDING, lowered)
    tags = _Tags(text)
    end_tags = _EndTags(lowered)
    size = len(text)

    def element(at: int) -> tuple[int, bytes] | None:
        named = _seek(_NAME_END, lowered, at + 2)
        name = lowered[at + 1 : named]
        if (named == size or text[named] != 0x5F) and (  # a word's end: not an underscore
            name in _HIDDEN_NAMES or (hidden and hiding(named) < closers(named))
        ):
            opened = tags.end(named)
            if opened >= 0:
                end = end_tags.after(name, opened)
                if end >= 0:
                    return end, b""
        return None

    return _replaced(text, starts, element)


class _EndTags:
    """Where the end tags (``</name >``) of a text in lower case start and end, by name: found
    in one pass (end tags never overlap), a pass for each of a few names or one for them all;
    then each element's first one after its tag by bisection."""

    def __init__(self, lowered: bytes) -> None:
        self._lowered = lowered
        self._tags: dict[bytes, tuple[list[int], list[int]]] = {}
        self._every = False  # whether ``_tags`` holds those of every name

    def after(self, name: bytes, start: int) -> int:
        """The end of the first end tag named ``name`` at or after ``start``; -1 if none."""
        tags = self._tags
        if name not in tags:
            if name in _END_TAGS:
                tags[name] = ([], [])
                self._add(name, _END_TAGS[name])
            elif not self._every:
                self._every = True
                self._add(None, _END_TAG)
        starts, ends = tags.get(name, ((), ()))
        index = bisect_left(starts, start)
        return ends[index] if index < len(starts) else -1

    def _add(self, name: bytes | None, pattern: re.Pattern[bytes]) -> None:
        """The end tags ``pattern`` finds, named ``name`` (else as it reads them)."""
        found: dict[bytes, tuple[list[int], list[int]]] = {}
        for tag in pattern.finditer(self._lowered):
            starts, ends = found.setdefault(tag[1] if name is None else name, ([], []))
            starts.append(tag.start())
            ends.append(tag.end())
        for each, spans in found.items():
            self._tags[each] = spans


def _without_tags(text: bytes, inline: bool) -> bytes:
    """``text`` with every tag read as a browser lays it out (``_laid_out``), or as nothing
    when ``inline``. A tag that never closes is text."""
    if _OPEN_TAG.search(text) is None:
        return _SIMPLE_TAG.sub(b"" if inline else _laid_out, text)
    tags = _Tags(text)

    def tag(at: int) -> tuple[int, bytes] | None:
        closing = text[at + 1] == 0x2F
        simple = _SIMPLE_TAG.match(text, at)
        if simple is not None:
            named, end = simple.end(2), simple.end()
        else:
            named = _seek(_NAME_END, text, at + 2 + closing)
            end = tags.end(named)
            if end < 0:
                return None
        return end, b"" if inline else _layout(text[at + 1 + closing : named].lower(), closing)

    return _replaced(text, _Next(_TAG_START, text), tag)


def _without_images(text: bytes) -> bytes:
    """``text`` without Markdown's inline images (``![alt](url)``, on one line)."""
    if _OPEN_LINK.search(text) is None:
        return _IMAGE_SIMPLE.sub(b"", text)
    return _inline(text, image=True)


def _without_links(text: bytes) -> bytes:
    """``text`` with Markdown's inline links (``[text](url)``, on one line) read as their text."""
    if _OPEN_LINK.search(text) is None:
        return _LINK_SIMPLE.sub(rb"\1", text)
    return _inline(text, image=False)


def _inline(text: bytes, image: bool) -> bytes:
    """The left-to-right pass of ``_without_images`` (an image shows nothing) and
    ``_without_links`` (a link shows its text): each closer found once (``_Next``)."""
    size = len(text)
    opener = 2 if image else 1  # ``![`` or ``[``
    brackets, parentheses = _Next(_BRACKET_END, text), _Next(_PARENTHESIS_END, text)

    def inline(at: int) -> tuple[int, bytes] | None:
        bracket = brackets(at + opener)
        if bracket < size and text[bracket] == 0x5D and text.startswith(b"(", bracket + 1):
            parenthesis = parentheses(bracket + 2)
            if parenthesis < size and text[parenthesis] == 0x29:
                return parenthesis + 1, b"" if image else text[at + 1 : bracket]
        return None

    return _replaced(text, _Next(_IMAGE_START if image else _BRACKET, text), inline)


def _without_brackets(text: bytes, labelled: bool) -> bytes:
    """``text`` with the brackets of each ``[text][label]`` dropped, the label too (``labelled``),
    or those of each ``[text]`` (on one line; not after a backslash)."""
    if _OPEN_BRACKET.search(text) is None:
        return (_REFERENCE_SIMPLE if labelled else _BRACKETED_SIMPLE).sub(rb"\1", text)
    size = len(text)
    brackets, labels = _Next(_BRACKET_END, text), _Next(_BRACKET_END, text)

    def bracketed(at: int) -> tuple[int, bytes] | None:
        if at > 0 and text[at - 1] == _BACKSLASH:
            return None
        bracket = brackets(at + 1)
        if bracket >= size or text[bracket] != 0x5D:
            return None
        if not labelled:
            return bracket + 1, text[at + 1 : bracket]
        if text.startswith(b"[", bracket + 1):
            label = labels(bracket + 2)
            if label < size and text[label] == 0x5D:
                return label + 1, text[at + 1 : bracket]
        return None

    return _replaced(text, _Next(_BRACKET, text), bracketed)


def _replaced(text: bytes, starts: _Next, match: Callable[[int], tuple[int, bytes] | None]) -> bytes:
    """``text`` read left to right from each place ``starts`` finds: where ``match(at)`` gives
    ``(end, shown)``, what lies from there to ``end`` shows as ``shown`` and the reading goes
    on from ``end``; elsewhere from the next start. ``text`` itself when nothing matched."""
    size = len(text)
    kept: list[bytes] = []
    done = 0
    at = starts(0)
    while at < size:
        found = match(at)
        if found is None:
            at = starts(at + 1)
            continue
        end, shown = found
        kept += (text[done:at], shown)
        done = end
        at = starts(end)
    if not kept:
        return text
    kept.append(text[done:])
    return b"".join(kept)


def _laid_out(tag: re.Match[bytes]) -> bytes:
    """What a browser lays out for ``tag`` (``_layout``)."""
    return _layout(tag[2].lower(), bool(tag[1]))


def _layout(name: bytes, closing: bool) -> bytes:
    """What a browser lays out for a tag named ``name`` (in lower case): a newline for a
    block's, a tab before a cell (``innerText``), else nothing."""
    if name in _BLOCKS:
        return b"\n"
    return b"\t" if name in _CELLS and not closing else b""
