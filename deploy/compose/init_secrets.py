"""Development secrets of the compose stack, made once by its `init` service (idempotent).

    python init_secrets.py DIR [--cli-dir CLI_DIR] [--uid 10001] [--postgres-uid 999]

Writes into DIR (the `secrets` volume) only what is missing:

| file | for | mode, owner |
|---|---|---|
| hash.key | gateway (`masking.hash_key_file`) | 0400 labelgate |
| recording.key | gateway (`recording.encryption_key_file`): seals session recordings | 0400 labelgate |
| audit-signing.key, .pub | audit writer (`--signing-key`); `audit verify` | 0400 / 0444 labelgate |
| bundle-token | OPA's instance credential (`credentials.bearer.token_path`) | 0400 labelgate |
| bundle-reader-token | reading the bundle server's /fleet, /fleet/page, /decisions | 0400 labelgate |
| bundle-tokens.yaml | bundle server (`--tokens-file`): their SHA-256, not the tokens | 0400 labelgate |
| bundle-signing.key, .pub | bundle server (`--signing-key`); OPA verifies with .pub | 0400 / 0444 labelgate |
| postgres-password | PostgreSQL (`POSTGRES_PASSWORD_FILE`) | 0400 postgres |
| pgpass | gateway and approvals server (libpq `passfile`) | 0600 labelgate |

Each is random and stays on this machine's volume; `docker compose down -v` forgets them.
CLI_DIR (the `cli-secrets` volume, all the `cli` service mounts of them) gets a copy of the
two it needs, `bundle-reader-token` and `audit-signing.pub`, refreshed on every run.
`bundle-tokens.yaml` is derived from the two token files, and rewritten when it no longer
matches them.
Ownership is set only when run as root (the init service is); elsewhere (tests) files keep
the caller's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER = "postgres", 5432, "labelgate", "labelgate"
# The names the bundle server files the two credentials under (its fleet view shows them).
BUNDLE_INSTANCE, BUNDLE_READER = "opa", "operator"


def _write(path: Path, content: bytes, mode: int, uid: int) -> bool:
    if path.exists():
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    os.chmod(path, mode)
    return True


def _key_pair(private: Path, public: Path, uid: int, generate: Callable[[], Any]) -> bool:
    """A PEM key pair (private 0400, public 0444), unless the private key exists."""
    from cryptography.hazmat.primitives import serialization

    if private.exists():
        return False
    key = generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.unlink(missing_ok=True)
    _write(private, private_pem, 0o400, uid)
    _write(public, public_pem, 0o444, uid)
    return True


def bundle_tokens_file(instance_token: str, reader_token: str) -> bytes:
    """The bundle server's --tokens-file: digests only, so the server never holds a token."""
    import hashlib

    def digest(token: str) -> str:
        return "sha256:" + hashlib.sha256(token.strip().encode()).hexdigest()

    return (
        "# Written by deploy/compose/init_secrets.py from bundle-token and bundle-reader-token.\n"
        f'instances:\n  {BUNDLE_INSTANCE}: "{digest(instance_token)}"\n'
        f'readers:\n  {BUNDLE_READER}: "{digest(reader_token)}"\n'
    ).encode()


def make_secrets(directory: Path, uid: int = 10001, postgres_uid: int = 999) -> list[str]:
    """Create what is missing; return the names written."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # noqa: S103 - services of other users read their own files in it
    written = []
    if _write(directory / "hash.key", secrets.token_hex(32).encode() + b"\n", 0o400, uid):
        written.append("hash.key")
    # AES-256-GCM, 32 bytes as hex (what `labelgate sessions generate-key` makes, as base64).
    if _write(directory / "recording.key", secrets.token_hex(32).encode() + b"\n", 0o400, uid):
        written.append("recording.key")
    if _key_pair(
        directory / "audit-signing.key", directory / "audit-signing.pub", uid, Ed25519PrivateKey.generate
    ):
        written += ["audit-signing.key", "audit-signing.pub"]
    for name in ("bundle-token", "bundle-reader-token"):
        if _write(directory / name, secrets.token_hex(32).encode(), 0o400, uid):
            written.append(name)
    tokens = directory / "bundle-tokens.yaml"
    wanted = bundle_tokens_file(
        (directory / "bundle-token").read_text(), (directory / "bundle-reader-token").read_text()
    )
    if not tokens.exists() or tokens.read_bytes() != wanted:
        tokens.unlink(missing_ok=True)
        _write(tokens, wanted, 0o400, uid)
        written.append("bundle-tokens.yaml")
    if _key_pair(
        directory / "bundle-signing.key",
        directory / "bundle-signing.pub",
        uid,
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    ):
        written += ["bundle-signing.key", "bundle-signing.pub"]
    password_file = directory / "postgres-password"
    if not password_file.exists():
        password = secrets.token_hex(24)
        (directory / "pgpass").unlink(missing_ok=True)
        _write(password_file, password.encode(), 0o400, postgres_uid)
        line = f"{POSTGRES_HOST}:{POSTGRES_PORT}:{POSTGRES_DB}:{POSTGRES_USER}:{password}\n"
        _write(directory / "pgpass", line.encode(), 0o600, uid)
        written += ["postgres-password", "pgpass"]
    return written


# What the `cli` service reads: the fleet's reader token, and the key `audit verify` checks with.
CLI_FILES = {"bundle-reader-token": 0o400, "audit-signing.pub": 0o444}


def share_with_cli(directory: Path, cli_directory: Path, uid: int = 10001) -> list[str]:
    """Copy ``CLI_FILES`` from ``directory`` into ``cli_directory`` where they differ (a rotated
    token reaches the CLI at the next start); return the names written."""
    cli_directory.mkdir(parents=True, exist_ok=True)
    os.chmod(cli_directory, 0o755)  # noqa: S103 - holds only what the cli service may read
    written = []
    for name, mode in CLI_FILES.items():
        content, copy = (directory / name).read_bytes(), cli_directory / name
        if copy.exists() and copy.read_bytes() == content:
            continue
        copy.unlink(missing_ok=True)
        _write(copy, content, mode, uid)
        written.append(name)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--cli-dir", type=Path, help="where the cli service's copies go")
    parser.add_argument("--uid", type=int, default=10001, help="owner of the labelgate services' files")
    parser.add_argument("--postgres-uid", type=int, default=999, help="owner of postgres-password")
    args = parser.parse_args()
    written = make_secrets(args.directory, args.uid, args.postgres_uid)
    print(f"secrets in {args.directory}: " + (f"created {', '.join(written)}" if written else "all present"))
    if args.cli_dir is not None:
        shared = share_with_cli(args.directory, args.cli_dir, args.uid)
        print(f"the cli's in {args.cli_dir}: " + (f"copied {', '.join(shared)}" if shared else "current"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
