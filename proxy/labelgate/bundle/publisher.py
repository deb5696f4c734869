"""Publishing: watch the source, validate every edit with OPA, and serve only what passed.

The publisher owns the one revision the server hands out. An edit becomes a new revision
only after its catalog loads as the gateways load it (``catalog_check``, from ``cli.py``) and ``opa
check --strict`` and ``opa test`` pass on a snapshot of it; a rejected edit
leaves the previous revision in place and is reported (log line, ``status()``, metrics)
until a later edit passes. Long-polling requests wait on ``wait_for_change``.

With a publish gate (``gate.py``), a validated revision is first replayed against the served
one on stored decision inputs; the report is kept with the revision (``revisions.py``), and a
revision whose impact exceeds the gate's limits is *held*: the previous revision stays served
until a person other than its author approves the publish in the approvals service.

Reading, building and running OPA happen in a worker thread (``asyncio.to_thread``), so the
event loop keeps serving bundles and long polls while a build runs; one build at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from labelgate.bundle import reasons as bundle_reasons
from labelgate.bundle.build import Bundle, build_bundle
from labelgate.bundle.fleet import iso
from labelgate.bundle.gate import ApprovalState, PublishGate
from labelgate.bundle.revisions import RevisionStore
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import (
    Fingerprint,
    OpaValidator,
    PolicyRejected,
    SourceSnapshot,
    fingerprint,
    read_snapshot,
)
from labelgate.errors import ConfigError, LabelgateError, NotFound
from labelgate.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class PublishFailure:
    reason: str
    message: str
    output: str
    at: float
    source_digest: str | None


@dataclass
class HeldRevision:
    """A validated revision the gate holds until its publish is approved."""

    bundle: Bundle
    report: dict[str, Any]
    reasons: list[str]
    author: str | None = None
    approval_id: str | None = None
    approval_link: str | None = None
    outcome: ApprovalState | None = field(default=None)


class PublishHeld(LabelgateError):
    http_status = 409


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "labelgate_bundle_publish",
            "Source snapshots judged, by outcome (published, rejected, held for approval).",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Gauge(
            "labelgate_bundle_source_rejected",
            "1 while the newest source snapshot is rejected and an older revision is served.",
            registry=registry,
        )
        self.published_at = Gauge(
            "labelgate_bundle_published_timestamp_seconds",
            "Unix time the served revision was published.",
            registry=registry,
        )


class Publisher:
    def __init__(
        self,
        source: Path,
        validator: OpaValidator,
        *,
        signer: Signer | None = None,
        poll_interval: float = 0.5,
        registry: CollectorRegistry | None = None,
        gate: PublishGate | None = None,
        revisions: RevisionStore | None = None,
        bundle_name: str = "labelgate",
        catalog_check: Callable[[Bundle], None] | None = None,
    ) -> None:
        if (gate is None) != (revisions is None):
            raise ConfigError(
                bundle_reasons.BUNDLE_SERVER_CONFIG_INVALID, "a publish gate needs a revision store"
            )
        self.source = Path(source)
        self.gate = gate
        self.revisions = revisions
        self.bundle_name = bundle_name
        self._held: HeldRevision | None = None
        self.validator = validator
        # What gateways would refuse of a bundle's catalog (``bundle/cli.py``): not published.
        self.catalog_check = catalog_check
        self.signer = signer
        self.poll_interval = poll_interval
        self.metrics = PublisherMetrics(registry or CollectorRegistry())
        self._current: Bundle | None = None
        self._published_at: float | None = None
        self._failure: PublishFailure | None = None
        self._fingerprint: Fingerprint | None = None
        self._snapshot_digest: str | None = None
        self._last_check: float | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def current(self) -> Bundle | None:
        return self._current

    @property
    def failure(self) -> PublishFailure | None:
        return self._failure

    async def start(self) -> None:
        """Judge the source once (so the first request already has an answer), then watch it."""
        self._loop = asyncio.get_running_loop()
        if self.gate is not None:
            await self.gate.approvals.start()
            await asyncio.to_thread(self._restore_published)
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="bundle-source-watch")

    async def stop(self) -> None:
        self._release_waiters()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.gate is not None:
            await self.gate.approvals.close()

    @property
    def held(self) -> HeldRevision | None:
        return self._held

    async def request_release(self, revision: str, author: str) -> HeldRevision:
        """Ask the approvals service to release the held ``revision``; ``author`` asks (and so
        may not approve it). One open request per held revision."""
        async with self._lock:
            held = self._held
            if self.gate is None or held is None or held.bundle.revision != revision:
                raise NotFound(
                    bundle_reasons.REVISION_NOT_HELD, f"revision {revision[:16]} is not held for approval"
                )
            if held.approval_id is not None and held.outcome is None:
                raise PublishHeld(
                    bundle_reasons.APPROVAL_ALREADY_REQUESTED,
                    f"revision {revision[:16]} already waits for approval {held.approval_id}",
                )
            ticket = await self.gate.approvals.request(
                author=author,
                bundle=self.bundle_name,
                revision=revision,
                report=held.report,
                reasons=held.reasons,
            )
            held.author, held.approval_id, held.approval_link = author, ticket.id, ticket.link
            held.outcome = None
            assert self.revisions is not None
            await asyncio.to_thread(self.revisions.asked, revision, author, ticket.id, ticket.link)
            log.info("bundle_publish_approval_asked", revision=revision, author=author, approval=ticket.id)
            return held

    async def check_release(self) -> None:
        """Publish the held revision once its approval is granted; record a refusal."""
        held = self._held
        if self.gate is None or held is None or held.approval_id is None or held.outcome is not None:
            return
        outcome = await self.gate.approvals.state(held.approval_id)
        if outcome.state == "pending":
            return
        async with self._lock:
            if self._held is not held:
                return  # a newer candidate replaced it meanwhile
            assert self.revisions is not None
            if outcome.state == "granted":
                self._held = None
                await asyncio.to_thread(
                    self.revisions.released, held.bundle.revision, outcome.resolution, held.bundle.files
                )
                log.info(
                    "bundle_publish_approved",
                    revision=held.bundle.revision,
                    author=held.author,
                    approvers=",".join(outcome.approvers),
                )
                self._publish(held.bundle, 0.0)
                return
            held.outcome = outcome
            await asyncio.to_thread(
                self.revisions.refused, held.bundle.revision, outcome.state, outcome.resolution
            )
            log.warning(
                "bundle_publish_refused", revision=held.bundle.revision, state=outcome.state,
                resolution=outcome.resolution,
            )  # fmt: skip

    def release_waiters_threadsafe(self) -> None:
        """Answer every held long poll now (with 304): the server is shutting down.

        Callable from a signal handler or another thread; the work happens on the loop.
        """
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._release_waiters)

    async def refresh(self) -> None:
        """Look at the source once; publish or reject if it changed since the last look."""
        async with self._lock:
            self._last_check = time.time()
            try:
                seen = await asyncio.to_thread(fingerprint, self.source)
                if seen == self._fingerprint:
                    return
                snapshot = await asyncio.to_thread(read_snapshot, self.source)
                if await asyncio.to_thread(fingerprint, self.source) != seen:
                    return  # still being written: judge the settled state on the next poll
            except FileNotFoundError:
                return  # a file vanished between listing and reading: the next poll sees the result
            except (LabelgateError, OSError) as error:
                self._source_unreadable(error)
                return
            self._fingerprint = seen
            if snapshot.digest == self._snapshot_digest:
                return  # touched, not changed
            self._snapshot_digest = snapshot.digest
            started = time.monotonic()
            try:
                bundle = await asyncio.to_thread(self._build_and_validate, snapshot)
            except LabelgateError as error:
                self._reject(error, snapshot.digest)
                return
            if self.gate is not None and not self._is_current(bundle):
                report, reasons = await asyncio.to_thread(self._assess, bundle)
                assert self.revisions is not None
                state = "held" if reasons else "published"
                files = None if reasons else bundle.files
                await asyncio.to_thread(self.revisions.judged, bundle.revision, state, report, reasons, files)
                if reasons:
                    self._hold(bundle, report, reasons)
                    return
                self._held = None
            elif self._held is not None:  # the source went back to the served revision
                self._held = None
                assert self.revisions is not None
                await asyncio.to_thread(self.revisions.supersede_held)
            self._accept(bundle, time.monotonic() - started)

    async def wait_for_change(self, etag: str | None, seconds: float) -> Bundle | None:
        """The served bundle once its ETag differs from ``etag`` (a new revision, or the same
        one signed again: ``Bundle.etag``); None after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            current = self._current
            if current is not None and current.etag != etag:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = self._changed
            if self._closing:
                return None  # shutting down: the client comes back to the next process
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return None

    def status(self) -> dict[str, Any]:
        current = self._current
        held = self._held
        return {
            "held": (
                {
                    "revision": held.bundle.revision,
                    "reasons": held.reasons,
                    "author": held.author,
                    "approval_id": held.approval_id,
                    "approval_state": held.outcome.state if held.outcome else None,
                }
                if held
                else None
            ),
            "source": str(self.source),
            "revision": current.revision if current else None,
            "roots": list(current.roots) if current else [],
            "files": [name for name, _ in current.files] if current else [],
            "signed": current.signed if current else False,
            # The order gateways check a signed revision by (bundle/build.py next_sequence).
            "sequence": current.sequence if current else None,
            "published_at": iso(self._published_at),
            "last_check": iso(self._last_check),
            "healthy": self._failure is None,
            "error": ({**asdict(self._failure), "at": iso(self._failure.at)} if self._failure else None),
        }

    def _build_and_validate(self, snapshot: SourceSnapshot) -> Bundle:
        bundle = build_bundle(snapshot.files, self.signer)
        if self.catalog_check is not None:  # what gateways refuse is not published
            self.catalog_check(bundle)
        self.validator.validate(snapshot, bundle)
        return bundle

    def _is_current(self, bundle: Bundle) -> bool:
        return self._current is not None and self._current.revision == bundle.revision

    def _assess(self, bundle: Bundle) -> tuple[dict[str, Any], list[str]]:
        """The candidate's impact against the served revision (none served yet: nothing to compare)."""
        assert self.gate is not None
        if self._current is None:
            return {"baseline": True, "changes": [], "errors": []}, []
        with tempfile.TemporaryDirectory(prefix="labelgate-impact-") as scratch:
            folders = []
            for name, files in (("current", self._current.files), ("candidate", bundle.files)):
                folder = Path(scratch) / name
                for rel, content in files:
                    target = folder / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                folders.append(folder)
            return self.gate.assess(folders[0], folders[1])

    def _hold(self, bundle: Bundle, report: dict[str, Any], reasons: list[str]) -> None:
        self._failure = None
        self.metrics.rejected.set(0)
        self.metrics.outcomes.labels(outcome="held").inc()
        self._held = HeldRevision(bundle, report, reasons)
        log.warning(
            "bundle_held",
            revision=bundle.revision,
            serving=self._current.revision if self._current else None,
            reasons="; ".join(reasons),
        )

    def _restore_published(self) -> None:
        """Serve the revision published before a restart: the source is judged against it."""
        assert self.revisions is not None
        files = self.revisions.last_published_files()
        if files is not None:
            self._current = build_bundle(files, self.signer)
            self._published_at = time.time()
            log.info("bundle_restored", revision=self._current.revision)

    def _accept(self, bundle: Bundle, took: float) -> None:
        self._failure = None
        self.metrics.rejected.set(0)
        if self._current is not None and self._current.revision == bundle.revision:
            log.info("bundle_source_validated", revision=bundle.revision, unchanged=True)
            return  # only tests changed: nothing new to serve
        self._publish(bundle, took)

    def _publish(self, bundle: Bundle, took: float) -> None:
        self._current = bundle
        self._published_at = time.time()
        self.metrics.outcomes.labels(outcome="published").inc()
        self.metrics.published_at.set(self._published_at)
        log.info(
            "bundle_published",
            revision=bundle.revision,
            files=len(bundle.files),
            signed=bundle.signed,
            took_ms=round(took * 1000),
        )
        self._wake_waiters()

    def _reject(self, error: LabelgateError, digest: str | None) -> None:
        output = error.output if isinstance(error, PolicyRejected) else ""
        self._failure = PublishFailure(error.reason, error.message, output, time.time(), digest)
        self.metrics.outcomes.labels(outcome="rejected").inc()
        self.metrics.rejected.set(1)
        log.warning(
            "bundle_rejected",
            reason=error.reason,
            detail=error.message,
            serving=self._current.revision if self._current else None,
        )

    def _release_waiters(self) -> None:
        self._closing = True
        self._wake_waiters()

    def _source_unreadable(self, error: LabelgateError | OSError) -> None:
        # Forget what was seen, so the folder's return is judged afresh; report once, not per poll.
        self._fingerprint = self._snapshot_digest = None
        if not isinstance(error, LabelgateError):
            error = ConfigError(
                bundle_reasons.BUNDLE_SOURCE_UNREADABLE, f"cannot read the policy source: {error}"
            )
        if self._failure is None or self._failure.reason != error.reason:
            self._reject(error, None)

    def _wake_waiters(self) -> None:
        woken, self._changed = self._changed, asyncio.Event()
        woken.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
                await self.check_release()
            except Exception:  # the watcher must outlive any one bad poll; the error is logged
                log.exception("bundle_watch_failed")
