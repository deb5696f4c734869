"""Assemble the gateway from its settings and run it.

``build_pipeline`` wires the stages; ``Gateway`` owns the I/O around them: the grpc.aio
server (the inference proxy, routed services, health and reflection), the upstream
channel, the policy engine's lifecycle and the admin listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2

from labelgate import tracing
from labelgate.admin.app import add_jwks_route, admin_approvals_context, build_admin_app, start_admin
from labelgate.admin.bridge import BridgedApprovalService, BridgedSessionStore, LoopBridge, bridged_ready
from labelgate.admin.listener import AdminListener
from labelgate.approvals import events as approval_events
from labelgate.approvals.audit_sink import ApprovalAuditSink
from labelgate.approvals.deadline import DeadlineInterceptor
from labelgate.approvals.hold import ApprovalStage, RefuseUntilApproved
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.stage import HoldForApproval
from labelgate.audit import AuditClient
from labelgate.auth import Authenticator, server_credentials
from labelgate.calls import CallsInFlight
from labelgate.cli_backstop import DEBUG_VARIABLE, INTERNAL_ERROR_EXIT, internal_error_line
from labelgate.config import GatewaySettings, PolicySettings, check_tls_pair, startup_notes
from labelgate.errors import ConfigError, LabelgateError
from labelgate.gateway import metrics, reasons
from labelgate.gateway.classify_stage import ClassifierStage
from labelgate.gateway.grpc_metrics import GrpcServerMetrics
from labelgate.gateway.health import SERVICE as HEALTH_SERVICE
from labelgate.gateway.health import health_handlers
from labelgate.gateway.heap import prepare_heap
from labelgate.gateway.inference import SERVICE, InferenceProxy
from labelgate.gateway.metrics import serve_services, watch_loop_lag
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.record import (
    AuditRecorder,
    InputStore,
    InputStoreRecorder,
    KnownModels,
    LogAndMetricsRecorder,
    Recorder,
    Recorders,
)
from labelgate.gateway.reflection import SERVICE as REFLECTION_SERVICE
from labelgate.gateway.reflection import reflection_handlers
from labelgate.gateway.rest import RestGateway, start_rest
from labelgate.gateway.routes import RoutedServices
from labelgate.gateway.unserved import UnservedMethods
from labelgate.gateway.upstream import Router, Upstream
from labelgate.logs import configure, get_logger
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.cache import CachingEngine
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.engine import PolicyEngine
from labelgate.policy.opa import OpaEngine
from labelgate.policy.source import BundleKey
from labelgate.policy.wasm import WasmEngine
from labelgate.recording.recorder import SessionRecorder, build_session_recorder
from labelgate.recording.viewing import ReplayPolicy

log = get_logger(__name__)
HEALTH_INTERVAL_SECONDS = 2.0
# How long readiness waits for the audit writer's answer: a writer slower than this to answer
# a stats request is not taking records either.
AUDIT_READY_SECONDS = 1.0


def build_engine(settings: GatewaySettings) -> PolicyEngine:
    policy = settings.policy
    engine: PolicyEngine
    if settings.engine == "opa":
        engine = OpaEngine(
            policy.opa_url,
            timeout=policy.timeout_ms / 1000,
            token=policy.opa_token.get_secret_value() if policy.opa_token else None,
            ca_file=policy.opa_ca_file,
            retry=policy.opa_retry,
        )
    else:
        # Both in-process engines follow a folder or the bundle server the same way. The wasm
        # engine's revisions are OPA's own build; the embedded engine's pass `opa check` first.
        in_process: Any = (
            WasmEngine
            if settings.engine == "wasm"
            else functools.partial(EmbeddedEngine, opa_check=policy.opa_check)
        )
        if policy.bundle_url is not None:
            engine = in_process(bundle=build_bundle_client(policy))
        else:
            engine = in_process(policy.dir)
    if not policy.cache:
        return engine
    return CachingEngine(engine, max_entries=policy.cache_max_entries, max_bytes=policy.cache_max_bytes)


def build_bundle_client(policy: PolicySettings) -> BundleClient:
    """The client the embedded engine follows the bundle server with (policy.bundle_url set)."""
    assert policy.bundle_url is not None
    key = None
    if policy.bundle_public_key_file is not None:
        key = BundleKey.from_file(policy.bundle_public_key_file, policy.bundle_signing_alg)
    else:
        log.warning("policy.bundle_public_key_file is not set: bundle signatures are not checked")
    return BundleClient(
        policy.bundle_url,
        policy.bundle_name,
        token=policy.bundle_token.get_secret_value() if policy.bundle_token else None,
        key=key,
        wait_seconds=policy.bundle_wait_seconds,
        start_timeout=policy.bundle_start_timeout_seconds,
        retry=policy.bundle_retry,
        state_file=policy.bundle_state_file,
    )


def follow_bundle_catalog(engine: PolicyEngine, classifier: ClassifierStage) -> None:
    """When the embedded engine follows a bundle, the classify stage takes its catalog from it."""
    inner = engine.inner if isinstance(engine, CachingEngine) else engine
    if isinstance(inner, EmbeddedEngine) and inner.bundle is not None:
        inner.add_revision_hook(classifier.bundle_hook)


def hash_key(settings: GatewaySettings) -> bytes:
    masking = settings.masking
    if masking.hash_key is not None:
        return masking.hash_key.get_secret_value().encode()
    if masking.hash_key_file is not None:
        try:
            return masking.hash_key_file.read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                reasons.HASH_KEY_UNREADABLE,
                f"cannot read masking.hash_key_file {masking.hash_key_file}: {error.strerror}",
            ) from None
    # A per-process random key still hides values; joins across restarts need a configured key.
    import secrets

    log.warning("masking.hash_key is not set: hashed values will not join across gateways or restarts")
    return secrets.token_bytes(32)


def build_audit_client(
    settings: GatewaySettings, in_flight: CallsInFlight | None = None
) -> AuditClient | None:
    """A connection to the audit writer; ``in_flight`` (the pipeline's count of calls in
    flight) turns on the commit delay. The call records and the approval events each get
    their own: approval events are appended from whichever loop the approval service runs
    on, and a connection serves one loop."""
    audit = settings.audit
    if audit.socket is None:
        return None
    return AuditClient(
        audit.socket,
        audit.timeout_seconds,
        commit_delay=audit.commit_delay_ms / 1000,
        commit_siblings=audit.commit_siblings,
        in_flight=in_flight,
    )


def build_audit_probe(settings: GatewaySettings) -> AuditClient | None:
    """The readiness check's own connection to the audit writer (``Gateway.ready_checks``),
    or None when calls do not depend on it (no writer, or ``audit.fail_open``)."""
    audit = settings.audit
    if audit.socket is None or audit.fail_open:
        return None
    return AuditClient(audit.socket, min(audit.timeout_seconds, AUDIT_READY_SECONDS))


async def audit_writer_answers(probe: AuditClient) -> bool:
    try:
        await probe.stats()
    except LabelgateError:
        return False
    return True


def warn_what_is_not_kept(settings: GatewaySettings) -> None:
    """Log ``startup_notes`` (no audit, no recording) as warnings, once the gateway started
    (``serve --check-config`` prints the same notes)."""
    for event, note in startup_notes(settings):
        log.warning(event, note=note)


def build_recorder(
    settings: GatewaySettings,
    sessions: SessionRecorder | None = None,
    in_flight: CallsInFlight | None = None,
    classifier: ClassifierStage | None = None,
) -> Recorder:
    """Logs and metrics, then the durable audit record, then the session recording: a call
    refused for want of an audit record must not be recorded as delivered."""
    # Model label values: the models the classifier's catalog (as it is now) or the config names.
    catalog = (lambda: classifier.classifier.catalog) if classifier is not None else None
    recorders: list[Recorder] = [LogAndMetricsRecorder(KnownModels.from_settings(settings, catalog))]
    audit = settings.audit
    if audit.socket is not None:
        if audit.fail_open:
            log.warning(
                "audit.fail_open is set: calls proceed without an audit record when the writer is down"
            )
        client = build_audit_client(settings, in_flight)
        assert client is not None
        recorders.append(AuditRecorder(client, audit.fail_open))
    if audit.inputs_file is not None:  # off the hot path: a bounded queue to a writer thread
        store = InputStore(audit.inputs_file, audit.inputs_retention_days, audit.inputs_max_bytes)
        recorders.append(InputStoreRecorder(store))
    if sessions is not None:
        recorders.append(sessions)
    return Recorders(*recorders)  # also the record stage's span


def build_approvals(settings: GatewaySettings) -> ApprovalService | None:
    """The approval service, or None when held calls are refused at once (approvals off or unusable)."""
    approvals = settings.approvals
    usable = approvals.usable(
        workers=settings.workers, has_jwt=settings.auth.jwt is not None, admin_listen=settings.admin_listen
    )
    if not usable:
        if approvals.enabled:
            log.warning(
                "approvals are not configured: calls the policy holds are refused (APPROVAL_REQUIRED)",
                problems=approvals.problems(
                    workers=settings.workers,
                    has_jwt=settings.auth.jwt is not None,
                    admin_listen=settings.admin_listen,
                ),
            )
        return None
    return ApprovalService.from_settings(
        approvals, node_id=node_id(settings), link_base=f"http://{settings.admin_listen}"
    )


def count_lost_approval_record(reason: str) -> None:
    metrics.ERRORS.labels(kind=reason).inc()


def node_id(settings: GatewaySettings) -> str:
    """What names this gateway process in the calls it holds (``approvals.node_id``, else host
    and listen address): its next start abandons the held calls of its previous run."""
    return settings.approvals.node_id or f"{socket.gethostname()}/{settings.listen}"


def worker_node(settings: GatewaySettings, index: int) -> GatewaySettings:
    """Worker ``index``'s settings: a node id of its own, or the one starting after another
    would abandon the calls that one holds now. The same worker slot gets the same id in the
    next run (which abandons what it held), and worker 0 the id a single process has."""
    if index == 0:
        return settings
    approvals = settings.approvals.model_copy(update={"node_id": f"{node_id(settings)}/worker-{index}"})
    return settings.model_copy(update={"approvals": approvals})


def approval_stage(settings: GatewaySettings, service: ApprovalService | None) -> ApprovalStage:
    if service is None:
        return RefuseUntilApproved()
    approvals = settings.approvals
    return HoldForApproval(
        service,
        hold_timeout_seconds=approvals.hold_timeout_seconds,
        async_timeout_seconds=approvals.async_timeout_seconds,
        min_hold_seconds=approvals.min_hold_seconds,
        deadline_margin_seconds=approvals.deadline_margin_seconds,
    )


def build_pipeline(
    settings: GatewaySettings,
    engine: PolicyEngine,
    approvals: ApprovalStage | None = None,
    sessions: SessionRecorder | None = None,
    in_flight: CallsInFlight | None = None,
) -> Pipeline:
    key = hash_key(settings)  # once: its random fallback must be the same for both uses
    in_flight = in_flight or CallsInFlight()  # the pipeline counts, the audit client reads
    classifier = ClassifierStage.from_settings(
        settings.classification, from_bundle=settings.policy.bundle_url is not None, key_secret=key
    )
    return Pipeline(
        authenticator=Authenticator(settings.auth),
        classifier=classifier,
        engine=engine,
        approvals=approvals or RefuseUntilApproved(),
        recorder=build_recorder(settings, sessions, in_flight, classifier),
        hash_key=key,
        limits=settings.limits,
        release=settings.release,
        decision_deadline_seconds=settings.policy.decision_deadline_ms / 1000,
        in_flight=in_flight,
    )


def request_encodings(compression: bool) -> int:
    """The request encodings the gRPC listener takes, as grpc's bitset of algorithms (bit n is
    ``grpc.Compression`` value n): identity only, or with ``limits.grpc_request_compression``
    deflate and gzip too."""
    accepted = [grpc.Compression.NoCompression]
    if compression:
        accepted += [grpc.Compression.Deflate, grpc.Compression.Gzip]
    return sum(1 << algorithm.value for algorithm in accepted)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.engine = build_engine(settings)
        self.approvals = build_approvals(settings)
        self.sessions = build_session_recorder(settings.recording)
        self.audit_client = build_audit_client(settings)  # for approval events
        self.audit_probe = build_audit_probe(settings)  # for readiness
        self.pipeline = build_pipeline(
            settings, self.engine, approval_stage(settings, self.approvals), self.sessions
        )
        follow_bundle_catalog(self.engine, self.pipeline.classifier)
        self._approval_sink: ApprovalAuditSink | None = None
        self.upstream = Upstream(settings.upstream, settings.limits.max_message_bytes)
        self.router = Router.from_settings(settings, self.upstream)  # by model, over `upstreams:`
        self.health = health.aio.HealthServicer()
        limit = settings.limits.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                # Only workers share the port; a second gateway on it must fail, not share it.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                # grpc inflates a compressed request before any handler or bound of the gateway
                # sees it (15 KB of gzip: 15 MiB and 43 ms, unauthenticated); past this set it
                # refuses one from its headers (UNIMPLEMENTED), unread.
                (
                    "grpc.compression_enabled_algorithms_bitset",
                    request_encodings(settings.limits.grpc_request_compression),
                ),
            ],
            # Records each call's deadline: a call held for approval never outlives it.
            interceptors=[GrpcServerMetrics(), DeadlineInterceptor()],
        )
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._admin: AdminListener | None = None
        self._rest: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        self._extra_upstreams: dict[str, Upstream] = {}

    async def start(self) -> None:
        await self.engine.start()
        await self.pipeline.authenticator.start()
        self.pipeline.classifier.start()
        if self.approvals is not None:
            if self.audit_client is not None:  # every approval state change joins the audit trail
                self._approval_sink = ApprovalAuditSink(self.audit_client, count_lost_approval_record)
                approval_events.add_sink(self._approval_sink)
            await self.approvals.start()
        if self.sessions is not None:
            self.sessions.start()
        # Bounded and counted before grpc_health's and grpcio-reflection's servicers see a
        # request (gateway/health.py, gateway/reflection.py): neither is authenticated.
        self.server.add_generic_rpc_handlers([health_handlers(self.health, self.pipeline)])
        services = [SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE]
        self.server.add_generic_rpc_handlers([reflection_handlers(services, self.pipeline)])
        # Metric labels name these services; a call to any other is counted as ``unserved``.
        serve_services([*services, *(route.method_prefix.split("/")[1] for route in self.settings.routes)])
        proxy = InferenceProxy(self.pipeline, self.router)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, proxy.handlers())]
        )
        if self.settings.routes:
            routed = RoutedServices.from_settings(self.pipeline, self.settings.routes, self._upstream_for)
            self.server.add_generic_rpc_handlers([routed])
        self.server.add_generic_rpc_handlers([UnservedMethods()])  # last: what nothing above serves
        # grpc_health answers SERVING for "" until told otherwise: not before every listener is up.
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.router.start()  # discovered models are routed before the first call
        # Every other listener serves (TLS files loaded, port bound) before gRPC does: a listener
        # that cannot start fails the start before gRPC served a call or said SERVING
        # (serve_forever then stops what did start).
        if self.settings.admin_listen:
            await self._start_admin(self.settings.admin_listen)
        if self.settings.rest_listen:
            rest = RestGateway(self.pipeline, self.router, self.settings.limits.max_message_bytes)
            self._rest = await start_rest(rest, self.settings.rest_listen, self.settings.rest)
        self.port = self._bind()
        await self.server.start()
        await self._set_serving()
        self._tasks.append(asyncio.create_task(self._watch_health()))
        self._tasks.append(asyncio.create_task(watch_loop_lag()))
        prepare_heap()
        log.info("gateway started", listen=self.settings.listen, port=self.port, engine=self.settings.engine)
        warn_what_is_not_kept(self.settings)  # once started: a gateway that fails to start says why alone

    async def _start_admin(self, listen: str) -> None:
        """The admin listener, on a thread and event loop of its own: nothing sent to it runs on
        this loop. What it needs from here (the approval service, on which held calls wait;
        the session store; the readiness checks) it reaches through a thread-safe bridge."""
        admin = self.settings.admin
        bridge = LoopBridge(asyncio.get_running_loop())
        approvals = None
        if self.approvals is not None and admin.approvals:  # else the approvals server serves them
            approvals = admin_approvals_context(
                BridgedApprovalService(self.approvals, bridge), self.pipeline.authenticator, self.settings
            )
        app = build_admin_app(bridged_ready(self.ready_checks, bridge), approvals, settings=admin)
        if self.upstream.asserter is not None:  # upstreams verify the subject assertion with it
            add_jwks_route(app, self.upstream.asserter.jwks())
        if self.sessions is not None:  # the inbox's session pages read what the recorder writes
            app.state.session_store = BridgedSessionStore(self.sessions.store, bridge)
            # ... and show each recorded response only as this gateway's policy lets the viewer
            # see it (the replay phase), decided by the engine on this loop.
            pipeline = self.pipeline
            app.state.replay_policy = ReplayPolicy(
                decide=lambda doc: bridge.call(pipeline.engine.decide, doc),
                classifier=lambda: pipeline.classifier.classifier,
                hash_key=pipeline.hash_key,
                deadline_seconds=pipeline.decision_deadline_seconds,
            )
        self._admin = await start_admin(app, listen, admin)
        if self.approvals is not None and self.settings.approvals.public_url is None:
            scheme = "https" if admin.tls is not None else "http"
            self.approvals.link_base = f"{scheme}://{listen.rpartition(':')[0]}:{self._admin.port}"

    def _upstream_for(self, address: str | None) -> Upstream:
        """A route's upstream: the default, an entry of ``upstreams`` by name, or an address."""
        if address is None or address == self.upstream.address:
            return self.upstream
        named = self.router.by_name(address)
        if named is not None:
            if not isinstance(named, Upstream):  # a REST upstream cannot carry a gRPC service
                raise ConfigError(
                    reasons.ROUTE_INVALID, f"routes: upstream {address!r} is not a gRPC upstream"
                )
            return named
        return self._extra_upstreams.setdefault(
            address, Upstream(self.settings.upstream, self.settings.limits.max_message_bytes, address)
        )

    def _bind(self) -> int:
        tls = self.settings.server_tls
        try:
            if tls is None:
                return self.server.add_insecure_port(self.settings.listen)
            # gRPC reads the pair only when it binds, and says no more than that it failed.
            check_tls_pair(tls.cert_file, tls.key_file, "server_tls")
            if self.settings.auth.mtls is not None:
                credentials = server_credentials(self.settings.auth.mtls, tls.cert_file, tls.key_file)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())]
                )
            return self.server.add_secure_port(self.settings.listen, credentials)
        except RuntimeError:  # taken between check_listeners and here
            raise ConfigError(
                reasons.LISTEN_IN_USE, f"listen {self.settings.listen}: the address is already in use"
            ) from None

    async def ready_checks(self) -> dict[str, bool]:
        """What every call needs: the policy engine, the upstreams and, unless calls proceed
        without it (``audit.fail_open``), the audit writer (without it every call is refused)."""
        if self.audit_probe is None:
            engine_ok, upstreams = await asyncio.gather(self.engine.healthy(), self.router.ready())
            return {"policy_engine": engine_ok, **upstreams}
        engine_ok, upstreams, audit_ok = await asyncio.gather(
            self.engine.healthy(), self.router.ready(), audit_writer_answers(self.audit_probe)
        )
        return {"policy_engine": engine_ok, **upstreams, "audit_writer": audit_ok}

    async def _set_serving(self) -> None:
        ready = all((await self.ready_checks()).values())
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            await self.health.set(name, status)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            with contextlib.suppress(Exception):
                await self._set_serving()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop serving, then finish what calls were handed over, then close the edges. Every
        step runs even if an earlier one fails (the failure is logged, the first one raised
        at the end): a failing close must not leave queued records unwritten."""
        for task in self._tasks:
            task.cancel()
        failures: list[Exception] = []
        for name, step in self._stop_steps(grace):
            try:
                await step()
            except Exception as error:  # every later step still runs
                log.error("gateway stop step failed", step=name, error=type(error).__name__)
                failures.append(error)
        if failures:
            raise failures[0]

    def _stop_steps(self, grace: float) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        async def stop_rest() -> None:
            if self._rest is not None:
                server, serving = self._rest
                # A REST call held for approval lasts as long as its hold (up to an hour): past
                # the grace its task is cancelled, which abandons the hold, as gRPC's stop does.
                server.config.timeout_graceful_shutdown = max(1, math.ceil(grace))  # whole seconds
                server.should_exit = True
                await serving
                # uvicorn does not wait for the calls it cancelled: they abandon their holds and
                # write their records before the approvals and the recorders close.
                cancelled = set(server.server_state.tasks)
                if cancelled:
                    await asyncio.wait(cancelled, timeout=self.settings.audit.timeout_seconds)

        async def stop_admin() -> None:
            if self._admin is not None:
                await self._admin.cleanup()

        async def close_approvals() -> None:
            # After the server: held calls mark their requests abandoned (and their records
            # and approval events follow, which the steps below wait for).
            if self.approvals is not None:
                await self.approvals.close()

        async def finish_approval_events() -> None:
            if self._approval_sink is not None:
                approval_events.remove_sink(self._approval_sink)
                await self._approval_sink.drain(self.settings.audit.timeout_seconds)

        async def close_sessions() -> None:
            if self.sessions is not None:
                await self.sessions.close()

        async def close_recorders() -> None:
            # No call is left to record: queued decision inputs are written, connections closed.
            if isinstance(self.pipeline.recorder, Recorders):
                await self.pipeline.recorder.aclose()

        async def close_audit_client() -> None:
            if self.audit_client is not None:
                await self.audit_client.close()
            if self.audit_probe is not None:
                await self.audit_probe.close()

        async def close_upstreams() -> None:
            await self.upstream.close()
            await self.router.close()
            for extra in self._extra_upstreams.values():
                await extra.close()

        async def close_classifier() -> None:
            self.pipeline.classifier.stop()

        return [
            ("health", self.health.enter_graceful_shutdown),
            ("rest", stop_rest),
            ("grpc", lambda: self.server.stop(grace)),
            ("admin", stop_admin),
            ("approvals", close_approvals),
            # Calls the server cancelled write their records in tasks of their own.
            (
                "cancelled call records",
                lambda: self.pipeline.finish_records(self.settings.audit.timeout_seconds),
            ),
            ("approval events", finish_approval_events),
            ("sessions", close_sessions),
            ("recorders", close_recorders),
            ("audit client", close_audit_client),
            ("upstreams", close_upstreams),
            ("authenticator", self.pipeline.authenticator.close),
            ("classifier", close_classifier),
            ("engine", self.engine.close),
        ]

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def serve_forever(settings: GatewaySettings, on_started: Callable[[], None] | None = None) -> None:
    """Run the gateway until SIGTERM or SIGINT; ``on_started`` is called once it serves. A
    signal during start-up abandons the start; a failed or abandoned start stops what started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before anything starts: a signal arriving mid-start (the default SIGINT handler raised
    # KeyboardInterrupt through the loop) left a running gRPC server to a closed loop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_tracing = tracing.configure(settings.tracing)
    try:
        gateway = Gateway(settings)
        try:
            started = await start_unless_stopped(gateway, stop)
        except BaseException:
            await stop_after_failed_start(gateway)
            raise
        if started:
            if on_started is not None:
                on_started()
            await stop.wait()
        log.info("gateway stopping", during_start=not started)
        await gateway.stop()
    finally:
        stop_tracing()  # flushes the spans still batched, even after a failed step
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def start_unless_stopped(gateway: Gateway, stop: asyncio.Event) -> bool:
    """Start ``gateway``; False when ``stop`` was set first (the start is cancelled)."""
    starting = asyncio.ensure_future(gateway.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if starting.cancelled():
        return False
    starting.result()  # raises what failed the start
    return True


async def stop_after_failed_start(gateway: Gateway) -> None:
    """Stop what a failed start left running; the start's error is the one reported."""
    try:
        await gateway.stop(grace=0)
    except Exception as error:  # logged by stop; must not hide why the start failed
        log.debug("stop after a failed start failed", error=type(error).__name__)


# What a worker tells the parent over its pipe: STARTED, or its failure (reason, message, exit code).
STARTED = "started"


class WorkerFailed(LabelgateError):
    """A worker's start failed: its error as the worker had it, with the worker's exit code."""

    def __init__(self, reason: str, message: str, exit_code: int) -> None:
        super().__init__(reason, message)
        self.exit_code = exit_code


def _worker(settings: GatewaySettings, link: Connection) -> None:
    """One of ``workers`` processes. A failed start goes to the parent, which reports it once
    (as one process would: one line and its exit code); a failure after the start is this
    worker's own line on stderr. Never a traceback (``LABELGATE_DEBUG=1`` adds it)."""
    configure(settings.log_level)
    started = False

    def report_started() -> None:
        nonlocal started
        started = True
        link.send(STARTED)

    try:
        asyncio.run(serve_forever(settings, on_started=report_started))
        return
    except KeyboardInterrupt:  # a Ctrl-C before serve_forever took over the signals
        return
    except LabelgateError as error:
        failure = (error.reason, error.message, error.exit_code)
    except Exception as error:  # the backstop, as the command line's
        if os.environ.get(DEBUG_VARIABLE) == "1":
            traceback.print_exception(error, file=sys.stderr)
        line = internal_error_line(error).removeprefix("labelgate: ")
        failure = (reasons.INTERNAL_ERROR, line, INTERNAL_ERROR_EXIT)
    reason, message, exit_code = failure
    if started:
        print(f"error: {message} ({reason})", file=sys.stderr, flush=True)
    else:
        with contextlib.suppress(OSError):
            link.send(failure)
    sys.exit(exit_code)


def shared_assertion_key(settings: GatewaySettings) -> GatewaySettings:
    """Workers share the admin port, so they must sign subject assertions with one key (the
    JWKS any of them publishes verifies them all): one made here when none is configured."""
    assertion = settings.upstream.subject_assertion
    if not assertion.enabled or assertion.key is not None or assertion.key_file is not None:
        return settings
    from pydantic import SecretStr

    from labelgate.auth.assertion import generate_key_pem

    key = assertion.model_copy(update={"key": SecretStr(generate_key_pem().decode())})
    upstream = settings.upstream.model_copy(update={"subject_assertion": key})
    return settings.model_copy(update={"upstream": upstream})


def check_listeners(settings: GatewaySettings) -> None:
    """Every address the gateway listens on is free now (``LISTEN_IN_USE`` otherwise) and the
    TLS files it serves with load (``TLS_FILE_UNREADABLE``): checked once, before any worker
    starts, so a port held by another program or a bad file is one clear error."""
    from labelgate.gateway.ports import ensure_free

    ensure_free(settings.listen, "listen")
    if settings.admin_listen:
        ensure_free(settings.admin_listen, "admin_listen")
    if settings.rest_listen:
        ensure_free(settings.rest_listen, "rest_listen")
    # The listeners' TLS files too: a file that is not PEM fails here, naming itself, not as a
    # listener that half started (admin) or as a port "in use" (gRPC).
    if settings.server_tls is not None:
        check_tls_pair(settings.server_tls.cert_file, settings.server_tls.key_file, "server_tls")
    if settings.admin_listen and settings.admin.tls is not None:
        tls = settings.admin.tls
        check_tls_pair(Path(tls.cert_file), Path(tls.key_file), "admin.tls")


def worker_settings(settings: GatewaySettings) -> GatewaySettings:
    """What ``workers`` > 1 processes share that a single one makes up for itself when it is
    not configured: the inbox's cookie-signing key (they share the admin port), the masking
    hash key (hashed values join across workers, and a request's digest, keyed with it, is
    the same whichever worker a held call's retry reaches) and the subject-assertion key."""
    import secrets

    from pydantic import SecretStr

    if (
        settings.admin_listen
        and settings.admin.session_key is None
        and settings.admin.session_key_file is None
    ):
        shared = settings.admin.model_copy(update={"session_key": SecretStr(secrets.token_urlsafe(48))})
        settings = settings.model_copy(update={"admin": shared})
    if settings.masking.hash_key is None and settings.masking.hash_key_file is None:
        masking = settings.masking.model_copy(update={"hash_key": SecretStr(secrets.token_hex(32))})
        settings = settings.model_copy(update={"masking": masking})
    return shared_assertion_key(settings)


def run(settings: GatewaySettings, on_started: Callable[[], None] | None = None) -> None:
    """Run the gateway; with workers > 1, N processes share the port (SO_REUSEPORT).
    ``on_started`` is called once every worker serves; a worker whose start fails stops them
    all, and its error is raised here (the command line's one line and exit code)."""
    configure(settings.log_level)
    check_listeners(settings)
    if settings.workers == 1:
        asyncio.run(serve_forever(settings, on_started))
        return
    context = multiprocessing.get_context("spawn")
    settings = worker_settings(settings)
    links = [context.Pipe(duplex=False) for _ in range(settings.workers)]
    workers = [
        context.Process(target=_worker, args=(worker_node(settings, index), sender), daemon=True)
        for index, (_, sender) in enumerate(links)
    ]
    stopping = False

    def stop_workers(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None:
                worker.terminate()

    # Before the first worker starts: a signal during start-up stops them all.
    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)
    for worker in workers:
        worker.start()
    if stopping:  # a signal while they were being started: the later ones too
        stop_workers()
    for _, sender in links:
        sender.close()  # the workers hold theirs: EOF on a pipe means its worker is gone
    failure = await_starts(workers, [receiver for receiver, _ in links], lambda: stopping)
    if failure is not None:
        stop_workers()
    elif not stopping and on_started is not None:
        on_started()
    for worker in workers:
        worker.join()
    if failure is not None:
        raise failure


def await_starts(
    workers: Sequence[BaseProcess], links: Sequence[Connection], stopping: Callable[[], bool]
) -> WorkerFailed | None:
    """Wait until every worker reports it serves (None) or one fails (its failure). A worker
    gone without a word (killed, or stopped by a signal) failed too, unless ``stopping``."""
    pending = set(range(len(workers)))
    open_links = dict(enumerate(links))
    while pending:
        watched: list[Any] = [workers[index].sentinel for index in pending]
        watched += [open_links[index] for index in pending if index in open_links]
        ready = wait_for(watched)
        for index in sorted(pending):
            link = open_links.get(index)
            if link is not None and link in ready:
                try:
                    message = link.recv()
                except EOFError:  # its worker is gone: its sentinel says so
                    del open_links[index]
                    continue
                if message == STARTED:
                    pending.discard(index)
                    continue
                reason, text, code = message
                return WorkerFailed(reason, text, code)
            if workers[index].sentinel in ready:
                if stopping():
                    return None
                return WorkerFailed(
                    reasons.WORKER_EXITED,
                    f"gateway worker {index} exited with code {workers[index].exitcode} while starting",
                    1,
                )
    return None
