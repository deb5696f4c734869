"""Does a shipped deployment start the secured bundle server, and can its clients use it?

Read from what a container would see (``support.Container``): the bundle server's command line
and environment parsed by the real ``labelgate bundle serve`` command, its credentials built
as the server builds them, and each client (an OPA config, the embedded engine's settings)
held against them: its token must be one the server takes as an *instance* credential, the name
in its URL one the server answers to (else 421 and no bundle is ever activated), its bundle the
one served, and, when the server signs, it must verify with the public half of the server's key.

Each ``*_problems`` function returns the problems found (empty: fine), so the tests can break a
deployment on purpose and see the check fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.deploy.support import Container, parse_command


@dataclass
class BundleServer:
    """A ``bundle serve`` command line as the CLI reads it, and the credentials it would start with."""

    container: Container
    params: dict[str, Any]
    credentials: Any  # labelgate.bundle.access.Credentials, or None when they do not build
    allowed: frozenset[str]
    problems: list[str]

    @property
    def port(self) -> int:
        return int(str(self.params["listen"]).rpartition(":")[2])

    def allows(self, host: str) -> bool:
        from labelgate.bundle.access import HostCheck

        return HostCheck(self.allowed).allows(host)

    def role_of(self, token: str) -> str | None:
        """``instance``, ``reader``, or None: what the server takes ``token`` for."""
        from labelgate.errors import LabelgateError

        if self.credentials is None:
            return None
        for role in ("instance", "reader"):
            try:
                self.credentials.check(f"Bearer {token.strip()}", role, "check")
            except LabelgateError:
                continue
            return role
        return None

    def public_key_pem(self) -> bytes | None:
        """The public half of ``--signing-key`` (None when bundles are not signed)."""
        from cryptography.hazmat.primitives import serialization

        key_path = self.params.get("signing_key")
        if key_path is None:
            return None
        private = serialization.load_pem_private_key(self.container.host(str(key_path)).read_bytes(), None)
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def bundle_server(container: Container, must_allow: list[str]) -> BundleServer:
    """Parse the container's ``labelgate bundle serve`` line (options and the environment
    variables it reads) and check what the server checks before it serves."""
    from labelgate.bundle.access import HostCheck, default_allowed_hosts, normalise_host
    from labelgate.bundle.cli import parse_listen, server_credentials
    from labelgate.errors import LabelgateError

    words, params = parse_command(container.args, container.env)
    assert words == ("bundle", "serve"), container.args
    problems: list[str] = []
    where = f"{container.name}: bundle serve"

    credentials = None
    if params["insecure_no_auth"]:
        problems.append(f"{where} runs with --insecure-no-auth: anyone reaching it pulls, posts, reads")
    tokens_file = params["tokens_file"]
    try:
        credentials = server_credentials(
            container.host(str(tokens_file)) if tokens_file is not None else None,
            params["token"],
            params["token_instance"],
            params["reader_token"],
        )
    except LabelgateError as error:
        problems.append(f"{where} credentials do not load: {error.message} ({error.reason})")
    if credentials is not None and not credentials and not params["insecure_no_auth"]:
        problems.append(f"{where} has no credentials: it does not start (BUNDLE_AUTH_REQUIRED)")
    elif credentials is not None:
        if not credentials.count("instance"):
            problems.append(f"{where} has no instance credential (--tokens-file instances, or --token)")
        if not credentials.count("reader"):
            problems.append(f"{where} has no reader credential (--tokens-file readers, or --reader-token)")

    names = tuple(n for value in params["allowed_host"] or () for n in value.replace(",", " ").split())
    if not names:
        problems.append(
            f"{where} has no --allowed-host: it answers only to localhost and its own machine name "
            "(421 to every client using the Service's name)"
        )
        names = default_allowed_hosts(parse_listen(params["listen"])[0])
    try:
        allowed = HostCheck.of(names).allowed
    except LabelgateError as error:
        problems.append(f"{where} --allowed-host: {error.message}")
        allowed = frozenset()
    missing = [n for n in must_allow if normalise_host(n) not in allowed]
    if missing:
        problems.append(f"{where} does not allow the host(s) {', '.join(missing)} (421 HOST_NOT_ALLOWED)")

    for option in ("source", "signing_key", "tls_cert_file", "tls_key_file"):
        path = params.get(option)
        if path is not None and not container.host(str(path)).exists():
            problems.append(f"{where} --{option.replace('_', '-')} {path} is not in the container")
    if params.get("signing_key") is not None and not problems:
        from labelgate.bundle.signing import Signer

        try:
            Signer.from_file(
                container.host(str(params["signing_key"])), params["signing_alg"], params["key_id"]
            )
        except LabelgateError as error:
            problems.append(f"{where} --signing-key does not load: {error.message}")
    return BundleServer(container, params, credentials, allowed, problems)


def _client_problems(server: BundleServer, url: str, token: str | None, who: str) -> list[str]:
    problems = []
    parts = urlsplit(url)
    if not server.allows(parts.hostname or ""):
        problems.append(
            f"{who}: the server does not answer to {parts.hostname} (421): add it to --allowed-host"
        )
    if parts.port != server.port:
        problems.append(f"{who}: port {parts.port}, the server listens on {server.port}")
    if (parts.scheme == "https") != (server.params.get("tls_cert_file") is not None):
        problems.append(
            f"{who}: {parts.scheme}, the server speaks {'https' if parts.scheme == 'http' else 'http'}"
        )
    if token is None:
        problems.append(f"{who}: no bearer token (the server answers 401)")
    else:
        role = server.role_of(token)
        if role != "instance":
            problems.append(
                f"{who}: its token is "
                f"{'unknown to the server (401)' if role is None else 'a reader token (403)'}"
                ": it needs an instance credential"
            )
    return problems


def opa_problems(server: BundleServer, opa: Container, config: dict[str, Any]) -> list[str]:
    """An OPA following the bundle server: bundles, status and decision logs with credentials."""
    problems: list[str] = []
    services = config.get("services") or {}
    if isinstance(services, list):
        services = {s.get("name"): s for s in services}
    used = {
        "bundles": [b.get("service") for b in (config.get("bundles") or {}).values()],
        "status": [(config.get("status") or {}).get("service")],
        "decision_logs": [(config.get("decision_logs") or {}).get("service")],
    }
    if not used["bundles"]:
        problems.append(f"{opa.name}: OPA's config has no bundle")
    for part, names in used.items():
        for name in names:
            if name is None and part != "bundles":
                continue  # not configured: nothing is sent
            service = services.get(name)
            who = f"{opa.name}: OPA {part} (service {name!r})"
            if service is None:
                problems.append(f"{who} is not in services")
                continue
            bearer = (service.get("credentials") or {}).get("bearer") or {}
            token = bearer.get("token")
            if "token_path" in bearer:
                path = opa.host(bearer["token_path"])
                if path.is_file():
                    token = path.read_text()
                else:
                    problems.append(
                        f"{who}: credentials.bearer.token_path {bearer['token_path']} is not mounted"
                    )
                    continue
            elif not bearer:
                problems.append(f"{who} has no credentials.bearer (token_path): the server answers 401")
                continue
            problems += _client_problems(server, service["url"], token, who)
    bundle_name = server.params["bundle_name"]
    for name, bundle in (config.get("bundles") or {}).items():
        if bundle.get("resource", f"bundles/{name}") != f"bundles/{bundle_name}":
            problems.append(
                f"{opa.name}: OPA bundle {name} asks for {bundle.get('resource')}, served: {bundle_name}"
            )
        public = server.public_key_pem()
        if public is None:
            continue
        key_id = (bundle.get("signing") or {}).get("keyid")
        if key_id != server.params["key_id"]:
            problems.append(
                f"{opa.name}: bundles are signed (key id {server.params['key_id']}) and OPA's bundle {name} "
                f"verifies with key id {key_id}: it accepts unsigned and altered bundles"
            )
            continue
        key = (config.get("keys") or {}).get(key_id) or {}
        if key.get("algorithm", "RS256") != server.params["signing_alg"]:
            problems.append(f"{opa.name}: keys.{key_id}.algorithm {key.get('algorithm')} is not the server's")
        pem = key.get("key")
        for arg in opa.args:
            for value in (arg.split("=", 1)[1] if arg.startswith("--set-file=") else "").split(","):
                if value.startswith(f"keys.{key_id}.key="):
                    path = opa.host(value.split("=", 1)[1])
                    pem = path.read_text() if path.is_file() else None
        if pem is None or pem.strip() != public.decode().strip():
            problems.append(
                f"{opa.name}: keys.{key_id}.key is not the public half of the server's signing key"
            )
    return problems


def embedded_problems(server: BundleServer, gateway: Container, settings: Any) -> list[str]:
    """The embedded engine following the bundle server (``policy.bundle_url``)."""
    policy = settings.policy
    token = policy.bundle_token.get_secret_value() if policy.bundle_token else None
    problems = _client_problems(server, policy.bundle_url, token, f"{gateway.name}: policy.bundle_url")
    if policy.bundle_name != server.params["bundle_name"]:
        problems.append(f"{gateway.name}: policy.bundle_name {policy.bundle_name} is not served")
    public = server.public_key_pem()
    if public is not None:
        key_file = policy.bundle_public_key_file
        if key_file is None or key_file.read_bytes().strip() != public.strip():
            problems.append(
                f"{gateway.name}: bundles are signed and policy.bundle_public_key_file "
                "is not their public key"
            )
    return problems
