"""The built-in detectors' scan in Rust (the optional ``labelgate_native`` extension).

``proxy/native`` ports ``labelgate.classify.patterns`` rule for rule for cards, SSNs,
phones, e-mail addresses, dotted quads, IBANs and secrets (``credentials``), and scans
element by element without the GIL for large batches. IBAN formats come from
python-stdnum's registry, handed to the extension at import (``set_iban_registry``). Two
things stay in Python: IPv6 text
(``ipaddress``) and IBANs of countries where python-stdnum has national rules (its
``is_valid`` has the last word). For those the extension names the elements where the
pass must run (a digit and an ``_IPV6_SEED`` match; a national-rule candidate that
passed every other check), and the passes run here on those elements alone, NUL-joined as
``DetectorSet.scan_each`` joins them. Hits come back in the order ``patterns.builtin_hits``
finds them in the joined elements, so even the order of ``scan_each``'s result is the
Python one.

A PEM block runs on from one element into the next (``credentials``): the extension carries
an open block across the elements of one call, as the NUL-joined Python scan runs it on past
the NULs. ``json_elements`` carries it across the leaves of the elements it reads; when it
leaves some element to Python, every element from the first where a block may open is left
to Python too, whose scan of their leaves then runs it on as the reference does.

The Python code stays the reference and the fallback: without the extension (or with
``LABELGATE_NATIVE=0`` in the environment) ``builtin_hits`` and ``hits_each`` are the pure
Python scan. ``tests/classify/test_native.py`` checks that both give the same detections.

``spans_each`` scans a tensor's plain-text elements straight into ``Detection`` lists keyed
by element index (``DetectorSet.spans_at``), so the classifier spends no Python step per hit
on the usual element; ``tests/classify/test_native.py`` compares it with ``scan_each``.
``spans_raw`` does the same from a decoded tensor's raw buffer (``Tensor.raw_form``), which
the extension splits and checks itself: no Python object per element crosses over;
``tests/classify/test_native_raw_scan.py`` compares it with the per-element call.

``json_reads`` reads JSON-object elements and scans their leaves in one native pass, for
the elements the extension can vouch for reading as Python's ``json`` does (the classifier
runs its Python path on the others); ``tests/classify/test_native_json.py`` compares the
classifications with and without it.

``wide_digit_runs`` and ``wide_digit_runs_raw`` name the texts that read as UTF-16 digits
(``other_encodings.digit_encoding``'s rule, over the unit kinds ``other_encodings`` derives
from the Unicode data and hands over at import, ``install_unit_kinds``): a prefilter whose
texts Python reads again, with a switch of its own (``digit_runs_forced``);
``tests/classify/test_native_wide_digits.py`` checks it finds exactly what Python does.
``quoted_digit_runs`` (and its raw form) reads a text holding a quote from its second byte
too, where a JSON string may start (``other_encodings.reads_as_digits``), and names the
texts holding a quote and a backslash, whose escaped strings Python decodes.
"""

from __future__ import annotations

import heapq
import itertools
import string
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Protocol, cast

from labelgate.classify import patterns
from labelgate.classify.patterns import Hit
from labelgate.native import NativeSwitch, raise_if_panic

ElementHit = tuple[int, str, int, int]  # (element index, detector, start, end)
LeafHit = tuple[int, int, int, int]  # (scanned leaf ordinal, detector bit, start, end)
# An element the extension read: its signature, its leaves' hits (leaf by leaf, not merged),
# and whether some leaf has several (which may overlap).
JsonRead = tuple[bytes, tuple[LeafHit, ...], bool]
BbanFormat = list[tuple[int, str]]  # (count, class: n, a or c) runs
# ``scan_spans``' result: detections by key (not merged, key order), the keys with several,
# the detector bits of the elements with one, the elements whose IBAN / IPv6 pass is Python's.
ScannedSpans = tuple[dict[int, list[Any]], list[int], int, list[int], list[int]]


class Kernel(Protocol):
    """What ``labelgate_native`` exports."""

    DETECTORS: tuple[str, ...]

    def scan_elements(
        self, texts: Sequence[bytes], wanted: int, /
    ) -> tuple[list[ElementHit], int, int, list[int], list[int]]: ...

    def set_iban_registry(self, formats: list[tuple[str, BbanFormat]], national: set[str], /) -> None: ...

    def json_elements(self, elements: Sequence[bytes], wanted: int, /) -> list[JsonRead | None]: ...

    def object_candidates(self, values: list[bytes], openers: bytes, /) -> list[int] | None: ...

    def scan_spans(
        self,
        texts: Sequence[bytes],
        wanted: int,
        keys: list[int],
        detection: type,
        labels: tuple[str | None, ...],
        /,
    ) -> ScannedSpans: ...

    def scan_spans_raw(
        self,
        data: bytes,
        count: int,
        wanted: int,
        stop: bytes,
        detection: type,
        labels: tuple[str | None, ...],
        /,
    ) -> ScannedSpans | None: ...


class DigitRunKernel(Protocol):
    """What the extension offers for UTF-16 digits (``proxy/native/src/wide_digits.rs``)."""

    def set_unit_kinds(self, kinds: bytes, run_digits: int, /) -> None: ...

    def wide_digit_runs(self, texts: list[bytes], /) -> list[int] | None: ...

    def wide_digit_runs_raw(self, data: bytes, count: int, /) -> list[int] | None: ...

    def quoted_digit_runs(self, texts: list[bytes], /) -> tuple[list[int], list[int]] | None: ...

    def quoted_digit_runs_raw(self, data: bytes, count: int, /) -> list[int] | None: ...


# Bit i of the extension's ``wanted`` is detector i.
_DETECTORS = ("credit_card", "us_ssn", "iban", "email", "phone", "ip_address", "secret")
_BITS = {name: 1 << bit for bit, name in enumerate(_DETECTORS)}
_SWITCH: NativeSwitch[Kernel] = NativeSwitch(
    lambda module: (
        getattr(module, "DETECTORS", None) == _DETECTORS
        and hasattr(module, "set_iban_registry")
        and hasattr(module, "scan_spans")
        and hasattr(module, "scan_spans_raw")
    )
)
available = _SWITCH.available
forced = _SWITCH.forced
# The JSON reader has a switch of its own (it scans with the detectors', so it runs only
# when both are on): tests compare it alone against the Python reading, detectors native.
_JSON_SWITCH: NativeSwitch[Kernel] = NativeSwitch(
    lambda module: (
        getattr(module, "DETECTORS", None) == _DETECTORS
        and hasattr(module, "json_elements")
        and hasattr(module, "object_candidates")
    )
)
json_forced = _JSON_SWITCH.forced
# The detector of each bit of a ``LeafHit``.
DETECTOR_BITS = _DETECTORS
# Texts that read as UTF-16 digits: the detectors' scan does not use it, nor it theirs.
_DIGIT_SWITCH: NativeSwitch[DigitRunKernel] = NativeSwitch(
    lambda module: all(
        hasattr(module, name)
        for name in (
            "set_unit_kinds",
            "wide_digit_runs",
            "wide_digit_runs_raw",
            "quoted_digit_runs",
            "quoted_digit_runs_raw",
        )
    )
)
digit_runs_forced = _DIGIT_SWITCH.forced
digit_runs_available = _DIGIT_SWITCH.available


def iban_registry() -> tuple[list[tuple[str, BbanFormat]], set[str]]:
    """python-stdnum's IBAN registry as ``patterns._iban_country`` reads it: each country's
    BBAN runs, and the countries left to Python (national rules, or a BBAN pattern that is
    not plain runs of classes, which the extension would not match exactly)."""
    formats: list[tuple[str, BbanFormat]] = []
    python_decides: set[str] = set()
    for first, second in itertools.product(string.ascii_uppercase, repeat=2):
        country = first + second
        pattern, national = patterns._iban_country(country)
        if pattern is None:
            continue
        bban = patterns._IBAN_REGISTRY.info(country)[0][1].get("bban", "")
        runs = [(int(count), kind) for count, kind in patterns._BBAN_PART.findall(bban)]
        rebuilt = "".join(f"{patterns._BBAN_CLASSES[kind]}{{{count}}}" for count, kind in runs)
        if national or pattern.pattern != f"^{rebuilt}$":
            python_decides.add(country)
        else:
            formats.append((country, runs))
    return formats, python_decides


if _SWITCH.kernel is not None:
    _SWITCH.kernel.set_iban_registry(*iban_registry())


def active() -> bool:
    """Whether the built-ins go through the extension now."""
    return _SWITCH.on


def builtin_hits(data: bytes, wanted: frozenset[str]) -> list[Hit]:
    """``patterns.builtin_hits``: the same hits in the same order, by the extension when active."""
    if not _SWITCH.on:
        return patterns.builtin_hits(data, wanted)
    return [(name, start, end) for _, name, start, end in _scan([data], wanted)]


def hits_each(texts: Sequence[bytes], wanted: frozenset[str]) -> list[ElementHit] | None:
    """The built-ins' hits in each of ``texts``, offsets per text, in the order
    ``patterns.builtin_hits`` finds them in the NUL-joined texts; None when the extension
    is not active (the caller then runs the Python scan)."""
    if not _SWITCH.on:
        return None
    return _scan(texts, wanted)


def spans_each(
    texts: Sequence[bytes],
    wanted: frozenset[str],
    keys: list[int],
    detection: type,
    labels: Mapping[str, str],
) -> tuple[ScannedSpans, list[ElementHit]] | None:
    """The built-ins' hits in ``texts`` as ``detection`` tuples ``(detector, label, start,
    end)``, one list per text with any, keyed by ``keys[i]`` (ascending) in key order (see
    ``scan_spans`` in ``proxy/native/src/spans.rs``), and the hits of the passes left to
    Python (``hits_each``' form); None when the extension is not active."""
    if not _SWITCH.on:
        return None
    kernel = cast(Kernel, _SWITCH.kernel)
    mask = _mask(wanted)
    by_bit = tuple(labels.get(name) for name in _DETECTORS)
    try:
        try:
            scanned = kernel.scan_spans(texts, mask, keys, detection, by_bit)
        except TypeError:  # bytes-likes other than bytes/bytearray: as the join reads them
            texts = [bytes(memoryview(text)) for text in texts]
            scanned = kernel.scan_spans(texts, mask, keys, detection, by_bit)
    except BaseException as error:
        raise_if_panic(error)
        raise
    return scanned, _python_passes(texts, scanned[3], scanned[4])


def spans_raw(
    data: bytes,
    count: int,
    texts: Callable[[], Sequence[bytes]],
    wanted: frozenset[str],
    stop: bytes,
    detection: type,
    labels: Mapping[str, str],
) -> tuple[ScannedSpans, list[ElementHit]] | None:
    """``spans_each(texts(), wanted, list(range(count)), ...)`` read from ``data``, the raw
    form (4-byte little-endian length, then the bytes, per element) of exactly the ``count``
    elements ``texts()`` gives: one buffer crosses into the extension instead of a ``bytes``
    object per element, and ``texts`` is called only when a pass left to Python needs them.
    None when the extension is not active, when ``data`` is not ``count`` well-formed
    elements, or when an element holds a byte of ``stop``: the caller then takes its other path."""
    if not _SWITCH.on or type(data) is not bytes:
        return None
    kernel = cast(Kernel, _SWITCH.kernel)
    by_bit = tuple(labels.get(name) for name in _DETECTORS)
    try:
        scanned = kernel.scan_spans_raw(data, count, _mask(wanted), stop, detection, by_bit)
    except BaseException as error:
        raise_if_panic(error)
        raise
    if scanned is None:
        return None
    iban_pending, ipv6_pending = scanned[3], scanned[4]
    left = _python_passes(texts(), iban_pending, ipv6_pending) if iban_pending or ipv6_pending else []
    return scanned, left


def _python_passes(
    texts: Sequence[bytes], iban_pending: list[int], ipv6_pending: list[int]
) -> list[ElementHit]:
    """The hits of the passes the extension leaves to Python, on the elements it names."""
    left: list[ElementHit] = []
    if iban_pending:
        left += _pass_over(texts, iban_pending, _iban_hits)
    if ipv6_pending:
        left += _pass_over(texts, ipv6_pending, _ipv6_hits)
    return left


def names_of(bits: int) -> list[str]:
    """The detectors of the set bits of ``bits``."""
    return [name for bit, name in enumerate(_DETECTORS) if bits >> bit & 1]


def json_reads(elements: Sequence[bytes], wanted: frozenset[str]) -> list[JsonRead | None] | None:
    """Per element: ``(signature, hits, several)`` when the extension read it as a JSON object
    and scanned its leaves for the built-ins ``wanted`` (hits as ``LeafHit``s, leaf by leaf,
    each leaf's in ``DetectorSet.scan_each``'s order, overlaps not merged; ``several``: some
    leaf has more than one), None when Python must read it; None for all when the extension
    is not active (see ``KeyNames.native_shape``)."""
    if not (_SWITCH.on and _JSON_SWITCH.on):
        return None
    kernel = cast(Kernel, _JSON_SWITCH.kernel)
    try:
        return kernel.json_elements(elements, _mask(wanted))
    except TypeError:  # an element other than bytes: the Python path reads them all
        return None
    except BaseException as error:
        raise_if_panic(error)
        raise


def object_candidates(values: list[bytes], openers: bytes) -> list[int] | None:
    """The indices of the elements of ``values`` that start with a byte of ``openers``, in
    one native call; None when the JSON reader is off or a value is not exactly ``bytes``."""
    if not _JSON_SWITCH.on or type(values) is not list:
        return None
    try:
        return cast(Kernel, _JSON_SWITCH.kernel).object_candidates(values, openers)
    except BaseException as error:
        raise_if_panic(error)
        raise


def install_unit_kinds(kinds: bytes, run_digits: int) -> None:
    """Hand the extension each UTF-16 code unit's kind (``other_encodings._UNIT_KINDS``, a
    byte each) and the digits a run needs (``RUN_DIGITS``); nothing without the extension."""
    if _DIGIT_SWITCH.kernel is not None:
        _DIGIT_SWITCH.kernel.set_unit_kinds(kinds, run_digits)


def wide_digit_runs(texts: Sequence[bytes]) -> list[int] | None:
    """The indices (ascending) of ``texts`` that read as UTF-16 digits
    (``other_encodings.digit_encoding``); None when the extension is off or ``texts`` is not
    a list of exactly ``bytes``: the caller then asks Python."""
    kernel = _DIGIT_SWITCH.kernel
    if kernel is None or not _DIGIT_SWITCH.on or type(texts) is not list:
        return None
    try:
        return kernel.wide_digit_runs(texts)
    except BaseException as error:
        raise_if_panic(error)
        raise


def quoted_digit_runs(texts: Sequence[bytes]) -> tuple[list[int], list[int]] | None:
    """The indices (ascending) of ``texts`` that read as UTF-16 digits from their first byte,
    or holding a quote from their second (``other_encodings.reads_as_digits``, ``quoted``);
    and of the others that hold a quote and a backslash and are long enough for a quote and
    a run after it (a JSON string in them may be escaped). None as for ``wide_digit_runs``."""
    kernel = _DIGIT_SWITCH.kernel
    if kernel is None or not _DIGIT_SWITCH.on or type(texts) is not list:
        return None
    try:
        return kernel.quoted_digit_runs(texts)
    except BaseException as error:
        raise_if_panic(error)
        raise


def wide_digit_runs_raw(data: bytes, count: int, quoted: bool = False) -> list[int] | None:
    """``wide_digit_runs`` (with ``quoted``, ``quoted_digit_runs``' first answer) of the
    ``count`` elements of a raw BYTES buffer (4-byte little-endian length, then the bytes, per
    element), without a ``bytes`` object per element; None when the extension is off or
    ``data`` is not ``count`` such elements."""
    kernel = _DIGIT_SWITCH.kernel
    if kernel is None or not _DIGIT_SWITCH.on or type(data) is not bytes:
        return None
    try:
        if quoted:
            return kernel.quoted_digit_runs_raw(data, count)
        return kernel.wide_digit_runs_raw(data, count)
    except BaseException as error:
        raise_if_panic(error)
        raise


def _scan(texts: Sequence[bytes], wanted: frozenset[str]) -> list[ElementHit]:
    kernel = cast(Kernel, _SWITCH.kernel)
    mask = _mask(wanted)
    try:
        try:
            hits, iban_at, iban_count, iban_pending, ipv6_pending = kernel.scan_elements(texts, mask)
        except TypeError:  # bytes-likes other than bytes/bytearray (memoryview, ...): as the join reads them
            texts = [bytes(memoryview(text)) for text in texts]
            hits, iban_at, iban_count, iban_pending, ipv6_pending = kernel.scan_elements(texts, mask)
    except BaseException as error:
        raise_if_panic(error)
        raise
    # The passes left to Python go where builtin_hits runs them: IBANs after the dotted quads,
    # element by element (no element is in both lists, and each is in element order).
    if iban_pending:
        iban_end = iban_at + iban_count
        hits[iban_at:iban_end] = heapq.merge(
            hits[iban_at:iban_end], _pass_over(texts, iban_pending, _iban_hits), key=itemgetter(0)
        )
    if ipv6_pending:
        hits += _pass_over(texts, ipv6_pending, _ipv6_hits)
    return hits


def _pass_over(
    texts: Sequence[bytes], indices: list[int], run: Callable[[bytes], list[Hit]]
) -> list[ElementHit]:
    """``run`` over the texts at ``indices`` joined by NUL bytes, as ``DetectorSet.scan_each``
    joins them (one call instead of one per text), hits handed back per text."""
    if len(indices) == 1:
        return [(indices[0], *hit) for hit in run(bytes(texts[indices[0]]))]
    chosen = [texts[index] for index in indices]
    starts = list(itertools.accumulate([len(text) + 1 for text in chosen[:-1]], initial=0))
    found: list[ElementHit] = []
    for name, start, end in run(b"\x00".join(chosen)):
        position = bisect_right(starts, start) - 1
        offset = starts[position]
        found.append((indices[position], name, start - offset, end - offset))
    return found


_MASKS: dict[frozenset[str], int] = {}


def _mask(wanted: frozenset[str]) -> int:
    mask = _MASKS.get(wanted)
    if mask is None:
        mask = _MASKS[wanted] = sum(_BITS[name] for name in wanted)
    return mask


def _iban_hits(data: bytes) -> list[Hit]:
    """``builtin_hits``' IBAN pass alone."""
    hits: list[Hit] = []
    patterns._confirmed(patterns._IBAN, data, data.translate(patterns._SHAPE), patterns._check_iban, hits)
    return hits


def _ipv6_hits(data: bytes) -> list[Hit]:
    """``builtin_hits``' IPv6 pass alone."""
    hits: list[Hit] = []
    patterns._ipv6s(data, hits)
    return hits
