"""Decide: the engines (OPA over HTTP, regopy and OPA's Wasm target in process), the contract, the cache.

Engines are imported lazily (``from labelgate.policy import WasmEngine``): each pulls in its
own runtime (aiohttp, regopy, wasmtime), and most commands need none of them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmbeddedEngine", "OpaEngine", "WasmEngine"]


def __getattr__(name: str) -> Any:
    if name == "WasmEngine":
        from labelgate.policy.wasm import WasmEngine

        return WasmEngine
    if name == "EmbeddedEngine":
        from labelgate.policy.embedded import EmbeddedEngine

        return EmbeddedEngine
    if name == "OpaEngine":
        from labelgate.policy.opa import OpaEngine

        return OpaEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
