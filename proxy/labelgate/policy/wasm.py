"""Decisions in process on OPA's own Wasm target (``opa build -t wasm``), run with wasmtime.

The policy is compiled by OPA itself, so its semantics are OPA's compiler's and OPA's Wasm
runtime's, not a reimplementation's. A policy folder is compiled when it loads (``opa build
-t wasm -e labelgate/decision/result``, the binary from ``$LABELGATE_OPA`` or PATH, ~0.2 s);
a followed bundle that already carries ``policy.wasm`` is used as shipped (its signature
covers it) once the builtins it uses pass the check below, otherwise it is compiled the same
way. The data document (catalog included) is the
policy source's, loaded into each instance once. The host side of the ABI is wasm_host.py.

Exactness: a policy the module would evaluate differently from OPA is refused when it
loads (POLICY_UNSUPPORTED_BY_WASM, naming what and pointing to ``--engine opa``), by its text
and by the module's own builtins (``wasm_checks``); the host implements only ``sprintf``
(wasm_sprintf.py). The module looks arrays up by integers only, OPA by any whole number: an
input holding a whole float (``1.0``) is denied unevaluated (EMBEDDED_INPUT_UNSUPPORTED), data
holding one or a policy with such a literal is refused at load (whole_numbers.py). A
builtin's error fails the decision (POLICY_ERROR), as OPA's strict builtin errors do, where
OPA's Wasm library makes it undefined: the module, compiled or shipped, is patched before it
is instantiated (wasm_strict.py). The default pack needs no host builtin at all (it writes
numbers with ``json.marshal``, which the module implements): a decision is one ``opa_eval``
call (rego/labelgate/decision/engines.rego).

Everything else is EmbeddedEngine's (this class extends it): folder watching, bundle
following, revision hooks (the bundle's catalog), atomic swaps, and the inline budget: a
decision runs on the event loop once the revision's measured average is under
``inline_budget`` (a default-pack decision takes ~50-70 µs here) and its input's JSON text is
no longer than the longest one decided within it (inline.py), else in the worker pool. A
wasmtime Store is not thread-safe, so each thread has its own instance per revision.
"""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from labelgate.errors import ConfigError
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.contract import (
    EMBEDDED_INPUT_UNSUPPORTED,
    POLICY_ERROR,
    POLICY_UNAVAILABLE,
    POLICY_UNDEFINED,
    REPLAY,
    Decision,
    for_phase,
    input_phase,
    validate_result,
)
from labelgate.policy.embedded import UNDEFINED, EmbeddedEngine, UnsupportedInput
from labelgate.policy.engine import DECISION_PATH
from labelgate.policy.inline import DEFAULT_BUDGET, InlineGate, known_size
from labelgate.policy.source import PolicySource
from labelgate.policy.wasm_checks import check_native, module_findings, sprintf_findings
from labelgate.policy.wasm_host import (
    ADVICE,
    UNSUPPORTED,
    WasmEvalError,
    WasmInstance,
    WasmPolicy,
)
from labelgate.policy.wasm_strict import strict_builtin_errors
from labelgate.policy.whole_numbers import holds_whole_float, may_hold_whole_float

if TYPE_CHECKING:
    from labelgate.policy.bundle_client import BundleClient

log = get_logger(__name__)

COMPILE_TIMEOUT_SECONDS = 120.0
_DECISION_MEMO_LIMIT = 4096
_FIELDS_MEMO_LIMIT = 1024
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_MARSHAL_FORMAT = 2  # no back-references: the bytes depend on the values only (policy/cache.py)


def opa_binary(configured: str | None = None) -> str:
    """The opa binary that compiles policies: ``configured``, ``$LABELGATE_OPA``, or ``opa`` on PATH."""
    candidate = configured or os.environ.get("LABELGATE_OPA")
    if candidate:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise ConfigError(
            reasons.OPA_BINARY_MISSING,
            f"the wasm engine compiles policies with opa, and {candidate} ($LABELGATE_OPA) is not an "
            "executable file: fix $LABELGATE_OPA, put opa on PATH, or run `make tools`",
        )
    found = shutil.which("opa")
    if found is None:
        raise ConfigError(
            reasons.OPA_BINARY_MISSING,
            "the wasm engine compiles policies with opa: neither $LABELGATE_OPA is set nor `opa` on "
            "PATH (`make tools` builds the pinned one into .tools/bin), or serve a bundle that "
            "already holds policy.wasm",
        )
    return found


def compile_wasm(source: PolicySource, entrypoint: str, opa: str | None = None) -> bytes:
    """``opa build -t wasm -e ENTRYPOINT`` of the source's modules and data; the module's bytes."""
    from labelgate.bundle.build import read_tarball

    binary = opa_binary(opa)
    with tempfile.TemporaryDirectory(prefix="labelgate-wasm-") as directory:
        root = Path(directory) / "policy"
        for rel, text in source.modules:
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts:
                raise ConfigError(
                    reasons.POLICY_FILE_INVALID, f"{source.origin}: module path {rel!r} is not relative"
                )
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        (root / "data.json").write_text(json.dumps(source.data), encoding="utf-8")
        output = Path(directory) / "bundle.tar.gz"
        command = [binary, "build", "-t", "wasm", "-e", entrypoint, "-o", str(output), str(root)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ConfigError(
                reasons.POLICY_COMPILE_FAILED, f"{source.origin}: {binary} build: {error}"
            ) from error
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip().replace(f"{root}/", "")
            raise ConfigError(reasons.POLICY_COMPILE_FAILED, f"{source.origin}: opa build -t wasm: {message}")
        files = read_tarball(output.read_bytes())
    if "policy.wasm" not in files:
        raise ConfigError(reasons.POLICY_COMPILE_FAILED, f"{source.origin}: opa build wrote no policy.wasm")
    return files["policy.wasm"]


def _decidable(text: str, value: Any) -> str:
    """``text`` (``value``'s JSON), unless ``value`` holds a whole float: UnsupportedInput."""
    if may_hold_whole_float(text) and holds_whole_float(value):
        raise UnsupportedInput
    return text


class _WasmCompiled:
    """One revision: the compiled module and its data; each thread evaluates on its own instance."""

    def __init__(self, source: PolicySource, policy: WasmPolicy, data_json: bytes) -> None:
        self.source = source
        self.policy = policy
        self.data_json = data_json
        self.inline = InlineGate()  # what its decisions cost (the engine sets its budget)
        self._local = threading.local()
        self._decisions: dict[bytes, Decision] = {}
        self._fields_json: dict[bytes, str] = {}

    @property
    def revision(self) -> str:
        return self.source.revision

    @property
    def average_seconds(self) -> float | None:
        """Moving average of evaluation time; None until measured."""
        return self.inline.average_seconds

    @classmethod
    def build(
        cls, source: PolicySource, entrypoint: str, opa: str | None = None, wasm: bytes | None = None
    ) -> _WasmCompiled:
        """Compile (unless ``wasm`` is given), check what the host must provide, and load the data."""
        source.refuse_yaml_data("wasm")
        check_native(source)  # before compiling: cheaper, and it names the lines
        what = "the bundle's policy.wasm" if wasm is not None else "the compiled module"
        if wasm is None:
            wasm = compile_wasm(source, entrypoint, opa)
        # A builtin's error traps, as OPA raises it with strict builtin errors (wasm_strict.py).
        policy = WasmPolicy(strict_builtin_errors(wasm, source.origin), entrypoint, source.origin)
        # The module itself: a bundle's policy.wasm may not be built from the modules beside it.
        findings = module_findings(source, wasm, policy.builtins.values(), what)
        if findings:
            raise ConfigError(
                UNSUPPORTED,
                f"{source.origin}: the wasm engine cannot evaluate this policy exactly as OPA does: "
                f"{'; '.join(findings)}; {ADVICE}",
            )
        if "sprintf" in policy.builtins.values():
            findings = sprintf_findings(source.modules)
            if findings:
                raise ConfigError(
                    UNSUPPORTED,
                    f"{source.origin}: the wasm engine cannot evaluate this policy exactly as OPA does: "
                    f"{'; '.join(findings)}; {ADVICE}",
                )
        compiled = cls(source, policy, json.dumps(source.data, ensure_ascii=False).encode("utf-8"))
        compiled._instance()  # the data loads here, or the revision is refused
        return compiled

    def _instance(self) -> WasmInstance:
        instance = getattr(self._local, "instance", None)
        if instance is None:
            try:
                instance = self._local.instance = self.policy.instantiate(self.data_json)
            except WasmEvalError as error:
                raise ConfigError(reasons.POLICY_DATA_INVALID, f"{self.source.origin}: {error}") from error
        return instance

    def evaluate(self, value: Any) -> Any:
        """The decision rule's value for input ``value``, or UNDEFINED. Raises on any error."""
        results = json.loads(self.evaluate_text(value))
        return results[0]["result"] if results else UNDEFINED

    def decision(self, output: bytes, engine: str, phase: str | None = None) -> Decision:
        """The validated Decision for a result set as the module wrote it (memoised by its text).

        A policy gives the same few results over and over, and turning the text into a
        validated Decision is a pure function of it, so the text is the key; only good
        decisions are kept, so every invalid result is logged as it happens.
        """
        decision = self._decisions.get(output)
        if decision is not None:
            return for_phase(decision, phase)
        results = json.loads(output)
        if not results:
            return Decision.deny(POLICY_UNDEFINED, engine=engine, revision=self.revision)
        # Remembered without the phase check (replay accepts every valid result), which is
        # applied on every answer: two attribute reads.
        decision = validate_result(results[0]["result"], phase=REPLAY, engine=engine, revision=self.revision)
        if not decision.failed_closed:
            if len(self._decisions) >= _DECISION_MEMO_LIMIT:
                self._decisions.clear()
            self._decisions[output] = decision
        return for_phase(decision, phase)

    def encode_input(self, value: Any) -> bytes:
        """``value`` as the module's JSON input text.

        ``fields``, two thirds of a default-pack input and the same list call after call for a
        model, is encoded once per distinct value: its JSON is remembered by its ``marshal``
        bytes (format 2: equal bytes load back as equal values of equal types, so they encode
        to the same JSON; a value ``marshal`` refuses is encoded afresh) and spliced in as the
        object's last member. Member order means nothing to OPA's JSON parser. ~3 µs for the
        key against ~11 µs for the encoding (``python -m bench.policy_engines``).

        Raises UnsupportedInput for a value holding a whole float (``1.0``): OPA indexes arrays
        by it, the module does not (whole_numbers.py). What is encoded afresh is tested on its
        text; a remembered ``fields`` was tested once, when it was encoded (one that holds such
        a float is never remembered).
        """
        fields = value.get("fields") if type(value) is dict else None
        if type(fields) is not list:
            return _decidable(_ENCODER.encode(value), value).encode("utf-8")
        try:
            key = marshal.dumps(fields, _MARSHAL_FORMAT)
        except ValueError:
            return _decidable(_ENCODER.encode(value), value).encode("utf-8")
        fields_json = self._fields_json.get(key)
        if fields_json is None:
            fields_json = _decidable(_ENCODER.encode(fields), fields)
            if len(self._fields_json) >= _FIELDS_MEMO_LIMIT:
                self._fields_json.clear()
            self._fields_json[key] = fields_json
        rest_value = {k: v for k, v in value.items() if k != "fields"}
        rest = _decidable(_ENCODER.encode(rest_value), rest_value)
        separator = "," if len(rest) > 2 else ""
        return f'{rest[:-1]}{separator}"fields":{fields_json}}}'.encode()

    def evaluate_text(self, value: Any, text: bytes | None = None) -> bytes:
        """The result set as JSON text (``[{"result": ...}]``, ``[]`` when undefined); ``text``
        is ``value`` encoded (``encode_input``) when the caller has it already."""
        if text is None:
            text = self.encode_input(value)
        instance = self._instance()
        started = time.perf_counter()
        try:
            output = instance.evaluate(text)
        except WasmEvalError:
            self._local.instance = None  # a trap may leave the instance in any state: start afresh
            raise
        self.inline.record(time.perf_counter() - started, known_size(len(text)))
        return output


class WasmEngine(EmbeddedEngine):
    """PolicyEngine on OPA's Wasm target, from ``policy_dir`` or the bundles ``bundle`` follows."""

    name = "wasm"

    def __init__(
        self,
        policy_dir: Path | None = None,
        *,
        bundle: BundleClient | None = None,
        watch_interval: float | None = 2.0,
        decision_path: str = DECISION_PATH,
        inline_budget: float = DEFAULT_BUDGET,
        workers: int | None = None,
        opa: str | None = None,
    ) -> None:
        super().__init__(
            policy_dir,
            bundle=bundle,
            watch_interval=watch_interval,
            decision_path=decision_path,
            inline_budget=inline_budget,
            workers=workers,
        )
        self._opa = opa
        if policy_dir is not None:
            opa_binary(opa)  # a missing compiler is a configuration error now, not at start

    async def _swap_in(self, source: PolicySource) -> bool:
        if self._compiled is not None and source.revision == self._compiled.revision:
            return False
        wasm = getattr(source, "wasm", None)
        compiled = await asyncio.to_thread(_WasmCompiled.build, source, self._entrypoint, self._opa, wasm)
        compiled.inline = InlineGate(self._inline_budget)
        commits = [await asyncio.to_thread(hook, source) for hook in self._hooks]
        old = self.revision
        self._compiled = compiled  # type: ignore[assignment]  # the atomic swap
        for commit in commits:
            commit()
        log.info(
            "policy_loaded",
            engine=self.name,
            origin=source.origin,
            old_revision=old,
            revision=source.revision,
            modules=len(source.modules),
            compiled="bundle" if wasm is not None else "opa build",
        )
        return True

    async def decide(self, input: dict[str, Any]) -> Decision:
        compiled, executor = self._compiled, self._executor
        if compiled is None or executor is None:
            log.error("policy_not_loaded", engine=self.name)
            return Decision.deny(POLICY_UNAVAILABLE, engine=self.name, revision=self.revision)
        assert isinstance(compiled, _WasmCompiled)
        try:
            # Its size is its JSON text's length: encoded here only when it may go inline (as
            # it would be anyway), and handed to the pool when it may not.
            text: bytes | None = None

            def measure(limit: int) -> int:
                nonlocal text
                text = compiled.encode_input(input)
                return len(text)

            if compiled.inline.inline_size(measure) is not None:
                output = compiled.evaluate_text(input, text)
            else:
                loop = asyncio.get_running_loop()
                output = await loop.run_in_executor(executor, compiled.evaluate_text, input, text)
            return compiled.decision(output, self.name, input_phase(input))
        except UnsupportedInput:
            log.warning("policy_input_unsupported", engine=self.name, revision=compiled.revision)
            return Decision.deny(EMBEDDED_INPUT_UNSUPPORTED, engine=self.name, revision=compiled.revision)
        except Exception as error:  # fail closed on anything the module, the host or the input throws
            log.error(
                "policy_eval_error",
                engine=self.name,
                revision=compiled.revision,
                error_type=type(error).__name__,
                error=str(error) if isinstance(error, WasmEvalError) else None,
            )
            return Decision.deny(POLICY_ERROR, engine=self.name, revision=compiled.revision)
