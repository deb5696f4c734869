"""``ModelStreamInfer`` toward a REST upstream, which has no streams of its own.

Each streamed request becomes one REST infer call (``RestUpstream``'s, so bounded, translated
and checked like a unary one), and its reply goes back on the stream as soon as it is ready,
under the request's own id: the id the gateway's ledger gave it (``gateway/streams.py``),
never what the upstream echoes. A REST model answers once, so every reply is final
(``triton_final_response`` is set here, whatever the upstream said). A call the upstream
fails becomes a reply with ``error_message``, as Triton reports a failed request on a stream
(the pipeline releases only its own text for it, ``UPSTREAM_STREAM_ERROR``); a reply that
does not parse ends the stream (``UPSTREAM_MALFORMED``), as one from a gRPC upstream does, and
so does any other failure of a call: every call puts exactly one item on the queue, or the
stream would wait for it forever.

A request's bytes count against the call's budget (``inflight``) from its write until its
reply is read, and its reply's bytes join them once it is queued: a caller who writes and
never reads held up to ``MAX_OUTSTANDING`` whole replies a stream, counted nowhere (found by
review: 40 requests of a model with 4 MiB outputs, +292 MiB of gateway memory while the
gauge read 7 bytes). A reply that does not fit ends the stream (``REQUEST_BYTES_EXHAUSTED``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify.parameters import FINAL_PARAMETER
from labelgate.errors import LabelgateError
from labelgate.gateway import inflight
from labelgate.gateway.upstream import MalformedUpstream, UpstreamStatus
from labelgate.logs import get_logger

log = get_logger(__name__)

Infer = Callable[..., Awaitable[Any]]
_WAKE = object()  # done_writing's nudge to a reader waiting on no outstanding call
# Requests of one stream whose call is in flight or whose reply is not read yet. A gRPC
# upstream's stream pushes back on a caller who writes faster than it answers (flow control);
# REST calls do not, so without this bound a caller could start any number of upstream calls
# at once, and one who never reads queued every reply.
MAX_OUTSTANDING = 32


class RestStream:
    """The upstream side of one ``ModelStreamInfer`` (``write``, ``done_writing``, async
    iteration, ``cancel``), as ``RoutedStream`` uses a gRPC stream call."""

    def __init__(self, infer: Infer, metadata: Any, timeout: float) -> None:
        self._infer = infer
        self._metadata = metadata
        self._deadline = asyncio.get_running_loop().time() + timeout
        # (reply or error, the lease of its bytes or None), in the order replies are ready.
        self._replies: asyncio.Queue[tuple[Any, inflight.Lease | None]] = asyncio.Queue()
        self._calls: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._slots = asyncio.Semaphore(MAX_OUTSTANDING)  # given back as each reply is read
        self._writing = True

    async def write(self, request: pb.ModelInferRequest) -> None:
        await self._slots.acquire()  # the caller's next request waits: backpressure
        try:
            # The stream's lease holds only its latest message: each request in flight here
            # holds its own bytes until its call ends (a shed one ends the stream).
            lease = inflight.held_apart(request.ByteSize())
        except BaseException:
            self._slots.release()
            raise
        self._outstanding += 1
        call = asyncio.ensure_future(self._one(request, lease))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)
        if lease is not None:  # a call that queued nothing (cancelled, even before it started)
            call.add_done_callback(lambda done: lease.release() if done.cancelled() else None)

    async def done_writing(self) -> None:
        self._writing = False
        self._replies.put_nowait((_WAKE, None))

    async def _one(self, request: pb.ModelInferRequest, lease: inflight.Lease | None) -> None:
        remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        reply: Any
        try:
            response: pb.ModelInferResponse = await self._infer(
                request, metadata=self._metadata, timeout=remaining
            )
        except UpstreamStatus:
            reply = pb.ModelStreamInferResponse(
                error_message="the upstream failed this request",
                infer_response=pb.ModelInferResponse(id=request.id, model_name=request.model_name),
            )
        except LabelgateError as error:  # a reply that does not parse: the stream ends
            reply = error
        except Exception as error:
            # Not expected, but a call that queued nothing would leave the reader (and the
            # caller's stream) waiting forever. Its text may quote the upstream: type only.
            log.error("a streamed REST call failed unexpectedly", error_type=type(error).__name__)
            reply = MalformedUpstream("the upstream sent a reply that does not parse")
        else:
            response.id = request.id
            response.parameters[FINAL_PARAMETER].bool_param = True
            reply = pb.ModelStreamInferResponse(infer_response=response)
        if lease is not None:
            if isinstance(reply, LabelgateError):
                lease.release()  # the stream ends with it: nothing is kept
            else:
                try:  # held until the caller reads it
                    lease.hold(request.ByteSize() + reply.ByteSize())
                except LabelgateError as error:  # Overloaded: the stream ends
                    reply = error
        self._replies.put_nowait((reply, lease))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._read()

    async def _read(self) -> AsyncIterator[Any]:
        while self._writing or self._outstanding or not self._replies.empty():
            item, lease = await self._replies.get()
            if item is _WAKE:
                continue
            self._outstanding -= 1
            self._slots.release()
            if lease is not None:
                lease.release()
            if isinstance(item, LabelgateError):
                raise item
            yield item

    def cancel(self) -> None:
        for call in list(self._calls):
            call.cancel()
        while not self._replies.empty():  # replies no one will read give their bytes back
            _, lease = self._replies.get_nowait()
            if lease is not None:
                lease.release()
