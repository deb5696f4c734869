"""What the harness adds to the shared process helpers (``tests/support/procs.py``).

Starting, waiting for and stopping processes, free ports, CPU time and where ``opa`` is
come from ``tests.support.procs``, which the tests use too. Here: the harness's own error,
the binaries it needs (ghz), and starting several processes side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from labelgate.errors import LabelgateError
from tests.support.procs import opa_binary


class BenchError(LabelgateError):
    """The harness cannot measure: a tool is missing, a process died, a check failed."""


def tool(path: Path, name: str, how: str) -> str:
    """The path of a required binary, or a BenchError that says how to get it."""
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise BenchError("BENCH_TOOL_MISSING", f"{name} not found at {path} or on PATH: {how}")


def opa() -> str:
    """The ``opa`` binary (``$LABELGATE_OPA``, the pinned one, PATH), or a BenchError."""
    try:
        return opa_binary()
    except FileNotFoundError as error:
        raise BenchError("BENCH_TOOL_MISSING", str(error)) from None


def enter_together(stack: contextlib.ExitStack, *managers: AbstractContextManager[Any]) -> list[Any]:
    """Enter the managers in parallel threads; each one entered is exited by ``stack``."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    values, failure = [], None
    for manager, future in zip(managers, futures, strict=True):
        error = future.exception()
        if error is not None:
            failure = failure or error
            continue
        stack.push(manager.__exit__)
        values.append(future.result())
    if failure is not None:
        raise failure
    return values
