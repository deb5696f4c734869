"""Content detectors: find sensitive values in free text.

Each built-in detector proposes candidates by shape and confirms them, with python-stdnum's
rules where a checksum or rule set exists (written out over bytes in
``labelgate.classify.patterns`` for speed, and tested value by value against python-stdnum):

============  ==========================================================  ===============
name          candidates                                                  confirmed by
============  ==========================================================  ===============
credit_card   13-19 digits starting 2-6 (ISO/IEC 7812 banking/financial     ``stdnum.luhn``
              industries) past any zero padding (kept in the span),
              contiguous or grouped 4-4-4-4(-n) / 4-6-5 / 4-6-4 with one
              consistent space, tab or dash; in thousands as number
              formatting writes them (1-3 digits, then groups of 3 after
              one of ``, . ' _`` space tab, a fraction may follow); or a
              float token's integer part, or its value as a double
us_ssn        ``ddd-dd-dddd`` or ``ddd dd dddd`` (9 bare digits are too      ``stdnum.us.ssn``
              common to flag)
iban          capital country code, check digits, BBAN; contiguous or in    ``stdnum.iban``
              groups of 4
email         ``local@domain.tld`` (ASCII)                                  shape only
phone         ``+`` then 10-15 digits (E.164, optionally grouped); US        digit count,
              ``(ddd) ddd-dddd``, ``ddd-ddd-dddd``, ``ddd.ddd.dddd`` with     NANP rules
              an optional ``+1``/``1-`` prefix. Bare digit runs never.
ip_address    dotted quads; IPv6 forms with at least one decimal digit      ``ipaddress``
              (``Foo::Bar`` and ``a::b`` in code are valid IPv6 text)
secret        PEM private keys: ``-----BEGIN``, up to three label words     marker shape,
              of 1-9 capitals or digits (RSA, EC, OPENSSH, ENCRYPTED...),   its own END
              ``PRIVATE KEY-----`` or ``PRIVATE KEY BLOCK-----`` (PGP), or  marker
              RFC 4716's ``---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----``
              (ssh.com), through the END marker of the same label and
              kind, else through the end of the text (fail closed; an
              END marker with no block open runs from the start of the
              text). Among many texts (``scan_many``: a tensor's
              elements) a block runs on through the later texts to that
              END marker, else through the last text (a key one line
              per element).
              JWTs, compact: base64url runs joined by dots, each maybe      segments
              ``=``-padded; a JWS's header and payload, a JWE's header      open a JSON
              (then encrypted key, maybe empty, IV, ciphertext, tag) of     object:
              8 characters or more decoding to ``{``, JSON whitespace,      shape only
              ``"`` (``eyJ``, ``eyA``, ``ewo``...); a JWS's signature
              maybe empty (``alg: none``).
              Vendor tokens, each a whole ``[A-Za-z0-9_-]`` run: AWS        prefix, body
              ``AKIA``/``ASIA`` + 16 ``[A-Z0-9]``; GitHub ``gh[pousr]_`` +  characters
              36-251 ``[A-Za-z0-9]``, ``github_pat_`` + 22-244              and length
              ``[A-Za-z0-9_]``; GitLab ``glpat-`` + 20-249
              ``[A-Za-z0-9_-]``; Slack ``xox[abposr]-`` + 10-250
              ``[A-Za-z0-9-]``; Stripe ``sk_live_``/``rk_live_`` + 20-247
              ``[A-Za-z0-9]``; Google ``AIza`` + 35 ``[A-Za-z0-9_-]``
              (255 characters in all at most: GitHub's bound, the
              largest these vendors document)
============  ==========================================================  ===============

Not detected by ``secret`` (``labelgate.classify.credentials``): PuTTY ``.ppk`` keys;
JWTs with spaces around their dots, or in JSON serialization; secrets with no prefix of
their own (AWS secret access keys, OpenAI's ``sk-``/``sk-proj-`` keys, passwords, other
vendors' keys); a vendor token in a run of more than 255 characters (some other string).
Custom patterns (``CustomPattern``) can add forms a deployment knows.

Candidates must stand alone: an ASCII letter or digit right before or after (or a
``-``/``.`` joining more digits) means the digits belong to something longer, such as an
order number, a version string or a hash (a vendor token likewise, ``_`` and ``-`` joining
as its own characters do; a JWT's shape and a PEM marker need no such rule). A space does
not join: "at 10:30 123 45 6789" is a time and an SSN, and missing a card costs more than
masking a look-alike. A number grouped in thousands is also joined by its own separator
("4,111,111,111,111,111,2" is some longer number, "4 111 111 111 111 111 2" too).
Non-ASCII neighbours do not count, since in Chinese or Japanese text numbers often touch
the words around them.

A PEM block is the one match that spans texts. ``scan_many`` and ``scan_each`` take the texts
of one thing: a BYTES tensor's elements (its plain-text ones, or the leaves of its JSON
elements), the strings of one message, one reply's parameters. There a key written one
line per element (the BEGIN marker in one element, base64 lines in the next ones, which
alone hold nothing any detector finds) is one block from its BEGIN marker through its END
marker, handed out as one detection per element it covers; a block with no END marker in
any later text covers all of them (fail closed). It never runs from one call into another:
not from a tensor into the next tensor or into another output, nor from one streamed reply
into the next. A single text (``scan``) keeps to itself: a block without its END marker
runs to the end of the text, past any NUL in it.

How candidates are found fast is in ``labelgate.classify.patterns`` (secrets:
``labelgate.classify.credentials``); with the optional Rust extension installed,
``labelgate.classify.native`` runs the same rules natively. ``scan_many`` scans many short
texts (a tensor's elements) in one go.

``scan`` returns detections sorted by start; offsets index the given text (characters of a
``str``, bytes of a ``bytes``). Overlapping hits merge into one span covering them all, given
once per detector among them, the most sensitive first (the same offsets each): every label
the span holds has its say, since the policy need not be monotone in rank (a caller may see
``restricted`` and not ``confidential``: a card inside a secret token is still a card), and
masking applies the most protective of their masks to the span. Spans of different
offsets never overlap.
"""

from __future__ import annotations

import copy
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from labelgate.classify import native, reasons
from labelgate.classify.labels import LABEL_RANK, LABELS, is_label
from labelgate.classify.native import ElementHit
from labelgate.classify.patterns import Hit, builtin_hits
from labelgate.errors import ConfigError

DETECTORS_INVALID = reasons.DETECTORS_INVALID

BUILTIN_LABELS: dict[str, str] = {
    "credit_card": "confidential",
    "us_ssn": "confidential",
    "iban": "confidential",
    "email": "internal",
    "phone": "internal",
    "ip_address": "internal",
    "secret": "restricted",
}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class Detection(NamedTuple):
    """``text[start:end]`` is what ``detector`` found; ``label`` is the detector's label."""

    detector: str
    label: str
    start: int
    end: int


@dataclass(frozen=True)
class CustomPattern:
    """A user-defined detector: every non-empty match of ``regex`` is labelled ``label``."""

    name: str
    regex: str
    label: str


class DetectorSet:
    """The enabled detectors and their labels; ``scan`` is pure and thread-safe."""

    def __init__(
        self, builtins: Mapping[str, str] | None = None, custom: Sequence[CustomPattern] = ()
    ) -> None:
        """``builtins`` maps each enabled built-in to its label (None: all, default labels)."""
        problems: list[str] = []
        chosen = dict(BUILTIN_LABELS) if builtins is None else dict(builtins)
        for name, label in chosen.items():
            if name not in BUILTIN_LABELS:
                problems.append(
                    f"unknown built-in detector {name!r}; expected one of {sorted(BUILTIN_LABELS)}"
                )
            elif not is_label(label):
                problems.append(f"detector {name!r}: label {label!r} is not one of {list(LABELS)}")
        self._builtins = frozenset(name for name in chosen if name in BUILTIN_LABELS)
        self._custom: list[tuple[str, str, re.Pattern[str]]] = []
        for pattern in custom:
            taken = set(chosen) | {name for name, _, _ in self._custom}
            compiled = _compile_custom(pattern, taken, problems)
            if compiled is not None:
                self._custom.append((pattern.name, pattern.label, compiled))
        if problems:
            raise ConfigError(DETECTORS_INVALID, "; ".join(problems))
        self._labels = {name: chosen[name] for name in BUILTIN_LABELS if name in self._builtins}
        self._labels.update({name: label for name, label, _ in self._custom})
        self.names: tuple[str, ...] = tuple(self._labels)
        self._order = {name: index for index, name in enumerate(self.names)}
        self._besides: dict[frozenset[str], DetectorSet] = {}  # besides()'s memo, by label set
        self._found: Callable[[int], None] | None = None  # ``counting``'s

    @classmethod
    def default(cls) -> DetectorSet:
        return cls()

    def besides(self, labels: frozenset[str]) -> DetectorSet:
        """The detectors whose label is not one of ``labels`` (the same compiled patterns;
        built once per label set). On an output already labelled with all of ``labels``, a
        detector of one of them can only add a span its output's own label already governs:
        scanning for it is work for nothing. Every other detector runs, less sensitive ones
        too: the policy need not be monotone in rank (the default tables show ``restricted``
        to a granted ``break-glass`` caller and never ``confidential``), so an SSN inside a
        ``restricted`` output must be found to be masked."""
        memo = self._besides
        found = memo.get(labels)
        if found is None:
            found = copy.copy(self)
            found._besides = {}
            found._builtins = frozenset(n for n in self._builtins if self._labels[n] not in labels)
            found._custom = [c for c in self._custom if c[1] not in labels]
            keep = found._builtins | {name for name, _, _ in found._custom}
            found._labels = {n: lab for n, lab in self._labels.items() if n in keep}
            found.names = tuple(found._labels)
            memo[labels] = found
        return found

    def counting(self, found: Callable[[int], None]) -> DetectorSet:
        """These detectors (the same compiled patterns), calling ``found`` with the number of
        hits each scan finds, as soon as the scan has them: before any step in Python per hit
        (a million hits in one text take seconds of it). A caller bounding its work
        (``messages``: ``limits.max_message_values``) refuses there, by raising. Custom
        patterns' hits are counted a text at a time, once its matches are listed."""
        counted = copy.copy(self)
        counted._besides = {}  # those memoized here do not count: ``besides`` of this one do
        counted._found = found
        return counted

    def __bool__(self) -> bool:
        return bool(self._builtins or self._custom)

    @classmethod
    def none(cls) -> DetectorSet:
        return cls(builtins={})

    def label_of(self, detector: str) -> str:
        return self._labels[detector]

    def longest_custom_match(self) -> int | None:
        """The most bytes a custom pattern's match can span (0 without custom patterns), or
        None when some pattern's matches have no bound (``.+``, ``[\\s\\S]*?``)."""
        longest = 0
        for _, _, compiled in self._custom:
            width = _max_width(compiled)
            if width is None:
                return None
            longest = max(longest, width)
        return longest

    def scan(self, text: str | bytes) -> list[Detection]:
        """Detections in ``text``; a ``bytes`` text is read as UTF-8 and need not be valid."""
        if isinstance(text, str):
            ascii_only = text.isascii()
            data = text.encode("ascii") if ascii_only else text.encode("utf-8", "surrogatepass")
        else:
            data, ascii_only = bytes(text), True  # byte offsets are what the caller wants
        found: list[Detection] = []
        if self._builtins:
            labels = self._labels
            hits = native.builtin_hits(data, self._builtins)
            if self._found is not None:
                self._found(len(hits))
            found = [Detection(name, labels[name], start, end) for name, start, end in hits]
            if found and not ascii_only:
                found = _bytes_to_chars(data, found)
        if self._custom:
            extra = self._scan_custom(text)
            if self._found is not None:
                self._found(len(extra))
            found.extend(extra)
        if len(found) < 2:
            return found
        return _merge_overlaps(found, self._order)

    def scan_many(self, texts: Sequence[bytes]) -> list[list[Detection]]:
        """``[scan(text) for text in texts]``, faster for many short texts (see ``scan_each``)."""
        found = self.scan_each(texts)
        return [found.get(index, []) for index in range(len(texts))]

    def scan_each(self, texts: Sequence[bytes]) -> dict[int, list[Detection]]:
        """The detections of each text that has any, by index; offsets are per text.

        The built-ins run once over all texts joined by NUL bytes: no candidate form
        contains a NUL, so nothing is found across two texts, and the fixed cost of a scan
        is paid once instead of per element. One exception, on purpose: a PEM block whose
        text holds no END marker runs on into the texts after it, up to its END marker or
        to the last (``credentials``: a key written one line per element), and is handed
        out one detection per text it covers. The native scan (when active) goes element
        by element instead, at no per-element cost worth joining for, and carries an open
        block from one element into the next.
        """
        results: dict[int, list[Detection]] = {}
        if self._builtins and texts:
            per_element = native.hits_each(texts, self._builtins)  # None: the Python scan
            if per_element is not None:
                if self._found is not None:
                    self._found(len(per_element))
                _share_out_each(per_element, self._labels, results)
            else:
                single = len(texts) == 1 and type(texts[0]) is bytes  # no join needed
                hits = builtin_hits(texts[0] if single else b"\x00".join(texts), self._builtins)
                if self._found is not None:
                    self._found(len(hits))
                if hits:
                    _share_out(hits, texts, self._labels, results)
        if self._custom:
            for index, text in enumerate(texts):
                extra = self._scan_custom(text)
                if self._found is not None:
                    self._found(len(extra))
                if extra:
                    results.setdefault(index, []).extend(extra)
        for index, found in results.items():
            if len(found) > 1:
                results[index] = _merge_overlaps(found, self._order)
        return results

    def spans_at(
        self, texts: Sequence[bytes], keys: list[int]
    ) -> tuple[dict[int, list[Detection]], set[str]] | None:
        """``scan_each(texts)`` keyed by ``keys[i]`` (ascending) instead of ``i``, in key
        order, and the detectors its detections name; None when the native scan is not
        active or custom detectors are set (then ``scan_each`` it is).

        The extension builds the detections and lists; Python merges only the elements with
        several hits and adds the hits of the passes left to it. Merging sorts each
        element's hits, so their order before it does not matter."""
        if self._custom or not self._builtins:
            return None
        scanned = native.spans_each(texts, self._builtins, keys, Detection, self._labels)
        return None if scanned is None else self._finished(scanned, keys)

    def spans_raw(
        self, raw: bytes, count: int, texts: Callable[[], Sequence[bytes]], stop: bytes = b""
    ) -> tuple[dict[int, list[Detection]], set[str]] | None:
        """``spans_at(texts(), list(range(count)))`` read from ``raw``, the raw form of exactly
        the ``count`` elements ``texts()`` gives (``Tensor.raw_form``), in one native call:
        ``texts`` is called only if a pass left to Python needs the elements. None as
        ``spans_at``, and when ``raw`` is not that well formed or some text holds a byte of
        ``stop``."""
        if self._custom or not self._builtins:
            return None
        scanned = native.spans_raw(raw, count, texts, self._builtins, stop, Detection, self._labels)
        return None if scanned is None else self._finished(scanned, None)

    def _finished(
        self, scanned: tuple[native.ScannedSpans, list[native.ElementHit]], keys: list[int] | None
    ) -> tuple[dict[int, list[Detection]], set[str]]:
        """The native scan's spans completed: the passes left to Python added (``keys[i]``
        names text i; None: i itself), the elements with several detections merged."""
        (spans, several, bits, _, _), left = scanned
        order = self._order
        if left:  # rare: the passes Python runs add hits, maybe to new elements
            labels = self._labels
            for position, name, start, end in left:
                key = position if keys is None else keys[position]
                spans.setdefault(key, []).append(Detection(name, labels[name], start, end))
            spans = dict(sorted(spans.items()))
            for key, found in spans.items():
                if len(found) > 1:
                    spans[key] = _merge_overlaps(found, order)
            return spans, {hit.detector for found in spans.values() for hit in found}
        names = set(native.names_of(bits))
        for key in several:
            merged = spans[key] = _merge_overlaps(spans[key], order)
            names.update(hit.detector for hit in merged)
        return spans, names

    def _scan_custom(self, text: str | bytes) -> list[Detection]:
        as_str = text if isinstance(text, str) else bytes(text).decode("utf-8", "surrogateescape")
        found = [
            Detection(name, label, match.start(), match.end())
            for name, label, regex in self._custom
            for match in regex.finditer(as_str)
            if match.end() > match.start()
        ]
        if found and not isinstance(text, str) and not as_str.isascii():
            found = _chars_to_bytes(as_str, found)
        return found


_new_tuple = tuple.__new__  # builds a Detection without the Python-level NamedTuple __new__


def _share_out(
    hits: list[Hit], texts: Sequence[bytes], labels: Mapping[str, str], results: dict[int, list[Detection]]
) -> None:
    """Hand each hit in the NUL-joined ``texts`` to the text it lies in, offsets made local;
    a PEM block run on past the end of its text, one piece to each text it covers."""
    starts = list(accumulate([len(text) + 1 for text in texts[:-1]], initial=0))
    last = len(starts) - 1
    for name, start, end in hits:
        index = bisect_right(starts, start) - 1
        offset = starts[index]
        if index < last and end >= starts[index + 1]:
            _share_out_block(name, start, end, index, starts, labels, results)
            continue
        detection = _new_tuple(Detection, (name, labels[name], start - offset, end - offset))
        found = results.get(index)
        if found is None:
            results[index] = [detection]
        else:
            found.append(detection)


def _share_out_block(
    name: str,
    start: int,
    end: int,
    index: int,
    starts: list[int],
    labels: Mapping[str, str],
    results: dict[int, list[Detection]],
) -> None:
    """A hit from text ``index`` through later texts (``credentials``: a PEM block runs on past
    NULs) as one detection per text it covers, to the end of each but the last; an empty
    piece (an empty text, or the NUL alone) is none."""
    label = labels[name]
    for at in range(index, len(starts)):
        offset = starts[at]
        if offset >= end:
            break
        text_end = starts[at + 1] - 1 if at + 1 < len(starts) else end
        piece = (max(start, offset) - offset, min(end, text_end) - offset)
        if piece[1] > piece[0]:
            results.setdefault(at, []).append(_new_tuple(Detection, (name, label, *piece)))


def _share_out_each(
    hits: list[ElementHit], labels: Mapping[str, str], results: dict[int, list[Detection]]
) -> None:
    """Hand each (element index, detector, start, end) hit to its element's detections."""
    for index, name, start, end in hits:
        detection = _new_tuple(Detection, (name, labels[name], start, end))
        found = results.get(index)
        if found is None:
            results[index] = [detection]
        else:
            found.append(detection)


def _remap(hits: list[Detection], measure: Callable[[int, int], int]) -> list[Detection]:
    """Translate offsets with ``measure(a, b)``, the length of [a, b) in the other unit."""
    mapped: dict[int, int] = {}
    previous, total = 0, 0
    for offset in sorted({offset for hit in hits for offset in (hit.start, hit.end)}):
        total += measure(previous, offset)
        mapped[offset], previous = total, offset
    return [hit._replace(start=mapped[hit.start], end=mapped[hit.end]) for hit in hits]


def _bytes_to_chars(data: bytes, hits: list[Detection]) -> list[Detection]:
    return _remap(hits, lambda a, b: len(data[a:b].decode("utf-8", "surrogatepass")))


def _chars_to_bytes(text: str, hits: list[Detection]) -> list[Detection]:
    return _remap(hits, lambda a, b: len(text[a:b].encode("utf-8", "surrogateescape")))


def _merge_overlaps(found: list[Detection], order: Mapping[str, int]) -> list[Detection]:
    found.sort(key=lambda hit: (hit.start, -hit.end, order[hit.detector]))
    merged: list[Detection] = []
    cluster = [found[0]]
    end = found[0].end
    for hit in found[1:]:
        if hit.start < end:
            cluster.append(hit)
            end = max(end, hit.end)
            continue
        _cluster_spans(cluster, end, order, merged)
        cluster, end = [hit], hit.end
    _cluster_spans(cluster, end, order, merged)
    return merged


def _cluster_spans(
    cluster: list[Detection], end: int, order: Mapping[str, int], merged: list[Detection]
) -> None:
    """Overlapping hits as one span covering them all, given once per detector among them
    (the most sensitive first): each detector's field has its say on the whole span, and
    masking applies the most protective of their masks to it (``replace_spans`` merges the
    overlap). Named after the most sensitive alone, a card inside a secret's span would reach
    a caller the policy shows ``restricted`` and not ``confidential`` (the default tables'
    granted ``break-glass``)."""
    if len(cluster) == 1:
        merged.append(cluster[0])
        return
    start = cluster[0].start
    named: dict[str, str] = {}
    for hit in sorted(cluster, key=lambda hit: (-LABEL_RANK[hit.label], order[hit.detector])):
        named.setdefault(hit.detector, hit.label)
    merged += [_new_tuple(Detection, (name, label, start, end)) for name, label in named.items()]


def _compile_custom(pattern: CustomPattern, taken: set[str], problems: list[str]) -> re.Pattern[str] | None:
    where = f"custom detector {pattern.name!r}"
    before = len(problems)
    if not isinstance(pattern.name, str) or not _NAME.fullmatch(pattern.name):
        problems.append(f"{where}: the name must match {_NAME.pattern} (it appears in field paths)")
    elif pattern.name in taken or pattern.name in BUILTIN_LABELS:
        problems.append(f"{where}: the name is already used by another detector")
    if not is_label(pattern.label):
        problems.append(f"{where}: label {pattern.label!r} is not one of {list(LABELS)}")
    try:
        compiled = re.compile(pattern.regex)
    except (re.error, TypeError) as error:
        problems.append(f"{where}: invalid regex: {error}")
        return None
    if compiled.fullmatch("") is not None:
        problems.append(f"{where}: the regex matches empty text")
    return compiled if len(problems) == before else None


_LOOKS_AROUND = re.compile(r"\(\?<?[=!]|\(\?P=|\\[1-9]|\\g<")


def _max_width(compiled: re.Pattern[str]) -> int | None:
    """The most UTF-8 bytes a match of ``compiled`` can span, None if unbounded (or unknown:
    the width comes from the ``re`` module's own parser)."""
    parser = getattr(re, "_parser", None)
    if parser is None or _LOOKS_AROUND.search(compiled.pattern):
        # A lookaround or a backreference matches against text outside the match's width.
        return None
    try:
        _, most = parser.parse(compiled.pattern, compiled.flags).getwidth()
    except Exception:  # a parser of another Python version: say nothing is known
        return None
    if most >= parser.MAXREPEAT:
        return None
    return int(most) * 4  # characters to UTF-8 bytes, at the most
