"""Models an upstream serves, learned from its own repository index and refreshed.

An ``upstreams:`` entry with ``discover: true`` lists no models; the gateway asks the
upstream's ``RepositoryIndex`` (gRPC, or ``POST /v2/repository/index`` for a REST upstream)
for its READY models at start and every ``discover_interval_seconds``, with the gateway's
own credential and no caller's. The upstream is untrusted, so what it lists is bounded:

- an explicit glob entry always wins (``Router.for_model`` looks there first): an index
  cannot take a name the operator routed elsewhere;
- ``models`` on a discovering entry, when set, are the only names it may claim;
- a name two discovering upstreams list is routed to neither (``MODEL_NOT_ROUTED``, even with
  a default route) until one stops listing it: a caller never gets whichever answered last;
- a failed refresh keeps the last good list until it is ``discover_max_stale_seconds`` old,
  then the upstream serves nothing until a refresh succeeds (a staleness bound, not forever);
- more than ``MAX_MODELS`` names, or a reply that does not parse, is a failed refresh.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.errors import LabelgateError
from labelgate.gateway import reasons
from labelgate.logs import get_logger, text_digest

if TYPE_CHECKING:
    from labelgate.gateway.upstream import UpstreamEdge

log = get_logger(__name__)
INDEX_METHOD = "/inference.GRPCInferenceService/RepositoryIndex"
# An index longer than this is refused whole (a hostile upstream cannot grow the table).
MAX_MODELS = 10_000
Clock = Callable[[], float]


class Discovery:
    """One discovering upstream: its last good list of READY model names and when it came."""

    def __init__(
        self,
        upstream: UpstreamEdge,
        *,
        allowed: Sequence[str] = (),
        interval: float = 30.0,
        max_stale: float = 120.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.allowed = tuple(allowed)
        self.interval = interval
        self.max_stale = max_stale
        self.clock = clock
        self._names: frozenset[str] = frozenset()
        self._fetched_at: float | None = None

    def names(self) -> frozenset[str]:
        """The last good list, or nothing once it is older than ``max_stale``."""
        if self._fetched_at is None or self.clock() - self._fetched_at > self.max_stale:
            return frozenset()
        return self._names

    async def refresh(self) -> bool:
        """Ask the index once; on any failure keep the last good list (``names`` ages it)."""
        stub = self.upstream.unary_unary(
            INDEX_METHOD, ext.RepositoryIndexRequest.SerializeToString, ext.RepositoryIndexResponse.FromString
        )
        try:
            reply = await stub(
                ext.RepositoryIndexRequest(ready=True),
                metadata=self.upstream.metadata(()),
                timeout=self.upstream.settings.timeout_seconds,
            )
            names = self._claimable(reply.models)
        except LabelgateError as error:
            log.warning("model discovery failed", upstream=self.upstream.name, reason=error.reason)
            return False
        except Exception as error:  # a background refresh must not die; its text may quote the upstream
            log.warning("model discovery failed", upstream=self.upstream.name, error=type(error).__name__)
            return False
        self._names, self._fetched_at = names, self.clock()
        return True

    def _claimable(self, models: Iterable[ext.RepositoryIndexResponse.ModelIndex]) -> frozenset[str]:
        # READY only, even when the upstream ignores the request's `ready`.
        names = {model.name for model in models if model.name and model.state == "READY"}
        if len(names) > MAX_MODELS:
            raise LabelgateError(reasons.DISCOVERY_TOO_MANY_MODELS, f"more than {MAX_MODELS} models")
        if self.allowed:
            names = {name for name in names if any(fnmatch.fnmatchcase(name, g) for g in self.allowed)}
        return frozenset(names)


class DiscoveredRoutes:
    """Every discovering upstream's names as one table: name -> its upstream, or ``None`` when
    two upstreams list it (refused). Rebuilt after each refresh; read on every routed call."""

    def __init__(self, discoveries: Sequence[Discovery]) -> None:
        self.discoveries = list(discoveries)
        self._table: dict[str, UpstreamEdge | None] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def lookup(self, model: str) -> tuple[bool, UpstreamEdge | None]:
        """(listed, upstream): listed with no upstream is a name two upstreams claim."""
        if model not in self._table:
            return False, None
        return True, self._table[model]

    async def refresh(self) -> None:
        """Ask every discovering upstream now (at start, and what tests drive explicitly)."""
        await asyncio.gather(*(d.refresh() for d in self.discoveries))
        self.rebuild()

    def rebuild(self) -> None:
        table: dict[str, UpstreamEdge | None] = {}
        for discovery in self.discoveries:
            for name in discovery.names():
                table[name] = None if name in table else discovery.upstream
        contested = sorted(name for name, upstream in table.items() if upstream is None)
        if contested:
            # The names are the upstreams' text, never scanned: digests, which an operator
            # matches against each upstream's index, and the count.
            log.warning(
                "model discovery conflict",
                model_digests=[text_digest(name) for name in contested[:20]],
                count=len(contested),
            )
        self._table = table

    async def start(self) -> None:
        if not self.discoveries:
            return
        await self.refresh()
        self._tasks = [asyncio.create_task(self._every(d)) for d in self.discoveries]

    async def _every(self, discovery: Discovery) -> None:
        while True:
            await asyncio.sleep(discovery.interval)
            await discovery.refresh()
            self.rebuild()  # also ages out a stale list when the refresh failed

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
