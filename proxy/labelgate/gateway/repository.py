"""Triton's repository index and model statistics behind the gateway: ask, merge, narrow.

A repository index, and statistics asked for no model by name, are about every model, so
they go to every upstream (``Router.upstreams()``, the default route first) and the replies
are merged. A model is kept only from the upstream its name routes to: an upstream that also
lists a model routed elsewhere (a stale copy) does not add it, and a model no route serves is
not listed at all, since no call could reach it. One upstream failing fails the call (its
status, ``UPSTREAM_<CODE>``): a partial list would look like a complete one.

Then the reply is narrowed to the models the caller may use (``Pipeline.usable_models``: the
policy's request-phase decision of ``ModelInfer`` on each), before it is classified, decided
and rebuilt like any metadata reply. Statistics that name a model, and a model's
configuration (``ModelConfig``), are about that model alone: before anything is sent, a model
the caller may not use is refused exactly as a model no route serves is (NOT_FOUND
``MODEL_NOT_ROUTED``, ``usable_or_unknown``), so neither call tells a caller that a model it
may not use exists. Named statistics go to that model's upstream only. Both run through
``Pipeline.unary_message``, so they are authenticated, admitted, recorded and released like
every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from google.protobuf.message import Message

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.auth import Subject
from labelgate.calls import Call, Target
from labelgate.gateway.pipeline import Gate, Pipeline
from labelgate.gateway.upstream import ModelNotRouted, Router, UpstreamEdge

# Sends one message to one upstream (the transport's stub, metadata and deadline).
SendTo = Callable[[UpstreamEdge, Message], Awaitable[Message]]


class ModelDirectory:
    """``RepositoryIndex`` and ``ModelStatistics`` for any transport that can send to an
    upstream (gRPC and REST alike)."""

    def __init__(self, pipeline: Pipeline, router: Router) -> None:
        self.pipeline = pipeline
        self.router = router

    async def index(
        self, call: Call, request: ext.RepositoryIndexRequest, send_to: SendTo
    ) -> ext.RepositoryIndexResponse:
        async def send(message: Message) -> Message:
            upstreams = self.router.upstreams()
            replies = await every_reply(send_to, upstreams, message)
            return merged_index(self.router, list(zip(upstreams, replies, strict=True)))

        async def narrow(subject: Subject, reply: Message) -> Message:
            assert isinstance(reply, ext.RepositoryIndexResponse)
            usable = await self.pipeline.usable_models(call, subject, (m.name for m in reply.models))
            kept = [model for model in reply.models if model.name in usable]
            return ext.RepositoryIndexResponse(models=kept)

        target = Target(service=call.service)
        reply = await self.pipeline.unary_message(call, target, request, send, narrow)
        assert isinstance(reply, ext.RepositoryIndexResponse)
        return reply

    async def statistics(
        self, call: Call, request: ext.ModelStatisticsRequest, send_to: SendTo
    ) -> ext.ModelStatisticsResponse:
        async def send(message: Message) -> Message:
            # Routed when sent (after authentication and the request phase), like every call.
            upstreams = [self.router.for_model(request.name)] if request.name else self.router.upstreams()
            replies = await every_reply(send_to, upstreams, message)
            return merged_statistics(self.router, list(zip(upstreams, replies, strict=True)))

        async def narrow(subject: Subject, reply: Message) -> Message:
            assert isinstance(reply, ext.ModelStatisticsResponse)
            usable = await self.pipeline.usable_models(call, subject, (s.name for s in reply.model_stats))
            kept = [stats for stats in reply.model_stats if stats.name in usable]
            return ext.ModelStatisticsResponse(model_stats=kept)

        target = Target(service=call.service, model=request.name, model_version=request.version)
        gate = usable_or_unknown(self.pipeline, call, request.name) if request.name else None
        reply = await self.pipeline.unary_message(call, target, request, send, narrow, gate)
        assert isinstance(reply, ext.ModelStatisticsResponse)
        return reply


async def every_reply(send_to: SendTo, upstreams: Sequence[UpstreamEdge], message: Message) -> list[Message]:
    """Each upstream's reply to ``message``, in order; the first failure fails the call and
    cancels the calls still out (``asyncio.gather`` leaves them running, each until its
    upstream's timeout, after the caller has had its answer)."""

    async def ask(upstream: UpstreamEdge) -> Message:
        return await send_to(upstream, message)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(ask(upstream)) for upstream in upstreams]
    except BaseExceptionGroup as failed:
        # The first failure is the caller's status; the others are the same call's.
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


# The methods about one named model whose every answer tells the caller that the model exists
# (its configuration, its metadata, or only that it is ready): gated by ``usable_or_unknown``.
ABOUT_ONE_MODEL = frozenset({"ModelConfig", "ModelMetadata", "ModelReady"})


def usable_or_unknown(pipeline: Pipeline, call: Call, model: str) -> Gate:
    """Refuses ``model`` unless the subject may use it (``Pipeline.usable_models``), with the
    very error a model no route serves gets: its existence is not the caller's to learn."""

    async def gate(subject: Subject) -> None:
        if model not in await pipeline.usable_models(call, subject, [model]):
            raise ModelNotRouted()

    return gate


def merged_index(
    router: Router, replies: Sequence[tuple[UpstreamEdge, Message]]
) -> ext.RepositoryIndexResponse:
    """One index from every upstream's: each model from the upstream it routes to, once per
    version, in name order."""
    entries = _routed(router, replies, "models")
    return ext.RepositoryIndexResponse(models=entries)


def merged_statistics(
    router: Router, replies: Sequence[tuple[UpstreamEdge, Message]]
) -> ext.ModelStatisticsResponse:
    return ext.ModelStatisticsResponse(model_stats=_routed(router, replies, "model_stats"))


def _routed(router: Router, replies: Iterable[tuple[UpstreamEdge, Message]], field: str) -> list[Any]:
    found: dict[tuple[str, str], Any] = {}
    for upstream, reply in replies:
        for entry in getattr(reply, field):
            key = (entry.name, entry.version)
            if key not in found and router.serves(upstream, entry.name):
                found[key] = entry
    return [found[key] for key in sorted(found)]
