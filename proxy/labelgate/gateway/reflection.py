"""gRPC server reflection (``grpc.reflection.v1alpha.ServerReflection``) behind the gateway's
own handler.

grpcio-reflection's servicer, registered as it ships, parses any request grpc hands it and
echoes it whole in its answer (``original_request``): an anonymous client opening streams and
writing one 15 MiB request to each (``file_containing_symbol``), never reading, held ~50 MiB
per stream (40 streams: 720 MiB -> 2.9 GiB), counted by no bound. Here, as for health
(``gateway/health.py``), requests are bytes in: a message larger than any reflection request
needs is refused before it is parsed; each one read holds its bytes of the request budget
until the next one or the stream's end (``inflight.message_read``); and a stream counts as an
open stream of its own kind (``limits.max_reflection_streams``). Reflection is not
authenticated (grpcurl, IDEs), so its streams are counted apart from the callers': an
anonymous client holding every reflection place takes no stream from anyone else.

It answers from a descriptor pool of its own, holding only the files of the services it lists
and their dependencies. grpcio-reflection answers from protobuf's default pool unless told
otherwise, and every route's descriptor set is loaded there (``routes.load_descriptor_set``):
found by review, a client with no token was shown a service of a route's set that no route
serves (an ``InternalAdmin`` with ``WipeAllRecords``) and every field's ``labelgate.v1.labels``
option (which fields are confidential or restricted). Routed services are not reflected.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection, reflection_pb2

from labelgate.errors import InvalidInput
from labelgate.gateway import inflight, reasons
from labelgate.gateway.inference import serving
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.streams import OpenStreams
from labelgate.oip import reasons as oip_reasons

SERVICE = reflection.SERVICE_NAME
METHOD = "ServerReflectionInfo"
# A request names one symbol, file or type, a few hundred bytes at most; the host field is
# unused. Well above that, far below what a stream could make the gateway hold.
MAX_REQUEST_BYTES = 16 * 1024


def _parsed(body: bytes) -> reflection_pb2.ServerReflectionRequest:
    inflight.message_read(len(body))  # replaces the stream's previous request in its lease
    try:
        return reflection_pb2.ServerReflectionRequest.FromString(body)
    except DecodeError:
        raise InvalidInput(
            reasons.REQUEST_NOT_PARSED,
            "the request is not a valid grpc.reflection.v1alpha.ServerReflectionRequest message",
        ) from None


class _EachBounded:
    """A stream's requests, each bounded, counted and parsed as the servicer reads it.

    Read with ``context.read``, not through the request iterator grpc hands the handler: that
    iterator is an async generator in a reference cycle with its owner, holding the last
    message it yielded; a stream refused after a read never resumes it, so each refused
    request stayed in memory until the cyclic collector ran (rarely: ``heap.py``), and 40
    refused 15 MiB requests kept ~600 MiB, a client repeating them growing the gateway by as
    much each time. Here a message is referenced only by these frames, and a refused one not
    even by them. An iterator, not an async generator: one left unfinished by a refused
    stream is not left for the event loop to close (as ``inference.EachParsed``)."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def __aiter__(self) -> _EachBounded:
        return self

    async def __anext__(self) -> reflection_pb2.ServerReflectionRequest:
        body = await self._context.read()
        if body is grpc.aio.EOF:
            raise StopAsyncIteration
        size = len(body)
        if size > MAX_REQUEST_BYTES:
            del body  # not kept by the refusal's traceback, which holds this frame
            raise InvalidInput(
                oip_reasons.REQUEST_TOO_LARGE,
                f"a reflection request of {size} bytes; at most {MAX_REQUEST_BYTES}",
            )
        return _parsed(body)


def own_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A pool of the files that define ``service_names`` and what they import, copied from
    the default pool, where this process's protos are: nothing else of the default pool (a
    route's descriptors) can be found in it."""
    source = descriptor_pool.Default()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:  # a file is added after what it imports
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    for name in service_names:
        add(source.FindFileContainingSymbol(name))
    return pool


def reflection_handlers(service_names: Iterable[str], pipeline: Pipeline) -> grpc.GenericRpcHandler:
    """Reflection over ``service_names`` (described from their own files only), each stream
    counted and each request bounded first."""
    names = list(service_names)
    servicer = reflection.aio.ReflectionServicer(names, pool=own_pool(names))
    streams = OpenStreams(pipeline.limits.max_reflection_streams, bound="reflection_streams")

    async def info(
        _: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        # The request iterator is left unstarted: requests are read with context.read
        # (``_EachBounded``), so grpc's iterator never holds one.
        async with serving(pipeline, context):
            # Refused at once past the bound, before anything is read.
            with streams.opened():
                # An async generator, though grpcio-reflection annotates it as a coroutine.
                answers = cast(
                    AsyncGenerator[reflection_pb2.ServerReflectionResponse, None],
                    servicer.ServerReflectionInfo(_EachBounded(context), context),
                )
                async with contextlib.aclosing(answers):  # closed in this task, with this one
                    async for answer in answers:
                        yield answer

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.stream_stream_rpc_method_handler(
                info,
                request_deserializer=None,  # bytes: bounded before they are parsed
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
