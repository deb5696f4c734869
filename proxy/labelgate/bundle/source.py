"""The policy source folder: read a consistent snapshot, notice edits, and let OPA judge it.

A snapshot holds every ``.rego`` file (tests included: they are run, not served) and every
``data.json`` / ``data.yaml`` under the folder, skipping hidden files and folders (editor
swap files, ``.git``), and refusing a symbolic link to a file outside the folder
(``_source_paths``). The change detector is a stat fingerprint (name, size, mtime, inode)
polled by the publisher: it costs one ``stat`` per file, works on every filesystem
(including bind mounts and network shares where inotify stays silent) and needs no extra
dependency; an atomic save (write + rename) always changes the inode.

Validation runs the real ``opa`` binary on the snapshot, never on the live folder:

1. ``opa check --strict --bundle BUNDLE.tar.gz``: the exact tarball to be served, manifest
   roots included, compiles in strict mode;
2. ``opa test DIR``: the snapshot with its tests passes;
3. ``opa deps`` and ``opa eval`` (``rules_in_tests``): no rule written in a ``*_test.rego``
   file, which the bundle leaves out, is one the served decision depends on, or step 2
   would have tested a policy that no gateway runs.

Before OPA, the server's command line has the publisher load the bundle's data and its
classification catalog exactly as a gateway following the bundle does (``bundle/cli.py``
``check_catalog``, passed in: the gateway's loaders sit in layers above this package): OPA
would pass a catalog with a misspelled label, which every such gateway then refuses whole,
keeping its old revision while this server reported itself healthy (review s14).

Blocking (files, subprocesses): the publisher calls these from a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from labelgate.bundle import reasons, rules_in_tests
from labelgate.bundle.build import DATA_FILE, UNSUPPORTED_DATA_FILES, Bundle, SourceFile, content_revision
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger

log = get_logger(__name__)

OPA_TIMEOUT_SECONDS = 120.0
OUTPUT_LIMIT = 8000
_TEST_RESULT = re.compile(r"^data\.\S+: (FAIL|ERROR)")
# ``opa check`` names each error as ``path/to/file.rego:12: rego_type_error: ...``.
_LOCATED_ERROR = re.compile(r"^\S+\.(rego|json|yaml|yml):\d+: \S")
_MOST_LOCATED = 5
Fingerprint = tuple[tuple[str, int, int, int], ...]


class PolicyRejected(LabelgateError):
    """OPA refused the source (compile error, strict-mode error, failing test)."""

    http_status = 422

    def __init__(self, reason: str, message: str, output: str) -> None:
        super().__init__(reason, message)
        self.output = output


@dataclass(frozen=True)
class SourceSnapshot:
    files: tuple[SourceFile, ...]
    digest: str  # over every file, tests included: a test edit is re-validated too


def default_opa_binary() -> str:
    """``$LABELGATE_OPA`` (the Makefile exports the pinned ``.tools/bin/opa``), else ``opa`` on PATH."""
    if os.environ.get("LABELGATE_OPA"):
        return os.environ["LABELGATE_OPA"]
    return shutil.which("opa") or "opa"


def _is_source_file(rel: PurePosixPath) -> bool:
    if any(part.startswith(".") for part in rel.parts):
        return False
    return rel.suffix == ".rego" or rel.name == DATA_FILE or rel.name in UNSUPPORTED_DATA_FILES


def _source_paths(root: Path) -> list[tuple[str, Path]]:
    """The source files under ``root`` (module docstring), by relative path.

    A symbolic link among them is followed only when what it points to is under ``root``
    too (``root`` itself may be one, as git-sync's checkout link is): one pointing out of it
    is refused (ConfigError BUNDLE_FILE_INVALID, naming it), or a policy author could publish
    any file of the bundle server's host to every instance credential. ``rglob`` does not
    descend into linked folders, so their files are not served at all.
    """
    if not root.is_dir():
        raise ConfigError(reasons.BUNDLE_SOURCE_MISSING, f"policy source folder {root} does not exist")
    real_root = root.resolve()
    found = []
    for path in root.rglob("*"):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if _is_source_file(rel) and path.is_file():
            target = path.resolve()
            if not target.is_relative_to(real_root):
                raise ConfigError(
                    reasons.BUNDLE_FILE_INVALID,
                    f"policy source file {rel} is a symbolic link to {target}, outside the source "
                    f"folder {real_root}: the bundle server serves only files under that folder "
                    f"(copy the file in, or link to one inside it)",
                )
            found.append((str(rel), path))
    return sorted(found)


def fingerprint(root: Path) -> Fingerprint:
    """A cheap change detector: equal fingerprints mean nothing to rebuild."""
    entries = []
    for rel, path in _source_paths(root):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # removed while we looked: the next poll sees the final state
        entries.append((rel, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(entries)


def read_snapshot(root: Path) -> SourceSnapshot:
    files = tuple((rel, path.read_bytes()) for rel, path in _source_paths(root))
    return SourceSnapshot(files, content_revision(files))


class OpaValidator:
    """Runs ``opa check --strict`` and ``opa test`` on a snapshot and the bundle built from it,
    and refuses rules in test files that the served decision depends on."""

    def __init__(self, opa: str | None = None, timeout: float = OPA_TIMEOUT_SECONDS) -> None:
        self.opa = opa or default_opa_binary()
        self.timeout = timeout
        if shutil.which(self.opa) is None:
            raise ConfigError(
                reasons.OPA_BINARY_MISSING, f"opa binary {self.opa!r} not found or not executable"
            )

    def validate(self, snapshot: SourceSnapshot, bundle: Bundle) -> None:
        """Raise ``PolicyRejected`` unless OPA compiles the bundle strictly, the tests pass and
        the decision depends on no rule of a test file."""
        with tempfile.TemporaryDirectory(prefix="labelgate-bundle-") as scratch:
            work = Path(scratch)
            tarball = work / "bundle.tar.gz"
            tarball.write_bytes(bundle.tarball)
            source = work / "source"
            for rel, content in snapshot.files:
                target = source / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            self._run(
                ["check", "--strict", "--bundle", str(tarball)], work, "POLICY_CHECK_FAILED", "opa check"
            )
            if not any(rel.endswith("_test.rego") for rel, _ in snapshot.files):
                log.warning("bundle_source_without_tests", files=len(snapshot.files))
            source.mkdir(exist_ok=True)
            self._run(["test", str(source)], work, "POLICY_TEST_FAILED", "opa test")
            self._refuse_rules_in_test_files(snapshot, source, work)

    def _refuse_rules_in_test_files(self, snapshot: SourceSnapshot, source: Path, work: Path) -> None:
        """After ``opa test``: every test file parses, so a failure here is OPA's, not the author's."""
        texts = rules_in_tests.texts_of_test_modules(snapshot.files)
        if not texts:
            return
        modules_input = work / "test-modules.json"
        modules_input.write_text(json.dumps(texts))
        reason = reasons.POLICY_RULE_IN_TEST_FILE
        deps = self._run(rules_in_tests.deps_args(source), work, reason, "opa deps")
        parsed = self._run(rules_in_tests.parse_args(modules_input), work, reason, "opa eval (parse tests)")
        found = rules_in_tests.depended_on(deps, parsed)
        if found:
            listing = "\n".join(f"{each.file}: {each.rule}" for each in found)
            raise PolicyRejected(reason, rules_in_tests.refusal(found), listing[:OUTPUT_LIMIT])

    def _run(self, args: list[str], work: Path, reason: str, what: str) -> bytes:
        try:
            result = subprocess.run(
                [self.opa, *args], capture_output=True, timeout=self.timeout, check=False, cwd=work
            )
        except subprocess.TimeoutExpired as error:
            raise PolicyRejected(reason, f"{what} took longer than {self.timeout:.0f}s", "") from error
        except OSError as error:
            raise ConfigError(reasons.OPA_BINARY_MISSING, f"cannot run {self.opa}: {error}") from error
        if result.returncode != 0:
            # Paths inside the scratch folder read as paths inside the source folder.
            output = (result.stdout + result.stderr).decode(errors="replace")
            output = output.replace(f"{work}/source/", "").replace(f"{work}/", "").strip()
            raise PolicyRejected(
                reason, f"{what} failed (exit {result.returncode}): {_summary(output)}", output[:OUTPUT_LIMIT]
            )
        return result.stdout


def _summary(output: str) -> str:
    """One line for logs, status and the fleet page: the failing tests, else each of OPA's
    ``file:line: message`` errors (its "2 errors occurred" header says nothing one can fix),
    else OPA's first line."""
    lines = output.splitlines()
    failing = [line.split(": ")[0] for line in lines if _TEST_RESULT.match(line)]
    if failing:
        more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
        return f"failing: {', '.join(failing[:3])}{more}"
    located = [line.strip() for line in lines if _LOCATED_ERROR.match(line.strip())]
    if located:
        more = f"; and {len(located) - _MOST_LOCATED} more" if len(located) > _MOST_LOCATED else ""
        return "; ".join(located[:_MOST_LOCATED]) + more
    return next((line for line in lines if line.strip()), "no output")
