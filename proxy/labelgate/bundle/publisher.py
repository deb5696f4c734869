"""Publishing: watch the source, validate every edit with OPA, and serve only what passed.

The publisher owns the one revision the server hands out. An edit becomes a new revision
only after ``opa check --strict`` and ``opa test`` pass on a snapshot of it; a rejected edit
leaves the previous revision in place and is reported (log line, ``status()``, metrics)
until a later edit passes. Long-polling requests wait on ``wait_for_change``.

Reading, building and running OPA happen in a worker thread (``asyncio.to_thread``), so the
event loop keeps serving bundles and long polls while a build runs; one build at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from labelgate.bundle.build import Bundle, build_bundle
from labelgate.bundle.fleet import iso
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import (
    Fingerprint,
    OpaValidator,
    PolicyRejected,
    SourceSnapshot,
    fingerprint,
    read_snapshot,
)
from labelgate.errors import ConfigError, LabelgateError
from labelgate.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class PublishFailure:
    reason: str
    message: str
    output: str
    at: float
    source_digest: str | None


class PublisherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "labelgate_bundle_publish",
            "Source snapshots judged, by outcome (published, rejected).",
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
    ) -> None:
        self.source = Path(source)
        self.validator = validator
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
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="bundle-source-watch")

    async def stop(self) -> None:
        self._release_waiters()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
            self._accept(bundle, time.monotonic() - started)

    async def wait_for_change(self, revision: str | None, seconds: float) -> Bundle | None:
        """The served bundle once its revision differs from ``revision``; None after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            current = self._current
            if current is not None and current.revision != revision:
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
        return {
            "source": str(self.source),
            "revision": current.revision if current else None,
            "roots": list(current.roots) if current else [],
            "files": [name for name, _ in current.files] if current else [],
            "signed": current.signed if current else False,
            "published_at": iso(self._published_at),
            "last_check": iso(self._last_check),
            "healthy": self._failure is None,
            "error": ({**asdict(self._failure), "at": iso(self._failure.at)} if self._failure else None),
        }

    def _build_and_validate(self, snapshot: SourceSnapshot) -> Bundle:
        bundle = build_bundle(snapshot.files, self.signer)
        self.validator.validate(snapshot, bundle)
        return bundle

    def _accept(self, bundle: Bundle, took: float) -> None:
        self._failure = None
        self.metrics.rejected.set(0)
        if self._current is not None and self._current.revision == bundle.revision:
            log.info("bundle_source_validated", revision=bundle.revision, unchanged=True)
            return  # only tests changed: nothing new to serve
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
            error = ConfigError("BUNDLE_SOURCE_UNREADABLE", f"cannot read the policy source: {error}")
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
            except Exception:  # the watcher must outlive any one bad poll; the error is logged
                log.exception("bundle_watch_failed")
