"""``markup.rendered`` reads a text in time linear in its length (found by review, rev-cpu 1:
its regular expressions ran from every opener that never closes to the end of the text, and
a 64 KiB element of ``1<a `` repeated cost 20 s of the gateway's event loop), and what it
shows is what they showed: the regular expressions are kept here as the reference."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from labelgate.classify import markup
from labelgate.classify.markup import rendered

# The reference: ``rendered`` as regular expressions, before it read each text once.
_COMMENT = re.compile(rb"<!--(?:-?>|.*?--!?>)|<(?:[!?]|/(?![A-Za-z]))[^>]*>", re.DOTALL)
_ATTRIBUTES = rb"""(?>[^>"'=]+|=[ \t\n\f\r]*"[^"]*"|=[ \t\n\f\r]*'[^']*'|[="'])*"""
_HIDDEN_ELEMENT = re.compile(
    rb"<(script|style|template|title|noscript)\b" + _ATTRIBUTES + rb">.*?</\1\s*>"
    rb"|<([A-Za-z][A-Za-z0-9]*)\b(?=[^>]*(?:\shidden\b|display\s*:\s*none|visibility\s*:\s*hidden))"
    + _ATTRIBUTES
    + rb">.*?</\2\s*>",
    re.DOTALL | re.IGNORECASE,
)
_TAG = re.compile(rb"<(/?)([A-Za-z][A-Za-z0-9]*)" + _ATTRIBUTES + rb">")
_STYLED = re.compile(rb"\sstyle\s*=|<style\b", re.IGNORECASE)
_IMAGE = re.compile(rb"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK = re.compile(rb"\[([^\]\n]*)\]\([^)\n]*\)")
_REFERENCE = re.compile(rb"(?<!\\)\[([^\]\n]*)\]\[[^\]\n]*\]")
_BRACKETED = re.compile(rb"(?<!\\)\[([^\]\n]*)\]")
_DEFINITION = re.compile(rb"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)
_ESCAPED = re.compile(rb"\\([!-/:-@\[-`{-~])")
_UNDERSCORES = re.compile(rb"(?<![A-Za-z0-9_])_+|_+(?![A-Za-z0-9_])")
_BLOCKS = markup._BLOCKS
_CELLS = markup._CELLS


def _reference_laid_out(tag: re.Match[bytes]) -> bytes:
    name = tag.group(2).lower()
    if name in _BLOCKS:
        return b"\n"
    return b"\t" if name in _CELLS and not tag.group(1) else b""


def _reference_unmarked(text: bytes) -> bytes:
    text = text.translate(None, b"*~`")
    return _UNDERSCORES.sub(b"", text) if b"_" in text else text


def reference_rendered(text: bytes) -> bytes:
    if b"<" in text:
        text = _COMMENT.sub(b"", text)
        text = _HIDDEN_ELEMENT.sub(b"", text)
        text = _TAG.sub(b"" if _STYLED.search(text) else _reference_laid_out, text)
    if b"](" in text:
        text = _IMAGE.sub(b"", text)
        text = _LINK.sub(rb"\1", text)
    if b"]" in text:
        text = _REFERENCE.sub(rb"\1", text)
        if _DEFINITION.search(text):
            text = _BRACKETED.sub(rb"\1", text)
    if b"\\" not in text:
        return _reference_unmarked(text)
    parts = _ESCAPED.split(text)
    parts[::2] = map(_reference_unmarked, parts[::2])
    return b"".join(parts)


# Each pass beside the expression it replaces.
PASSES: list[tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [
    (markup._without_comments, lambda text: _COMMENT.sub(b"", text)),
    (markup._without_hidden_elements, lambda text: _HIDDEN_ELEMENT.sub(b"", text)),
    (lambda text: markup._without_tags(text, False), lambda text: _TAG.sub(_reference_laid_out, text)),
    (lambda text: markup._without_tags(text, True), lambda text: _TAG.sub(b"", text)),
    (markup._without_images, lambda text: _IMAGE.sub(b"", text)),
    (markup._without_links, lambda text: _LINK.sub(rb"\1", text)),
    (lambda text: markup._without_brackets(text, True), lambda text: _REFERENCE.sub(rb"\1", text)),
    (lambda text: markup._without_brackets(text, False), lambda text: _BRACKETED.sub(rb"\1", text)),
    (lambda text: markup._UNDERSCORES.sub(b"", text), lambda text: _UNDERSCORES.sub(b"", text)),
]

# Markup's bytes, digits, letters and the words the passes look for, so that comments, tags,
# attributes, hidden elements, links and their unclosed halves turn up side by side.
PIECES = [
    *(bytes([code]) for code in b"<>!?/-=\"' \t\n[]()\\*_~`1a9ZB\x80"),
    *b"<!-- --> --!> <!--> <!---> </ <? <! <a <p </p> <td> </td> <br/> <b <b_ </b> <div <scRipt> </script> "
    b"<style> </style > <title> </title> <noscript> <template> </x> hidden HIDDEN display:none "
    b"visibility:hidden style= =' =\" ![ ]( ][ [r]: \\[ \\* __ 4111".split(),
]
TEXTS = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)
CORNERS = [
    b"<p hidden>1</p>",
    b"<a b='>' c=\"<\">1</a>",
    b'<script a="</script>">1</script>2',
    b"<div style='display : none'>1</div>2",
    b"<visibility: hidden>1</visibility>",
    b"<b_ hidden>1</b_></b>",
    b"<!---->1<!-->2<!--->3<!--x--!>4<!--",
    b"</1>2</a 3<? 4 <! 5",
    b"1[a][b] \\[c][d] [e]\n[f]: x [g]",
    b"![a](b)[c](d)![e](f\n)",
    b"a__b _c d_ e___1 ___",
    # Where a C-level reading meets another opener first: the opener read one by one.
    b"1<a b='<'>2<c <d>3",
    b"1[a](b[c)2 ![d](e[f)3",
    b"1[a][b[c]2 [d[e]",
]


@contextmanager
def one_by_one(really: bool = True) -> Iterator[None]:
    """Every pass reads its openers one at a time, as it does where one of them never closes
    (not one C-level substitution)."""
    with ExitStack() as stack:
        if really:
            stack.enter_context(mock.patch.object(markup, "_comments_close", lambda text: False))
            for guard in ("_OPEN_TAG", "_OPEN_LINK", "_OPEN_BRACKET"):
                stack.enter_context(mock.patch.object(markup, guard, re.compile(b"")))
        yield


@settings(max_examples=3000, deadline=None)
@given(TEXTS, st.booleans())
def test_rendered_shows_what_the_regular_expressions_showed(text: bytes, slow: bool) -> None:
    with one_by_one(slow):
        assert rendered(text) == reference_rendered(text)


@pytest.mark.parametrize("slow", [False, True], ids=["whole", "one_by_one"])
@pytest.mark.parametrize("text", CORNERS)
def test_rendered_shows_what_the_regular_expressions_showed_at_corners(text: bytes, slow: bool) -> None:
    with one_by_one(slow):
        assert rendered(text) == reference_rendered(text)
        for new, old in PASSES:
            assert new(text) == old(text)


@settings(max_examples=3000, deadline=None)
@given(TEXTS, st.integers(0, len(PASSES) - 1), st.booleans())
@example(b"<visibility: hidden>1</visibility>", 1, True)
def test_each_pass_drops_what_its_regular_expression_dropped(text: bytes, index: int, slow: bool) -> None:
    new, old = PASSES[index]
    with one_by_one(slow):
        assert new(text) == old(text)


# What each C-level substitution (and the search asking whether it may read the text) reads
# from an opener: to the next opener (that one included where it says so), never further.
# Then no byte is read from more than two openers: linear, whatever follows.
BOUNDED = [
    (markup._SIMPLE_TAG, b"<", 1),
    (markup._OPEN_TAG, b"<", 1),
    (markup._IMAGE_SIMPLE, b"[", 2),
    (markup._LINK_SIMPLE, b"[", 1),
    (markup._OPEN_LINK, b"[", 1),
    (markup._REFERENCE_SIMPLE, b"[", 2),
    (markup._BRACKETED_SIMPLE, b"[", 1),
    (markup._OPEN_BRACKET, b"[", 1),
]


@settings(max_examples=1000, deadline=None)
@given(TEXTS)
@example(b"<a b='<'>")
@example(b"[a](b[c)]")
@example(b"[a][b[c]")
def test_no_substitution_reads_past_the_next_opener(text: bytes) -> None:
    for pattern, opener, openers in BOUNDED:
        for start in range(len(text)):
            limit = start
            for _ in range(openers):
                limit = text.find(opener, limit + 1)
                limit = len(text) if limit < 0 else limit
            found, bounded = pattern.match(text, start), pattern.match(text, start, limit + 1)
            assert (found and found.span()) == (bounded and bounded.span()), (pattern.pattern, start)


@settings(max_examples=2000, deadline=None)
@given(TEXTS)
@example(b"<!-- 1 --> <!-- 2")
@example(b"<! 1 > <? 2")
def test_comments_are_read_whole_only_where_every_one_closes(text: bytes) -> None:
    # Where ``_comments_close`` says so, ``_COMMENT`` is tried at no opener it does not close
    # (each tried reads to its end, then the next): its substitution reads each byte once.
    if not markup._comments_close(text):
        return
    for start in (found.start() for found in markup._COMMENT_START.finditer(text)):
        assert markup._COMMENT.match(text, start), start
        if text.startswith(b"<!--", start):
            assert re.compile(rb"<!--(?:-?>|.*?--!?>)", re.DOTALL).match(text, start), start


@contextmanager
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the scans of ``rendered``'s passes (``markup._seek``): how many, and how many
    bytes they passed over."""
    totals = [0, 0]
    seek = markup._seek

    def counting(stop: re.Pattern[bytes], text: bytes, start: int) -> int:
        found = seek(stop, text, start)
        totals[0] += 1
        totals[1] += found - start + 1
        return found

    with monkeypatch.context() as patched:
        patched.setattr(markup, "_seek", counting)
        yield totals


# Openers next to a digit that never close, each repeated: every one of them a regular
# expression followed to the end of the text.
UNCLOSED = [
    b"1<a ",
    b'1<a b="',
    b"1<a b='",
    b"1<a =",
    b"1<!--",
    b"1<!",
    b"1</1",
    b"1<?",
    b"1<script>",
    b"1<p hidden>",
    b"1<p hidden",
    b"1<a1 hidden>",
    b"1[",
    b"1[x](",
    b"1![x](",
    b"1[x][",
    b"1[]",
    b"1<a b='>",
]
SIZE = 64 * 1024


@pytest.mark.parametrize("unit", UNCLOSED, ids=repr)
@pytest.mark.parametrize("suffix", [b"", b"]", b"\n[a]: x"], ids=["alone", "bracket", "definition"])
def test_rendered_reads_each_byte_a_bounded_number_of_times(
    unit: bytes, suffix: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (unit * (SIZE // len(unit) + 1))[:SIZE] + suffix
    with counted(monkeypatch) as totals:
        shown = rendered(text)
    scans, passed = totals
    assert shown, "rendered"
    assert scans <= 8 * len(text), "scans: a bounded number per byte"
    assert passed <= 8 * len(text), "bytes passed over: each a bounded number of times"


def test_distinct_unclosed_names_read_each_byte_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each hidden element's name its own: its end tag looked for once per text, not per name.
    text = b"".join(b"1<a%d hidden>" % index for index in range(SIZE // 12)) + b"</a1>"
    with counted(monkeypatch) as totals:
        rendered(text)
    assert totals[0] <= 8 * len(text) and totals[1] <= 8 * len(text)


def test_no_run_of_underscores_is_read_again_from_within() -> None:
    # A match that may start within a run read the run again from each of its bytes
    # (quadratic: ``a`` + 32 KiB of ``_`` + ``a``, 5.8 s): the byte before a start settles it.
    text = b"1* a" + b"_" * 64 + b"a _ __1"
    for start, byte in enumerate(text):
        if start and byte == ord("_") and text[start - 1] == ord("_"):
            assert markup._UNDERSCORES.match(text, start, start + 1) is None, start
