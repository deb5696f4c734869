"""What a policy is made of: Rego modules, one merged data document, and a revision.

``PolicySource.from_dir`` reads a folder the way OPA loads a bundle: every ``*.rego``
(except ``*_test.rego``) is a module, and every ``data.json`` / ``data.yaml`` is data at its
directory path (``labelgate/tables/data.json`` -> ``data.labelgate.tables``).
``PolicySource.from_bundle`` reads an OPA bundle tarball (``.manifest`` + the same files,
as ``labelgate.bundle`` builds it) into the same PolicySource, with the manifest's revision
(the same content hash a folder gets); with a ``BundleKey`` the bundle must carry a
``.signatures.json`` that verifies, exactly as OPA configured with that key would insist.

Blocking file I/O and CPU work (gunzip, signature checks): call these from a worker thread
on the data path.

YAML data is read with PyYAML (YAML 1.1: ``1e3`` is the string "1e3", ``no`` is false), OPA
reads it as YAML 1.2 (``1e3`` is the number 1000), so the same file holds different data in
the two. ``yaml_files`` names such files, and the in-process engines refuse a source that
has any (``refuse_yaml_data``); only ``--engine opa``, where OPA reads the file itself, takes
them, as the bundle builder does not bundle them at all.

JSON data is read with its numbers as Python floats and ints, which the in-process engines
are handed; OPA keeps each number as written. A number a float64 does not hold exactly
(``0.1000000000000000055511151231257827``, ``12345678901234567890.5``, ``1e400``) would
compare differently there, so it is recorded (``inexact_numbers``) and those engines refuse
the source, naming the file and the number, exactly as they refuse YAML data. They refuse a
whole number written with a fraction or an exponent (``1.0``) too, naming its path: OPA
indexes arrays by it, they do not (whole_numbers.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from labelgate.bundle import reasons as bundle_reasons
from labelgate.bundle.build import manifest_object
from labelgate.bundle.signing import canonical_json
from labelgate.errors import ConfigError, InvalidInput
from labelgate.logs import get_logger
from labelgate.policy import reasons, whole_numbers
from labelgate.unique_keys import DuplicateKeyError, unique_keys

log = get_logger(__name__)

DATA_FILE_NAMES = ("data.json", "data.yaml", "data.yml")
MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class BundleKey:
    """The public key (PEM) and JWT algorithm a bundle's signature must verify with."""

    public_key_pem: bytes
    algorithm: str = "RS256"

    @classmethod
    def from_file(cls, path: Path, algorithm: str = "RS256") -> BundleKey:
        from cryptography.hazmat.primitives import serialization

        from labelgate.bundle.signing import ALGORITHMS

        if algorithm not in ALGORITHMS:
            raise ConfigError(
                reasons.SIGNING_ALG_UNSUPPORTED, f"signing algorithm {algorithm!r}: use {ALGORITHMS}"
            )
        try:
            pem = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(
                reasons.BUNDLE_KEY_UNREADABLE, f"cannot read bundle public key {path}: {error}"
            ) from error
        try:
            serialization.load_pem_public_key(pem)  # refuse a bad key at start, not at the first bundle
        except (ValueError, TypeError) as error:
            raise ConfigError(
                reasons.BUNDLE_KEY_INVALID, f"{path} is not a PEM public key: {error}"
            ) from error
        return cls(pem, algorithm)

    def verify(self, files: dict[str, bytes]) -> None:
        """Raise InvalidInput (BUNDLE_UNSIGNED, BUNDLE_SIGNATURE_INVALID) unless the signature holds."""
        from labelgate.bundle.signing import verify_signatures

        verify_signatures(files, self.public_key_pem, self.algorithm)


@dataclass(frozen=True)
class PolicySource:
    """Rego modules (relative path -> text), the merged data document, and its revision."""

    modules: tuple[tuple[str, str], ...]
    data: dict[str, Any]
    revision: str
    origin: str
    # The data.yaml / data.yml files the data came from, if any (see refuse_yaml_data).
    yaml_files: tuple[str, ...] = ()
    # (data file, number as written) for every data.json number a float64 does not hold (see
    # refuse_yaml_data).
    inexact_numbers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dir(cls, policy_dir: Path) -> PolicySource:
        root = Path(policy_dir)
        if not root.is_dir():
            raise ConfigError(reasons.POLICY_DIR_MISSING, f"policy folder {root} does not exist")
        return cls.from_files(_policy_files(root), origin=str(root))

    @classmethod
    def from_bundle(
        cls,
        tarball: bytes,
        *,
        verify: BundleKey | Callable[[dict[str, bytes]], None] | None = None,
        origin: str = "bundle",
        max_bytes: int = MAX_BUNDLE_BYTES,
    ) -> PolicySource:
        """Read an OPA bundle tarball; with ``verify`` its signature must hold (unsigned is refused).

        Without ``verify`` a ``.signatures.json`` is ignored, as OPA does without a key. Raises
        InvalidInput (BUNDLE_UNREADABLE, BUNDLE_MANIFEST_INVALID, BUNDLE_UNSIGNED,
        BUNDLE_SIGNATURE_INVALID, ...) or ConfigError (a module or data file that does not load).
        """
        from labelgate.bundle.build import read_tarball

        return cls.from_bundle_files(read_tarball(tarball, max_bytes), verify=verify, origin=origin)

    @classmethod
    def from_bundle_files(
        cls,
        files: dict[str, bytes],
        *,
        verify: BundleKey | Callable[[dict[str, bytes]], None] | None = None,
        origin: str = "bundle",
    ) -> PolicySource:
        """``from_bundle`` of a tarball already read (``bundle.build.read_tarball``): its members."""
        if verify is not None:
            (verify.verify if isinstance(verify, BundleKey) else verify)(files)
        revision = _manifest_revision(files.get(MANIFEST))
        members: list[tuple[str, bytes]] = []
        for name, content in files.items():
            rel = PurePosixPath(name)
            if name in (MANIFEST, SIGNATURES):
                continue
            if ".." in rel.parts or any(part.startswith(".") for part in rel.parts):
                raise InvalidInput(
                    reasons.BUNDLE_FILE_INVALID, f"bundle member {name!r} is not a plain relative path"
                )
            if is_policy_file(rel):
                members.append((name, content))
            else:
                log.warning("bundle_file_ignored", path=name, why="only .rego and data.json/data.yaml load")
        return cls.from_files(members, origin=origin, revision=revision)

    @classmethod
    def from_files(
        cls, files: Iterable[tuple[str, bytes]], *, origin: str, revision: str | None = None
    ) -> PolicySource:
        """Build from (relative posix path, bytes) pairs: the common core of folder and bundle.

        ``revision`` defaults to the content hash (a bundle passes its manifest revision): a
        data.json counts in the canonical form ``labelgate bundle`` serves it in, so a folder and
        the bundle built from it have the same revision (``bundle.build.content_revision``).
        """
        ordered = sorted(files)
        modules: list[tuple[str, str]] = []
        data: dict[str, Any] = {}
        yaml_files: list[str] = []
        inexact: list[tuple[str, str]] = []
        digest = hashlib.sha256()
        for rel, content in ordered:
            path = PurePosixPath(rel)
            if path.suffix == ".rego":
                modules.append((rel, _decode(rel, content)))
            else:
                if not rel.endswith(".json"):
                    yaml_files.append(rel)
                value, inexact_here = _parse_data(rel, content)
                inexact += ((rel, number) for number in inexact_here)
                _merge(data, list(path.parent.parts), value, rel)
                if revision is None and path.name == "data.json":
                    content = canonical_json(content)  # parsed above, so valid JSON
            if revision is None:
                digest.update(rel.encode() + b"\0" + len(content).to_bytes(8, "big") + content)
        if not modules:
            raise ConfigError(reasons.POLICY_EMPTY, f"no .rego modules found in {origin}")
        return cls(
            tuple(modules), data, revision or digest.hexdigest(), origin, tuple(yaml_files), tuple(inexact)
        )

    def refuse_yaml_data(self, engine: str) -> None:
        """Raise ConfigError unless the data is what OPA reads (module docstring): none from YAML
        (BUNDLE_DATA_UNSUPPORTED), no data.json number a float64 does not hold and no whole
        number written as a float (``1.0``: OPA indexes arrays by it, the in-process engines do
        not, whole_numbers.py) (POLICY_DATA_INVALID).

        Both are the in-process engines' concern only (``--engine opa`` reads the files itself),
        so a source holding them still reads, and each in-process engine calls this as it loads.
        """
        if self.yaml_files:
            raise ConfigError(
                bundle_reasons.BUNDLE_DATA_UNSUPPORTED,
                f"{self.origin}: {', '.join(self.yaml_files)}: write data as data.json (YAML data is "
                f"read differently from OPA, e.g. 1e3 is a string here and a number in OPA, so the "
                f"{engine} engine does not load it), or run this policy with --engine opa",
            )
        if self.inexact_numbers:
            shown = "; ".join(
                f"{rel}: {number} ({_nearest(number)})" for rel, number in self.inexact_numbers[:5]
            )
            more = f" and {len(self.inexact_numbers) - 5} more" if len(self.inexact_numbers) > 5 else ""
            raise ConfigError(
                reasons.POLICY_DATA_INVALID,
                f"{self.origin}: data number(s) a 64-bit float does not hold exactly: {shown}{more}. "
                f"OPA compares the number as written, the {engine} engine would compare the float: "
                f"write the float's own value, or run this policy with --engine opa",
            )
        whole_numbers.refuse_data(self.data, self.origin, engine)


def _nearest(number: str) -> str:
    """What a float64 makes of the JSON number ``number``, for a message."""
    value = float(number)
    return f"the nearest float is {value!r}" if math.isfinite(value) else "out of a float's range"


def _manifest_revision(manifest: bytes | None) -> str | None:
    """The manifest's revision; None (content hash) when the bundle has no manifest or revision."""
    if manifest is None:
        return None
    revision = manifest_object(manifest, reasons.BUNDLE_MANIFEST_INVALID).get("revision")
    if revision is not None and not isinstance(revision, str):
        raise InvalidInput(reasons.BUNDLE_MANIFEST_INVALID, ".manifest revision must be a string")
    return revision or None


def is_policy_file(rel: PurePosixPath) -> bool:
    if rel.suffix == ".rego":
        return not rel.name.endswith("_test.rego")
    return rel.name in DATA_FILE_NAMES


def _policy_files(root: Path) -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if is_policy_file(rel):
            files.append((str(rel), path.read_bytes()))
        elif rel.suffix in (".json", ".yaml", ".yml"):
            # `opa run DIR` (not bundle mode) would load this too; we follow bundle rules.
            log.warning("policy_file_ignored", path=str(rel), why="only data.json/data.yaml are data")
    return files


def policy_fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector (names, sizes, mtimes) for the folder watcher."""
    entries = []
    for path in root.rglob("*"):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if is_policy_file(rel) and not any(p.startswith(".") for p in rel.parts):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed while we looked: the next poll sees the final state
            entries.append((str(rel), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def _decode(rel: str, content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(reasons.POLICY_FILE_INVALID, f"{rel} is not UTF-8: {error}") from error


def _parse_data(rel: str, content: bytes) -> tuple[Any, list[str]]:
    """The data in ``content``, and the JSON numbers in it a float64 does not hold (as written).

    A JSON number with a fraction or an exponent becomes a Python float (what both in-process
    engines are handed, written back by ``json.dumps`` as its shortest form); OPA keeps the
    literal. They agree when that float's shortest form has the literal's value (``0.1``,
    ``1E2``, ``2.5e-3``), and not otherwise (``0.1000000000000000055511151231257827``, more
    than 17 significant digits; ``1e400``, out of range): those are returned. Integers stay
    exact Python ints, written back digit for digit. ``NaN`` and ``Infinity`` are not JSON (OPA
    refuses them): invalid data. Neither is a key twice in one JSON object (json.loads and OPA
    keep the last, so the file would not mean what its reviewer read: a catalog entry with
    ``"labels"`` twice took the second, review s14), nor nesting past the recursion limit, nor
    a lone surrogate escape (``_refuse_lone_surrogates``).
    """
    inexact: list[str] = []

    def exact_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) or Decimal(text) != Decimal(repr(value)):
            inexact.append(text)
        return value

    def not_json(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        if rel.endswith(".json"):
            value = json.loads(
                content, parse_float=exact_float, parse_constant=not_json, object_pairs_hook=unique_keys
            )
            _refuse_lone_surrogates(rel, value)
            return value, inexact
        return yaml.safe_load(content), inexact
    except DuplicateKeyError as error:
        raise ConfigError(reasons.POLICY_DATA_INVALID, f"{rel}: {error}") from None
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(reasons.POLICY_DATA_INVALID, f"{rel} is not valid data: {error}") from error
    except RecursionError:
        raise ConfigError(reasons.POLICY_DATA_INVALID, f"{rel} is nested too deeply") from None


def _refuse_lone_surrogates(rel: str, value: Any) -> None:
    """A string escape of half a UTF-16 pair (``"\\udc80"``) is data OPA reads as U+FFFD and
    json.loads keeps as it is: the engines would not read what OPA reads, and a signed bundle's
    data, hashed in its canonical form (U+FFFD, as OPA), could be swapped for any of 2,048 such
    texts under the same signature (review, seventh round). One C-level encode finds any."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            reasons.POLICY_DATA_INVALID,
            f"{rel} holds a string escape of half a UTF-16 surrogate pair (a lone \\uD800-\\uDFFF), "
            "which is no character",
        ) from None


def _merge(into: dict[str, Any], prefix: list[str], value: Any, rel: str) -> None:
    """Place ``value`` at ``prefix`` and deep-merge objects; a clash is an error, as in OPA."""
    for key in reversed(prefix):
        value = {key: value}
    if not isinstance(value, dict):
        raise ConfigError(reasons.POLICY_DATA_INVALID, f"{rel}: data at the root must be an object")
    _merge_objects(into, value, rel, [])


def _merge_objects(into: dict[str, Any], value: dict[str, Any], rel: str, path: list[str]) -> None:
    for key, item in value.items():
        if key not in into:
            into[key] = item
        elif isinstance(into[key], dict) and isinstance(item, dict):
            _merge_objects(into[key], item, rel, [*path, key])
        else:
            raise ConfigError(
                reasons.POLICY_DATA_CONFLICT, f"{rel}: data.{'.'.join([*path, key])} is defined twice"
            )
