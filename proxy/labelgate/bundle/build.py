"""Build an OPA bundle tarball from policy source files, byte for byte reproducibly.

The input is a list of ``(relative posix path, bytes)`` pairs (see ``source.read_snapshot``).
The bundle holds the ``.rego`` modules that are not tests and every ``data.json`` at its
directory path, written in the canonical form OPA hashes (``signing.canonical_json``: keys
sorted, no whitespace, numbers as written), so that a gateway checks a signed one by its raw
hash without canonicalizing anything (``signing.verify_signatures``). A data file with a key
twice in one object is refused (``BUNDLE_DATA_INVALID``): JSON readers keep the last, so it
would not mean what its reviewer read. The bundle also holds a ``.manifest`` with:

- ``revision``: a SHA-256 over the served files (names, lengths, bytes, data in canonical
  form), so the same content always gives the same revision, whatever the file times, the
  machine or the data's layout;
- ``roots``: the first segment of every package and every data path, so the bundle claims
  exactly the namespaces it fills (OPA refuses a module outside the roots);
- ``rego_version: 1``;
- for a signed bundle, ``metadata.labelgate_sequence``: a whole number that grows with every
  build (the build time in microseconds, see ``next_sequence``). A content hash says nothing
  of which revision came first, so without it a signature that verifies would let an earlier,
  revoked revision be served again; with it in the signed manifest a gateway refuses a signed
  revision whose sequence is not above the one in force (``policy/bundle_client.py``). OPA
  ignores metadata keys it does not know (and has no such check of its own).

The tarball is deterministic: sorted members, mtime 0, uid/gid 0, no owner names, gzip
header mtime 0 and no file name; an unsigned bundle, or one given its ``sequence``, is the
same bytes for the same source. No I/O here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from labelgate.bundle import reasons
from labelgate.bundle.signing import canonical_json
from labelgate.errors import InvalidInput
from labelgate.unique_keys import DuplicateKeyError, unique_keys

if TYPE_CHECKING:
    from labelgate.bundle.signing import Signer

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
DATA_FILE = "data.json"
UNSUPPORTED_DATA_FILES = ("data.yaml", "data.yml")
REGO_VERSION = 1
SEQUENCE = "labelgate_sequence"

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
    # The manifest's labelgate_sequence (None: no ordering, as in an unsigned build).
    sequence: int | None = None

    @property
    def etag(self) -> str:
        """The revision, and the sequence of a signed bundle: a revert republishes older content
        (the same revision) signed with a fresh sequence, and a client holding that revision
        must fetch it (not get a 304), or its rollback floor would stay below the revision the
        revert revoked (``policy/bundle_client.py``)."""
        if self.sequence is None:
            return f'"{self.revision}"'
        return f'"{self.revision}-{self.sequence}"'


def is_test_module(name: str) -> bool:
    return name.endswith("_test.rego")


def is_served_file(name: str) -> bool:
    """Modules that are not tests, and data.json documents: what OPA gets."""
    path = PurePosixPath(name)
    if path.suffix == ".rego":
        return not is_test_module(name)
    return path.name == DATA_FILE


def served_files(files: Iterable[SourceFile]) -> list[SourceFile]:
    """What the bundle holds of ``files``, data in canonical form (module docstring)."""
    return sorted(
        (name, canonical_json(content) if PurePosixPath(name).name == DATA_FILE else content)
        for name, content in files
        if is_served_file(name)
    )


def content_revision(files: Iterable[SourceFile]) -> str:
    """SHA-256 over the sorted files as served; the same scheme as ``labelgate.policy.source``
    (which hashes data.json in canonical form too), so a folder and the bundle built from it
    report the same revision."""
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


def build_bundle(
    files: Iterable[SourceFile], signer: Signer | None = None, *, sequence: int | None = None
) -> Bundle:
    """Build the bundle for ``files`` (tests and other files are left out).

    A signed bundle carries ``sequence`` in its manifest, by default ``next_sequence()``; an
    unsigned one only when given (unsigned, nothing proves the order anyway).
    """
    every = list(files)
    _check_files(every)
    served = served_files(every)
    if not any(name.endswith(".rego") for name, _ in served):
        raise InvalidInput(reasons.BUNDLE_EMPTY, "the source holds no .rego module (tests do not count)")
    if sequence is None and signer is not None:
        sequence = next_sequence()
    if sequence is not None and not _is_sequence(sequence):
        raise InvalidInput(
            reasons.BUNDLE_SEQUENCE_INVALID, f"sequence {sequence!r} is not a whole number >= 0"
        )
    revision = content_revision(served)
    roots = bundle_roots(served)
    manifest: dict[str, object] = {"revision": revision, "roots": list(roots), "rego_version": REGO_VERSION}
    if sequence is not None:
        manifest["metadata"] = {SEQUENCE: sequence}
    members: list[SourceFile] = [(MANIFEST, _compact_json(manifest)), *served]
    if signer is not None:
        members.insert(1, (SIGNATURES, signer.signatures_file(members)))
    return Bundle(revision, roots, tuple(members), write_tarball(members), signer is not None, sequence)


_last_sequence = 0
_sequence_lock = threading.Lock()


def next_sequence() -> int:
    """The time in microseconds since the epoch, above any this process returned before.

    Time, not a counter, so that it keeps growing across restarts of the bundle server and
    between servers building from one source, with no state to keep; strictly increasing in
    one process even if the clock steps back. A clock set back across a restart makes new
    revisions look older than the one gateways hold: they refuse them (``BUNDLE_ROLLBACK``)
    until the clock passes it again.
    """
    global _last_sequence
    with _sequence_lock:
        _last_sequence = max(time.time_ns() // 1000, _last_sequence + 1)
        return _last_sequence


def manifest_sequence(manifest: bytes | None) -> int | None:
    """The ``labelgate_sequence`` of a ``.manifest``; None when it names none.

    Raises InvalidInput(BUNDLE_SEQUENCE_INVALID) for anything but a JSON whole number >= 0
    (``true``, ``7.0``, ``"7"`` order nothing), or a manifest that is not a JSON object.
    """
    if manifest is None:
        return None
    metadata = manifest_object(manifest, reasons.BUNDLE_SEQUENCE_INVALID).get("metadata")
    if not isinstance(metadata, dict | None):
        raise InvalidInput(reasons.BUNDLE_SEQUENCE_INVALID, ".manifest metadata must be a JSON object")
    sequence = (metadata or {}).get(SEQUENCE)
    if sequence is not None and not _is_sequence(sequence):
        raise InvalidInput(
            reasons.BUNDLE_SEQUENCE_INVALID, f".manifest {SEQUENCE} {sequence!r} is not a whole number >= 0"
        )
    return sequence


def manifest_object(manifest: bytes, reason: str) -> dict[str, Any]:
    """A ``.manifest`` read as the JSON object it must be; InvalidInput(``reason``) otherwise."""
    try:
        value = json.loads(manifest)
    except ValueError as error:
        raise InvalidInput(reason, f".manifest is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidInput(reason, ".manifest must be a JSON object")
    return value


def _is_sequence(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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


# Bounds on reading a tarball, which happens before its signature is checked (so anyone who
# can answer the bundle URL chooses its content): the decompressed stream is counted, every
# member header costs memory, and a GNU long-name or pax header is read whole by tarfile.
MAX_MEMBERS = 10_000
MAX_EXTENDED_HEADER_BYTES = 8 * 1024
# Extended headers (GNU long name/link, pax, pax global) in a row before a member: a member
# needs at most a few, and tarfile reads each chain recursively.
MAX_EXTENDED_RUN = 8
_EXTENDED_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
# What a bundle holds: regular files, and the folders ``tar`` writes for them (skipped).
_MEMBER_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


class _Inflated(io.RawIOBase):
    """The gzip stream of a tarball, decompressed as it is read, refused past ``limit`` bytes."""

    def __init__(self, tarball: bytes, limit: int) -> None:
        super().__init__()
        self._gzip = gzip.GzipFile(fileobj=io.BytesIO(tarball), mode="rb")
        self._limit = limit
        self._count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        room = self._limit + 1 - self._count  # one byte past the limit shows it is passed
        data = self._gzip.read(room if size is None or size < 0 else min(size, room))
        self._count += len(data)
        if self._count > self._limit:
            raise InvalidInput(reasons.BUNDLE_TOO_LARGE, f"bundle unpacks to more than {self._limit} bytes")
        return data


class _BundleTarInfo(tarfile.TarInfo):
    """A member header, refused before tarfile reads what it announces (see ``read_tarball``)."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        assert isinstance(tar, _BundleTarFile)
        if self.type == tarfile.XGLTYPE:
            # tarfile keeps every global header for the rest of the stream and copies them
            # all into each later member: many of them cost quadratic CPU (review: a 2.4 MiB
            # tarball took 69 s). One, at most (``git archive`` writes one), is all a bundle needs.
            tar.global_headers += 1
            if tar.global_headers > 1:
                raise InvalidInput(reasons.BUNDLE_FILE_INVALID, "bundle has more than one pax global header")
        if self.type in _EXTENDED_TYPES:
            tar.extended_run += 1
            if self.size > MAX_EXTENDED_HEADER_BYTES:
                raise InvalidInput(
                    reasons.BUNDLE_TOO_LARGE,
                    f"bundle has a tar long-name or pax header of {self.size} bytes "
                    f"(at most {MAX_EXTENDED_HEADER_BYTES})",
                )
            if tar.extended_run > MAX_EXTENDED_RUN:
                raise InvalidInput(
                    reasons.BUNDLE_FILE_INVALID,
                    f"bundle has more than {MAX_EXTENDED_RUN} tar long-name or pax headers in a row",
                )
        else:
            tar.extended_run = 0
            if self.type not in _MEMBER_TYPES:
                kind = _TYPE_NAMES.get(self.type, f"of tar type {self.type!r}")
                raise InvalidInput(
                    reasons.BUNDLE_FILE_INVALID,
                    f"bundle member {self.name!r} is {kind}: a bundle holds regular files only",
                )
        # Private in tarfile (and absent from its stubs), stable since Python 2: the one place
        # where the header is known and what it announces is not yet read.
        member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return member

    # A pax header may announce that the member after it is a GNU sparse file, and tarfile then
    # reads the sparse map from that member's data, as long as the data says (review: a 64 KiB
    # tarball grew the process by 3 GB before anything else saw it). Bundles hold no sparse
    # files: every form is refused before its map is read.
    def _proc_gnusparse_00(self, *args: object) -> None:
        _refuse_sparse()

    def _proc_gnusparse_01(self, *args: object) -> None:
        _refuse_sparse()

    def _proc_gnusparse_10(self, *args: object) -> None:
        _refuse_sparse()

    def _proc_sparse(self, *args: object) -> None:
        _refuse_sparse()


def _refuse_sparse() -> None:
    raise InvalidInput(
        reasons.BUNDLE_FILE_INVALID, "bundle has a sparse file: a bundle holds regular files only"
    )


class _BundleTarFile(tarfile.TarFile):
    tarinfo = _BundleTarInfo
    members: list[tarfile.TarInfo]  # every header read so far (tarfile's own; not in its stubs)
    extended_run = 0  # extended headers read since the last member
    global_headers = 0  # pax global headers read


def read_tarball(
    tarball: bytes, max_bytes: int = 64 * 1024 * 1024, max_members: int = MAX_MEMBERS
) -> dict[str, bytes]:
    """The regular files of a bundle tarball (leading ``/`` dropped, as OPA does).

    Read as a stream, with every bound checked before the memory it guards is spent: at most
    ``max_bytes`` decompressed bytes in all (headers included) and ``max_members`` members
    (BUNDLE_TOO_LARGE); a GNU long-name or pax header of at most MAX_EXTENDED_HEADER_BYTES
    (BUNDLE_TOO_LARGE); nothing but regular files and folders (a link, a device, a FIFO, a
    sparse file: BUNDLE_FILE_INVALID, which OPA's own bundles never hold). A file named
    twice is refused (BUNDLE_FILE_INVALID), as OPA refuses it: keeping either copy, the bundle
    would not mean what OPA, or whoever read the other copy, read. Anything else unreadable:
    BUNDLE_UNREADABLE.
    """
    files: dict[str, bytes] = {}
    total = members = 0
    try:
        with _BundleTarFile.open(fileobj=_Inflated(tarball, max_bytes), mode="r|") as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header it read: keep none
                members += 1
                if members > max_members:
                    raise InvalidInput(
                        reasons.BUNDLE_TOO_LARGE, f"bundle has more than {max_members} members"
                    )
                if not info.isfile():
                    continue  # a folder
                total += info.size
                if total > max_bytes:
                    raise InvalidInput(reasons.BUNDLE_TOO_LARGE, f"bundle holds more than {max_bytes} bytes")
                extracted = tar.extractfile(info)
                assert extracted is not None  # a regular file always has content
                name = info.name.lstrip("/")
                if name in files:
                    raise InvalidInput(reasons.BUNDLE_FILE_INVALID, f"bundle holds {name} twice")
                files[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as error:  # ValueError:
        # tarfile's own, on a malformed number in a header (a sparse map, a pax size)
        raise InvalidInput(reasons.BUNDLE_UNREADABLE, f"not a gzip tarball: {error}") from error
    return files


def _check_files(every: list[SourceFile]) -> None:
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
        value: object = json.loads(content, object_pairs_hook=unique_keys)
    except DuplicateKeyError as error:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"{name}: {error}") from None
    except ValueError as error:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"{name} is not valid JSON: {error}") from error
    except RecursionError:
        raise InvalidInput(reasons.BUNDLE_DATA_INVALID, f"{name} is nested too deeply") from None
    if require_object and not isinstance(value, dict):
        raise InvalidInput(
            reasons.BUNDLE_DATA_INVALID, f"{name}: data at the bundle root must be a JSON object"
        )
    return value


def _compact_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
