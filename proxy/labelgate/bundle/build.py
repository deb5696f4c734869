"""Build an OPA bundle tarball from policy source files, byte for byte reproducibly.

The input is a list of ``(relative posix path, bytes)`` pairs (see ``source.read_snapshot``).
The bundle holds the ``.rego`` modules that are not tests and every ``data.json`` at its
directory path, plus a ``.manifest`` with:

- ``revision``: a SHA-256 over the served files (names, lengths, bytes), so the same content
  always gives the same revision, whatever the file times or the machine;
- ``roots``: the first segment of every package and every data path, so the bundle claims
  exactly the namespaces it fills (OPA refuses a module outside the roots);
- ``rego_version: 1``.

The tarball is deterministic: sorted members, mtime 0, uid/gid 0, no owner names, gzip
header mtime 0 and no file name. Pure functions: no I/O here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from labelgate.bundle import reasons
from labelgate.errors import InvalidInput

if TYPE_CHECKING:
    from labelgate.bundle.signing import Signer

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
DATA_FILE = "data.json"
UNSUPPORTED_DATA_FILES = ("data.yaml", "data.yml")
REGO_VERSION = 1

SourceFile = tuple[str, bytes]

# The first statement of a Rego module is its package; METADATA comments may precede it.
_PACKAGE = re.compile(rb"^[ \t]*package[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


@dataclass(frozen=True)
class Bundle:
    """One built bundle: its revision, roots, every member (in tar order) and the tarball."""

    revision: str
    roots: tuple[str, ...]
    files: tuple[SourceFile, ...]
    tarball: bytes
    signed: bool

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


def is_test_module(name: str) -> bool:
    return name.endswith("_test.rego")


def is_served_file(name: str) -> bool:
    """Modules that are not tests, and data.json documents: what OPA gets."""
    path = PurePosixPath(name)
    if path.suffix == ".rego":
        return not is_test_module(name)
    return path.name == DATA_FILE


def served_files(files: Iterable[SourceFile]) -> list[SourceFile]:
    return sorted((name, content) for name, content in files if is_served_file(name))


def content_revision(files: Iterable[SourceFile]) -> str:
    """SHA-256 over the sorted files; the same scheme as ``labelgate.policy.source``, so a folder
    and the bundle built from it report the same revision."""
    digest = hashlib.sha256()
    for name, content in sorted(files):
        digest.update(name.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def bundle_roots(files: Iterable[SourceFile]) -> tuple[str, ...]:
    """The first path segment of every package and data document in ``files``."""
    roots: set[str] = set()
    for name, content in files:
        path = PurePosixPath(name)
        if path.suffix == ".rego":
            match = _PACKAGE.search(content)
            if match is None:
                raise InvalidInput(reasons.BUNDLE_PACKAGE_MISSING, f"{name}: no `package` declaration found")
            roots.add(match.group(1).decode())
        elif path.name == DATA_FILE:
            if len(path.parts) > 1:
                roots.add(path.parts[0])
            else:
                # data.json at the bundle root: each top-level key is its own namespace.
                document = _parse_json(name, content, require_object=True)
                assert isinstance(document, dict)  # require_object
                roots.update(document)
    return tuple(sorted(roots))


def build_bundle(files: Iterable[SourceFile], signer: Signer | None = None) -> Bundle:
    """Build the bundle for ``files`` (tests and other files are left out)."""
    every = list(files)
    served = served_files(every)
    _check_files(served, every)
    revision = content_revision(served)
    roots = bundle_roots(served)
    manifest = {"revision": revision, "roots": list(roots), "rego_version": REGO_VERSION}
    members: list[SourceFile] = [(MANIFEST, _compact_json(manifest)), *served]
    if signer is not None:
        members.insert(1, (SIGNATURES, signer.signatures_file(members)))
    return Bundle(revision, roots, tuple(members), write_tarball(members), signer is not None)


def write_tarball(members: Iterable[SourceFile]) -> bytes:
    """A gzip tarball of ``members`` in the given order, with every varying field fixed."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def read_tarball(tarball: bytes, max_bytes: int = 64 * 1024 * 1024) -> dict[str, bytes]:
    """The regular files of a bundle tarball (leading ``/`` dropped, as OPA does)."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                total += info.size
                if total > max_bytes:
                    raise InvalidInput(reasons.BUNDLE_TOO_LARGE, f"bundle holds more than {max_bytes} bytes")
                extracted = tar.extractfile(info)
                assert extracted is not None  # a regular file always has content
                files[info.name.lstrip("/")] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidInput(reasons.BUNDLE_UNREADABLE, f"not a gzip tarball: {error}") from error
    return files


def _check_files(served: list[SourceFile], every: list[SourceFile]) -> None:
    if not any(name.endswith(".rego") for name, _ in served):
        raise InvalidInput(reasons.BUNDLE_EMPTY, "the source holds no .rego module (tests do not count)")
    for name, content in every:
        if PurePosixPath(name).name in UNSUPPORTED_DATA_FILES:
            raise InvalidInput(
                reasons.BUNDLE_DATA_UNSUPPORTED, f"{name}: write data as data.json (YAML data is not bundled)"
            )
        if is_served_file(name) and name.endswith(".json"):
            _parse_json(name, content, require_object=PurePosixPath(name).parent == PurePosixPath("."))
        elif name.endswith(".rego"):
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidInput(reasons.BUNDLE_FILE_INVALID, f"{name} is not UTF-8: {error}") from error


def _parse_json(name: str, content: bytes, *, require_object: bool) -> object:
    try:
        value: object = json.loads(content)
    except ValueError as error:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"{name} is not valid JSON: {error}") from error
    if require_object and not isinstance(value, dict):
        raise InvalidInput(
            reasons.BUNDLE_DATA_INVALID, f"{name}: data at the bundle root must be a JSON object"
        )
    return value


def _compact_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
