"""Who may do what on the bundle server: credentials, roles, and the ``Host`` check.

Three roles, never one token for two:

- ``instance``: one OPA (or embedded gateway) per credential. It pulls bundles and posts its
  status reports and decision logs; everything it posts is stored under the credential's
  instance name, never under a name the body claims.
- ``reader``: people and tools that read the fleet view, the decision logs and the publish
  status. A reader can neither pull bundles nor post.
- ``publisher``: a person who authors policy changes. When the publish gate holds a revision
  (``gate.py``), its author asks for its release (``POST /revisions/{revision}/approval``);
  the approval request names the publisher as requester, so the approvals service refuses
  the author's own vote. Name publishers by the short name their JWT carries (``sub``):
  separation of duties compares short names, so ``alice`` cannot approve what ``alice`` asked.

Credentials come from a tokens file (``--tokens-file``)::

    # labelgate bundle-server credentials: one per OPA instance, separate ones for readers.
    instances:
      opa-east-1: "a long random token"
      opa-west-2: "sha256:9f86d08...0f00a08"   # the SHA-256 (hex) of the token, not the token
    readers:
      auditor: "sha256:..."
    publishers:
      alice: "sha256:..."

or, for a single OPA, ``--token`` (instance, named by ``--token-instance``) and
``--reader-token``. Raw tokens must be at least ``MIN_TOKEN_CHARS`` long; no token may appear
twice. Presented tokens are compared by their SHA-256 digest, so the file may hold digests only.

``Host``: a request is served only when its ``Host`` names this server (an allowed name or an
IP literal). A DNS-rebinding page reaches the server under the attacker's own name, so its
requests are refused before authentication; a browser cannot make a request carry an IP
literal of a server it does not serve its page from, so IP literals stay usable for probes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from labelgate.bundle import reasons
from labelgate.digits import whole_number
from labelgate.errors import ConfigError, PermissionDenied, Unauthenticated

Role = Literal["instance", "reader", "publisher"]
ROLES: tuple[Role, ...] = ("instance", "reader", "publisher")
MIN_TOKEN_CHARS = 16
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
_FILE_SECTIONS = {"instances": "instance", "readers": "reader", "publishers": "publisher"}


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the credential's name and role (``authenticated`` false without auth)."""

    name: str
    role: Role
    authenticated: bool = True


# Without authentication (``--insecure-no-auth``) every request is this one principal.
ANONYMOUS = Principal(name="", role="instance", authenticated=False)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Credentials:
    """Token digests -> principals. Build with ``add`` or ``from_file``; ``check`` answers requests."""

    _by_digest: dict[str, Principal] = field(default_factory=dict)

    def add(self, role: Role, name: str, secret: str) -> None:
        if role not in ROLES:
            raise ConfigError(reasons.BUNDLE_TOKENS_INVALID, f"unknown role {role!r}: use {', '.join(ROLES)}")
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(
                reasons.BUNDLE_TOKENS_INVALID, f"{role} name {name!r}: use 1-64 of [A-Za-z0-9._-]"
            )
        if not isinstance(secret, str) or not secret.strip():
            raise ConfigError(reasons.BUNDLE_TOKEN_EMPTY, f"the token of {role} {name!r} is empty")
        secret = secret.strip()
        matched = _DIGEST.match(secret)
        if matched:
            digest = matched.group(1).lower()
        else:
            if len(secret) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    reasons.BUNDLE_TOKEN_WEAK,
                    f"the token of {role} {name!r} is shorter than {MIN_TOKEN_CHARS} characters",
                )
            digest = token_digest(secret)
        if digest in self._by_digest:
            other = self._by_digest[digest]
            raise ConfigError(
                reasons.BUNDLE_TOKEN_REUSED,
                f"{role} {name!r} has the same token as {other.role} {other.name!r}: "
                "one token per credential",
            )
        if any(p.role == role and p.name == name for p in self._by_digest.values()):
            raise ConfigError(reasons.BUNDLE_TOKENS_INVALID, f"{role} {name!r} is named twice")
        self._by_digest[digest] = Principal(name=name, role=role)

    @classmethod
    def from_mapping(cls, data: Any, where: str = "the tokens file") -> Credentials:
        if not isinstance(data, Mapping):
            raise ConfigError(
                reasons.BUNDLE_TOKENS_INVALID,
                f"{where}: expected a mapping with instances/readers/publishers",
            )
        unknown = sorted(set(map(str, data)) - set(_FILE_SECTIONS))
        if unknown:
            raise ConfigError(
                reasons.BUNDLE_TOKENS_INVALID, f"{where}: unknown section(s) {', '.join(unknown)}"
            )
        credentials = cls()
        for section, role in _FILE_SECTIONS.items():
            entries = data.get(section) or {}
            if not isinstance(entries, Mapping):
                raise ConfigError(
                    reasons.BUNDLE_TOKENS_INVALID, f"{where}: {section} must map names to tokens"
                )
            for name, secret in entries.items():
                credentials.add(role, str(name), secret)  # type: ignore[arg-type]
        return credentials

    @classmethod
    def from_file(cls, path: Path) -> Credentials:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(reasons.BUNDLE_TOKENS_UNREADABLE, f"cannot read {path}: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                reasons.BUNDLE_TOKENS_INVALID, f"{path} is not UTF-8 text (byte {error.start})"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(reasons.BUNDLE_TOKENS_INVALID, f"{path} is not YAML/JSON: {error}") from None
        except RecursionError:
            raise ConfigError(reasons.BUNDLE_TOKENS_INVALID, f"{path} is nested too deeply") from None
        return cls.from_mapping(data, str(path))

    def merge(self, other: Credentials) -> Credentials:
        merged = Credentials(dict(self._by_digest))
        for digest, principal in other._by_digest.items():
            if digest in merged._by_digest:
                raise ConfigError(
                    reasons.BUNDLE_TOKEN_REUSED,
                    f"{principal.role} {principal.name!r} has the same token as another credential",
                )
            merged._by_digest[digest] = principal
        return merged

    def count(self, role: Role) -> int:
        return sum(1 for p in self._by_digest.values() if p.role == role)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def check(self, authorization: str, role: Role, what: str) -> Principal:
        """The principal behind an ``Authorization`` header, if it holds ``role``."""
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise Unauthenticated(reasons.BUNDLE_TOKEN_MISSING, "send Authorization: Bearer <token>")
        principal = self._by_digest.get(token_digest(given))
        if principal is None:
            raise Unauthenticated(reasons.BUNDLE_TOKEN_INVALID, "the bearer token is not valid")
        if principal.role != role:
            raise PermissionDenied(
                reasons.BUNDLE_ROLE_FORBIDDEN,
                f"{principal.role} credential {principal.name!r} may not {what} (needs the {role} role)",
            )
        return principal


# ---------------------------------------------------------------------------------------------
# Host


def default_allowed_hosts(listen_host: str) -> tuple[str, ...]:
    """Names a client may use for this server when none are configured: loopback and our own."""
    names = {"localhost"}
    if listen_host and not _is_ip(listen_host):
        names.add(listen_host)
    if listen_host in ("0.0.0.0", "::", ""):  # noqa: S104 - compared, not bound
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.add(name)
    return tuple(sorted(normalise_host(n) for n in names))


def normalise_host(name: str) -> str:
    return name.strip().lower().rstrip(".")


def host_name(header: str) -> str | None:
    """The name part of a ``Host`` header (``name:port``, ``[v6]:port``); None when malformed."""
    header = header.strip()
    if not header:
        return None
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not (rest.startswith(":") and _is_port(rest[1:])):
            return None
        return name.lower()
    name, sep, port = header.rpartition(":")
    if not sep:
        name = port
    elif not _is_port(port):
        return None
    if not name or any(c in name for c in "/\\@ \t"):
        return None
    return normalise_host(name)


def _is_port(text: str) -> bool:
    return whole_number(text) is not None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostCheck:
    allowed: frozenset[str]

    @classmethod
    def of(cls, names: Iterable[str]) -> HostCheck:
        # IP literals are always allowed (see the module docstring): only names are kept.
        cleaned = frozenset(
            normalise_host(n) for n in names if n and n.strip() and not _is_ip(n.strip("[] "))
        )
        bad = sorted(n for n in cleaned if host_name(n) != n)
        if bad:
            raise ConfigError(
                reasons.ALLOWED_HOST_INVALID, f"allowed host(s) {', '.join(bad)}: give a bare name"
            )
        return cls(cleaned)

    def allows(self, header: str | None) -> bool:
        name = host_name(header or "")
        if name is None:
            return False
        return name in self.allowed or _is_ip(name)
