"""API keys: stored as SHA-256 hashes, compared in constant time.

Why plain SHA-256 and not bcrypt/argon2: slow hashes protect *low-entropy* secrets
(passwords) against guessing after the hash file leaks. Keys minted here carry 256 bits
from ``secrets`` and presented keys must be at least 32 characters, so a leaked hash can't
be reversed by guessing in any case, and a slow hash would only add milliseconds of CPU to
every call on the data path. An unsalted hash is fine for the same reason (no two keys
collide, no precomputed table covers a 256-bit space).

Keys file (YAML or JSON)::

    keys:
      - id: ci-pipeline              # Subject.id api_key:ci-pipeline
        sha256: 3f5c...              # hash_api_key(key), 64 hex characters
        groups: [analysts]
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labelgate.auth import reasons
from labelgate.auth.subject import Subject, group_name_problem
from labelgate.errors import ConfigError, Unauthenticated

KEY_PREFIX = "lgk_"  # lets secret scanners and people recognise a labelgate key
MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 512


def mint_api_key() -> str:
    """A new random key (``lgk_`` + 43 URL-safe characters = 256 bits). Show it once; store only its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of the key as stored in the keys file."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key_entry(key_id: str, groups: Sequence[str] = ()) -> tuple[str, dict[str, object]]:
    """A minted key and the keys-file entry for it: ``(key, {"id", "sha256", "groups"})``."""
    key = mint_api_key()
    return key, {"id": key_id, "sha256": hash_api_key(key), "groups": sorted(set(groups))}


class ApiKeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=256)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash_api_key(key): lowercase hex")
    groups: list[str] = Field(default_factory=list)


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyEntry]


class ApiKeyStore:
    def __init__(self, entries: Sequence[ApiKeyEntry]) -> None:
        self._entries = [(bytes.fromhex(entry.sha256), entry) for entry in entries]

    @classmethod
    def load(cls, path: Path | None) -> ApiKeyStore:
        """Read and check the keys file (start-up), every problem in one ConfigError.

        No file: no key is valid."""
        if path is None:
            return cls([])
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(
                reasons.AUTH_CONFIG_INVALID, f"API keys file {path}: cannot read ({error})"
            ) from None
        try:
            entries = _KeysFile.model_validate(document).keys
        except ValidationError as error:
            problems = [f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()]
            raise ConfigError(
                reasons.AUTH_CONFIG_INVALID, f"API keys file {path}: " + "; ".join(problems)
            ) from None
        problems = []
        ids = [entry.id for entry in entries]
        if len(set(ids)) != len(ids):
            problems.append(f"duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        hashes = [entry.sha256 for entry in entries]
        if len(set(hashes)) != len(hashes):
            problems.append("two entries share one hash (the same key under two ids)")
        # Checked here as Subject will (names are never trimmed), so a bad name is a start-up
        # error rather than a refusal of every call with that key.
        problems += [
            f"{entry.id}: a group name {problem}"
            for entry in entries
            for name in entry.groups
            if (problem := group_name_problem(name)) is not None
        ]
        if problems:
            raise ConfigError(reasons.AUTH_CONFIG_INVALID, f"API keys file {path}: " + "; ".join(problems))
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, key: str) -> Subject:
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise Unauthenticated(
                reasons.API_KEY_MALFORMED,
                f"an API key is {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} printable ASCII characters",
            )
        presented = hashlib.sha256(key.encode("ascii")).digest()
        match: ApiKeyEntry | None = None
        # Compare against every entry, without stopping at a match, so the time taken says
        # nothing about which entry (or how much of a hash) matched.
        for digest, entry in self._entries:
            if hmac.compare_digest(presented, digest):
                match = entry
        if match is None:
            raise Unauthenticated(reasons.API_KEY_UNKNOWN, "the API key is not known")
        return Subject.proven(
            "api_key", match.id, groups=tuple(match.groups), attributes={"key_id": match.id}
        )
