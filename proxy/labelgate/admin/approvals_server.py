"""``labelgate approvals-server``: the approvals API and inbox without a gateway.

It reads the gateway's config (the same approval store and JWT settings) so approvers can
work while gateways restart: pending requests live in the store, not in any process. With
SQLite it must use the gateway's ``approvals.sqlite_file``; held calls then see a decision
made here within ``LOCAL_RECHECK_SECONDS`` (PostgreSQL wakes them at once).
"""

from __future__ import annotations

import asyncio
import signal
import socket

from labelgate import reasons
from labelgate.approvals.service import ApprovalService
from labelgate.auth import Authenticator
from labelgate.config import GatewaySettings
from labelgate.errors import ConfigError
from labelgate.logs import configure, get_logger

log = get_logger(__name__)


def check(settings: GatewaySettings) -> None:
    approvals = settings.approvals
    problems = approvals.problems(workers=1, has_jwt=settings.auth.jwt is not None, admin_listen="-")
    if not approvals.enabled:
        problems.append("approvals.enabled is false")
    if approvals.store == "sqlite" and approvals.sqlite_file is None:
        problems.append("approvals.sqlite_file is not set: an in-memory store cannot be shared with gateways")
    if problems:
        raise ConfigError(reasons.CONFIG_INVALID, "the approvals server cannot run: " + "; ".join(problems))


async def serve(settings: GatewaySettings, listen: str) -> None:
    from labelgate.admin.app import admin_approvals_context, build_admin_app, start_admin
    from labelgate.admin.bridge import BridgedApprovalService, LoopBridge, bridged_ready

    check(settings)
    authenticator = Authenticator(settings.auth)
    await authenticator.start()
    service = ApprovalService.from_settings(
        settings.approvals, node_id=f"approvals-server/{socket.gethostname()}", link_base=f"http://{listen}"
    )
    # Holds no calls, so nothing of its own to abandon; it does sweep expiries.
    await service.start(abandon_previous=False)

    async def ready() -> dict[str, bool]:
        return {"approval_store": await service.healthy()}

    # The web app runs on a thread and loop of its own, like the gateway's admin listener; the
    # service stays on this loop and the app reaches it through the bridge.
    bridge = LoopBridge(asyncio.get_running_loop())
    context = admin_approvals_context(BridgedApprovalService(service, bridge), authenticator, settings)
    app = build_admin_app(
        bridged_ready(ready, bridge), context, title="labelgate approvals", settings=settings.admin
    )
    admin = await start_admin(app, listen, settings.admin)
    if settings.approvals.public_url is None:
        scheme = "https" if settings.admin.tls is not None else "http"
        service.link_base = f"{scheme}://{listen.rpartition(':')[0]}:{admin.port}"
    log.info("approvals server started", listen=listen, port=admin.port, store=settings.approvals.store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("approvals server stopping")
        await admin.cleanup()
        await service.close()
        await authenticator.close()


def run(settings: GatewaySettings, listen: str) -> None:
    configure(settings.log_level)
    asyncio.run(serve(settings, listen))
