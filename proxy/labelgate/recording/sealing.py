"""Recordings encrypted at rest: AES-256-GCM per entry, with a key from a file.

A recording holds responses as delivered, real values included for cleared callers, so
neither the files nor the PostgreSQL rows keep them in clear. ``SealedStore`` wraps either
store: every entry is written as an envelope whose body is sealed, and readers (the web
session pages, ``labelgate sessions show|replay``) open it again::

    {"kind": "call", "time": "...", "session_id": "...", "request_id": "...",
     "sealed": {"alg": "A256GCM", "kid": "<key id>", "nonce": "<b64>", "ct": "<b64>"}}

Only what the stores need to list, cap and sweep sessions stays readable (kind, time,
session id, the gateway's request id); the ciphertext is bound to those by the additional
authenticated data, so an entry cannot be moved to another session or time unnoticed.

Keys (``recording.encryption_key_file``): 32 random bytes, as base64 or hex text (``labelgate
sessions generate-key FILE`` writes one, mode 0600). The key id (``kid``, in every entry) is
derived from the key itself. Rotation: write a new key file, point
``encryption_key_file`` at it and list the old one in ``recording.decryption_key_files``;
new entries use the new key, old ones still open; once ``retention_days`` have passed,
every entry sealed with the old key has been swept and its file can be dropped (and
destroyed). An entry whose key is not configured reads as a ``damaged`` line saying so;
entries written before encryption was turned on are read as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from labelgate.errors import ConfigError
from labelgate.recording import reasons
from labelgate.recording.entries import Admission
from labelgate.recording.store import SessionInfo, SessionStore

ALGORITHM = "A256GCM"
CLEAR_KEYS = ("kind", "time", "session_id", "request_id")


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"labelgate.recording-key-id\x00" + key).hexdigest()[:16]


def read_key(path: Path) -> bytes:
    try:
        text = path.read_bytes().strip()
    except OSError as error:
        raise ConfigError(
            reasons.RECORDING_KEY_UNREADABLE, f"cannot read recording key {path}: {error}"
        ) from None
    for decode in (bytes.fromhex, base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return key
    raise ConfigError(reasons.RECORDING_KEY_INVALID, f"recording key {path}: not 32 bytes as base64 or hex")


def write_key_file(path: Path) -> Path:
    """A new random key in ``path`` (mode 0600); refuses to replace an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return path


class RecordingKeys:
    """The key new entries are sealed with, and every key entries may be opened with."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self.kid = key_id(current)
        self._current = AESGCM(current)
        self._keys = {key_id(key): AESGCM(key) for key in (*previous, current)}

    @classmethod
    def from_files(cls, current: Path, previous: Sequence[Path] = ()) -> RecordingKeys:
        return cls(read_key(current), [read_key(path) for path in previous])

    @staticmethod
    def _aad(clear: dict[str, Any], kid: str) -> bytes:
        return json.dumps({**clear, "kid": kid}, sort_keys=True, separators=(",", ":")).encode()

    def seal(self, entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("kind") == "session":  # the header names the session, nothing more
            return entry
        clear = {key: entry[key] for key in CLEAR_KEYS if key in entry}
        body = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()
        nonce = os.urandom(12)
        sealed = self._current.encrypt(nonce, body, self._aad(clear, self.kid))
        return {
            **clear,
            "sealed": {
                "alg": ALGORITHM,
                "kid": self.kid,
                "nonce": base64.b64encode(nonce).decode(),
                "ct": base64.b64encode(sealed).decode(),
            },
        }

    def open(self, stored: dict[str, Any]) -> dict[str, Any]:
        sealed = stored.get("sealed")
        if not isinstance(sealed, dict):
            return stored  # written before encryption was on (or a damaged-line marker)
        clear = {key: stored[key] for key in CLEAR_KEYS if key in stored}
        kid = str(sealed.get("kid", ""))
        cipher = self._keys.get(kid)
        if cipher is None:
            return {**clear, "kind": "damaged", "line": "?", "note": f"sealed with key {kid}, not configured"}
        try:
            body = cipher.decrypt(
                base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"]), self._aad(clear, kid)
            )
            entry = json.loads(body)
        except (InvalidTag, KeyError, ValueError, binascii.Error):
            return {**clear, "kind": "damaged", "line": "?", "note": "does not decrypt (altered or moved)"}
        return entry if isinstance(entry, dict) else {**clear, "kind": "damaged", "line": "?"}


class SealedStore:
    """A ``SessionStore`` that seals entries on the way in and opens them on the way out."""

    def __init__(self, inner: SessionStore, keys: RecordingKeys) -> None:
        self.inner = inner
        self.keys = keys

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def append(self, session_id: str, entries: Sequence[dict[str, Any]], limit: int) -> list[Admission]:
        return await self.inner.append(session_id, [self.keys.seal(e) for e in entries], limit)

    async def sessions(self) -> list[SessionInfo]:
        return await self.inner.sessions()

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        found = await self.inner.entries(session_id)
        return None if found is None else [self.keys.open(entry) for entry in found]

    async def sweep(self, cutoff: datetime) -> int:
        return await self.inner.sweep(cutoff)


def sealed(store: SessionStore, key_file: Path | None, previous: Sequence[Path] = ()) -> SessionStore:
    """``store`` sealed with the key in ``key_file``; ``store`` itself when no key is configured."""
    if key_file is None:
        return store
    return SealedStore(store, RecordingKeys.from_files(key_file, previous))
