"""The image's lock file, ``deploy/requirements.lock``: write it, or check that it is current.

    python deploy/lock.py            # resolve with uv (needs PyPI), write the lock (``make lock``)
    python deploy/lock.py --check    # offline, in ``make lint``: exit 1 when the lock is stale

The lock pins every runtime dependency of ``pyproject.toml`` (not the extras) with hashes, for
any platform (``--universal``) on the image's Python. Resolving needs the network, so the check
does not resolve. It is deterministic and reads only the two files:

1. the lock records a digest of its inputs (``[project].dependencies``, ``requires-python``,
   the target Python and the resolver options); a changed input means a stale lock;
2. every dependency of pyproject.toml (its markers evaluated for the image: Linux, that Python)
   is pinned in the lock at a version its specifier allows, and every pin carries hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "deploy" / "requirements.lock"
# Keep in step with the Dockerfile's base image (python:3.11-...).
PYTHON_VERSION = "3.11"
RESOLVER_OPTIONS = ("--universal", "--generate-hashes", "--no-annotate")
DIGEST_PREFIX = "# inputs-sha256: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def inputs_digest(pyproject: Path = PYPROJECT) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    inputs = {
        "dependencies": sorted(str(Requirement(d)) for d in project.get("dependencies", [])),
        "requires-python": project.get("requires-python"),
        "python": PYTHON_VERSION,
        "options": list(RESOLVER_OPTIONS),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def parse_lock(text: str) -> tuple[str | None, dict[str, list[tuple[str, str | None, int]]]]:
    """(recorded digest, {name: [(version, marker, hash count)]})."""
    digest = None
    pins: dict[str, list[tuple[str, str | None, int]]] = {}
    current: list | None = None
    for line in text.splitlines():
        if line.startswith(DIGEST_PREFIX):
            digest = line.removeprefix(DIGEST_PREFIX).strip()
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            if current is not None:
                current[2] += 1
            continue
        match = _PIN.match(stripped)
        if match is None:
            raise ValueError(f"cannot read lock line {line!r}")
        current = [match.group(3), match.group(4), 0]
        pins.setdefault(canonicalize_name(match.group(1)), []).append(current)  # type: ignore[arg-type]
    return digest, {name: [tuple(entry) for entry in entries] for name, entries in pins.items()}


def lock_problems(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    if not lock.is_file():
        return [f"{lock.name} does not exist"]
    try:
        digest, pins = parse_lock(lock.read_text())
    except ValueError as error:
        return [str(error)]
    problems = []
    if digest != inputs_digest(pyproject):
        problems.append(
            "pyproject.toml's dependencies (or the lock options) changed since the lock was written"
        )
    environment = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}
    environment |= {"python_version": PYTHON_VERSION, "python_full_version": PYTHON_VERSION + ".0"}
    environment["platform_machine"] = "x86_64"
    dependencies = tomllib.loads(pyproject.read_text())["project"].get("dependencies", [])
    for text in dependencies:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        versions = [version for version, _marker, _hashes in pins.get(name, [])]
        if not versions:
            problems.append(f"{requirement.name} is not pinned")
        elif not any(requirement.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{requirement.name}: pinned {', '.join(versions)}, pyproject asks {requirement}")
    for name, entries in sorted(pins.items()):
        for version, _marker, hashes in entries:
            if hashes == 0:
                problems.append(f"{name}=={version} has no --hash")
    return problems


def write_lock() -> None:
    command = [
        sys.executable, "-m", "uv", "pip", "compile", str(PYPROJECT.relative_to(ROOT)),
        "--python-version", PYTHON_VERSION, *RESOLVER_OPTIONS, "--quiet", "--no-header",
    ]  # fmt: skip
    resolved = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    header = (
        "# The image's runtime dependencies, pinned with hashes. Written by `make lock`\n"
        f"# (deploy/lock.py: uv pip compile pyproject.toml --python-version {PYTHON_VERSION} "
        f"{' '.join(RESOLVER_OPTIONS)}); do not edit.\n"
        f"{DIGEST_PREFIX}{inputs_digest()}\n"
    )
    LOCK.write_text(header + resolved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="offline: exit 1 if the lock is stale")
    args = parser.parse_args()
    if not args.check:
        write_lock()
        print(f"wrote {LOCK.relative_to(ROOT)}")
        return 0
    problems = lock_problems()
    if problems:
        print(f"{LOCK.relative_to(ROOT)} is stale (run `make lock`):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{LOCK.relative_to(ROOT)} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
