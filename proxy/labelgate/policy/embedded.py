"""Decisions in process with regopy (rego-cpp), from the same Rego folder OPA loads, or
from the bundle server OPA pulls from (``bundle=BundleClient(...)``, see bundle_client.py).

Compiled once per revision: ``Interpreter.build`` produces a Bundle holding the compiled
policy, its data and a plan for one entrypoint (the decision rule); each decision sets the
input on a runner interpreter and runs that entrypoint, with no re-compilation. Compiling
and file reads run in a worker thread, and a new revision is swapped in with one
attribute assignment: a decision always runs against one complete snapshot, and in-flight
decisions finish on the one they started with.

What a decision costs (regopy 1.5.2 on the 2-core reference machine; ``python -m
labelgate.policy.profile_policy`` measures it): handing over a 1.7 KB input as JSON text
(``set_input_term``) takes ~1-2 ms, because rego-cpp parses it with its full Rego parser;
building the same input node by node through the C API takes ~0.3 ms (one ctypes call per
value, see ``_InputBuilder``), so that is what this module does. Querying an entrypoint
instead of a ``result = data...`` query saves ~40 µs of query planning and unification per
decision. What is left is the policy itself (rego-cpp is ~5-10x slower per expression than
OPA, and far slower on function calls and partial rules: the header of
rego/labelgate/decision/clearance.rego has the cost model), so a decision of the default
policy on 12 fields takes milliseconds, not the ~60 µs quoted for a tiny input and policy,
and runs in a small thread pool (ctypes releases the GIL during the query, so the event
loop keeps running and the second core works). The input dict is read in that thread, so
callers must not change it while ``decide`` runs (the gateway builds one per call). A
decision moves inline onto the event loop only once the revision's measured average is under
``inline_budget`` (100 µs), and only for an input no larger (``inline.input_size``) than the
largest one decided within it: inline saves the ~50-100 µs thread hop, which only pays for a
decision that blocks the loop no longer than the hop itself would cost (inline.py).

Thread safety, measured on regopy 1.5.2: building in one thread while another queries
(separate interpreters, 1,200 builds / 5,300 queries) and three threads querying one shared
Bundle through their own interpreters gave no wrong result. One interpreter is not safe to
share (it holds the input between setting it and the query, and ctypes drops the GIL during
the query), so every thread gets its own runner interpreter per revision.

rego-cpp 1.5.2 behaviours this module works around or that policies must avoid:
- Strings are kept in their JSON-escaped form inside rego-cpp (``count`` of a string counts
  its escaped bytes, OPA counts runes), and ``Interpreter.set_input`` (regopy's Python-side
  builder) stores them unescaped, so the output is not valid JSON when an input string
  holds ``"``, ``\\`` or a newline. ``_InputBuilder`` hands every string over escaped
  exactly as ``json.dumps(ensure_ascii=False)`` would, which gives the very nodes
  ``set_input_term`` builds from JSON text; floats (rego-cpp formats those itself, e.g.
  ``1e-07`` becomes ``0``) and integers beyond 64 bits go in as JSON text instead. The data
  goes in the same way (unescaped non-ASCII), else "é" in data.json never equals the input's.
  rego-cpp also compares and sorts strings by that escaped form, so a string holding ``"``,
  ``\\`` or a control character orders differently from OPA: an input holding one (key or
  value) is not decided here, it is denied with EMBEDDED_INPUT_UNSUPPORTED (the escaping
  already finds them, so this costs nothing per decision); ``--engine opa`` decides them.
- rego-cpp keeps a number with a fraction or an exponent to 16 significant digits (it writes
  and compares ``0.30000000000000004`` as ``0.3``): an input holding a float that 16 digits do
  not hold is denied with EMBEDDED_INPUT_UNSUPPORTED too (only inputs holding a float take the
  JSON-text path, where this is checked), and data holding one is refused when it loads.
- rego-cpp looks an array up by an integer only, OPA by any whole number (``xs[1.0]`` is
  ``xs[1]``): an input holding a whole float is denied with EMBEDDED_INPUT_UNSUPPORTED (on
  that same JSON-text path), data holding one and a policy with such a literal are refused
  when they load (whole_numbers.py; the gateway hands over subject attributes as integers).
- rego-cpp iterates an object in the order its keys went in, OPA in sorted order: the input's
  and the data's keys go in sorted, so iterating them (``[k | input.o[k]]``) is OPA's order.
  Objects the policy builds keep their own order (rego_order.py refuses where that shows).
- ``sprintf("%s", [concat(...)])`` keeps the inner string's quotes and yields invalid JSON
  output (sprintf is refused); iterating a set follows insertion order where OPA's is sorted;
  sort, max and min order values by their JSON text (``9`` after ``10``), which the exact
  versions the policy is compiled with correct (capabilities.py). The differential test
  catches such divergences.
- Not parsed inside a comprehension ("Invalid collection"): ``some key, value in x`` (write
  ``value := x[key]``) and a head that is an expression (``[n * 2 | ...]``: bind it in the
  body). ``f(x)[0]`` does not parse anywhere (bind ``f(x)`` first).
- Two ``add_data_json`` calls with the same top-level key do not merge (the second is
  dropped), hence one merged data document (see source.py).
- Compile errors are printed to stdout unless the interpreter's log level is NONE.

Every revision is checked after compiling (capabilities.py, rego_text.py): a policy calling a
builtin outside the verified allow-list (sprintf and the other INEXACT_BUILTINS included),
iterating a visible set where order shows, or a string literal with a ``\\u``/``\\/`` escape,
is refused with POLICY_UNSUPPORTED_BY_EMBEDDED and a pointer to ``--engine opa``; so is data
from a data.yaml (source.py). What rego-cpp compiles is ``exact_modules`` of the policy: calls
of sort, max, min and json.marshal go to exact versions that deny where rego-cpp's answer
could differ (capabilities.py). The divergences above that depend on runtime values are
listed in docs/EMBEDDED_COMPLIANCE.md with the compliance results the allow-list comes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING, Any

import regopy
import regopy.rego_shared

from labelgate.errors import ConfigError, InvalidInput
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.capabilities import check_source, exact_modules
from labelgate.policy.compile_check import check_in_child
from labelgate.policy.contract import (
    EMBEDDED_INPUT_UNSUPPORTED,
    POLICY_ERROR,
    POLICY_UNAVAILABLE,
    POLICY_UNDEFINED,
    Decision,
    input_phase,
    validate_result,
)
from labelgate.policy.engine import DECISION_PATH
from labelgate.policy.inline import DEFAULT_BUDGET, InlineGate, input_size, known_size
from labelgate.policy.opa_check import OpaChecker, OpaCheckMode
from labelgate.policy.source import PolicySource, policy_fingerprint
from labelgate.policy.whole_numbers import holds_whole_float

if TYPE_CHECKING:
    from labelgate.policy.bundle_client import BundleClient

log = get_logger(__name__)

# Runs in a worker thread with a revision about to be swapped in; raises to refuse the whole
# revision, or returns what to do right after the swap (on the event loop, with no await in
# between). The gateway's classify stage takes the bundle's catalog this way, so a call never
# meets a new policy with an old catalog once both are in.
RevisionHook = Callable[[PolicySource], Callable[[], None]]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A rule head at the start of a line: `name :=`, `name contains`, `name if`, `default name`,
# `name.sub :=`; `name(` is a function and cannot be queried without arguments.
_RULE_HEAD = re.compile(r"^(?:default\s+)?([A-Za-z_][A-Za-z0-9_]*)(\s*\()?", re.MULTILINE)
_NOT_RULES = {"package", "import", "default", "else"}


def _interpreter() -> regopy.Interpreter:
    interpreter = regopy.Interpreter()
    # Without this rego-cpp prints compile errors to stdout (it would corrupt CLI output).
    interpreter.log_level = regopy.LogLevel.NONE
    # A builtin's error is an evaluation error (a deny). Not strict, rego-cpp leaves the variable
    # it was assigned to unbound and goes on, so `v := count(x); not v > 3` held where OPA's
    # body fails (OPA's result is undefined: a deny in either case now).
    interpreter.strict_built_in_errors = True
    return interpreter


_ERROR_ENTRY = re.compile(
    r"\(error \d+:(?P<file>[^|\s]*)\|(?P<offset>\d+)\|\d+\s+\(errormsg \d+:(?P<msg>[^\n]*)\)"
)


def _summarise(error: regopy.RegoError, modules: tuple[tuple[str, str], ...]) -> str:
    """rego-cpp reports errors as an S-expression with byte offsets; make it file:line:col."""
    texts = dict(modules)
    found = []
    for entry in _ERROR_ENTRY.finditer(str(error)):
        name, offset, message = entry["file"], int(entry["offset"]), entry["msg"]
        if name in texts:
            before = texts[name].encode()[:offset].decode(errors="replace")
            line, col = before.count("\n") + 1, len(before) - before.rfind("\n")
            found.append(f"{name}:{line}:{col}: {message}")
        else:
            found.append(f"{name or 'query'}: {message}")
    return "; ".join(dict.fromkeys(found)) or str(error).splitlines()[0]


def _load(
    interpreter: regopy.Interpreter, source: PolicySource, modules: tuple[tuple[str, str], ...]
) -> None:
    """The modules (``exact_modules`` of the source's) and the source's data."""
    for name, text in modules:
        interpreter.add_module(name, text)
    interpreter.add_data_json(_data_json(source))


def _data_json(source: PolicySource) -> str:
    # Unescaped non-ASCII, as the input goes in (``_InputBuilder``): rego-cpp keeps strings in
    # their escaped form, so "\u00e9" from the data would never equal "é" from the input.
    # No NaN/Infinity: they are not JSON, and OPA has no such numbers. Keys sorted: rego-cpp
    # iterates an object in insertion order, OPA in sorted order.
    try:
        return json.dumps(source.data, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except ValueError as error:
        raise ConfigError(
            reasons.POLICY_DATA_INVALID,
            f"{source.origin}: data is not JSON: {error}",
        ) from error


class _NotBuildable(Exception):
    """A value the node-by-node input path does not take; the input goes in as JSON text."""


class UnsupportedInput(Exception):
    """The input holds a string (key or value) with ``"``, ``\\`` or a control character, or a
    float that 16 significant digits do not hold, or a whole number written as a float (``1.0``:
    an array index in OPA, not in rego-cpp nor OPA's Wasm target; whole_numbers.py).

    rego-cpp keeps strings in their JSON-escaped form and compares and sorts them by it, so
    such strings order differently from OPA (``a"`` sorts after ``a#``: the escape's ``\\``
    is 0x5c); it keeps numbers to 16 significant digits, so ``0.30000000000000004 > 0.3`` is
    false there: the decision is refused (EMBEDDED_INPUT_UNSUPPORTED) rather than differ.
    """


def rounded_float(value: Any) -> float | None:
    """A float in ``value`` (any JSON-like value) that rego-cpp would not keep, or None.

    rego-cpp holds a number with a fraction or an exponent to 16 significant digits: a float
    whose 16-digit form reads back as another float changes there.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if float(f"{item:.16g}") != item:
                return float(item)
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
    return None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_OK = 0
# Escaped UTF-8 of strings seen before (object keys, labels, paths repeat call after call).
_ESCAPED_LIMIT = 4096


class _InputBuilder:
    """Hands a JSON-like Python value to rego-cpp as input, node by node through its C API.

    rego-cpp's input builder is a stack machine: push scalars, then ``regoInputArray(n)``
    pops n values into an array, ``regoInputObjectItem`` pops a key and a value into an
    item and ``regoInputObject(n)`` pops n items. The library is loaded a second time with
    ``ctypes.PyDLL`` so these ~1 µs calls keep the GIL instead of dropping and retaking it
    for each value; the query itself goes through regopy, which releases it.
    """

    def __init__(self) -> None:
        lib = ctypes.PyDLL(regopy.rego_shared.path)
        void_p, code = ctypes.c_void_p, ctypes.c_uint32
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "regoNewInput": (void_p, []),
            "regoFreeInput": (None, [void_p]),
            "regoInputString": (code, [void_p, ctypes.c_char_p]),
            "regoInputInt": (code, [void_p, ctypes.c_int64]),
            "regoInputBoolean": (code, [void_p, ctypes.c_bool]),
            "regoInputNull": (code, [void_p]),
            "regoInputObjectItem": (code, [void_p]),
            "regoInputObject": (code, [void_p, ctypes.c_uint32]),
            "regoInputArray": (code, [void_p, ctypes.c_uint32]),
            "regoSetInput": (code, [void_p, void_p]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        self._lib = lib
        self._escaped: dict[str, bytes] = {}

    def set_input(self, runner: regopy.Interpreter, value: Any) -> None:
        """Make ``value`` the runner's input; raises _NotBuildable for values it does not take."""
        lib = self._lib
        handle = lib.regoNewInput()
        if not handle:
            raise MemoryError("rego-cpp could not allocate an input")
        try:
            self._push(handle, value)
            # regopy exposes no public handle to its interpreter; _impl is the rego-cpp pointer.
            if lib.regoSetInput(runner._impl, handle) != _OK:
                raise regopy.RegoError("rego-cpp rejected the input")
        finally:
            lib.regoFreeInput(handle)  # rego-cpp keeps its own copy of the nodes

    def _push(self, handle: int, value: Any) -> None:
        lib, kind = self._lib, type(value)
        if kind is str:
            status = lib.regoInputString(handle, self._escape(value))
        elif kind is dict:
            # In sorted order: rego-cpp iterates an object's keys as they went in, OPA sorted.
            try:
                keys = sorted(value) if len(value) > 1 else list(value)
            except TypeError:
                raise _NotBuildable("keys of several types") from None
            for key in keys:
                if type(key) is not str:
                    raise _NotBuildable("non-string key")
                self._check(lib.regoInputString(handle, self._escape(key)))
                self._push(handle, value[key])
                self._check(lib.regoInputObjectItem(handle))
            status = lib.regoInputObject(handle, len(value))
        elif kind is list or kind is tuple:
            for item in value:
                self._push(handle, item)
            status = lib.regoInputArray(handle, len(value))
        elif kind is bool:
            status = lib.regoInputBoolean(handle, value)
        elif kind is int and _INT64_MIN <= value <= _INT64_MAX:
            status = lib.regoInputInt(handle, value)
        elif value is None:
            status = lib.regoInputNull(handle)
        else:  # floats, big integers, anything json.dumps may or may not take
            raise _NotBuildable(kind.__name__)
        self._check(status)

    def _escape(self, text: str) -> bytes:
        escaped = self._escaped.get(text)
        if escaped is None:
            # Exactly what json.dumps(ensure_ascii=False) writes between the quotes; it differs
            # from the text only for ", \ and control characters, which rego-cpp would order
            # differently from OPA (UnsupportedInput). Such a string is not remembered: it is
            # rare, and a hit then never needs a second look.
            raw = text.encode("utf-8")
            escaped = encode_basestring(text)[1:-1].encode("utf-8")
            if escaped != raw:
                raise UnsupportedInput
            if len(self._escaped) >= _ESCAPED_LIMIT:
                self._escaped.clear()
            self._escaped[text] = escaped
        return escaped

    @staticmethod
    def _check(status: int) -> None:
        if status != _OK:
            raise regopy.RegoError(f"rego-cpp refused an input value (code {status})")


def _fast_input_builder() -> Callable[[regopy.Interpreter, Any], None] | None:
    try:
        return _InputBuilder().set_input
    except (AttributeError, OSError):  # another regopy build: JSON text only
        log.warning("policy_input_builder_unavailable", engine="embedded")
        return None


_set_input = _fast_input_builder()


def set_policy_input(runner: regopy.Interpreter, value: Any) -> None:
    """Make ``value`` (a JSON-like Python value) the runner's input, the fastest correct way.

    Raises UnsupportedInput when a string in it holds ``"``, ``\\`` or a control character, or
    a float in it needs more than 16 significant digits or is a whole number (``1.0``).
    """
    if _set_input is not None:
        try:
            _set_input(runner, value)
            return
        except _NotBuildable:
            pass
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    # Without ensure_ascii a backslash in the text can only come from escaping one of those
    # in a string (numbers, literals and the syntax have none): the same test, on the text.
    # Floats take this path only (the node-by-node builder hands them over as text).
    # A whole float (``1.0``) is an array index in OPA, not in rego-cpp (whole_numbers.py).
    if "\\" in text or rounded_float(value) is not None or holds_whole_float(value):
        raise UnsupportedInput
    runner.set_input_term(text)


def _refuse_rounded_data(source: PolicySource) -> None:
    """Raise ConfigError when the data holds a float rego-cpp keeps to 16 significant digits
    (``rounded_float``): it would compare and write another number than OPA."""
    found = rounded_float(source.data)
    if found is not None:
        raise ConfigError(
            reasons.POLICY_DATA_INVALID,
            f"{source.origin}: data number {found!r} has more than 16 significant digits: the "
            f"embedded engine (rego-cpp) would read it as {float(f'{found:.16g}')!r}; write it with "
            f"at most 16, or run this policy with --engine opa",
        )


class _Undefined:
    """The decision rule has no value for this input."""


UNDEFINED = _Undefined()


@dataclass
class _Compiled:
    """One revision, compiled: immutable once built; each thread queries with its own runner."""

    source: PolicySource
    modules: tuple[tuple[str, str], ...]  # what rego-cpp compiled: exact_modules(source.modules)
    bundle: regopy.Bundle
    builder: regopy.Interpreter  # kept alive as long as the bundle it built
    entrypoint: str
    # What its decisions cost, and so which go inline (the engine sets its budget).
    inline: InlineGate = field(default_factory=InlineGate)
    _local: threading.local = field(default_factory=threading.local)

    @property
    def average_seconds(self) -> float | None:
        """Moving average of evaluation time; None until measured."""
        return self.inline.average_seconds

    @property
    def revision(self) -> str:
        return self.source.revision

    @classmethod
    def build(cls, source: PolicySource, entrypoint: str, opa: OpaChecker | None = None) -> _Compiled:
        modules = exact_modules(source.modules)
        data_json = _data_json(source)
        # OPA's compiler must accept the revision too (opa_check.py); it runs while rego-cpp
        # compiles, and is asked last, so a refusal of rego-cpp's or the checks' keeps its reason.
        check = opa.begin(source.modules, data_json, source.origin) if opa is not None else None
        with check if check is not None else contextlib.nullcontext():
            compiled = cls._build(source, entrypoint, modules, data_json)
            if check is not None:
                check.result()
        return compiled

    @classmethod
    def _build(
        cls, source: PolicySource, entrypoint: str, modules: tuple[tuple[str, str], ...], data_json: str
    ) -> _Compiled:
        # rego-cpp aborts the process on some policies: a child compiles it first (compile_check.py).
        check_in_child(modules, data_json, entrypoint, source.origin)
        builder = _interpreter()
        try:
            _load(builder, source, modules)
            bundle = builder.build(None, [entrypoint])
        except regopy.RegoError as error:
            raise ConfigError(
                reasons.POLICY_COMPILE_FAILED, f"{source.origin}: {_summarise(error, modules)}"
            ) from error
        if not bundle.ok():
            raise ConfigError(reasons.POLICY_COMPILE_FAILED, f"{source.origin}: rego-cpp could not build it")
        source.refuse_yaml_data("embedded")
        _refuse_rounded_data(source)
        # Refuse what regopy would evaluate differently from OPA (POLICY_UNSUPPORTED_BY_EMBEDDED):
        # a revision that fails here never serves, so a followed bundle keeps its last good one.
        check_source(source.modules, source.origin)
        return cls(source, modules, bundle, builder, entrypoint)

    def evaluate(self, value: Any, size: int | None = None) -> Any:
        """The decision rule's value for input ``value`` (of ``input_size`` ``size``, when the
        caller measured it), or UNDEFINED. Raises on any error."""
        runner = getattr(self._local, "runner", None)
        if runner is None:
            runner = self._local.runner = _interpreter()
        started = time.perf_counter()
        set_policy_input(runner, value)
        output = runner.query_bundle_entrypoint(self.bundle, self.entrypoint)  # ValueError if not JSON
        elapsed = time.perf_counter() - started
        self.inline.record(elapsed, partial(input_size, value) if size is None else known_size(size))
        if not output.ok():
            raise regopy.RegoError("evaluation error")
        expressions = output.results[0].expressions if output.results else []
        return expressions[0] if expressions else UNDEFINED


class EmbeddedEngine:
    """PolicyEngine running, in process, the Rego in ``policy_dir`` or the bundles ``bundle`` follows."""

    name = "embedded"

    def __init__(
        self,
        policy_dir: Path | None = None,
        *,
        bundle: BundleClient | None = None,
        watch_interval: float | None = 2.0,
        decision_path: str = DECISION_PATH,
        inline_budget: float = DEFAULT_BUDGET,
        workers: int | None = None,
        opa_check: OpaCheckMode = "auto",
    ) -> None:
        segments = decision_path.strip("/").split("/")
        if not all(_IDENTIFIER.match(s) for s in segments):
            raise ConfigError(
                reasons.POLICY_CONFIG_INVALID, f"decision path {decision_path!r} is not a data path"
            )
        if (policy_dir is None) == (bundle is None):
            raise ConfigError(
                reasons.POLICY_CONFIG_INVALID, "the embedded engine needs a policy folder or a bundle"
            )
        self._policy_dir = Path(policy_dir) if policy_dir is not None else None
        self._bundle = bundle
        self._hooks: list[RevisionHook] = []
        self._package = segments[:-1]
        self._rule = segments[-1]
        self._entrypoint = "/".join(segments)
        self._watch_interval = watch_interval
        self._compiled: _Compiled | None = None
        self._reload_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._inline_budget = inline_budget
        self._workers = workers or min(4, os.cpu_count() or 2)
        self._executor: ThreadPoolExecutor | None = None
        # policy.opa_check: required and no opa is a configuration error now, not at start.
        self._opa_check = OpaChecker(opa_check)

    @property
    def revision(self) -> str:
        return self._compiled.revision if self._compiled else "unloaded"

    @property
    def bundle(self) -> BundleClient | None:
        return self._bundle

    def add_revision_hook(self, hook: RevisionHook) -> None:
        """Have ``hook`` vet (and then follow) every new revision; see ``RevisionHook``."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Load and compile; a policy that cannot load is a configuration error.

        Following a bundle, this waits for the first good bundle (``BundleClient.start_timeout``)
        and raises ConfigError if none arrives, with the reason of the last failure.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="labelgate-rego")
        if self._bundle is not None:
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._bundle.follow(self.load), name="labelgate-bundle")
            try:
                await self._bundle.wait_first(self._watcher)
            except BaseException:
                await self.close()
                raise
            return
        await self.reload()
        if self._watch_interval and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="labelgate-policy-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True)

    async def healthy(self) -> bool:
        return self._compiled is not None

    async def reload(self) -> bool:
        """Re-read the folder; compile and swap in a new revision. True when it changed.

        Raises ConfigError when the folder cannot be loaded or compiled; the previous
        revision (if any) keeps serving.
        """
        if self._policy_dir is None:
            return False  # following a bundle: new revisions arrive by themselves
        async with self._reload_lock:
            fingerprint = await asyncio.to_thread(policy_fingerprint, self._policy_dir)
            source = await asyncio.to_thread(PolicySource.from_dir, self._policy_dir)
            self._fingerprint = fingerprint
            return await self._swap_in(source)

    async def load(self, source: PolicySource) -> bool:
        """Compile ``source`` (in a worker thread) and swap it in. True when the revision changed.

        Raises ConfigError (or what a revision hook raises) when it cannot be used; the
        previous revision keeps serving.
        """
        async with self._reload_lock:
            return await self._swap_in(source)

    async def _swap_in(self, source: PolicySource) -> bool:
        if self._compiled is not None and source.revision == self._compiled.revision:
            return False
        compiled = await asyncio.to_thread(_Compiled.build, source, self._entrypoint, self._opa_check)
        compiled.inline = InlineGate(self._inline_budget)
        commits = [await asyncio.to_thread(hook, source) for hook in self._hooks]
        old = self.revision
        self._compiled = compiled  # the atomic swap: decisions read this once
        for commit in commits:
            commit()
        log.info(
            "policy_loaded",
            engine=self.name,
            origin=source.origin,
            old_revision=old,
            revision=source.revision,
            modules=len(source.modules),
        )
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        compiled, executor = self._compiled, self._executor
        if compiled is None or executor is None:
            log.error("policy_not_loaded", engine=self.name)
            return Decision.deny(POLICY_UNAVAILABLE, engine=self.name, revision=self.revision)
        revision = compiled.revision
        try:
            size = compiled.inline.inline_size(partial(input_size, input))
            if size is not None:
                value = compiled.evaluate(input, size)
            else:
                loop = asyncio.get_running_loop()
                value = await loop.run_in_executor(executor, compiled.evaluate, input)
        except UnsupportedInput:
            log.warning("policy_input_unsupported", engine=self.name, revision=revision)
            return Decision.deny(EMBEDDED_INPUT_UNSUPPORTED, engine=self.name, revision=revision)
        except Exception as error:  # fail closed on anything rego-cpp or the input conversion throws
            log.error(
                "policy_eval_error", engine=self.name, revision=revision, error_type=type(error).__name__
            )
            return Decision.deny(POLICY_ERROR, engine=self.name, revision=revision)
        if value is UNDEFINED:
            return Decision.deny(POLICY_UNDEFINED, engine=self.name, revision=revision)
        return validate_result(value, phase=input_phase(input), engine=self.name, revision=revision)

    def explain(self, input: dict[str, Any]) -> dict[str, Any]:
        """Which named rules of the decision package hold for this input, with their values.

        Re-compiles per rule (about a millisecond each): for people, not the data path.
        """
        compiled = self._compiled
        if compiled is None:
            raise ConfigError(reasons.POLICY_NOT_LOADED, "the embedded engine has no policy loaded")
        package = ".".join(self._package)
        names = _rule_names(compiled.source, package)
        interpreter = _interpreter()
        _load(interpreter, compiled.source, compiled.modules)
        try:
            set_policy_input(interpreter, input)
        except UnsupportedInput as error:
            raise InvalidInput(
                EMBEDDED_INPUT_UNSUPPORTED, Decision.deny(EMBEDDED_INPUT_UNSUPPORTED).reason
            ) from error
        matched: dict[str, Any] = {}
        not_matched: dict[str, str] = {}
        for name in names:
            try:
                output = interpreter.query(f"value = data.{package}.{name}")
            except regopy.RegoError as error:
                not_matched[name] = f"error: {str(error).splitlines()[0] if str(error) else 'rego error'}"
                continue
            except ValueError:
                not_matched[name] = "error: rego-cpp produced a value that is not valid JSON"
                continue
            if not output.ok():
                not_matched[name] = "error while evaluating"
                continue
            bindings = output.results[0].bindings if output.results else {}
            if "value" not in bindings:
                not_matched[name] = "undefined"
            elif _is_empty(bindings["value"]):
                not_matched[name] = f"{json.dumps(bindings['value'])}"
            else:
                matched[name] = bindings["value"]
        return {
            "package": f"data.{package}",
            "revision": compiled.revision,
            "matched": matched,
            "not_matched": not_matched,
        }

    async def _watch(self) -> None:
        assert self._watch_interval and self._policy_dir is not None
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                fingerprint = await asyncio.to_thread(policy_fingerprint, self._policy_dir)
                if fingerprint != self._fingerprint:
                    await self.reload()
            except ConfigError as error:
                # Keep serving the last good revision, as OPA keeps its last good bundle.
                self._fingerprint = fingerprint
                log.error("policy_reload_failed", engine=self.name, reason=error.reason, error=error.message)
            except Exception as error:
                log.error("policy_watch_error", engine=self.name, error_type=type(error).__name__)


def _rule_names(source: PolicySource, package: str) -> list[str]:
    names: set[str] = set()
    for _, text in source.modules:
        match = re.search(r"^package\s+([\w.]+)", text, re.MULTILINE)
        if not match or match.group(1) != package:
            continue
        for head in _RULE_HEAD.finditer(text):
            name, is_function = head.group(1), head.group(2)
            if not is_function and name not in _NOT_RULES:
                names.add(name)
    return sorted(names)


def _is_empty(value: Any) -> bool:
    # Not `value in (False, ...)`: 0 == False would hide a rule whose value is 0.
    return value is False or value is None or (isinstance(value, (str, list, dict)) and not value)
