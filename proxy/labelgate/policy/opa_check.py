"""Every revision the embedded engine loads must first compile in OPA itself (``opa check``).

rego-cpp accepts policies OPA's compiler refuses: a variable referenced before the ``some``
that declares it, an unsafe variable (``not x == 1``, a rule head's value bound nowhere), a
builtin's type error (``count(5)``), a recursive rule, v0 syntax (a body without ``if``). OPA
would not load such a policy, so no decision of OPA's exists to match, and the embedded
engine's promise is to decide as OPA does or to refuse. When an opa binary is at hand, the
engine writes the revision it is about to compile (the same module texts, and its data as one
data.json at the root, so a rule and data on the same path conflict as in OPA) into a private
temporary folder and runs ``opa check --bundle`` on it in a child process, while rego-cpp
compiles the revision; OPA's refusal refuses the revision (POLICY_REJECTED_BY_OPA, with OPA's
first error lines) and the one in force keeps deciding.

The modules checked are the policy's own, not ``exact_modules`` of them: OPA loads those, and
the rewrite would hide a type error in a guarded call (``sort(5)`` becomes a call of a Rego
function, which takes any argument). Not ``--strict``: OPA serving a policy does not compile it
strictly, so an unused variable is no refusal of OPA's (``make lint`` runs strict on the
default pack). No ``--schema``: OPA serving a policy reads no schema either.

Which opa (``policy.opa_check``): ``auto`` (the default) checks with ``$LABELGATE_OPA``, else
``opa`` on PATH, and skips the check, said once in the log, when neither is there (or the one
there is older than 1.0, whose ``opa check`` reads Rego v0); ``required`` refuses to start
without a usable one; ``off`` never checks. OPA checks the default pack in ~50 ms, in parallel
with the rego-cpp child compile (~130 ms, compile_check.py), so a revision loads about as fast
as before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Literal

from labelgate.errors import ConfigError
from labelgate.logs import get_logger
from labelgate.policy import reasons

log = get_logger(__name__)

OpaCheckMode = Literal["auto", "required", "off"]
OPA_CHECK_MODES: tuple[OpaCheckMode, ...] = ("auto", "required", "off")

# OPA checks the default pack in ~50 ms; one that takes a minute would stall every reload.
TIMEOUT_SECONDS = 60.0
VERSION_TIMEOUT_SECONDS = 10.0
# OPA's own words go into the error, bounded: a policy can make OPA report at length.
MESSAGE_LIMIT = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_VERSION = re.compile(r"^Version:\s*v?(\d+)\.(\d+)", re.MULTILINE)

# Said once per process, not once per revision.
_said: set[str] = set()
_said_lock = threading.Lock()


def _say_once(key: str, level: str, event: str, **fields: object) -> None:
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    getattr(log, level)(event, **fields)


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


class OpaChecker:
    """Runs ``opa check`` on the revisions of one engine, as ``mode`` says."""

    def __init__(self, mode: OpaCheckMode = "auto") -> None:
        if mode not in OPA_CHECK_MODES:
            raise ConfigError(
                reasons.POLICY_CONFIG_INVALID, f"policy.opa_check {mode!r}: use one of {OPA_CHECK_MODES}"
            )
        self.mode = mode
        self._binary: str | None = None
        self._why_not = ""
        self._usable: bool | None = None  # None until the binary's version has been read
        if mode == "off":
            self._why_not = "policy.opa_check is off"
            return
        configured = os.environ.get("LABELGATE_OPA")
        if configured:
            if _executable(configured):
                self._binary = configured
            else:
                self._why_not = f"{configured} ($LABELGATE_OPA) is not an executable file"
        else:
            self._binary = shutil.which("opa")
            if self._binary is None:
                self._why_not = "neither $LABELGATE_OPA is set nor `opa` on PATH"
        if mode == "required" and self._binary is None:
            raise ConfigError(
                reasons.OPA_BINARY_MISSING,
                f"policy.opa_check is required and {self._why_not}: install OPA (`make tools` builds "
                "the pinned one into .tools/bin), point $LABELGATE_OPA at it, or set policy.opa_check",
            )

    @property
    def binary(self) -> str | None:
        return self._binary

    def _ready(self) -> bool:
        """Whether revisions are checked; reads the binary's version once (blocking: a worker thread)."""
        if self._binary is not None and self._usable is None:
            self._usable = self._read_version(self._binary)
        if self._binary is not None and self._usable:
            return True
        if self.mode == "required":
            raise ConfigError(reasons.OPA_BINARY_MISSING, f"policy.opa_check is required and {self._why_not}")
        if self.mode == "auto":
            _say_once(
                f"skip:{self._why_not}",
                "info" if self._binary is None else "warning",
                "policy_opa_check_skipped",
                why=self._why_not,
                hint="revisions are not checked with `opa check`: OPA >= 1.0 on PATH or $LABELGATE_OPA",
            )
        return False

    def _read_version(self, binary: str) -> bool:
        try:
            done = subprocess.run(
                [binary, "version"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=VERSION_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            self._why_not = f"{binary} version did not run: {type(error).__name__}"
            return False
        found = _VERSION.search(done.stdout.decode("utf-8", "replace"))
        if done.returncode != 0 or found is None:
            self._why_not = f"{binary} version did not report a version"
            return False
        if int(found[1]) < 1:
            # Before 1.0, `opa check` reads Rego v0 and would refuse every v1 policy.
            self._why_not = f"{binary} is OPA {found[1]}.{found[2]}, older than 1.0 (Rego v0)"
            return False
        return True

    def begin(self, modules: tuple[tuple[str, str], ...], data_json: str, origin: str) -> RunningCheck | None:
        """Start checking a revision (the modules as OPA reads them, the data as JSON text); None
        when revisions are not checked. Blocking (file writes): call it from a worker thread."""
        if self.mode == "off" or not self._ready():
            return None
        assert self._binary is not None
        return RunningCheck(self._binary, modules, data_json, origin)


def _module_paths(modules: tuple[tuple[str, str], ...]) -> list[str]:
    """Where each module goes in the folder: its own name when that is a plain relative .rego
    path (OPA's errors then name it), else a made-up one."""
    used: set[str] = {"data.json"}
    paths = []
    for index, (name, _) in enumerate(modules):
        rel = PurePosixPath(name)
        plain = (
            name.endswith(".rego")
            and not rel.is_absolute()
            and all(part not in ("", ".", "..") and not part.startswith(".") for part in rel.parts)
        )
        path = str(rel) if plain else f"__labelgate_module_{index}.rego"
        if path in used:
            path = f"__labelgate_module_{index}.rego"
        used.add(path)
        paths.append(path)
    return paths


def _first_lines(text: str) -> str:
    lines = [_CONTROL.sub("", line).strip() for line in text.splitlines()]
    joined = ""
    for line in filter(None, lines):
        # "2 errors occurred:" introduces the lines that follow; the rest are one error each.
        joined += line if not joined else (" " if joined.endswith(":") else "; ") + line
    # `opa check --bundle .` prefixes parse errors with the bundle's path, which is ours.
    joined = joined.removeprefix("bundle .: ")
    if len(joined) > MESSAGE_LIMIT:
        joined = joined[: MESSAGE_LIMIT - 1] + "…"
    return joined or "no error text"


class RunningCheck:
    """One ``opa check`` under way; ``result`` waits for it, ``close`` ends it and removes its
    folder. A context manager, so a revision refused for another reason stops it."""

    def __init__(
        self, binary: str, modules: tuple[tuple[str, str], ...], data_json: str, origin: str
    ) -> None:
        self._origin = origin
        self._started = time.monotonic()
        self._process: subprocess.Popen[bytes] | None = None
        # mkdtemp: a folder only this user can read, as the policy may be confidential.
        self._folder = Path(tempfile.mkdtemp(prefix="labelgate-opa-check-"))
        try:
            for path, (_, text) in zip(_module_paths(modules), modules, strict=True):
                target = self._folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8", errors="surrogatepass")
            (self._folder / "data.json").write_text(data_json, encoding="utf-8", errors="surrogatepass")
            self._process = subprocess.Popen(
                [binary, "check", "--bundle", "."],
                cwd=self._folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            self.close()
            raise ConfigError(
                reasons.OPA_BINARY_MISSING, f"{origin}: cannot run {binary} check: {error}"
            ) from error
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RunningCheck:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def result(self) -> None:
        """Wait for OPA; raise ConfigError(POLICY_REJECTED_BY_OPA) unless it accepts the revision."""
        process = self._process
        assert process is not None
        remaining = max(0.0, TIMEOUT_SECONDS - (time.monotonic() - self._started))
        try:
            stdout, stderr = process.communicate(timeout=remaining)
        except subprocess.TimeoutExpired as error:
            raise ConfigError(
                reasons.POLICY_REJECTED_BY_OPA,
                f"{self._origin}: `opa check` did not finish within {TIMEOUT_SECONDS:.0f} s",
            ) from error
        finally:
            self.close()
        if process.returncode == 0:
            return
        said = stderr.decode("utf-8", "replace").strip() or stdout.decode("utf-8", "replace")
        raise ConfigError(
            reasons.POLICY_REJECTED_BY_OPA,
            f"{self._origin}: OPA refuses this policy (`opa check`, exit status {process.returncode}): "
            f"{_first_lines(said)}",
        )

    def close(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()
        shutil.rmtree(self._folder, ignore_errors=True)
