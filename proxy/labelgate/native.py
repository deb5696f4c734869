"""The optional native extension ``labelgate_native`` (the Rust crate in ``proxy/native``).

Each area that uses it (the detectors' scan, the BYTES tensor codec and masks) holds one
``NativeSwitch``: on when the extension is installed with what that area needs and
``LABELGATE_NATIVE`` is not ``0``. The Python code of each area stays the reference and
the fallback; its tests compare both paths in one process with ``forced``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Generic, TypeVar, cast

from labelgate import reasons
from labelgate.errors import LabelgateError

MODULE = "labelgate_native"
# The interface version the extension exports as ``ABI`` (``proxy/native/src/lib.rs``):
# raised with any change of a function's signature or results, so that an extension built
# from other sources is not used (each area then runs its Python code) instead of failing.
ABI = 20
# Set to 0 to measure or run without the extension (same results, the Python code's cost).
SWITCH_VARIABLE = "LABELGATE_NATIVE"
NATIVE_KERNEL_FAILED = reasons.NATIVE_KERNEL_FAILED
# pyo3 creates its panic type at run time, outside any module one could import it from.
_PANIC = ("pyo3_runtime", "PanicException")

Kernel = TypeVar("Kernel")


def _import() -> ModuleType | None:
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        return None


class NativeSwitch(Generic[Kernel]):
    """One area's use of the extension. ``fits`` tells whether the installed module is the
    one the area was written for (an extension built from other sources is not guessed at)."""

    __slots__ = ("kernel", "on")

    def __init__(self, fits: Callable[[ModuleType], bool]) -> None:
        module = _import()
        usable = module is not None and getattr(module, "ABI", None) == ABI and fits(module)
        self.kernel: Kernel | None = cast(Kernel, module) if usable else None
        self.on = self.kernel is not None and os.environ.get(SWITCH_VARIABLE, "1") != "0"

    def available(self) -> bool:
        """Whether the extension is installed with what this area needs."""
        return self.kernel is not None

    @contextmanager
    def forced(self, use_native: bool) -> Iterator[None]:
        """With (True) or without (False) the extension inside the block: for benchmarks and
        tests, which compare the two in one process. Not thread-safe; not for the gateway."""
        if use_native and self.kernel is None:
            raise RuntimeError(f"{MODULE} is not installed (pip install ./proxy/native)")
        before, self.on = self.on, use_native
        try:
            yield
        finally:
            self.on = before


def raise_if_panic(error: BaseException) -> None:
    """Turn a Rust panic into a fail-closed ``LabelgateError`` (INTERNAL: the call is refused).

    pyo3 raises a panic as ``PanicException``, a ``BaseException``: left as it is, it would
    pass every ``except Exception`` on its way and leave the call without a status until its
    deadline. Anything else is left for the caller to re-raise.
    """
    kind = type(error)
    if not isinstance(error, Exception) and (kind.__module__, kind.__name__) == _PANIC:
        raise LabelgateError(NATIVE_KERNEL_FAILED, "internal error in the native extension") from None
