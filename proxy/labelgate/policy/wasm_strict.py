"""OPA's strict builtin errors for a module ``opa build -t wasm`` wrote: a builtin's error traps.

The opa engine asks OPA with ``strict-builtin-errors=true`` and the embedded engine sets
regopy's ``strict_built_in_errors``: a builtin's runtime error (``count`` of a number, ``%``
by zero, ``object.get`` of a non-object) fails the evaluation, which the gateway turns into a deny
(POLICY_ERROR). OPA's Wasm library has no such mode: its builtins return NULL on an error, which
the compiled plan reads as undefined, so ``deny if count(input.x) > 1`` was undefined for
``input.x = 5`` and ``allow if not deny`` allowed what OPA denies.

So before the module is instantiated, each library function that implements a module-native
builtin the wasm engine allows (wasm_checks.WASM_NATIVE_BUILTINS and WASM_OPERATORS) and can
fail is wrapped: its body moves to a new function appended to the module (same type; defined
functions are numbered after the imports, so nothing is renumbered), and its own body becomes a
wrapper that calls the moved one and executes ``unreachable`` when the result is NULL and OPA
would have raised an error. The trap ends the evaluation like ``opa_abort`` does (wasm_host:
WasmEvalError, a deny; it names the builtin's function in its backtrace). What each function
returns NULL for, read in OPA's wasm/src (aggregates.c, arithmetic.c, array.c, object.c, set.c,
strings.c) and held to the pinned OPA 1.22.3 by test_wasm_strict.py: a type error, and for
``%`` a zero or non-integer operand, all of which OPA raises; the one NULL that is OPA's
undefined as well is ``max``/``min`` of an empty array or set, so those two trap only when
their argument is neither (the type tag is the first byte of every value, value.h).
A wrapped function is called by the policy's plan only (a library function that called one,
reading NULL as a plain answer, would trap wrongly; test_wasm_strict.py reads the pinned
compiler's call graph), but for opa_arith_minus falling back to opa_set_diff, whose NULL there
is ``number - set``, an error in OPA too. Builtins the engine allows that never return NULL
(``is_*``, comparisons, ``in``, ``json.marshal``) are not wrapped; the host's ``sprintf``
raises itself (wasm_host.py). A module without function names is returned as it is (the
module check refuses it, wasm_checks.module_findings).

Left as it is, closed: OPA stops early where the module's plan does not (a complete rule at
its first success, ``every`` at its first failure, rule indexing skipping a body), so the
module may reach a call that errs, and deny, where OPA allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from labelgate.errors import ConfigError
from labelgate.policy import reasons

_ARRAY, _SET = 5, 7  # OPA_ARRAY, OPA_SET (value.h); interned strings and booleans are 8 and 9
_I32 = 0x7F
_Item = TypeVar("_Item")
# Library function -> (its arity, mask of the argument's type tags for which NULL is OPA's
# undefined and not an error; 0: NULL is always an error).
WRAPPED: dict[str, tuple[int, int]] = {
    "opa_agg_count": (1, 0),
    "opa_agg_max": (1, 1 << _ARRAY | 1 << _SET),  # max([]) is undefined in OPA
    "opa_agg_min": (1, 1 << _ARRAY | 1 << _SET),
    "opa_agg_sort": (1, 0),
    "opa_array_concat": (2, 0),
    "opa_strings_concat": (2, 0),
    "builtin_object_get": (3, 0),
    "builtin_object_union": (2, 0),
    "opa_set_intersection": (2, 0),  # &
    "opa_set_union": (2, 0),  # |
    "opa_set_diff": (2, 0),  # set - set (also what opa_arith_minus falls back to)
    "opa_arith_minus": (2, 0),
    "opa_arith_multiply": (2, 0),
    "opa_arith_plus": (2, 0),
    "opa_arith_rem": (2, 0),  # also NULL for a zero or non-integer operand: OPA raises
}
# Allowed builtins' functions that never return NULL, so need no wrapper (test_wasm_strict.py
# holds WRAPPED and this to cover every function _NATIVE_FUNCTIONS maps an allowed builtin to).
NEVER_NULL = frozenset(
    {
        "builtin_member",
        "builtin_member3",
        "opa_cmp_eq",
        "opa_cmp_gt",
        "opa_cmp_gte",
        "opa_cmp_lt",
        "opa_cmp_lte",
        "opa_cmp_neq",
        "opa_json_marshal",
        "opa_types_is_array",
        "opa_types_is_boolean",
        "opa_types_is_number",
        "opa_types_is_object",
        "opa_types_is_string",
    }
)


def strict_builtin_errors(wasm: bytes, origin: str) -> bytes:
    """``wasm`` with every function of ``WRAPPED`` it holds wrapped to trap where OPA raises.

    A module holding none is returned as it is; one that does not read as the compiler writes
    it (sections, a function of another signature) is refused: ConfigError(POLICY_WASM_INVALID).
    """
    try:
        return _patched(wasm)
    except (IndexError, KeyError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ConfigError(
            reasons.POLICY_WASM_INVALID, f"{origin}: cannot make the module's builtin errors strict: {error}"
        ) from error


def _patched(wasm: bytes) -> bytes:
    if wasm[:8] != b"\0asm\1\0\0\0":
        raise ValueError("not a Wasm 1.0 module")
    sections = _sections(wasm)
    names = _function_names(sections)
    targets = sorted((names[name], spec) for name, spec in WRAPPED.items() if name in names)
    if not targets:
        return wasm
    contents = dict(sections)
    imported = _imported_functions(contents.get(2, b""))
    signatures = _signatures(contents[1])
    declared = _vector(contents[3], read_u32)
    bodies = _vector(contents[10], _read_sized)
    if len(declared) != len(bodies):
        raise ValueError("the function and code sections differ in length")
    for index, (arity, undefined_for) in targets:
        defined = index - imported
        if not 0 <= defined < len(declared):
            raise ValueError(f"function {index} is not defined in the module")
        if signatures[declared[defined]] != (bytes([_I32] * arity), bytes([_I32])):
            raise ValueError(f"function {index} is not (i32 x {arity}) -> i32")
        declared.append(declared[defined])
        bodies.append(bodies[defined])
        bodies[defined] = _wrapper(arity, imported + len(declared) - 1, undefined_for)
    contents[3] = _uleb(len(declared)) + b"".join(_uleb(t) for t in declared)
    contents[10] = _uleb(len(bodies)) + b"".join(_uleb(len(b)) + b for b in bodies)
    out = bytearray(wasm[:8])
    for section, content in sections:
        content = contents[section] if section in (3, 10) else content
        out += bytes([section]) + _uleb(len(content)) + content
    return bytes(out)


def _wrapper(arity: int, moved: int, undefined_for: int) -> bytes:
    """The body: ``r = moved(args...); if r == 0 { trap unless arg 0's type is undefined_for }; r``."""
    result = _uleb(arity)  # the one local, after the parameters
    code = bytearray(b"\x01\x01\x7f")  # locals: one i32
    for param in range(arity):
        code += b"\x20" + _uleb(param)  # local.get
    code += b"\x10" + _uleb(moved) + b"\x22" + result  # call, local.tee
    code += b"\x45\x04\x40"  # i32.eqz, if
    if undefined_for:
        # (1 << i32.load8_u(arg 0)) & undefined_for == 0 -> unreachable
        code += b"\x41\x01\x20\x00\x2d\x00\x00\x74\x41" + _sleb(undefined_for) + b"\x71\x45\x04\x40\x00\x0b"
    else:
        code += b"\x00"  # unreachable
    code += b"\x0b\x20" + result + b"\x0b"  # end if, local.get, end
    return bytes(code)


# -- reading and writing the binary format ------------------------------------------------------


def read_u32(data: bytes, offset: int) -> tuple[int, int]:
    """An unsigned LEB128 number of at most 32 bits at ``offset``, and the offset after it
    (IndexError past the end, ValueError past 32 bits)."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset
        if shift >= 35:
            raise ValueError("an integer runs past 32 bits")


def _read_sized(data: bytes, offset: int) -> tuple[bytes, int]:
    size, offset = read_u32(data, offset)
    if offset + size > len(data):
        raise ValueError("an entry runs past its section")
    return data[offset : offset + size], offset + size


def _vector(content: bytes, read: Callable[[bytes, int], tuple[_Item, int]]) -> list[_Item]:
    count, offset = read_u32(content, 0)
    items = []
    for _ in range(count):
        item, offset = read(content, offset)
        items.append(item)
    if offset != len(content):
        raise ValueError("a section holds more than its vector")
    return items


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        done = (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def _sections(wasm: bytes) -> list[tuple[int, bytes]]:
    sections, offset = [], 8
    while offset < len(wasm):
        section = wasm[offset]
        content, offset = _read_sized(wasm, offset + 1)
        sections.append((section, content))
    return sections


def _function_names(sections: list[tuple[int, bytes]]) -> dict[str, int]:
    """Name -> function index, from the ``name`` custom section (a name given twice is dropped:
    which function it means is unknown, and none this module wraps is)."""
    names: dict[str, int] = {}
    twice: set[str] = set()
    for section, content in sections:
        if section != 0:
            continue
        title, at = _read_sized(content, 0)
        if title != b"name":
            continue
        while at < len(content):
            subsection = content[at]
            sub, at = _read_sized(content, at + 1)
            if subsection != 1:  # function names: a vector of (index, name)
                continue
            count, entry = read_u32(sub, 0)
            for _ in range(count):
                index, entry = read_u32(sub, entry)
                raw, entry = _read_sized(sub, entry)
                name = raw.decode("utf-8")
                if name in names:
                    twice.add(name)
                names[name] = index
    return {name: index for name, index in names.items() if name not in twice}


def _imported_functions(content: bytes) -> int:
    """How many functions the import section imports (they come first in the index space)."""
    if not content:
        return 0
    count, offset = read_u32(content, 0)
    functions = 0
    for _ in range(count):
        _, offset = _read_sized(content, offset)  # module
        _, offset = _read_sized(content, offset)  # name
        kind, offset = content[offset], offset + 1
        if kind == 0:  # function: a type index
            _, offset = read_u32(content, offset)
            functions += 1
        elif kind in (1, 2):  # table (a reference type first) or memory: limits
            offset += kind == 1
            flags, offset = content[offset], offset + 1
            _, offset = read_u32(content, offset)
            if flags & 1:
                _, offset = read_u32(content, offset)
        elif kind == 3:  # global: value type, mutability
            offset += 2
        else:
            raise ValueError(f"an import of unknown kind {kind}")
    return functions


def _signatures(content: bytes) -> list[tuple[bytes, bytes]]:
    """The type section's function types as (parameter types, result types)."""

    def read(data: bytes, offset: int) -> tuple[tuple[bytes, bytes], int]:
        if data[offset] != 0x60:
            raise ValueError("a type that is not a function type")
        params, offset = _read_sized(data, offset + 1)  # one byte a value type: a count, then bytes
        results, offset = _read_sized(data, offset)
        return (params, results), offset

    return _vector(content, read)
