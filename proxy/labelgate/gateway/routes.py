"""gRPC services other than the Open Inference Protocol, routed by method name.

With descriptors (a FileDescriptorSet named in the route) the gateway knows each
method's message types and cardinality: every response message is classified from its
field options, the catalog and the detectors, then decided and masked on its own, and a
refusal mid-stream ends the stream with that status. Without descriptors nothing can be
classified, so the call is *opaque*: it passes through only if policy explicitly allows
the method with no data labels (the default policy denies).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message

from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome, Target
from labelgate.classify.split_values import SplitValues
from labelgate.config import RouteSettings
from labelgate.errors import ConfigError, LabelgateError, drop_frames
from labelgate.gateway import inflight, reasons, wire_bounds
from labelgate.gateway.inference import EachParsed, make_call, serving
from labelgate.gateway.pipeline import Pipeline, still_valid, while_valid
from labelgate.gateway.upstream import Upstream, upstream_error


def load_descriptor_set(path: Path) -> dict[str, MethodDescriptor]:
    """Methods (``/package.Service/Method``) of every service in a FileDescriptorSet."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (OSError, DecodeError) as error:
        raise ConfigError(
            reasons.DESCRIPTOR_SET_INVALID, f"cannot read descriptor set {path}: {error}"
        ) from None
    pool = descriptor_pool.Default()
    methods: dict[str, MethodDescriptor] = {}
    for file in files.file:
        if _known(pool, file.name):
            continue  # well-known types and protos this process already loaded
        try:
            pool.Add(file)
        except (TypeError, ValueError) as error:
            raise ConfigError(reasons.DESCRIPTOR_SET_INVALID, f"{path}: {file.name}: {error}") from None
    for file in files.file:
        for service in pool.FindFileByName(file.name).services_by_name.values():
            for method in service.methods:
                methods[f"/{service.full_name}/{method.name}"] = method
    return methods


def _known(pool: descriptor_pool.DescriptorPool, name: str) -> bool:
    try:
        pool.FindFileByName(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Route:
    settings: RouteSettings
    upstream: Upstream
    methods: dict[str, MethodDescriptor]


class RoutedServices(grpc.GenericRpcHandler):
    """Finds the route of a method and serves it, typed when descriptors are known."""

    def __init__(self, pipeline: Pipeline, routes: list[Route]) -> None:
        self.pipeline = pipeline
        self.routes = routes

    @functools.cached_property
    def held_bytes(self) -> inflight.HeldBytes:
        """What every hold stream of this process holds at once (one ``RoutedServices`` a
        process: ``server.Gateway``)."""
        return inflight.HeldBytes(self.pipeline.limits.max_stream_held_bytes)

    @classmethod
    def from_settings(
        cls, pipeline: Pipeline, routes: list[RouteSettings], upstream_for: Callable[[str | None], Upstream]
    ) -> RoutedServices:
        built = [
            Route(
                r, upstream_for(r.upstream), load_descriptor_set(r.descriptor_set) if r.descriptor_set else {}
            )
            for r in routes
        ]
        for route in built:
            stray = [m for m in route.methods if not m.startswith(route.settings.method_prefix)]
            if route.methods and len(stray) == len(route.methods):
                raise ConfigError(
                    reasons.ROUTE_INVALID,
                    f"route {route.settings.method_prefix}: no method of its descriptors is under it",
                )
            _check_streams_say_what_they_carry(route)
        return cls(pipeline, built)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        route = next((r for r in self.routes if method.startswith(r.settings.method_prefix)), None)
        if route is None:
            return None
        descriptor = route.methods.get(method)
        if descriptor is None:
            # A bound method: grpc.aio recognises async generator functions, not callable objects.
            return grpc.stream_stream_rpc_method_handler(
                OpaqueCall(self.pipeline, route.upstream, method).serve
            )
        hold = route.settings.split_values == "hold"
        return typed_handler(
            self.pipeline,
            route.upstream,
            method,
            descriptor,
            hold_split_values=hold,
            held_bytes=self.held_bytes,
        )


def _check_streams_say_what_they_carry(route: Route) -> None:
    """A server stream's messages are either pieces of one text (a token stream: a value may
    be split across them) or whole records; nothing in a descriptor says which, and guessing
    either way fails (``classify/split_values.py``), so the route must."""
    prefix = route.settings.method_prefix
    streams = sorted(m for m, d in route.methods.items() if d.server_streaming and m.startswith(prefix))
    if streams and route.settings.split_values is None:
        raise ConfigError(
            reasons.ROUTE_INVALID,
            f"route {prefix} serves server streams ({', '.join(streams)}): set its split_values to "
            "'hold' if their string fields are pieces of one text (token streams: a value split "
            "across messages is found, and refused), or 'per_message' if each message is whole",
        )


def _target(method: str, opaque: bool) -> Target:
    return Target(service=method.split("/")[1], opaque=opaque)


class OpaqueCall:
    """Bytes in, bytes out: only for methods that policy allows without knowing any labels."""

    def __init__(self, pipeline: Pipeline, upstream: Upstream, method: str) -> None:
        self.pipeline, self.upstream, self.method = pipeline, upstream, method

    async def serve(
        self, _requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        # ``_requests`` (grpc's request iterator) is left unstarted: read with context.read
        # (``EachParsed``), so grpc's iterator never holds a message.
        call, target = make_call(context, self.method), _target(self.method, opaque=True)
        async with serving(self.pipeline, context):
            # A stream whatever its messages: counted as the typed ones are (it was not).
            with self.pipeline.open_streams.opened(), contextlib.ExitStack() as counted:
                subject = await self.pipeline.admit_stream(call, target, counted)
                # A message refused as it is read (shed for want of request bytes, or read once
                # the caller's token expired) is kept by the relay: grpc's request pump swallows
                # it and cancels the upstream call.
                relay = Relay(while_valid(subject, EachParsed(context, _as_read)))
                stream = self.upstream.stream_stream(self.method, None, None)(
                    relay.messages(),
                    metadata=self.upstream.metadata(call.metadata),
                    timeout=self.upstream.timeout(context),
                )
                mapped = _mapped(stream, relay)
                # The replies are not decided one by one (nothing in them is known), but each is
                # released only once recorded, as a typed stream's are (``release_opaque_reply``);
                # the stream's end is recorded as a typed stream's is, and it ends with its token.
                replies = self.pipeline.upstream_replies(call, subject, target, mapped)
                try:
                    async for reply in replies:
                        try:
                            still_valid(subject)
                        except LabelgateError as error:
                            await self.pipeline.record_failure(call, subject, target, error)
                            raise
                        released = await self.pipeline.release_opaque_reply(call, subject, target, reply)
                        try:
                            yield released
                        except GeneratorExit:
                            _record_closed_while_sending(self.pipeline, call, subject, target)
                            raise
                finally:
                    await _ended(stream, replies, mapped)


def _record_closed_while_sending(pipeline: Pipeline, call: Call, subject: Subject, target: Target) -> None:
    """A routed stream whose generator is closed at a reply grpc was sending: its caller left
    or its deadline passed in grpc's send, outside every handler of the pipeline, and the
    stream's last record was that reply's release, OK (review). Its end is recorded as a
    cancelled call's is (error, ``CancelledError``), after the releases (each durable before it
    was handed to grpc), without holding up the close. Once: a cancellation anywhere else is
    recorded where it falls (``Pipeline.upstream_replies``, ``Pipeline.recording``)."""
    outcome = Outcome(subject=subject, model=target.model)
    pipeline.record_later(CallRecord.of(call, outcome, asyncio.CancelledError()))


async def _ended(upstream_call: Any, *replies: AsyncIterator[Any]) -> None:
    """However a routed stream ends (the upstream's end, a refusal, the caller leaving), its
    upstream call is cancelled (a no-op once it ended), as ``model_stream_infer``'s is, and the
    generators reading it are closed, outermost first. Left to the garbage collector they stay
    open: a refusal's traceback keeps the handler's frame alive, and the upstream goes on
    streaming into the gateway until its deadline."""
    upstream_call.cancel()
    for generator in replies:
        if isinstance(generator, AsyncGenerator):
            await generator.aclose()


async def _as_read(body: bytes) -> bytes:
    """An opaque stream's message goes on as it was read (bytes in: no parser counts them,
    ``EachParsed`` holds them in the call's lease)."""
    return body


class Relay:
    """A client stream's messages on their way upstream. grpc's request pump swallows what
    reading one raises (a message that does not parse or holds too many values,
    ``EachParsed``) and cancels the upstream call: the refusal is kept here, so the call ends
    with it, not with the cancel."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.refusal: LabelgateError | None = None

    async def messages(self) -> AsyncIterator[Any]:
        try:
            async for request in self._requests:
                yield request
        except LabelgateError as error:
            # Re-raised where the cancel is handled (``check``), it loses what it was raised
            # from (``__context__``), which ``drop_frames`` would have cleared at the call's
            # end: a walk's refusal (``wire_bounds``), whose frames hold the message in a
            # cycle with the walk's future, until a collection (``heap.py``). Cleared here.
            drop_frames(error)
            self.refusal = error
            raise

    def check(self) -> None:
        """Raise the refusal that ended the upstream call, if one did."""
        if self.refusal is not None:
            raise self.refusal


async def _mapped(replies: AsyncIterator[Any], relay: Relay | None = None) -> AsyncIterator[Any]:
    """An upstream stream whose failure is the gateway's own error (its text kept out)."""
    try:
        async for reply in replies:
            yield reply
    except asyncio.CancelledError:
        if relay is not None:
            relay.check()
        raise
    except grpc.aio.AioRpcError as error:
        if relay is not None:
            relay.check()
        raise upstream_error(error) from None


async def held(
    replies: AsyncIterator[Message],
    splitter: SplitValues,
    max_values: int | None = None,
    budget: inflight.HeldBytes | None = None,
) -> AsyncIterator[Message]:
    """A token stream's replies, each held until no detected value can straddle it and the
    next; a split value ends the stream (``STREAM_VALUE_SPLIT``), and so does a reply of more
    than ``max_values`` values (``limits.max_message_values``: ``SplitValues.hold``), or a
    release whose reading across messages would count more (``SplitValues._release``). What
    it holds counts against its process's ``budget`` (``limits.max_stream_held_bytes``): a
    message that would take it past ends the stream (``STREAM_HELD_BYTES_EXHAUSTED``) before
    anything it let go leaves. When the upstream's stream fails, what was held is released
    first, as at its end, unless that release is refused; both are read in a thread
    (``_flushed``). Its refusals and the upstream's are recorded once, by
    ``Pipeline.upstream_replies``."""
    share = inflight.HeldShare(budget) if budget is not None else None
    upstream = aiter(replies)
    try:
        while True:
            try:
                reply = await anext(upstream)
            except StopAsyncIteration:
                break
            except LabelgateError:
                for ready in await _flushed(splitter, max_values, share):
                    yield ready
                raise
            released = splitter.hold(reply, max_values)
            if share is not None:
                share.hold(splitter.held_bytes)
            for ready in released:
                yield ready
        for ready in await _flushed(splitter, max_values, share):
            yield ready
    finally:
        if share is not None:
            share.release()


# Threads that read the end of hold streams (``_flushed``): it is Python (the GIL), so more
# would not read faster, only take the event loop's turns more often.
_FLUSH_THREADS = 1


@functools.cache
def _flush_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_FLUSH_THREADS, thread_name_prefix="labelgate-hold-flush")


async def _flushed(
    splitter: SplitValues, max_values: int | None, share: inflight.HeldShare | None
) -> list[Message]:
    """What a hold stream still holds at its end, once no value straddles it
    (``SplitValues.flush``), read in a thread of its own: the stream has ended, so nothing
    else touches its splitter. Bounded by ``max_values`` (about 2 s of binary at the default),
    it still took the worker's event loop for that long, every call of the worker waiting
    (6 MiB of binary held its health check 9.8 s before it was bounded: review). A caller that
    leaves meanwhile does not wait for it: a read not begun is dropped with the splitter,
    one under way keeps the stream's share of ``HeldBytes`` until it ends."""
    kept = [splitter]  # emptied when the read is dropped before it begins: freed at once
    job = _flush_threads().submit(lambda: kept.pop().flush(max_values))
    try:
        return await asyncio.wrap_future(job)
    except asyncio.CancelledError:
        if job.cancel():
            kept.clear()
        elif share is not None:
            moved = share.handed_over()
            loop = asyncio.get_running_loop()
            job.add_done_callback(lambda _: _call_soon(loop, moved.release))
        raise


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """``callback`` on ``loop``, from another thread; nothing once the loop closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def typed_handler(
    pipeline: Pipeline,
    upstream: Upstream,
    method: str,
    descriptor: MethodDescriptor,
    *,
    hold_split_values: bool = False,
    held_bytes: inflight.HeldBytes | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """``held_bytes``: the process's bound on what hold streams hold (``RoutedServices``;
    none: unbounded but for each stream's own)."""
    request_type = message_factory.GetMessageClass(descriptor.input_type)
    response_type = message_factory.GetMessageClass(descriptor.output_type)
    target = _target(method, opaque=False)
    client_streams, server_streams = descriptor.client_streaming, descriptor.server_streaming
    stub = getattr(
        upstream, f"{'stream' if client_streams else 'unary'}_{'stream' if server_streams else 'unary'}"
    )(method, _serialize, response_type.FromString)

    def options(call: Call, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, Any]:
        return {
            "metadata": upstream.metadata(call.metadata),
            "timeout": upstream.timeout(context),
        }

    # Requests arrive as bytes, a client stream's too, and are parsed only once their caller
    # is authenticated and admitted, within what their parse may cost (``wire_bounds``: its
    # values, and what it builds, charged to the call's lease): parsed first, 16 MiB of empty
    # sub-messages took an anonymous caller's call 384 MiB (review).
    async def parse(body: bytes) -> Message:
        limits = pipeline.limits
        return await wire_bounds.parsed(
            request_type, body, limits.max_message_values, max_parsed_bytes=limits.max_message_bytes
        )

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        call = make_call(context, method)
        async with serving(pipeline, context, 0 if client_streams else len(request)):
            # Counted from here to its end; refused at once past the bound (``streams.OpenStreams``).
            with pipeline.open_streams.opened(), contextlib.ExitStack() as counted:
                subject = await pipeline.admit_stream(call, target, counted)
                if client_streams:
                    # Each message parsed as the upstream call reads it (after the stream was
                    # admitted), read with context.read: grpc's request iterator is left
                    # unstarted, so it never holds one (``EachParsed``).
                    request = EachParsed(context, parse)
                else:
                    try:
                        request = await parse(request)
                    except LabelgateError as error:  # the stream's admission is recorded apart
                        await pipeline.record_failure(call, subject, target, error)
                        raise
                # Each of the caller's messages is checked before it goes upstream: the stream
                # ends with the first of its credentials to expire (its replies are checked by
                # ``release_reply``).
                relay = Relay(while_valid(subject, request)) if client_streams else None
                try:
                    replies = stub(relay.messages() if relay else request, **options(call, context))
                except LabelgateError as error:  # opening the upstream stream failed: recorded
                    await pipeline.record_failure(call, subject, target, error)
                    raise
                mapped = _mapped(replies, relay)
                kept = (
                    held(mapped, pipeline.split_values(), pipeline.limits.max_message_values, held_bytes)
                    if hold_split_values
                    else mapped
                )
                checked = pipeline.upstream_replies(call, subject, target, kept)
                try:
                    async for reply in checked:
                        released = await pipeline.release_reply(call, subject, target, reply)
                        try:
                            yield released
                        except GeneratorExit:
                            _record_closed_while_sending(pipeline, call, subject, target)
                            raise
                finally:
                    await _ended(replies, checked, kept, mapped)

    async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        call = make_call(context, method)

        async def send(message: Any) -> Message:
            if not client_streams:
                answer: Message = await stub(message, **options(call, context))
                return answer
            relay = Relay(message)
            try:
                reply: Message = await stub(relay.messages(), **options(call, context))
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                relay.check()
                raise
            return reply

        async with serving(pipeline, context, 0 if client_streams else len(request)):
            if client_streams:
                # Read as a streamed call's are (``streaming``); as ``unary_message`` reads them.
                messages = cast(Message, EachParsed(context, parse))
                return await pipeline.unary_message(call, target, messages, send, client_stream=True)
            admitted = ParsedOnceAdmitted(request, parse, send)
            # The bytes go in; the gate parses them once the caller is authenticated and the
            # method admitted, inside the call's record, and the parsed message goes upstream.
            return await pipeline.unary_message(call, target, request, admitted.send, gate=admitted.parse)
        raise AssertionError("unreachable: refusals() aborts the call")

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(client_streams, server_streams)]
    return make(
        streaming if server_streams else single,
        request_deserializer=None,  # bytes: parsed once admitted (``parse``)
        response_serializer=response_type.SerializeToString,
    )


class ParsedOnceAdmitted:
    """A unary request's bytes, parsed by ``Pipeline.unary_message``'s gate (its caller
    authenticated, its method admitted) and sent as that message. Not closures over the
    request: a refusal's traceback keeps its functions (``drop_frames`` clears only their
    frames), and a closure's cells with them: 16 MiB a refused call, until a collection."""

    __slots__ = ("_body", "_message", "_parse", "_send")

    def __init__(
        self,
        body: bytes,
        parse: Callable[[bytes], Awaitable[Message]],
        send: Callable[[Message], Awaitable[Message]],
    ) -> None:
        self._body: bytes | None = body
        self._message: Message | None = None
        self._parse, self._send = parse, send

    async def parse(self, _: Subject) -> None:
        body, self._body = self._body, None
        assert body is not None, "parsed once"
        self._message = await self._parse(body)

    async def send(self, _: object) -> Message:
        message, self._message = self._message, None
        assert message is not None, "sent once it was parsed"
        return await self._send(message)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
