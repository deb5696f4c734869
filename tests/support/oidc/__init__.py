"""A real OpenID Provider for the tests: npm's ``oidc-provider`` (``provider.mjs`` here).

``package.json`` and ``package-lock.json`` are committed; ``installed()`` runs ``npm ci`` into
this folder's ``node_modules`` (git-ignored) when it is missing or older than the lock, so a
fresh machine installs it on the first run and later runs reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import Process, free_port, running

HERE = Path(__file__).parent
MARKER = HERE / "node_modules" / ".labelgate-installed"


def installed() -> Path:
    """This folder, with its locked node packages installed (once, under a lock)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the OpenID Provider tests need node 20+ and npm")
    lock = HERE / "package-lock.json"
    with open(HERE / ".install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not MARKER.exists() or MARKER.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True, timeout=600
            )
            MARKER.touch()
    return HERE


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    process: Process


@contextlib.contextmanager
def running_provider(
    folder: Path, redirect_uris: list[str], accounts: dict[str, list[str]]
) -> Iterator[Provider]:
    """oidc-provider on a free loopback port with one confidential client (PKCE required);
    ``accounts`` maps a login to its groups."""
    installed()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    client = {
        "client_id": "labelgate-inbox",
        "client_secret": "inbox-test-secret",
        "redirect_uris": redirect_uris,
    }
    config = {"port": port, "issuer": issuer, "clients": [client], "accounts": accounts}
    config_file = folder / "oidc-provider.json"
    config_file.write_text(json.dumps(config))
    node = shutil.which("node") or "node"
    with running(
        [node, str(HERE / "provider.mjs"), str(config_file)],
        folder / "oidc-provider.log",
        port=port,
        cwd=HERE,
    ) as process:
        yield Provider(issuer, client["client_id"], client["client_secret"], process)
