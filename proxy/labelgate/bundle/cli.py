"""Command line: ``labelgate bundle build`` (for CI) and ``labelgate bundle serve``.

``bundle_app`` is registered by ``labelgate.cli`` as ``labelgate bundle``; ``bundle_server_cli``
is its ``serve`` command and, hidden, ``labelgate bundle-server`` (the old name).
``python -m labelgate.bundle.cli`` offers them on its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelgate.bundle import reasons as bundle_reasons
from labelgate.bundle.build import Bundle
from labelgate.cli_backstop import refused
from labelgate.digits import whole_number
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import LogLevel, get_logger

log = get_logger(__name__)

if TYPE_CHECKING:
    from labelgate.approvals.service import ApprovalService
    from labelgate.bundle.access import Credentials
    from labelgate.bundle.gate import ApprovalRule, ApprovalState, ApprovalTicket, PublishGate
    from labelgate.bundle.signing import Signer

bundle_app = typer.Typer(help="Build and serve OPA policy bundles.", no_args_is_help=True)


class SigningAlg(StrEnum):
    """Bundle signature algorithms OPA verifies."""

    RS256 = "RS256"
    ES256 = "ES256"


TOKEN_ENV = "LABELGATE_BUNDLE_TOKEN"  # noqa: S105 - the name of the variable, not a secret
READER_TOKEN_ENV = "LABELGATE_BUNDLE_READER_TOKEN"  # noqa: S105 - the name of the variable
TOKENS_FILE_ENV = "LABELGATE_BUNDLE_TOKENS_FILE"
ALLOWED_HOSTS_ENV = "LABELGATE_BUNDLE_ALLOWED_HOSTS"


def _signer(key: Path | None, algorithm: str, key_id: str) -> Signer | None:
    if key is None:
        return None
    from labelgate.bundle.signing import Signer

    return Signer.from_file(key, algorithm, key_id)


def build_command(
    source: Path,
    output: Path,
    *,
    signing_key: Path | None = None,
    signing_alg: str = "RS256",
    key_id: str = "default",
    check: bool = True,
    opa: str | None = None,
    sequence: int | None = None,
) -> str:
    """Build (and by default validate, as the server would) a bundle file; returns its revision."""
    from labelgate.bundle.build import build_bundle
    from labelgate.bundle.source import OpaValidator, read_snapshot

    snapshot = read_snapshot(source)
    bundle = build_bundle(snapshot.files, _signer(signing_key, signing_alg, key_id), sequence=sequence)
    if check:
        OpaValidator(opa).validate(snapshot, bundle)
    if output.is_dir():
        raise ConfigError(
            bundle_reasons.BUNDLE_OUTPUT_INVALID, f"-o {output} is a folder: name the bundle file"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(bundle.tarball)
    except OSError as error:
        raise ConfigError(bundle_reasons.BUNDLE_OUTPUT_INVALID, f"cannot write {output}: {error}") from None
    return bundle.revision


@bundle_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="policy source folder (rego + data.json)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="bundle file to write (.tar.gz)")],
    signing_key: Annotated[Path | None, typer.Option(help="PEM private key: sign the bundle")] = None,
    signing_alg: Annotated[SigningAlg, typer.Option(help="signature algorithm")] = SigningAlg.RS256,
    key_id: Annotated[str, typer.Option(help="key id OPA's config names the public key by")] = "default",
    check: Annotated[bool, typer.Option(help="run opa check --strict and opa test first")] = True,
    opa: Annotated[str | None, typer.Option(help="opa binary (default: $LABELGATE_OPA or PATH)")] = None,
    sequence: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="ordering signed into the manifest; gateways refuse a signed revision whose sequence "
            "is not above the one they run (default when signing: the build time in microseconds)",
        ),
    ] = None,
) -> None:
    """Build a deterministic OPA bundle from SOURCE; print its revision."""
    try:
        revision = build_command(
            source,
            output,
            signing_key=signing_key,
            signing_alg=signing_alg.value,
            key_id=key_id,
            check=check,
            opa=opa,
            sequence=sequence,
        )
    except LabelgateError as error:
        raise refused(error) from None
    typer.echo(revision)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    number = whole_number(port)
    if not sep or number is None or not 0 < number < 65536 or not host:
        raise ConfigError(bundle_reasons.LISTEN_INVALID, f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), number


def on_loopback(host: str) -> bool:
    """Whether a listen host (as ``parse_listen`` gives it) binds loopback only: ``0.0.0.0`` and
    ``::`` bind every address, and a name other than ``localhost`` may resolve anywhere."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def server_credentials(
    tokens_file: Path | None,
    token: str | None,
    token_instance: str,
    reader_token: str | None,
) -> Credentials:
    """The credentials of ``--tokens-file``, ``--token`` and ``--reader-token`` together."""
    from labelgate.bundle.access import Credentials

    credentials = Credentials.from_file(tokens_file) if tokens_file is not None else Credentials()
    extra = Credentials()
    if token is not None:
        if not token.strip():
            raise ConfigError(
                bundle_reasons.BUNDLE_TOKEN_EMPTY, f"the bearer token is empty (check {TOKEN_ENV})"
            )
        extra.add("instance", token_instance, token)
    if reader_token is not None:
        if not reader_token.strip():
            raise ConfigError(
                bundle_reasons.BUNDLE_TOKEN_EMPTY, f"the reader token is empty (check {READER_TOKEN_ENV})"
            )
        extra.add("reader", "reader", reader_token)
    return credentials.merge(extra)


def bundle_server_command(
    source: Path,
    listen: str,
    token: str | None,
    *,
    reader_token: str | None = None,
    token_instance: str = "opa",  # noqa: S107 - an instance name, not a secret
    tokens_file: Path | None = None,
    insecure_no_auth: bool = False,
    allowed_hosts: tuple[str, ...] = (),
    bundle_name: str = "labelgate",
    state_dir: Path = Path(".labelgate/bundle-server"),
    opa: str | None = None,
    signing_key: Path | None = None,
    signing_alg: str = "RS256",
    key_id: str = "default",
    poll_interval: float = 0.5,
    decision_retention_days: float = 30.0,
    status_retention_days: float = 30.0,
    max_decisions_per_instance: int = 5_000_000,
    max_events_per_batch: int = 10_000,
    max_upload_bytes: int = 8 * 1024 * 1024,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
    log_level: str = "info",
    publish_gate: Path | None = None,
) -> None:
    """Serve bundles built from ``source`` until interrupted."""
    import uvicorn

    from labelgate.bundle.access import default_allowed_hosts
    from labelgate.bundle.fleet import DAY, Retention
    from labelgate.bundle.server import ServerSettings, create_app
    from labelgate.gateway.ports import ensure_free
    from labelgate.logs import configure

    if opa is not None:
        # The publish gate's analyzers (the tables as OPA evaluates them, an opa-engine replay)
        # find the binary as every other part does, by $LABELGATE_OPA: the one named here.
        os.environ["LABELGATE_OPA"] = opa
    host, port = parse_listen(listen)
    if insecure_no_auth and not on_loopback(host):
        # Without credentials, anyone reaching the port pulls the policy, reads every decision
        # and posts as any instance: only a process on this machine may reach it.
        raise ConfigError(
            bundle_reasons.BUNDLE_AUTH_REQUIRED,
            f"--insecure-no-auth is for loopback only, and --listen {listen} is not: listen on "
            "127.0.0.1, ::1 or localhost, or give credentials (--tokens-file, or --token and --reader-token)",
        )
    credentials = server_credentials(tokens_file, token, token_instance, reader_token)
    if (tls_cert_file is None) != (tls_key_file is None):
        raise ConfigError(
            bundle_reasons.BUNDLE_TLS_INVALID, "give both --tls-cert-file and --tls-key-file, or neither"
        )
    names = tuple(n for value in allowed_hosts for n in value.replace(",", " ").split())
    configure(log_level)
    ensure_free(listen, "--listen")
    settings = ServerSettings(
        source=source,
        bundle_name=bundle_name,
        credentials=credentials,
        insecure_no_auth=insecure_no_auth,
        allowed_hosts=names or default_allowed_hosts(host),
        state_dir=state_dir,
        opa=opa,
        signer=_signer(signing_key, signing_alg, key_id),
        poll_interval=poll_interval,
        max_upload_bytes=max_upload_bytes,
        max_events_per_batch=max_events_per_batch,
        retention=Retention(
            decisions_seconds=decision_retention_days * DAY,
            status_seconds=status_retention_days * DAY,
            max_decisions_per_instance=max_decisions_per_instance,
        ),
        publish_gate=load_publish_gate(publish_gate, state_dir) if publish_gate is not None else None,
        catalog_check=check_catalog,
    )
    app = create_app(settings)
    publisher = app.state.publisher
    if tls_cert_file is None and not on_loopback(host):
        from labelgate.logs import get_logger

        get_logger(__name__).warning(
            "bundle_server_plain_http",
            why=f"listening on {host} without --tls-cert-file: tokens and decision logs travel in clear",
        )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Held long polls would keep shutdown waiting for their full wait: answer them (304).
            publisher.release_waiters_threadsafe()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    # log_config=None: uvicorn's loggers go through labelgate's JSON handler.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(tls_cert_file) if tls_cert_file else None,
        ssl_keyfile=str(tls_key_file) if tls_key_file else None,
        # Behind no proxy: never take the client address or scheme from X-Forwarded-* headers.
        proxy_headers=False,
        server_header=False,
    )
    Server(config).run()


@bundle_app.command("serve")
def bundle_server_cli(
    source: Annotated[Path, typer.Option(help="policy source folder to watch (rego + data.json)")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on")] = "127.0.0.1:8282",
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            envvar=TOKENS_FILE_ENV,
            help="YAML/JSON file: 'instances: {NAME: TOKEN}' (each OPA: pulls bundles, posts status and "
            "logs, stored under NAME) and 'readers: {NAME: TOKEN}' (read fleet, decisions, status); a "
            "token may be given as sha256:HEX",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            help="bearer token of one OPA instance (pull bundles, post status and logs), "
            "named by --token-instance",
            show_default=False,
        ),
    ] = None,
    token_instance: Annotated[str, typer.Option(help="instance name of --token")] = "opa",  # noqa: S107
    reader_token: Annotated[
        str | None,
        typer.Option(
            envvar=READER_TOKEN_ENV,
            help="bearer token that reads the fleet, decisions and status (never pulls or posts)",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="run without credentials: anyone who reaches the server may pull, post and read "
            "(a throwaway demo on loopback only)",
        ),
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar=ALLOWED_HOSTS_ENV,
            help="a name clients use for this server, checked against Host (repeat, or comma-separate; "
            "IP literals always pass). Default: localhost, the --listen name, and this machine's names "
            "when listening on all addresses",
            show_default=False,
        ),
    ] = None,
    bundle_name: Annotated[str, typer.Option("--bundle", help="bundle name: served at /bundles/NAME")] = (
        "labelgate"
    ),
    state_dir: Annotated[Path, typer.Option(help="folder for the fleet database")] = Path(
        ".labelgate/bundle-server"
    ),
    opa: Annotated[str | None, typer.Option(help="opa binary (default: $LABELGATE_OPA or PATH)")] = None,
    signing_key: Annotated[Path | None, typer.Option(help="PEM private key: sign every bundle")] = None,
    signing_alg: Annotated[SigningAlg, typer.Option(help="signature algorithm")] = SigningAlg.RS256,
    key_id: Annotated[str, typer.Option(help="key id OPA's config names the public key by")] = "default",
    poll_interval: Annotated[float, typer.Option(help="seconds between source checks")] = 0.5,
    decision_retention_days: Annotated[float, typer.Option(help="days decision-log events are kept")] = 30.0,
    status_retention_days: Annotated[
        float, typer.Option(help="days status history (and instances that stopped reporting) are kept")
    ] = 30.0,
    max_decisions_per_instance: Annotated[
        int, typer.Option(help="decision events kept per instance; more are refused (507) until they expire")
    ] = 5_000_000,
    max_events_per_batch: Annotated[int, typer.Option(help="events one POST /logs may carry")] = 10_000,
    max_upload_bytes: Annotated[
        int, typer.Option(help="bytes of a POST body, on the wire and after gunzip")
    ] = 8 * 1024 * 1024,
    tls_cert_file: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS")] = None,
    tls_key_file: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert-file")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="log level")] = LogLevel.info,
    publish_gate: Annotated[
        Path | None,
        typer.Option(
            help="YAML file: replay stored decision inputs on every candidate revision, and hold the "
            "ones whose impact exceeds its limits until someone other than the author approves "
            "(docs/policy-ci.md)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve OPA bundles built from a policy folder; publish every edit that passes opa check and opa test.

    Needs credentials (--tokens-file, or --token and --reader-token) unless --insecure-no-auth.
    """
    try:
        bundle_server_command(
            source,
            listen,
            token,
            reader_token=reader_token,
            token_instance=token_instance,
            tokens_file=tokens_file,
            insecure_no_auth=insecure_no_auth,
            allowed_hosts=tuple(allowed_host or ()),
            bundle_name=bundle_name,
            state_dir=state_dir,
            opa=opa,
            signing_key=signing_key,
            signing_alg=signing_alg.value,
            key_id=key_id,
            poll_interval=poll_interval,
            decision_retention_days=decision_retention_days,
            status_retention_days=status_retention_days,
            max_decisions_per_instance=max_decisions_per_instance,
            max_events_per_batch=max_events_per_batch,
            max_upload_bytes=max_upload_bytes,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            log_level=log_level.value,
            publish_gate=publish_gate,
        )
    except LabelgateError as error:
        raise refused(error) from None


# -- the publish gate's parts from the layers above bundle ---------------------------------------
# The bundle package may not import policy or approvals (docs/ARCHITECTURE.md, layers); this
# command module may, and hands the server an impact analyzer (the replay of ``labelgate
# policy impact``) and an approvals client working on the approval store the gateways and
# ``labelgate approvals-server`` share. Approvers vote where they always do (API, inbox); the
# approvals service, not the bundle server, enforces that the author's own vote is refused.

PUBLISH_METHOD = "labelgate.bundle/Publish"
DECISION_LOGS = "decision-logs"  # ``inputs:`` value: the decision logs OPA posted to this server


def load_publish_gate(path: Path, state_dir: Path) -> PublishGate:
    """The gate described by ``--publish-gate FILE``; every problem is a ``ConfigError`` now."""
    import yaml
    from pydantic import ValidationError

    from labelgate.bundle.gate import PublishGate, PublishGateSettings
    from labelgate.policy.cli import parse_since

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        settings = PublishGateSettings.model_validate(data)
    except OSError as error:
        raise ConfigError(
            bundle_reasons.PUBLISH_GATE_INVALID, f"--publish-gate: cannot read {path}: {error}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            bundle_reasons.PUBLISH_GATE_INVALID,
            f"--publish-gate: {path} is not UTF-8 text (byte {error.start})",
        ) from None
    except RecursionError:
        raise ConfigError(
            bundle_reasons.PUBLISH_GATE_INVALID, f"--publish-gate: {path} is nested too deeply"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(
            bundle_reasons.PUBLISH_GATE_INVALID, f"--publish-gate: {path} is not YAML: {error}"
        ) from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(bundle_reasons.PUBLISH_GATE_INVALID, f"--publish-gate {path}: {problems}") from None
    try:
        window = parse_since(settings.window, "window")
    except ConfigError as error:
        raise ConfigError(
            bundle_reasons.PUBLISH_GATE_INVALID, f"--publish-gate {path}: {error.message}"
        ) from None
    inputs = settings.inputs
    engine = settings.engine

    def analyze(current: Path, candidate: Path) -> dict[str, object]:
        from labelgate.policy.cli import load_decision_log_inputs, load_inputs, replay_report

        if inputs == DECISION_LOGS:
            stored = load_decision_log_inputs(str(state_dir / "fleet.sqlite3"), window)
        else:
            stored = load_inputs(Path(inputs), window)
        report = replay_report(current, candidate, stored, engine=engine)
        return {"engine": engine, "window": settings.window, **report.to_json()}

    _probe_approvals(settings.approvals)
    return PublishGate(analyze, settings.hold, ServiceApprovals(settings.approvals))


def _probe_approvals(rule: ApprovalRule) -> None:
    """Reach the approval store once before serving: an unreachable store is a one-line error
    at start, not a failed application start-up. (The server's own client runs on its loop.)"""
    import asyncio

    async def probe() -> None:
        approvals = ServiceApprovals(rule)
        await approvals.start()
        await approvals.close()

    asyncio.run(probe())


class ServiceApprovals:
    """``PublishApprovals`` on the shared approval store (``approvals:`` of a gateway config)."""

    def __init__(self, rule: ApprovalRule) -> None:
        import socket

        from labelgate.approvals.service import ApprovalService
        from labelgate.config import load_settings

        approvals = load_settings(rule.config).approvals
        if approvals.store == "sqlite" and approvals.sqlite_file is None:
            raise ConfigError(
                bundle_reasons.PUBLISH_GATE_INVALID,
                f"{rule.config}: approvals.sqlite_file is unset; the gate needs the store approvers use",
            )
        self.rule = rule
        self.service: ApprovalService = ApprovalService.from_settings(
            approvals, node_id=f"bundle-server/{socket.gethostname()}", link_base=approvals.public_url or ""
        )

    async def start(self) -> None:
        # It holds no calls (nothing to abandon); the gateways and approvals-server sweep expiry.
        await self.service.start(sweep=False, abandon_previous=False)

    async def close(self) -> None:
        await self.service.close()

    async def request(
        self,
        *,
        author: str,
        bundle: str,
        revision: str,
        report: Mapping[str, Any],
        reasons: Sequence[str],
    ) -> ApprovalTicket:
        import time

        from labelgate.approvals.model import Binding, FieldAtStake, Requirement
        from labelgate.approvals.service import Draft
        from labelgate.bundle.gate import ApprovalTicket, describe_catalog_change

        changes = list(report.get("changes", []))
        catalog = list(report.get("catalog") or ())
        labels = {str(label) for change in changes for label in change.get("labels") or ()}
        labels |= {str(label) for change in catalog for label in change.get("was") or ()}
        fields = tuple(
            FieldAtStake(
                f"{c['kind']}: {c['group']} / {c['model']} / {c['field']}", tuple(c.get("labels") or ())
            )
            for c in changes[:100]
        ) + tuple(
            # What the candidate's catalog takes from a field is at stake for every caller.
            FieldAtStake(f"{c['kind']}: {describe_catalog_change(c)}", tuple(c.get("was") or ()))
            for c in catalog[:100]
        )
        draft = Draft(
            binding=Binding(author, PUBLISH_METHOD, bundle, tuple(labels), revision),
            requester_groups=(),
            phase="publish",
            fields=fields,
            requirement=Requirement(
                tuple(self.rule.approver_groups),
                self.rule.min_approvals,
                self.rule.ttl_seconds,
                reason="; ".join(reasons)[:1000],
            ),
            justification=(
                f"publish policy revision {revision[:16]} of bundle {bundle}: {report.get('changed', 0)} of "
                f"{report.get('distinct', 0)} distinct decision inputs change"
            ),
            mode="async",
            expires_at=time.time() + self.rule.ttl_seconds,
        )
        opened = await self.service.open(draft)
        return ApprovalTicket(opened.id, self.service.link(opened.id))

    async def state(self, approval_id: str) -> ApprovalState:
        import time

        from labelgate.approvals.rules import counted_approvers
        from labelgate.bundle.gate import ApprovalState

        found = await self.service.get(approval_id)
        if found is None:
            return ApprovalState("abandoned", f"approval {approval_id} is no longer in the store")
        if found.pending and found.expires_at <= time.time():
            return ApprovalState("expired", "no decision before it expired")
        people = counted_approvers(found.votes, found.requirement, found.requester)
        return ApprovalState(found.state.value, found.resolution, tuple(sorted(people)))


def command_line() -> typer.Typer:
    """The commands on their own, as ``labelgate`` has them."""
    from labelgate.cli_backstop import GuardedTyper

    app = GuardedTyper(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(bundle_app, name="bundle")
    app.command("bundle-server", hidden=True)(bundle_server_cli)
    return app


def main() -> None:
    command_line()()


def check_catalog(bundle: Bundle) -> None:
    """Raise what a gateway taking its catalog from ``bundle`` would refuse it with: the
    publisher publishes no such revision (``bundle/source.py``).

    ``CATALOG_INVALID`` (a label misspelled, an unknown key), or the data not loading at all
    (``POLICY_DATA_CONFLICT``, ``POLICY_DATA_INVALID``). A bundle without
    ``data.labelgate.catalog`` passes: gateways that read their catalog from a file
    (``classification.catalog_file``) follow it, the others refuse it
    (``BUNDLE_CATALOG_MISSING``), which is their configuration, not the bundle's. Here, at the
    top of the layers: the gateway's own loaders are above the bundle package.
    """
    from labelgate.gateway import reasons as gateway_reasons
    from labelgate.gateway.classify_stage import bundle_catalog
    from labelgate.policy.source import MANIFEST, SIGNATURES, PolicySource

    members = [(name, content) for name, content in bundle.files if name not in (MANIFEST, SIGNATURES)]
    source = PolicySource.from_files(members, origin="bundle", revision=bundle.revision)
    try:
        bundle_catalog(source)
    except ConfigError as error:
        if error.reason != gateway_reasons.BUNDLE_CATALOG_MISSING:
            raise
        log.info("bundle_without_catalog", revision=bundle.revision)


if __name__ == "__main__":
    main()
