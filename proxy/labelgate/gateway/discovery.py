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
- more than ``MAX_MODELS`` entries (counted before any is read: duplicates count, since an
  index of 1.29 million entries all named ``ab`` passed as one model and held the event
  loop ~0.5 s every refresh), a gRPC reply larger than ``MAX_INDEX_BYTES`` (refused before it
  is parsed), or a reply that does not parse, is a failed refresh.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.config.limits import LimitSettings
from labelgate.errors import LabelgateError
from labelgate.gateway import reasons
from labelgate.logs import get_logger, text_digest
from labelgate.oip import reasons as oip_reasons

if TYPE_CHECKING:
    from labelgate.gateway.upstream import UpstreamEdge

log = get_logger(__name__)
INDEX_METHOD = "/inference.GRPCInferenceService/RepositoryIndex"
# An index longer than this is refused whole (a hostile upstream cannot grow the table).
MAX_MODELS = 10_000
# What an index of MAX_MODELS entries takes on the wire: each a name no longer than the
# default limits.max_path_bytes (a caller cannot name a longer model unless it is raised), a
# version and a state (READY: no reason text). A gRPC reply larger is refused unparsed:
# parsing the 16 MiB grpc lets through took 0.11 s of the event loop.
MAX_INDEX_BYTES = MAX_MODELS * (LimitSettings.model_fields["max_path_bytes"].default + 32)
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
        # No deserializer: a gRPC upstream's reply comes as bytes, sized before it is parsed.
        stub = self.upstream.unary_unary(INDEX_METHOD, ext.RepositoryIndexRequest.SerializeToString, None)
        try:
            reply = await stub(
                ext.RepositoryIndexRequest(ready=True),
                metadata=self.upstream.metadata(()),
                timeout=self.upstream.settings.timeout_seconds,
            )
            names = self._claimable(bounded_index(reply).models)
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
        if self.allowed:
            names = {name for name in names if any(fnmatch.fnmatchcase(name, g) for g in self.allowed)}
        return frozenset(names)


def too_many_models() -> LabelgateError:
    return LabelgateError(
        reasons.DISCOVERY_TOO_MANY_MODELS,
        f"the index lists more than {MAX_MODELS} models, or is larger than {MAX_INDEX_BYTES} bytes",
    )


def bounded_index(reply: bytes | ext.RepositoryIndexResponse) -> ext.RepositoryIndexResponse:
    """An upstream's index reply, refused (``DISCOVERY_TOO_MANY_MODELS``) when it has more
    than ``MAX_MODELS`` entries, before any entry is read. A gRPC upstream's reply is its
    bytes, refused unparsed past ``MAX_INDEX_BYTES``; a REST upstream's comes parsed (its body
    read within ``limits.max_message_bytes``, ``rest_upstream``)."""
    if isinstance(reply, bytes):
        if len(reply) > MAX_INDEX_BYTES:
            raise too_many_models()
        try:
            reply = ext.RepositoryIndexResponse.FromString(reply)
        except DecodeError:
            raise LabelgateError(
                oip_reasons.UPSTREAM_MALFORMED, "the upstream's repository index does not parse"
            ) from None
    if len(reply.models) > MAX_MODELS:
        raise too_many_models()
    return reply


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
