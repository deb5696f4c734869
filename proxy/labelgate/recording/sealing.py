"""Recordings encrypted at rest: AES-256-GCM per entry, with a key from a file.

A recording holds responses as delivered, real values included for cleared callers, so
neither the files nor the PostgreSQL rows keep them in clear. ``SealedStore`` wraps either
store: every entry is written as an envelope whose body is sealed, and readers (the web
session pages, ``labelgate sessions show|replay``) open it again::

    {"kind": "call", "time": "...", "session_id": "...", "request_id": "...", "seq": 7,
     "sealed": {"alg": "A256GCM", "kid": "<key id>", "nonce": "<b64>", "ct": "<b64>"}}

Only what the stores need to list, cap and sweep sessions stays readable (kind, time,
session id, the gateway's request id, and ``seq``); the ciphertext is bound to those by the
additional authenticated data (AAD). ``seq`` is the entry's position among the session's
stored entries, counted from 1: the store seals each entry (the truncation marker too) under
the session's lock (the file's ``flock``, the PostgreSQL row's ``FOR UPDATE``), where the
position is known, so several gateways writing one session number its entries without a gap
or a repeat (``SessionStore.append(..., seal=)``).

What a reader (``SealedStore.entries``: the session pages, ``labelgate sessions show|replay``)
detects, with a key configured, and shows as a ``damaged`` entry saying what is wrong:

- an edited entry, or one whose clear fields were changed (it does not decrypt);
- an entry sealed for another session, copied in as it is (its sealed session id is not the
  session being read);
- an entry stored in clear (no ``sealed``): added by someone without the key, or written
  before encryption was turned on (a truncation marker written before markers were sealed,
  too); either way its contents are not shown;
- a gap in the numbering (entries deleted, or moved elsewhere): one ``damaged`` entry where
  they are missing, saying how many; a repeated or earlier number (a duplicate, a reordering):
  that entry. A gap is not reported when the entries in between already read as damaged, or
  have no number (below), one each: a line torn by a crash still took its position.

What it does not detect: entries cut from the end of a session (nothing after them to show
the gap), a whole session deleted, or a session file or row set replaced by an older copy of
itself. Entries sealed before entries were numbered (no ``seq``) open as before and are not
flagged, but their order is not checked; only a gap before the first numbered entry counts
them. Without a key, readers show every sealed entry as sealed, never its contents
(``viewing.view_entries``).

Keys (``recording.encryption_key_file``): 32 random bytes, as base64 or hex text (``labelgate
sessions generate-key FILE`` writes one, mode 0600). The key id (``kid``, in every entry) is
derived from the key itself. Rotation: write a new key file, point
``encryption_key_file`` at it and list the old one in ``recording.decryption_key_files``;
new entries use the new key, old ones still open; once ``retention_days`` have passed,
every entry sealed with the old key has been swept and its file can be dropped (and
destroyed). An entry whose key is not configured reads as a ``damaged`` line saying so, and
so do entries written in clear before encryption was turned on (see above).
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
from labelgate.recording.store import Sealer, SessionInfo, SessionPage, SessionStore

ALGORITHM = "A256GCM"
CLEAR_KEYS = ("kind", "time", "session_id", "request_id", "seq")


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

    def seal(self, entry: dict[str, Any], seq: int) -> dict[str, Any]:
        """``entry`` as the session's ``seq``-th stored entry, sealed with the current key."""
        if entry.get("kind") == "session":  # the header names the session, nothing more
            return entry
        clear = {key: entry[key] for key in CLEAR_KEYS if key in entry and key != "seq"}
        clear["seq"] = seq
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

    def open(self, stored: dict[str, Any], session_id: str) -> dict[str, Any]:
        """The entry ``stored`` holds, if it is sealed for ``session_id``; else a ``damaged`` entry."""
        clear = {key: stored[key] for key in CLEAR_KEYS if key in stored}
        sealed = stored.get("sealed")
        if stored.get("kind") == "damaged" and sealed is None:
            return stored  # the store's own mark of a line that does not parse
        if not isinstance(sealed, dict):
            return _damaged(clear, "not sealed although a key is configured: written before encryption "
                            "was turned on, or added without the key; not shown")  # fmt: skip
        kid = str(sealed.get("kid", ""))
        cipher = self._keys.get(kid)
        if cipher is None:
            return _damaged(clear, f"sealed with key {kid}, not configured")
        try:
            body = cipher.decrypt(
                base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"]), self._aad(clear, kid)
            )
            entry = json.loads(body)
        except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
            return _damaged(clear, "does not decrypt (altered, or moved from another session or time)")
        if not isinstance(entry, dict):
            return _damaged(clear, "does not decrypt to an entry")
        if clear.get("session_id") != session_id:
            return _damaged(clear, "sealed for another session and copied here: not shown")
        return entry

    def read(self, session_id: str, stored: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The entries of session ``session_id`` opened, in order, with what is wrong marked
        (see the module's docstring): undecryptable, foreign or clear entries, gaps and repeats."""
        found: list[dict[str, Any]] = []
        expected = 1  # the position the next numbered entry should have
        unnumbered = 0  # entries since the last numbered one that take a position we cannot read
        for item in stored:
            if not isinstance(item, dict):
                item = {"kind": "damaged", "line": "?"}
            entry = self.open(item, session_id)
            seq = item.get("seq")
            numbered = isinstance(seq, int) and not isinstance(seq, bool) and "sealed" in item
            if entry.get("kind") == "damaged" or not numbered:
                found.append(entry)
                unnumbered += 1
                continue
            assert isinstance(seq, int)
            if seq < expected:
                found.append(
                    _damaged(
                        {k: item[k] for k in CLEAR_KEYS if k in item},
                        f"entry #{seq} repeats or is out of order (expected #{expected} or later): not shown",
                    )
                )
                continue
            missing = seq - expected - unnumbered
            if missing > 0:
                first, last = seq - missing, seq - 1
                span = f"seq {first}" if first == last else f"seq {first}..{last}"
                what = "1 entry" if missing == 1 else f"{missing} entries"
                found.append(_damaged({}, f"{what} missing here ({span}): deleted, or moved elsewhere"))
            found.append(entry)
            expected, unnumbered = seq + 1, 0
        return found


def _damaged(clear: dict[str, Any], note: str) -> dict[str, Any]:
    kept: dict[str, Any] = {
        key: clear[key] for key in ("time", "session_id", "request_id", "seq") if key in clear
    }
    return {**kept, "kind": "damaged", "line": "?", "note": note}


class SealedStore:
    """A ``SessionStore`` that seals entries on the way in and opens them on the way out."""

    def __init__(self, inner: SessionStore, keys: RecordingKeys) -> None:
        self.inner = inner
        self.keys = keys

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def append(
        self, session_id: str, entries: Sequence[dict[str, Any]], limit: int, *, seal: Sealer | None = None
    ) -> list[Admission]:
        return await self.inner.append(session_id, entries, limit, seal=seal or self.keys.seal)

    async def sessions(self) -> list[SessionInfo]:
        return await self.inner.sessions()

    async def sessions_page(self, limit: int, cursor: str | None = None) -> SessionPage:
        return await self.inner.sessions_page(limit, cursor)

    async def entries(self, session_id: str) -> list[dict[str, Any]] | None:
        found = await self.inner.entries(session_id)
        return None if found is None else self.keys.read(session_id, found)

    async def sweep(self, cutoff: datetime) -> int:
        return await self.inner.sweep(cutoff)


def sealed(store: SessionStore, key_file: Path | None, previous: Sequence[Path] = ()) -> SessionStore:
    """``store`` sealed with the key in ``key_file``; ``store`` itself when no key is configured."""
    if key_file is None:
        return store
    return SealedStore(store, RecordingKeys.from_files(key_file, previous))
