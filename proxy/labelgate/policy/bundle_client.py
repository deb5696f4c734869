"""Follow the bundle server the way OPA does: long-poll ``GET {url}/bundles/{name}``.

Each request sends the ETag of the bundle we hold (``If-None-Match``: the revision, and the
sequence of a signed one) and ``Prefer: modes=snapshot;wait=N``, so the server holds it until
a new revision is published or N seconds pass (``304``, and we ask again at once; a ``200``
that changes nothing, the revision in force signed by another server, is followed by a
pause of ``retry_max``). A ``200`` brings a tarball: it is read and
its signature checked in a worker thread (``PolicySource.from_bundle``), then handed to
``apply`` (``EmbeddedEngine.load``: compiled in a worker thread, swapped in atomically).

Whatever goes wrong (server down, 4xx/5xx, a bad tarball, a bad signature, a policy that
does not compile, a catalog that does not validate) is logged and counted, a refused bundle
also shown by the gauges below (``labelgate_policy_bundle_refusing``, the last refusal's time
and reason, ``labelgate_policy_revision_info`` for the revision in force), and the revision
in force stays: the engine never goes back to having no policy. As OPA does, we keep asking
with the ETag of the revision in force, backing off from ``retry_min`` to ``retry_max``
seconds, so a refused bundle is fetched again until it is fixed (even when the fix, say the
right signing key, keeps the same content and revision).

With a key, a bundle must also be newer than the revision in force: revisions are content
hashes, so the signed ``.manifest`` carries an order (``metadata.labelgate_sequence``, written
by ``labelgate.bundle.build``), and a signed revision whose sequence is not above the one in
force is refused (``BUNDLE_ROLLBACK``; none at all: ``BUNDLE_SEQUENCE_MISSING``), or else the
bundle server, or anyone answering its URL when TLS is off, could hand back an earlier,
revoked signed revision. The revision in force served again changes no decision; signed
again with a higher sequence (a revert publishes older content anew) it raises the floor to
that sequence, so the revision the revert revoked is refused even by a gateway that never
applied it. The high-water mark is kept in memory, and on disk with ``state_file``
(``bundle_mark.py``): without one, a restarted gateway takes the first signed revision it is
served, then refuses anything older. Without a key nothing proves the order, and any revision
is followed, as before.

The workers of one ``serve`` each follow the bundle server on their own and share the state
file: each raises the mark as it applies a revision, and each reads it again before taking
another revision, refusing (``BUNDLE_ROLLBACK``) anything below what any of them applied.
Workers may lag one another (one still has a revision another has replaced, until its own
poll brings the newer one), but none ever goes below the shared mark: a revision replayed to
a worker that missed its successors is refused as a restarted worker refuses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from labelgate import retry
from labelgate.bundle import reasons as bundle_reasons
from labelgate.errors import BundleUnavailable, ConfigError, InvalidInput, LabelgateError
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.bundle_mark import BundleMark, read_mark, write_mark
from labelgate.policy.source import MAX_BUNDLE_BYTES, BundleKey, PolicySource
from labelgate.retry import RetrySettings
from labelgate.shown_urls import shown_problem, shown_url

log = get_logger(__name__)

BUNDLE_UPDATES = Counter(
    "labelgate_policy_bundle_updates_total",
    "Bundle polls by outcome: loaded, not_modified, refused (bad bundle), unavailable (no bundle got).",
    ["outcome"],
)
BUNDLE_LAST_LOADED = Gauge(
    "labelgate_policy_bundle_last_loaded_timestamp_seconds", "When the last new bundle revision was loaded."
)
# What a refused revision looks like from outside (review s14: a catalog every gateway refused
# showed only as a counter, the bundle server healthy): the revision in force, whether the
# newest bundle served is refused, when and why. One series each (the reason is one of the
# stable reasons, so its values are bounded), so a fleet-wide query shows stuck gateways:
# ``labelgate_policy_bundle_refusing == 1``, or revisions that differ across instances.
# The two ``_info`` gauges hold one series at 1 (none before the first revision, or refusal).
REVISION_INFO = Gauge(
    "labelgate_policy_revision_info", "1, labelled with the bundle revision in force.", ["revision"]
)
BUNDLE_REFUSING = Gauge(
    "labelgate_policy_bundle_refusing",
    "1 while the newest bundle the server answers with is refused and an older revision keeps "
    "deciding; 0 once a bundle is applied or the server answers with the revision in force.",
)
BUNDLE_LAST_REFUSAL = Gauge(
    "labelgate_policy_bundle_last_refusal_timestamp_seconds", "When a fetched bundle was last refused."
)
LAST_REFUSAL_INFO = Gauge(
    "labelgate_policy_bundle_last_refusal_info",
    "1, labelled with the stable reason the last refused bundle was refused for (kept after recovery).",
    ["reason"],
)
# Revisions are 64 hex digits from ``labelgate bundle``; an unsigned manifest may say anything.
_MAX_LABEL_CHARS = 64

# Time the server may take beyond the long-poll wait before we call the request lost.
_REQUEST_MARGIN_SECONDS = 10.0


@dataclass
class FollowStatus:
    """What the follower last saw; ``revision`` is the one in force (None before the first)."""

    revision: str | None = None
    # The signed sequence of the revision in force (None: unsigned, or none loaded yet).
    sequence: int | None = None
    loaded: int = 0
    refused: int = 0
    unavailable: int = 0
    # The last failure's stable reason (e.g. BUNDLE_SIGNATURE_INVALID); kept after recovery.
    last_error: str | None = None
    last_error_detail: str | None = None
    last_loaded_at: float | None = None
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BundleSource(PolicySource):
    """A bundle's PolicySource plus the Wasm module ``opa build -t wasm`` put in it, if any.

    The wasm engine uses ``wasm`` as it is (the bundle's signature, when checked, covers it)
    instead of compiling the modules; the other engines ignore it.
    """

    wasm: bytes | None = None


def read_bundle(
    tarball: bytes, *, verify: BundleKey | None, origin: str, max_bytes: int = MAX_BUNDLE_BYTES
) -> PolicySource:
    """``PolicySource.from_bundle`` (signature checked), with ``/policy.wasm`` kept when present."""
    return _read_bundle(tarball, verify=verify, origin=origin, max_bytes=max_bytes)[0]


def _read_bundle(
    tarball: bytes, *, verify: BundleKey | None, origin: str, max_bytes: int
) -> tuple[PolicySource, dict[str, bytes]]:
    """``read_bundle`` and the bundle's members (the ones its signature, if checked, covers).

    The tarball is read once (``read_tarball`` bounds what that may cost, before the signature
    is checked), and its members are what both the source and the caller get.
    """
    from labelgate.bundle.build import read_tarball

    files = read_tarball(tarball, max_bytes)
    source = PolicySource.from_bundle_files(files, verify=verify, origin=origin)
    wasm = files.get("policy.wasm")
    if wasm is None:
        return source, files
    kept = {member.name: getattr(source, member.name) for member in fields(source)}
    return BundleSource(**kept, wasm=wasm), files


class _PollFailed(Exception):
    """One poll failed (already logged and counted): the retry policy waits, then asks again."""


class BundleClient:
    """Long-polls one bundle and hands every new, verified revision to ``apply``."""

    def __init__(
        self,
        url: str,
        name: str = "labelgate",
        *,
        token: str | None = None,
        key: BundleKey | None = None,
        wait_seconds: int = 20,
        start_timeout: float = 30.0,
        retry_min: float = 0.5,
        retry_max: float = 5.0,
        max_bytes: int = MAX_BUNDLE_BYTES,
        retry: RetrySettings | None = None,
        state_file: Path | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                reasons.BUNDLE_URL_INVALID,
                f"bundle url {shown_url(url)!r} must start with http:// or https://",
            )
        if wait_seconds < 0 or start_timeout <= 0 or not 0 < retry_min <= retry_max:
            raise ConfigError(
                reasons.BUNDLE_CLIENT_CONFIG_INVALID, "wait >= 0, start timeout > 0, 0 < retry min <= max"
            )
        if state_file is not None and key is None:
            raise ConfigError(
                reasons.BUNDLE_CLIENT_CONFIG_INVALID,
                "a bundle state file keeps the order of signed bundles: it needs the bundle's public key",
            )
        self.url = f"{url.rstrip('/')}/bundles/{name}"
        # What messages, log lines and the status name: policy.bundle_url refuses userinfo, and a
        # client built otherwise (aiohttp would send it as basic auth) still never shows it.
        self.shown = shown_url(self.url)
        self.name = name
        self.key = key
        self.wait_seconds = wait_seconds
        self.start_timeout = start_timeout
        self.retry_min = retry_min
        self.retry_max = retry_max
        # The one retry policy (labelgate/retry.py); by default from retry_min to retry_max.
        self.retry = retry or RetrySettings(
            initial_seconds=retry_min, max_seconds=retry_max, jitter_seconds=retry_min / 2
        )
        self.max_bytes = max_bytes
        self.status = FollowStatus()
        self.state_file = state_file
        # The revision applied before a restart and its sequence; its sequence is the floor.
        self._mark = read_mark(state_file) if state_file is not None else None
        if self._mark is not None:
            self.status.sequence = self._mark.sequence
        # The highest mark read from the shared state file so far (any worker's): the floor
        # no revision may go below, kept should the file later become unreadable.
        self._shared_mark = self._mark
        self._token = token
        self._first = asyncio.Event()

    def headers(self, etag: str | None) -> dict[str, str]:
        headers = {"Prefer": f"modes=snapshot;wait={self.wait_seconds}", "Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def wait_first(self, follower: asyncio.Task[None]) -> None:
        """Return once the first revision is in; ConfigError if none comes within ``start_timeout``."""
        first = asyncio.ensure_future(self._first.wait())
        try:
            await asyncio.wait(
                {first, follower}, timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            first.cancel()
        if self._first.is_set():
            return
        if follower.done() and follower.exception() is not None:
            raise follower.exception()  # type: ignore[misc]  # a bug in follow(): surface it
        raise ConfigError(
            reasons.POLICY_BUNDLE_UNAVAILABLE,
            f"no usable bundle from {self.shown} within {self.start_timeout:g}s: "
            f"{self.status.last_error or 'no answer'}: {self.status.last_error_detail or ''}".rstrip(": "),
        )

    async def follow(self, apply: Callable[[PolicySource], Awaitable[bool]]) -> None:
        """Poll forever (until cancelled); ``apply`` raises to refuse a revision."""
        etag: str | None = None
        timeout = aiohttp.ClientTimeout(total=self.wait_seconds + _REQUEST_MARGIN_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            while True:
                # A failed poll is tried again with the backoff of the one retry policy, with
                # etag still the revision in force: a bad bundle is fetched again (its fix may
                # keep the same content, e.g. a corrected signing key). A good poll resets it.
                etag = await retry.policy(self.retry, _PollFailed, forever=True)(
                    self._poll, session, etag, apply
                )

    async def _poll(
        self,
        session: aiohttp.ClientSession,
        etag: str | None,
        apply: Callable[[PolicySource], Awaitable[bool]],
    ) -> str | None:
        """One long poll: the ETag to ask with next; ``_PollFailed`` when it failed."""
        try:
            asked = time.monotonic()
            fetched = await self._fetch(session, etag)
            if fetched is None:
                BUNDLE_UPDATES.labels(outcome="not_modified").inc()
                # The server answers with the revision in force: nothing newer is refused.
                BUNDLE_REFUSING.set(0)
                if time.monotonic() - asked < self.retry_min:
                    # A server that does not hold requests (no long polling, or wait 0):
                    # poll every retry_min instead of spinning.
                    await asyncio.sleep(self.retry_min)
                return etag
            in_force = (self.status.revision, self.status.sequence)
            revision = await self._apply(fetched[1], apply)
            if (self.status.revision, self.status.sequence) == in_force:
                # A 200 that changed nothing: the revision in force signed otherwise, by another
                # bundle server behind the same URL (each signs with its own sequence, which is
                # in the ETag, so their answers never match the ETag asked with: review, eighth
                # round, 5,861 downloads in 20 s). Asked again after retry_max, not at once.
                await asyncio.sleep(self.retry_max)
        except BundleUnavailable as error:
            self._failed("unavailable", error)
            raise _PollFailed from error
        except Exception as error:  # a bad bundle never ends the loop
            if not isinstance(error, LabelgateError):
                error = LabelgateError(reasons.BUNDLE_APPLY_FAILED, f"{type(error).__name__}: {error}")
            self._failed("refused", error)
            raise _PollFailed from error
        # Without an ETag header, the manifest revision is what the server would tag.
        return fetched[0] or f'"{revision}"'

    async def _fetch(self, session: aiohttp.ClientSession, etag: str | None) -> tuple[str, bytes] | None:
        """(etag, tarball) for a new bundle, None for 304; raises BundleUnavailable."""
        try:
            async with session.get(self.url, headers=self.headers(etag)) as response:
                if response.status == 304:
                    return None
                if response.status != 200:
                    detail = await _problem_detail(response)
                    raise BundleUnavailable(f"BUNDLE_HTTP_{response.status}", f"{self.shown}: {detail}")
                too_large = BundleUnavailable(
                    reasons.BUNDLE_TOO_LARGE, f"{self.shown}: over {self.max_bytes} bytes"
                )
                if (response.content_length or 0) > self.max_bytes:
                    raise too_large
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise too_large
                return response.headers.get("ETag", ""), bytes(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            # aiohttp's own text may quote the whole URL (InvalidURL does): shown like the rest.
            problem = shown_problem(self.url, f"{type(error).__name__}: {error}")
            raise BundleUnavailable(reasons.BUNDLE_SERVER_UNREACHABLE, f"{self.shown}: {problem}") from None

    async def _apply(self, tarball: bytes, apply: Callable[[PolicySource], Awaitable[bool]]) -> str:
        source, sequence = await asyncio.to_thread(self._read, tarball)
        status = self.status
        other = source.revision != status.revision
        if self.key is not None and other:
            shared = await self._read_shared_mark() if self.state_file is not None else None
            self._refuse_unless_newer(source.revision, sequence, shared)
        # The revision in force signed again, later (a revert republishes older content with a
        # fresh sequence): it changes no decision, but it raises the floor, or a gateway that
        # never applied the revision it reverts would still take that one when replayed.
        resealed = (
            not other
            and self.key is not None
            and sequence is not None
            and (status.sequence is None or sequence > status.sequence)
        )
        changed = await apply(source)
        if other or resealed:
            # The mark first: a revision reported in force is already the floor of every
            # worker sharing the state file (CI saw the status run ahead of the file).
            if self.state_file is not None and sequence is not None:
                await self._keep_mark(BundleMark(source.revision, sequence))
            status.revision, status.sequence = source.revision, sequence
            _set_info(REVISION_INFO, source.revision)
        BUNDLE_REFUSING.set(0)
        if changed:
            status.loaded += 1
            status.last_loaded_at = time.time()
            status.history = [*status.history[-19:], source.revision]
            BUNDLE_LAST_LOADED.set(status.last_loaded_at)
            BUNDLE_UPDATES.labels(outcome="loaded").inc()
            log.info("policy_bundle_loaded", url=self.shown, revision=source.revision)
        self._first.set()
        return source.revision

    def _read(self, tarball: bytes) -> tuple[PolicySource, int | None]:
        """The verified source and, with a key, its signed sequence (worker thread)."""
        from labelgate.bundle.build import MANIFEST, manifest_sequence

        source, files = _read_bundle(tarball, verify=self.key, origin=self.shown, max_bytes=self.max_bytes)
        return source, manifest_sequence(files.get(MANIFEST)) if self.key is not None else None

    def _refuse_unless_newer(self, revision: str, sequence: int | None, shared: BundleMark | None) -> None:
        """Raise unless a signed ``revision`` is ordered after the one in force and is not
        below ``shared``, the mark in the state file the workers share (module docstring):
        workers may lag one another, but none goes below what any of them applied. The
        marked revision itself is taken (a worker catching up to it, or a restart)."""
        from labelgate.bundle.build import SEQUENCE

        status = self.status
        if sequence is None:
            raise InvalidInput(
                bundle_reasons.BUNDLE_SEQUENCE_MISSING,
                f"signed revision {revision[:12]} names no .manifest metadata.{SEQUENCE}, so it cannot "
                f"be told from an older revision replayed: build and serve it with `labelgate bundle`",
            )
        mark = self._mark
        if (
            status.sequence is not None
            and sequence <= status.sequence
            # after a restart, the revision in force before it is taken again
            and not (status.revision is None and mark is not None and (revision, sequence) == astuple(mark))
        ):
            held = status.revision or (mark.revision if mark is not None else "")
            raise InvalidInput(
                bundle_reasons.BUNDLE_ROLLBACK,
                f"revision {revision[:12]} (sequence {sequence}) is not newer than revision "
                f"{held[:12]} {'in force' if status.revision else 'applied before this start'} "
                f"(sequence {status.sequence}): an earlier signed bundle served again is refused",
            )
        if shared is not None and sequence <= shared.sequence and (revision, sequence) != astuple(shared):
            raise InvalidInput(
                bundle_reasons.BUNDLE_ROLLBACK,
                f"revision {revision[:12]} (sequence {sequence}) is not newer than revision "
                f"{shared.revision[:12]} (sequence {shared.sequence}) in the bundle state file "
                f"{self.state_file}, which a worker sharing it applied: an earlier signed bundle "
                f"served again is refused",
            )

    async def _read_shared_mark(self) -> BundleMark | None:
        """The highest mark read from the shared state file so far, read again now (in a
        worker thread: a tiny file).

        A file that cannot be read now leaves the highest mark read before as the floor (the
        start refused an unreadable one): it is logged and reported in ``status``, and not a
        reason to refuse a newer revision, which would hold back the very updates
        (revocations) the order protects, as ``_keep_mark`` reasons for a failed write.
        """
        assert self.state_file is not None
        try:
            mark = await asyncio.to_thread(read_mark, self.state_file)
        except ConfigError as error:
            status = self.status
            status.last_error, status.last_error_detail = error.reason, error.message
            log.error(
                "policy_bundle_state_unread",
                url=self.shown,
                state_file=str(self.state_file),
                error=error.message,
            )
            return self._shared_mark
        held = self._shared_mark
        if mark is not None and (held is None or mark.sequence > held.sequence):
            self._shared_mark = held = mark
        return held

    async def _keep_mark(self, mark: BundleMark) -> None:
        """Write the new high-water mark; a failure is logged, the revision stays in force.

        Refusing a newer revision because the disk failed would hold back the very updates
        (revocations) the order protects; what is lost is only the mark's survival of a restart.
        """
        assert self.state_file is not None
        try:
            await asyncio.to_thread(write_mark, self.state_file, mark)
        except OSError as error:
            status = self.status
            status.last_error = reasons.BUNDLE_STATE_UNWRITTEN
            status.last_error_detail = f"{self.state_file}: {error.strerror or error}"
            log.error(
                "policy_bundle_state_unwritten",
                url=self.shown,
                state_file=str(self.state_file),
                revision=mark.revision,
                error=status.last_error_detail,
            )

    def _failed(self, outcome: str, error: LabelgateError) -> None:
        status = self.status
        if outcome == "refused":
            status.refused += 1
            BUNDLE_REFUSING.set(1)
            BUNDLE_LAST_REFUSAL.set(time.time())
            _set_info(LAST_REFUSAL_INFO, error.reason)
        else:
            status.unavailable += 1
        status.last_error, status.last_error_detail = error.reason, error.message
        BUNDLE_UPDATES.labels(outcome=outcome).inc()
        log.error(
            "policy_bundle_" + outcome,
            url=self.shown,
            reason=error.reason,
            error=error.message,
            keeping_revision=status.revision,
        )


def _set_info(gauge: Gauge, value: str) -> None:
    """Make ``value`` the one series of an ``_info`` gauge (its label bounded in length)."""
    gauge.clear()
    gauge.labels(value[:_MAX_LABEL_CHARS]).set(1)


async def _problem_detail(response: aiohttp.ClientResponse) -> Any:
    """The ``reason``/``detail`` of a problem+json reply, or its status text."""
    try:
        body = await response.json(content_type=None)
        return f"{body.get('reason')}: {body.get('detail')}"
    except (ValueError, aiohttp.ClientError, AttributeError):
        return f"HTTP {response.status} {response.reason}"
