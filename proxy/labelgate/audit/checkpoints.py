"""Signed checkpoints: Ed25519 over (record count, head hash, time, key id).

A checkpoint line in ``checkpoints.jsonl`` is
``{"seq", "head", "time", "key_id", "signature"}``: ``seq`` is the number of records
(and the seq of the last one) it covers, ``head`` that record's chain hash. The signature
(hex) is over ``SIGNING_CONTEXT + canonical_json({"head", "key_id", "seq", "time"})`` so a
signature made for anything else with the same key can never pass for a checkpoint.
``key_id`` is the first 16 hex digits of SHA-256 of the raw 32-byte public key.

A writer without a signing key writes checkpoints with ``key_id`` and ``signature`` null:
they still catch an accidental truncation, but not one by someone who can also rewrite
this file, and ``audit verify --public-key`` refuses them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from labelgate.audit import reasons
from labelgate.audit.records import canonical_json
from labelgate.errors import ConfigError

SIGNING_CONTEXT = b"labelgate.audit.checkpoint.v1\n"
CHECKPOINT_KEYS = frozenset({"seq", "head", "time", "key_id", "signature"})
PRIVATE_KEY_NAME = "audit-signing.key"
PUBLIC_KEY_NAME = "audit-signing.pub"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def signed_bytes(seq: int, head: str, time: str, kid: str | None) -> bytes:
    return SIGNING_CONTEXT + canonical_json({"head": head, "key_id": kid, "seq": seq, "time": time})


@dataclass(frozen=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey | None

    @property
    def key_id(self) -> str | None:
        return key_id(self.private_key.public_key()) if self.private_key else None

    def checkpoint(self, seq: int, head: str, time: str) -> dict[str, Any]:
        kid = self.key_id
        signature = (
            self.private_key.sign(signed_bytes(seq, head, time, kid)).hex() if self.private_key else None
        )
        return {"seq": seq, "head": head, "time": time, "key_id": kid, "signature": signature}


def signed_by(checkpoint: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    """Whether the checkpoint claims to be signed by ``public_key`` (the signature unchecked)."""
    return checkpoint.get("signature") is not None and checkpoint.get("key_id") == key_id(public_key)


def check_signature(checkpoint: dict[str, Any], public_key: Ed25519PublicKey) -> str | None:
    """None when the checkpoint is signed by ``public_key``, else what is wrong with it."""
    if checkpoint.get("signature") is None:
        return "checkpoint is unsigned"
    if checkpoint.get("key_id") != key_id(public_key):
        return f"signed by key {checkpoint.get('key_id')!r}, not by the given public key {key_id(public_key)}"
    try:
        signature = bytes.fromhex(str(checkpoint["signature"]))
        public_key.verify(
            signature,
            signed_bytes(checkpoint["seq"], checkpoint["head"], checkpoint["time"], checkpoint["key_id"]),
        )
    except (ValueError, InvalidSignature):
        return "signature does not match the checkpoint (forged or edited)"
    return None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(
            reasons.AUDIT_KEY_INVALID, f"cannot read signing key {path}: {error.strerror}"
        ) from None
    except (ValueError, TypeError) as error:
        why = f"{path} is not a PEM private key without password: {error}"
        raise ConfigError(reasons.AUDIT_KEY_INVALID, why) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            reasons.AUDIT_KEY_INVALID, f"{path} holds a {type(key).__name__}, not an Ed25519 key"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(
            reasons.AUDIT_KEY_INVALID, f"cannot read public key {path}: {error.strerror}"
        ) from None
    except (ValueError, TypeError) as error:
        raise ConfigError(reasons.AUDIT_KEY_INVALID, f"{path} is not a PEM public key: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            reasons.AUDIT_KEY_INVALID, f"{path} is a {type(key).__name__}, not an Ed25519 public key"
        )
    return key


def generate_keypair(directory: Path, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new signing key (mode 0600) and its public key; return both paths and the key id."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise ConfigError(
            reasons.AUDIT_KEY_EXISTS, f"{', '.join(existing)} already exist (use --force to replace)"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path.write_bytes(public_pem)
    return private_path, public_path, key_id(key.public_key())
