"""Raw BYTES tensors element by element in Rust (the optional ``labelgate_native`` extension).

``proxy/native/src/tensors.rs`` splits a raw BYTES buffer into its elements, joins
elements back into one, and applies the ``partial`` mask to ASCII elements, without a
Python step per element. The extension is the one the detectors use
(``labelgate.classify.native``); each area has its own ``labelgate.native.NativeSwitch``,
so a benchmark can switch one without the other.

Every function here answers None when the extension is off or not sure (malformed data,
values that are not ``bytes``, non-ASCII text, numbers past its integer range), or, for
``partial_spans``, names the elements it left; the caller then runs the Python code, which
stays the reference: it gives the result, or raises the error with its own message.
``tests/oip/test_native_tensors.py`` checks that both paths agree. ``LABELGATE_NATIVE=0``
in the environment turns the extension off.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Protocol, cast

from labelgate.native import NativeSwitch, raise_if_panic


class TensorKernel(Protocol):
    """The part of ``labelgate_native`` used here."""

    def split_bytes(self, data: bytes, count: int, /) -> list[bytes] | None: ...

    def check_bytes(self, data: bytes, count: int, /) -> bool: ...

    def join_bytes(self, values: list[bytes], /) -> bytes | None: ...

    def partial_all(self, values: list[bytes], keep_last: int, /) -> tuple[list[bytes], bytes] | None: ...

    def partial_all_raw(self, data: bytes, count: int, keep_last: int, /) -> bytes | None: ...

    def partial_span(self, data: bytes, start: int, end: int, keep_last: int, /) -> bytes | None: ...

    def partial_spans(
        self,
        values: list[bytes],
        masked: list[bytes],
        spans: dict[int, Any],
        partial: dict[str, int],
        unmasked: AbstractSet[str],
        detection: type,
        /,
    ) -> list[int]: ...


_FUNCTIONS = (
    "split_bytes",
    "check_bytes",
    "join_bytes",
    "partial_all",
    "partial_all_raw",
    "partial_span",
    "partial_spans",
)


_SWITCH: NativeSwitch[TensorKernel] = NativeSwitch(
    lambda module: all(hasattr(module, name) for name in _FUNCTIONS)  # else built before these kernels
)
available = _SWITCH.available
forced = _SWITCH.forced


def active() -> bool:
    """Whether BYTES tensors go through the extension now."""
    return _SWITCH.on


def split_bytes(data: bytes, count: int) -> list[bytes] | None:
    """The ``count`` length-prefixed elements of ``data`` if it holds exactly those; None
    when it does not, or when the extension is off or ``data`` is not ``bytes``."""
    if not _SWITCH.on or type(data) is not bytes:
        return None
    if not 0 <= count <= len(data) >> 2:  # each element needs its 4-byte prefix: malformed
        return None
    try:
        return cast(TensorKernel, _SWITCH.kernel).split_bytes(data, count)
    except BaseException as error:
        raise_if_panic(error)
        raise


def check_bytes(data: bytes, count: int) -> bool | None:
    """Whether ``split_bytes(data, count)`` would give the elements (without building them);
    None when the extension is off or ``data`` is not ``bytes``."""
    if not _SWITCH.on or type(data) is not bytes:
        return None
    if not 0 <= count <= len(data) >> 2:  # each element needs its 4-byte prefix: malformed
        return False
    try:
        return cast(TensorKernel, _SWITCH.kernel).check_bytes(data, count)
    except BaseException as error:
        raise_if_panic(error)
        raise


def join_bytes(values: list[bytes]) -> bytes | None:
    """Each of ``values`` after its 4-byte little-endian length, as one ``bytes``; None when
    a value is not ``bytes`` or too long, or the extension is off."""
    if not _SWITCH.on or type(values) is not list:
        return None
    try:
        return cast(TensorKernel, _SWITCH.kernel).join_bytes(values)
    except BaseException as error:
        raise_if_panic(error)
        raise


def partial_all(values: list[bytes], keep_last: int) -> tuple[list[bytes], bytes] | None:
    """``partial`` on every element: (masked elements, their raw BYTES form); None unless
    every element is ASCII ``bytes`` and the extension is on."""
    if not _SWITCH.on or type(values) is not list or keep_last < 0:
        return None
    try:
        return cast(TensorKernel, _SWITCH.kernel).partial_all(values, _bounded(keep_last))
    except BaseException as error:
        raise_if_panic(error)
        raise


def partial_all_raw(data: bytes, count: int, keep_last: int) -> bytes | None:
    """``partial_all`` on the ``count`` elements of the raw BYTES buffer ``data``, giving the
    masked tensor's raw form only (no element built); None unless ``data`` is exactly that
    many elements, all ASCII, and the extension is on."""
    if not _SWITCH.on or type(data) is not bytes or keep_last < 0 or not 0 <= count <= len(data) >> 2:
        return None
    try:
        return cast(TensorKernel, _SWITCH.kernel).partial_all_raw(data, count, _bounded(keep_last))
    except BaseException as error:
        raise_if_panic(error)
        raise


def partial_span(data: bytes, start: int, end: int, keep_last: int) -> bytes | None:
    """``data`` with ``[start, end)`` masked by ``partial``; None unless the span is ASCII,
    inside ``data`` and not empty, and the extension is on."""
    # Called once per masked span: the checks are inline, not helper calls.
    if not _SWITCH.on or type(data) is not bytes or not 0 <= start < end <= len(data) or keep_last < 0:
        return None
    try:
        return cast(TensorKernel, _SWITCH.kernel).partial_span(
            data, start, end, keep_last if keep_last <= MAX_KEEP_LAST else MAX_KEEP_LAST
        )
    except BaseException as error:
        raise_if_panic(error)
        raise


def partial_spans(
    values: list[bytes],
    masked: list[bytes],
    spans: Mapping[int, Any],
    partial: Mapping[str, int],
    unmasked: AbstractSet[str],
    detection: type,
) -> list[int] | None:
    """``partial_span`` for every element of ``spans`` (position -> ``detection``s) with one
    detection of a detector ``partial`` names (with its ``keep_last``), written into
    ``masked``; an element with one detection of an ``unmasked`` detector stays as it is.
    Returns the positions left to the caller (anything else: several detections, another
    detector, a span ``partial_span`` refuses, a value that is not ``bytes``); None (all
    left) when the extension is off."""
    if not _SWITCH.on or type(values) is not list or type(masked) is not list or type(spans) is not dict:
        return None
    # Masks whose keep_last the extension cannot take stay out: their elements are left.
    keeps = {name: _bounded(keep) for name, keep in partial.items() if type(keep) is int and keep >= 0}
    try:
        return cast(TensorKernel, _SWITCH.kernel).partial_spans(
            values, masked, spans, keeps, unmasked, detection
        )
    except BaseException as error:
        raise_if_panic(error)
        raise


# Past any element's length keep_last makes no difference (all is starred), and it must
# fit the extension's integers.
MAX_KEEP_LAST = sys.maxsize


def _bounded(keep_last: int) -> int:
    return min(keep_last, MAX_KEEP_LAST)
