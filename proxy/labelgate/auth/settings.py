"""Authentication settings (pydantic models, composed into the gateway's config model).

Each model checks everything it can without reading file contents and reports every problem
at once: a config that can never work should say all that is wrong in one go. File contents
(JWKS, API keys, group mappings) are checked when the ``Authenticator`` is built.

Paths are ``ConfigPath``: relative ones resolve against the config file's folder when the
config loader gives one (``labelgate.config_paths``), else against the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labelgate.auth.devkeys import DEV_ALGORITHM, DEV_ISSUER, dev_jwks_path
from labelgate.auth.jwks import ALGORITHM_KEY_TYPES, SYMMETRIC_ALGORITHMS
from labelgate.auth.subject import AUTH_METHODS, AuthMethod
from labelgate.config_paths import ConfigPath
from labelgate.shown_urls import credentials_problem, shown_url

_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def _missing_file(name: str, path: Path | None) -> list[str]:
    if path is not None and not path.is_file():
        return [f"{name}: file {str(path)!r} does not exist"]
    return []


class JwtSettings(_Settings):
    """Bearer JWTs. Keys come from ``jwks_file`` or ``jwks_url`` (exactly one), plus the
    quickstart dev key when ``trust_dev_key`` is set (it then suffices on its own)."""

    issuer: str | None = Field(None, description="Required 'iss' of tokens verified with jwks_file/jwks_url")
    audience: str | None = Field(None, description="Required 'aud' (this gateway's name at the issuer)")
    jwks_file: ConfigPath | None = None
    jwks_url: str | None = Field(None, description="https URL (http only for loopback), fetched at start")
    jwks_refresh_seconds: float = Field(300.0, ge=10, le=86400)
    jwks_timeout_seconds: float = Field(5.0, gt=0, le=60)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    groups_claim: str = Field(
        "groups",
        min_length=1,
        description="Claim name, or a dotted path into nested claims. Its value is a list of group "
        "names taken as they are, or one string, which is one group name (never split); a name "
        "that is empty, starts or ends with a space, or holds other whitespace or invisible "
        "characters makes the token invalid (TOKEN_BAD_GROUPS): names are never trimmed",
    )
    subject_claim: str = Field("sub", min_length=1)
    leeway_seconds: int = Field(30, ge=0, le=300)
    trust_dev_key: bool = Field(
        False, description="INSECURE: also accept tokens minted by `labelgate dev-token`"
    )
    dev_keys_dir: ConfigPath | None = Field(
        None,
        description="Where the dev jwks.json is; default: $LABELGATE_DEV_KEYS, else "
        "deploy/quickstart/dev-keys under the working directory",
    )

    @model_validator(mode="after")
    def _coherent(self) -> JwtSettings:
        problems: list[str] = []
        problems += _algorithm_problems(self.algorithms)
        if self.jwks_file is not None and self.jwks_url is not None:
            problems.append("set jwks_file or jwks_url, not both")
        has_source = self.jwks_file is not None or self.jwks_url is not None
        if not has_source and not self.trust_dev_key:
            problems.append(
                "no verification keys: set jwks_file or jwks_url (or trust_dev_key for the quickstart)"
            )
        if has_source:
            problems += [
                f"{name} is required with jwks_file/jwks_url"
                for name in ("issuer", "audience")
                if not getattr(self, name)
            ]
        problems += _credentials_problems(self.issuer, self.jwks_url)
        if self.issuer is not None and "#" in self.issuer:
            problems.append("issuer must not contain '#' (subject ids are jwt:<issuer>#<sub>)")
        if self.issuer == DEV_ISSUER:
            problems.append(
                f"issuer {DEV_ISSUER!r} is the development key's: a production issuer must differ, "
                "so a dev token can never carry a production identity"
            )
        problems += _missing_file("jwks_file", self.jwks_file)
        if self.jwks_url is not None:
            problems += _url_problems(self.jwks_url)
        if self.trust_dev_key:
            if DEV_ALGORITHM not in self.algorithms:
                problems.append(
                    f"trust_dev_key needs {DEV_ALGORITHM} in algorithms (the dev key signs with it)"
                )
            problems += _missing_file("trust_dev_key (dev JWKS)", dev_jwks_path(self.dev_keys_dir))
        _check(problems)
        return self


def _algorithm_problems(algorithms: list[str]) -> list[str]:
    problems = []
    if not algorithms:
        problems.append("algorithms must name at least one algorithm")
    if any(alg.lower() == "none" for alg in algorithms):
        problems.append("algorithms must not contain 'none' (unsigned tokens)")
    unknown = [alg for alg in algorithms if alg not in ALGORITHM_KEY_TYPES and alg.lower() != "none"]
    if unknown:
        problems.append(f"unknown algorithms {unknown}; choose from {sorted(ALGORITHM_KEY_TYPES)}")
    symmetric = SYMMETRIC_ALGORITHMS.intersection(algorithms)
    asymmetric = {alg for alg in algorithms if alg in ALGORITHM_KEY_TYPES} - SYMMETRIC_ALGORITHMS
    if symmetric and asymmetric:
        problems.append(
            f"algorithms mixes HMAC {sorted(symmetric)} with public-key {sorted(asymmetric)}: "
            "that invites algorithm confusion (a public key used as an HMAC secret)"
        )
    if len(set(algorithms)) != len(algorithms):
        problems.append("algorithms lists an algorithm twice")
    return problems


def _credentials_problems(issuer: str | None, jwks_url: str | None) -> list[str]:
    """Userinfo in either is refused: no password there is ever checked. A JWKS is the
    provider's public keys, served to anyone (OIDC's jwks_uri; no setting here authenticates
    the fetch), yet aiohttp would send them as basic auth and the URL is logged on every
    refresh. An issuer is never fetched: it is matched against each token's ``iss`` and written
    into every subject id (``jwt:<issuer>#<sub>``), so audit records and approvals would carry
    it. Only an issuer written as a URL is checked: ``iss`` may be any string, and a service
    account's e-mail address (``name@project.iam.gserviceaccount.com``) holds an ``@``."""
    found = []
    if issuer is not None and "://" in issuer:
        problem = credentials_problem(
            issuer, why="an issuer is matched, never fetched, and names every subject"
        )
        found += [f"issuer {problem}"] if problem else []
    if jwks_url is not None:
        problem = credentials_problem(jwks_url, why="an identity provider serves its public keys to anyone")
        found += [f"jwks_url {problem}"] if problem else []
    return found


def _url_problems(url: str) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return []
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return []  # a local test or sidecar identity provider
    return [
        f"jwks_url {shown_url(url)!r} must be https:// (http:// only on loopback): keys fetched in clear "
        "can be swapped"
    ]


class MtlsSettings(_Settings):
    """Client certificates. The TLS layer (the gateway's server credentials, built with
    ``labelgate.auth.mtls.server_credentials``) requires and verifies them against ``ca_file``;
    this stage reads the identity from the verified certificate."""

    ca_file: ConfigPath
    identity_from: Literal["san", "cn"] = "san"
    san_type: Literal["uri", "dns"] = Field(
        "uri", description="Which SAN names the client when identity_from=san"
    )
    groups_file: ConfigPath | None = Field(None, description="YAML mapping identity -> list of groups")

    @model_validator(mode="after")
    def _files(self) -> MtlsSettings:
        _check(_missing_file("ca_file", self.ca_file) + _missing_file("groups_file", self.groups_file))
        return self


class ApiKeySettings(_Settings):
    """API keys in ``x-api-key``, checked against the hashes in ``keys_file``."""

    keys_file: ConfigPath | None = Field(
        None, description="YAML/JSON {keys: [{id, sha256, groups}]}; none: no key is valid"
    )

    @model_validator(mode="after")
    def _files(self) -> ApiKeySettings:
        _check(_missing_file("keys_file", self.keys_file))
        return self


class AuthSettings(_Settings):
    """Which credentials the gateway accepts. When a caller presents several, every one must be
    valid, and the subject is the first in ``order`` (the others are noted in its attributes).
    With no method configured every call is refused (fail closed; the authenticator warns)."""

    jwt: JwtSettings | None = None
    mtls: MtlsSettings | None = None
    api_keys: ApiKeySettings | None = None
    order: list[AuthMethod] = Field(default_factory=lambda: list(AUTH_METHODS))

    @model_validator(mode="after")
    def _coherent(self) -> AuthSettings:
        problems = []
        if len(set(self.order)) != len(self.order):
            problems.append(f"order lists a method twice: {self.order}")
        missing = [method for method in self.enabled() if method not in self.order]
        if missing:
            problems.append(f"order must include every configured method; missing {missing}")
        _check(problems)
        return self

    def enabled(self) -> list[AuthMethod]:
        configured = {"jwt": self.jwt, "mtls": self.mtls, "api_key": self.api_keys}
        return [method for method in AUTH_METHODS if configured[method] is not None]
