"""The host side of OPA's Wasm policy ABI (v1.x), on the ``wasmtime`` package, for one entrypoint.

What the ABI asks of a host (OPA docs, "WebAssembly" -> "Policy ABI"; the reference hosts are
npm-opa-wasm and OPA's own Go SDK): imports ``env.memory``, ``env.opa_abort``,
``env.opa_println`` and ``env.opa_builtin0..4``; the ``builtins`` export names the builtins
the policy calls that the module does not implement itself, which the host must provide.

``WasmPolicy`` is the compiled module (shared by every thread, wasmtime modules are);
``WasmInstance`` is one instantiation with the data document parsed into its memory once
(``opa_malloc`` + ``opa_json_parse``). Each evaluation writes the input JSON at the heap
pointer taken after the data was loaded and calls ``opa_eval`` once, with the heap starting
right after the input: every evaluation starts from the same heap, so nothing accumulates.
An instance (a wasmtime Store) is not thread-safe: one per thread.

Why the low-level calls: wasmtime-py's ``Func.__call__`` builds a FuncType and converts every
argument each time (~10 µs a call, measured), and its host-function trampoline wraps a
Caller and every value; a decision of the default pack makes one ``opa_eval`` and one
``sprintf`` (itself three calls into the module), so those costs dominated. Here exports are
called with ``wasmtime_func_call_unchecked`` (i32 arguments in a preallocated raw array) and
imports are defined with ``wasmtime_func_new_unchecked``; both are in wasmtime's C API and
reached through the package's own ctypes bindings (``wasmtime._ffi``), which is why the
dependency is pinned to one wasmtime release.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from labelgate.errors import ConfigError
from labelgate.policy import reasons
from labelgate.policy.wasm_sprintf import UnsupportedFormat, parse_arguments, sprintf

UNSUPPORTED = reasons.POLICY_UNSUPPORTED_BY_WASM
ADVICE = "run this policy with --engine opa"
# Host builtins implemented here, exactly as OPA does (wasm_sprintf.py says for which formats).
HOST_BUILTINS = frozenset({"sprintf"})
_IMPORT_NAMES = {"memory", "opa_abort", "opa_println"} | {f"opa_builtin{n}" for n in range(5)}
_PAGE = 65536
# The data document, the input and one evaluation's heap must fit in this (1 GiB).
MAX_PAGES = 16384
_MEMO_LIMIT = 1024


class WasmEvalError(Exception):
    """The evaluation did not finish: opa_abort, a trap, or a host builtin that refused."""


class _Raised:
    """The exception a host function raised, re-raised once wasm has unwound (one per instance)."""

    value: BaseException | None = None


def _c_function(name: str, restype: Any, argtypes: list[Any]) -> Any:
    """A private ctypes handle on a wasmtime C function: plain integers in, no wrapper objects.

    ``CDLL[name]`` makes a new function object, so these signatures do not touch the ones
    wasmtime-py set on its own.
    """
    function = ffi.dll[name]
    function.restype, function.argtypes = restype, argtypes
    return function


_VOID_P, _SIZE = ctypes.c_void_p, ctypes.c_size_t
_CALL = _c_function("wasmtime_func_call_unchecked", _VOID_P, [_VOID_P, _VOID_P, _VOID_P, _SIZE, _VOID_P])
_MEMORY_DATA = _c_function("wasmtime_memory_data", _VOID_P, [_VOID_P, _VOID_P])
_MEMORY_SIZE = _c_function("wasmtime_memory_data_size", _SIZE, [_VOID_P, _VOID_P])


class _Exports:
    """Low-overhead callers for the module's i32 exports."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, raised: _Raised) -> None:
        self._context = ctypes.cast(store._context(), _VOID_P).value
        self._exports = instance.exports(store)
        self._raised = raised

    def func(self, name: str) -> Callable[..., int]:
        export = self._exports[name]
        if not isinstance(export, wasmtime.Func):
            raise ConfigError(
                reasons.POLICY_WASM_INVALID, f"the policy module's export {name!r} is not a function"
            )
        handle = export._func  # kept alive by the closure: its address is what the call takes
        func_addr, context, raised, call = ctypes.addressof(handle), self._context, self._raised, _CALL
        # One raw array per export: arguments in, the result out (calls nest, never the same one).
        raw = (ffi.wasmtime_val_raw_t * 8)()
        raw_addr = ctypes.addressof(raw)
        trap = ctypes.c_void_p()
        trap_addr = ctypes.addressof(trap)

        def invoke(*args: int) -> int:
            for index, value in enumerate(args):
                raw[index].i32 = value
            trap.value = None
            error = call(context, func_addr, raw_addr, 8, trap_addr)
            if error or trap.value:
                raise _failure(raised, error, trap.value)
            return raw[0].i32

        invoke.handle = handle  # type: ignore[attr-defined]
        return invoke

    def get(self, name: str) -> Any:
        return self._exports.get(name)


def _failure(raised: _Raised, error: Any, trap: Any) -> WasmEvalError:
    exception, raised.value = raised.value, None
    if exception is not None:
        return exception if isinstance(exception, WasmEvalError) else WasmEvalError(repr(exception))
    if trap:
        return WasmEvalError(
            wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t))).message
        )
    pointer = ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t))
    return WasmEvalError(str(wasmtime.WasmtimeError._from_ptr(pointer)))


class WasmPolicy:
    """A compiled OPA policy module with one entrypoint; instantiate once per thread."""

    def __init__(self, wasm: bytes, entrypoint: str, origin: str) -> None:
        self.engine = wasmtime.Engine()
        try:
            self.module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as error:
            raise ConfigError(reasons.POLICY_WASM_INVALID, f"{origin}: not a Wasm module: {error}") from error
        self.origin = origin
        imports = {(i.module, i.name) for i in self.module.imports}
        unknown = sorted(f"{m}.{n}" for m, n in imports if m != "env" or n not in _IMPORT_NAMES)
        if unknown:
            raise ConfigError(
                reasons.POLICY_WASM_INVALID,
                f"{origin}: the module imports what OPA's ABI does not: {unknown}",
            )
        probe = WasmInstance(self, b"{}", _probe=True)
        abi = probe.abi_version()
        if abi[0] != 1 or abi[1] < 2:
            raise ConfigError(
                reasons.POLICY_WASM_INVALID,
                f"{origin}: Wasm ABI {abi[0]}.{abi[1]}, this host needs 1.2 or later",
            )
        self.builtins: dict[int, str] = {ident: name for name, ident in probe.dump_json("builtins").items()}
        missing = sorted(set(self.builtins.values()) - HOST_BUILTINS)
        if missing:
            names = ", ".join(f"`{name}`" for name in missing)
            raise ConfigError(
                UNSUPPORTED,
                f"{origin}: the policy needs builtin(s) {names} from the host, which the wasm engine "
                f"does not implement exactly as OPA does; {ADVICE}",
            )
        entrypoints = probe.dump_json("entrypoints")
        if entrypoint not in entrypoints:
            raise ConfigError(
                reasons.POLICY_WASM_ENTRYPOINT_MISSING,
                f"{origin}: the module has no entrypoint {entrypoint!r} (it has {sorted(entrypoints)})",
            )
        self.entrypoint_id = int(entrypoints[entrypoint])

    def instantiate(self, data_json: bytes) -> WasmInstance:
        return WasmInstance(self, data_json)


class WasmInstance:
    """One instantiation of a WasmPolicy, its data loaded; not thread-safe."""

    def __init__(self, policy: WasmPolicy, data_json: bytes, *, _probe: bool = False) -> None:
        self.policy = policy
        store = self.store = wasmtime.Store(policy.engine)
        memory_import = next(i.type for i in policy.module.imports if i.name == "memory")
        assert isinstance(memory_import, wasmtime.MemoryType)
        limits = memory_import.limits
        maximum = MAX_PAGES if limits.max is None else min(limits.max, MAX_PAGES)
        self.memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(limits.min, maximum)))
        self._callbacks: list[Any] = []  # ctypes callbacks must outlive the instance
        self._raised = _Raised()
        self._context = ctypes.cast(store._context(), _VOID_P).value
        self._memory_addr = ctypes.addressof(self.memory._memory)
        externs: list[Any] = []
        for imported in policy.module.imports:
            if imported.name == "memory":
                externs.append(self.memory)
            else:
                externs.append(self._host_function(imported.name or ""))
        self.instance = wasmtime.Instance(store, policy.module, externs)
        exports = self.exports = _Exports(store, self.instance, self._raised)
        self._malloc = exports.func("opa_malloc")
        self._json_parse = exports.func("opa_json_parse")
        self._json_dump = exports.func("opa_json_dump")
        self._value_dump = exports.func("opa_value_dump")
        self._heap_ptr_get = exports.func("opa_heap_ptr_get")
        self._builtins_export = exports.func("builtins")
        self._entrypoints_export = exports.func("entrypoints")
        if _probe:
            return
        self._eval = exports.func("opa_eval")
        # sprintf is a pure function: its result, by the dumped operands (a policy formats the
        # same few messages over and over), saves most of a host call.
        self._sprintf_memo: dict[tuple[bytes, bytes], bytes] = {}
        self._sprintf_id = next((i for i, n in policy.builtins.items() if n == "sprintf"), None)
        self.data_addr = self._parse(data_json)
        self.heap = self._heap_ptr_get()

    # -- memory ------------------------------------------------------------------------------

    def _base(self) -> int:
        return _MEMORY_DATA(self._context, self._memory_addr)  # type: ignore[no-any-return]

    def _size(self) -> int:
        return _MEMORY_SIZE(self._context, self._memory_addr)  # type: ignore[no-any-return]

    def _ensure(self, end: int) -> None:
        size = self._size()
        if end > size:
            pages = -(-(end - size) // _PAGE)
            try:
                self.memory.grow(self.store, pages)
            except wasmtime.WasmtimeError as error:
                raise WasmEvalError(f"out of memory: {end} bytes needed") from error

    def _string_at(self, addr: int) -> bytes:
        """The NUL-terminated string at ``addr``, read in chunks so a missing NUL cannot overrun."""
        size = self._size()
        if not 0 < addr < size:
            raise WasmEvalError(f"address {addr} is outside the module's memory")
        base, chunks, chunk = self._base(), [], 512
        while addr < size:
            piece = ctypes.string_at(base + addr, min(chunk, size - addr))
            end = piece.find(0)
            if end >= 0:
                chunks.append(piece[:end])
                return b"".join(chunks)
            chunks.append(piece)
            addr += len(piece)
            chunk *= 4
        raise WasmEvalError("a string in the module's memory has no terminating NUL")

    def _write(self, addr: int, data: bytes) -> None:
        self._ensure(addr + len(data))
        ctypes.memmove(self._base() + addr, data, len(data))

    def _parse(self, text: bytes) -> int:
        addr = self._malloc(len(text))
        self._write(addr, text)
        value = self._json_parse(addr, len(text))
        if value == 0:
            raise WasmEvalError("opa_json_parse refused the document")
        return value

    # -- ABI ---------------------------------------------------------------------------------

    def abi_version(self) -> tuple[int, int]:
        major, minor = (
            self.exports.get("opa_wasm_abi_version"),
            self.exports.get("opa_wasm_abi_minor_version"),
        )
        if not isinstance(major, wasmtime.Global) or not isinstance(minor, wasmtime.Global):
            return (0, 0)
        return int(major.value(self.store)), int(minor.value(self.store))

    def dump_json(self, export: str) -> Any:
        value = self._builtins_export() if export == "builtins" else self._entrypoints_export()
        return json.loads(self._string_at(self._json_dump(value)))

    def evaluate(self, input_json: bytes) -> bytes:
        """The JSON result set (``[{"result": ...}]``, ``[]`` when undefined) for one input."""
        heap, size = self.heap, len(input_json)
        self._write(heap, input_json)
        result = self._eval(0, self.policy.entrypoint_id, self.data_addr, heap, size, heap + size, 0)
        return self._string_at(result)

    # -- imports -----------------------------------------------------------------------------

    def _host_function(self, name: str) -> wasmtime.Func:
        i32 = wasmtime.ValType.i32()
        if name in ("opa_abort", "opa_println"):
            params, results = [i32], []
        else:
            params, results = [i32] * (int(name[-1]) + 2), [i32]
        handler = getattr(self, f"_{name.removeprefix('opa_').rstrip('01234')}")
        indexes = range(len(params))

        @ffi.wasmtime_func_unchecked_callback_t  # type: ignore[untyped-decorator]  # a ctypes CFUNCTYPE
        def callback(env: Any, caller: Any, values: Any, size: int) -> int:
            try:
                out = handler(*[values[i].i32 for i in indexes])
                if results:
                    values[0].i32 = out
                return 0
            except BaseException as error:  # unwinds wasm with a trap; re-raised by the caller
                self._raised.value = error
                message = b"host function failed"
                trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(message), len(message))
                return ctypes.cast(trap, ctypes.c_void_p).value or 0

        self._callbacks.append(callback)
        func = ffi.wasmtime_func_t()
        finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)
        self._callbacks.append(finalizer)
        functype = wasmtime.FuncType(params, results)
        ffi.wasmtime_func_new_unchecked(
            self.store._context(), functype.ptr(), callback, None, finalizer, ctypes.byref(func)
        )
        return wasmtime.Func._from_raw(func)

    def _abort(self, addr: int) -> None:
        raise WasmEvalError(f"opa_abort: {self._string_at(addr).decode('utf-8', 'replace')}")

    def _println(self, addr: int) -> None:
        return None  # OPA's server drops print() output from decisions by default

    def _builtin(self, ident: int, _ctx: int, *args: int) -> int:
        if ident != self._sprintf_id or len(args) != 2:
            name = self.policy.builtins.get(ident, f"#{ident}")
            raise WasmEvalError(f"builtin {name} with {len(args)} argument(s) is not implemented")
        key = (self._string_at(self._value_dump(args[0])), self._string_at(self._value_dump(args[1])))
        result = self._sprintf_memo.get(key)
        if result is None:
            result = _sprintf_json(*key)
            if len(self._sprintf_memo) >= _MEMO_LIMIT:
                self._sprintf_memo.clear()
            self._sprintf_memo[key] = result
        return self._parse(result)


def _sprintf_json(format_dump: bytes, arguments_dump: bytes) -> bytes:
    """sprintf's result as JSON text from its dumped operands.

    An operand of the wrong type is an error, as for OPA with strict builtin errors (what the
    other engines ask for), not an undefined sprintf (what OPA's Wasm target makes of it).
    """
    try:
        text = sprintf(json.loads(format_dump), parse_arguments(arguments_dump.decode("utf-8")))
    except (TypeError, ValueError) as error:
        raise WasmEvalError(f"a builtin error (strict builtin errors): {error}") from error
    except UnsupportedFormat as error:
        raise WasmEvalError(f"sprintf: {error} is not implemented exactly; {ADVICE}") from error
    return json.dumps(text, ensure_ascii=False).encode("utf-8")
