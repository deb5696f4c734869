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

MODULE = "labelgate_native"
# Set to 0 to measure or run without the extension (same results, the Python code's cost).
SWITCH_VARIABLE = "LABELGATE_NATIVE"

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
        self.kernel: Kernel | None = cast(Kernel, module) if module is not None and fits(module) else None
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
