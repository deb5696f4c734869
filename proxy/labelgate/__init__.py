"""labelgate: a data-classification gateway for inference services."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os

__version__ = "0.1.0"


def _load_rego_first() -> None:
    """Load rego-cpp's library (regopy) before any other C++ library, when it is installed.

    ``librego_shared.so`` carries its own allocator (snmalloc) and exports the global
    ``operator new`` / ``operator delete``. The process has one ``libstdc++.so.6``, and its own
    calls to ``operator new`` / ``delete`` (out-of-line string and stream members such as
    ``std::ostringstream::str``) bind once, when it is first loaded: to snmalloc when it is
    loaded as rego-cpp's dependency, to its own (glibc ``malloc``) when grpc loads it first.
    In the second case memory crosses allocators inside every evaluation (the strings
    ``rego::to_key`` builds are made by libstdc++ with ``malloc`` and handed to snmalloc's
    ``delete``, which does not free them): ~90 KB per decision was never returned, and the
    gateway's RSS grew without bound (docs/RELIABILITY.md, the soak). The gateway imports grpc
    before regopy, so the library is loaded here, first; it stays loaded (``RTLD_LOCAL``:
    nothing else binds to its symbols) and regopy's own load reuses it. Costs one ``dlopen``
    (~40 ms) per process; without regopy (OPA or Wasm only) nothing happens.
    """
    if os.environ.get("LABELGATE_NO_REGO_PRELOAD"):  # only to measure the leak it prevents
        return
    try:
        spec = importlib.util.find_spec("regopy")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "librego_shared.so")
        if os.path.isfile(path):
            with contextlib.suppress(OSError):  # regopy's own import reports a broken install
                ctypes.CDLL(path)
            return


_load_rego_first()
