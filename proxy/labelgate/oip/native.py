"""Raw BYTES tensors element by element in Rust (the optional ``labelgate_native`` extension).

``proxy/native/src/tensors.rs`` splits a raw BYTES buffer into its elements, joins
elements back into one, and applies the ``partial`` mask to ASCII elements, without a
Python step per element. It is the module ``labelgate.classify.native`` loads for the
detectors (Python imports it once); this module cannot import that one, whose package
imports the tensor codec, so it asks for the module itself and checks its own functions.

Every function here answers None when the extension is off or not sure (malformed data,
values that are not ``bytes``, non-ASCII text, numbers past its integer range); the caller
then runs the Python code, which stays the reference: it gives the result, or raises the
error with its own message. ``tests/oip/test_native_tensors.py`` checks that both paths
agree. ``LABELGATE_NATIVE=0`` in the environment turns the extension off.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, cast


class TensorKernel(Protocol):
    """The part of ``labelgate_native`` used here."""

    def split_bytes(self, data: bytes, count: int, /) -> list[bytes] | None: ...

    def join_bytes(self, values: list[bytes], /) -> bytes | None: ...

    def partial_all(self, values: list[bytes], keep_last: int, /) -> tuple[list[bytes], bytes] | None: ...

    def partial_span(self, data: bytes, start: int, end: int, keep_last: int, /) -> bytes | None: ...


_FUNCTIONS = ("split_bytes", "join_bytes", "partial_all", "partial_span")


def _load() -> TensorKernel | None:
    try:
        module = importlib.import_module("labelgate_native")
    except ImportError:
        return None
    if not all(hasattr(module, name) for name in _FUNCTIONS):
        return None  # an extension built before these kernels: the Python path
    return cast(TensorKernel, module)


_KERNEL = _load()
_active = _KERNEL is not None and os.environ.get("LABELGATE_NATIVE", "1") != "0"


def available() -> bool:
    """Whether the extension with these kernels is installed."""
    return _KERNEL is not None


def active() -> bool:
    """Whether BYTES tensors go through the extension now."""
    return _active


@contextmanager
def forced(use_native: bool) -> Iterator[None]:
    """With (True) or without (False) the extension inside the block: for benchmarks and
    tests, which compare the two in one process. Not thread-safe; not for the gateway."""
    global _active
    if use_native and _KERNEL is None:
        raise RuntimeError("labelgate_native is not installed (pip install ./proxy/native)")
    before, _active = _active, use_native
    try:
        yield
    finally:
        _active = before


def split_bytes(data: bytes, count: int) -> list[bytes] | None:
    """The ``count`` length-prefixed elements of ``data`` if it holds exactly those; None
    when it does not, or when the extension is off or ``data`` is not ``bytes``."""
    if not _active or type(data) is not bytes:
        return None
    if count > len(data) >> 2:  # each element needs its 4-byte prefix: malformed
        return None
    return cast(TensorKernel, _KERNEL).split_bytes(data, count)


def join_bytes(values: list[bytes]) -> bytes | None:
    """Each of ``values`` after its 4-byte little-endian length, as one ``bytes``; None when
    a value is not ``bytes`` or too long, or the extension is off."""
    if not _active or type(values) is not list:
        return None
    return cast(TensorKernel, _KERNEL).join_bytes(values)


def partial_all(values: list[bytes], keep_last: int) -> tuple[list[bytes], bytes] | None:
    """``partial`` on every element: (masked elements, their raw BYTES form); None unless
    every element is ASCII ``bytes`` and the extension is on."""
    if not _active or type(values) is not list:
        return None
    return cast(TensorKernel, _KERNEL).partial_all(values, _bounded(keep_last))


def partial_span(data: bytes, start: int, end: int, keep_last: int) -> bytes | None:
    """``data`` with ``[start, end)`` masked by ``partial``; None unless the span is ASCII,
    inside ``data`` and not empty, and the extension is on."""
    # Called once per masked span: the checks are inline, not helper calls.
    if not _active or type(data) is not bytes or not 0 <= start < end <= len(data):
        return None
    return cast(TensorKernel, _KERNEL).partial_span(
        data, start, end, keep_last if keep_last <= _MAX_KEEP_LAST else _MAX_KEEP_LAST
    )


# Past any element's length keep_last makes no difference (all is starred), and it must
# fit the extension's integers.
_MAX_KEEP_LAST = sys.maxsize


def _bounded(keep_last: int) -> int:
    return min(keep_last, _MAX_KEEP_LAST)
