"""``labelgate approvals serve``: the approvals API and inbox without a gateway.

It reads the gateway's config (the same approval store and JWT settings) so approvers can
work while gateways restart: pending requests live in the store, not in any process. With
SQLite it must use the gateway's ``approvals.sqlite_file``; held calls then see a decision
made here within ``LOCAL_RECHECK_SECONDS`` (PostgreSQL wakes them at once).

Votes cast here, and the grants, denials and expiries they and its sweeps make, join the
audit trail as the gateway's do: with ``audit.socket`` set, every approval event goes to the
audit writer (``approvals/audit_sink.py``, as the gateway's). The writer must answer when the server
starts, and ``/readyz`` fails while it does not (unless ``audit.fail_open``), so approvers are
not sent to a server whose votes leave no trace. Without ``audit.socket`` it says at start
that votes are only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

from labelgate import reasons
from labelgate.approvals import events as approval_events
from labelgate.approvals.audit_sink import ApprovalAuditSink
from labelgate.approvals.service import ApprovalService
from labelgate.audit import AuditClient, AuditUnavailable
from labelgate.auth import Authenticator
from labelgate.config import AuditSettings, GatewaySettings
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import configure, get_logger

log = get_logger(__name__)
# How long readiness waits for the audit writer's answer (the gateway's AUDIT_READY_SECONDS).
AUDIT_READY_SECONDS = 1.0


def check(settings: GatewaySettings) -> None:
    approvals = settings.approvals
    problems = approvals.problems(workers=1, has_jwt=settings.auth.jwt is not None, admin_listen="-")
    if not approvals.enabled:
        problems.append("approvals.enabled is false")
    if approvals.store == "sqlite" and approvals.sqlite_file is None:
        problems.append("approvals.sqlite_file is not set: an in-memory store cannot be shared with gateways")
    if problems:
        raise ConfigError(reasons.CONFIG_INVALID, "the approvals server cannot run: " + "; ".join(problems))


def audit_connections(audit: AuditSettings) -> tuple[AuditClient | None, AuditClient | None]:
    """The approval events' connection to the audit writer (as the gateway's
    ``build_audit_client`` makes it for its approval events) and readiness's own (as
    ``build_audit_probe``: None when nothing depends on the writer, ``audit.fail_open``)."""
    if audit.socket is None:
        return None, None
    events = AuditClient(audit.socket, audit.timeout_seconds)
    if audit.fail_open:
        return events, None
    return events, AuditClient(audit.socket, min(audit.timeout_seconds, AUDIT_READY_SECONDS))


async def writer_answers(probe: AuditClient) -> bool:
    try:
        await probe.stats()
    except LabelgateError:
        return False
    return True


async def require_writer(probe: AuditClient, audit: AuditSettings) -> None:
    """Refuse to start while the writer ``audit.socket`` names does not answer: every vote cast
    here would be lost to the audit log (fail closed, as the gateway refuses calls)."""
    try:
        await probe.stats()
    except LabelgateError as error:
        raise AuditUnavailable(
            f"the approvals server cannot start: the audit writer at audit.socket {audit.socket} does "
            f"not answer ({error.message}), and votes cast here would not be audited; start the "
            "writer first"
        ) from None


async def serve(settings: GatewaySettings, listen: str) -> None:
    from labelgate.admin.app import admin_approvals_context, build_admin_app, start_admin
    from labelgate.admin.bridge import BridgedApprovalService, LoopBridge, bridged_ready

    check(settings)
    audit = settings.audit
    events, probe = audit_connections(audit)
    if events is None:
        log.warning("audit.socket is not set: votes are not audited (approval events go to this log only)")
    elif probe is None:
        log.warning("audit.fail_open is set: votes are made while the audit writer is down, unaudited")
    async with contextlib.AsyncExitStack() as running:
        if events is not None:
            running.push_async_callback(events.close)
        if probe is not None:
            running.push_async_callback(probe.close)
            await require_writer(probe, audit)
        authenticator = Authenticator(settings.auth)
        await authenticator.start()
        running.push_async_callback(authenticator.close)
        if events is not None:
            # Before the service starts: its first sweep may already expire requests. A record
            # that cannot be appended is logged (the gateway's labelgate_errors_total is not here).
            sink = ApprovalAuditSink(events)
            approval_events.add_sink(sink)

            async def finish_events() -> None:
                approval_events.remove_sink(sink)
                await sink.drain(audit.timeout_seconds)

            running.push_async_callback(finish_events)
        service = ApprovalService.from_settings(
            settings.approvals,
            node_id=f"approvals-server/{socket.gethostname()}",
            link_base=f"http://{listen}",
        )
        # Holds no calls, so nothing of its own to abandon; it does sweep expiries.
        await service.start(abandon_previous=False)
        running.push_async_callback(service.close)

        async def ready() -> dict[str, bool]:
            if probe is None:
                return {"approval_store": await service.healthy()}
            store_ok, writer_ok = await asyncio.gather(service.healthy(), writer_answers(probe))
            return {"approval_store": store_ok, "audit_writer": writer_ok}

        # The web app runs on a thread and loop of its own, like the gateway's admin listener; the
        # service stays on this loop and the app reaches it through the bridge.
        bridge = LoopBridge(asyncio.get_running_loop())
        context = admin_approvals_context(BridgedApprovalService(service, bridge), authenticator, settings)
        # Serving approvers is what this server is for, whatever admin.approvals says (that
        # setting turns them off on the gateways' admin listeners, which read the same config):
        # the context is always given.
        app = build_admin_app(
            bridged_ready(ready, bridge), context, title="labelgate approvals", settings=settings.admin
        )
        admin = await start_admin(app, listen, settings.admin)
        running.push_async_callback(admin.cleanup)
        if settings.approvals.public_url is None:
            scheme = "https" if settings.admin.tls is not None else "http"
            service.link_base = f"{scheme}://{listen.rpartition(':')[0]}:{admin.port}"
        log.info(
            "approvals server started",
            listen=listen,
            port=admin.port,
            store=settings.approvals.store,
            audited=events is not None,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        # The exit stack stops the listener, then the service (its last events follow), then
        # waits for those events' audit records, then closes the connections.
        log.info("approvals server stopping")


def run(settings: GatewaySettings, listen: str) -> None:
    configure(settings.log_level)
    asyncio.run(serve(settings, listen))
