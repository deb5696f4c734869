"""Which request a streamed reply answers, decided by the gateway alone (pure), and the
bounds on what a stream holds: the streams open at once (``OpenStreams``), how long one may
wait on its caller (``IdleClock``), the backend labels a request keeps (``keep_backend_labels``).

On ``ModelStreamInfer`` the caller chooses request ids (often all ``""``), and the
upstream chooses what it echoes. Neither may pick the catalog a reply is judged by: the
gateway sends each request upstream under an id of its own, and a reply is matched by
that id only. The caller's id goes back in the reply the gateway builds. A reply whose
id names no open request is the upstream's fault and ends the stream (fail closed).

A request stays open until its final reply: the reply carrying
``triton_final_response: true``, or any reply without that parameter (a model that is
not decoupled answers once). That flag is a bool; any other value is a malformed reply.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import grpc

from labelgate.calls import Call, Target
from labelgate.classify.catalog import OUTPUTS_PREFIX
from labelgate.classify.parameters import FINAL_PARAMETER
from labelgate.config import LimitSettings
from labelgate.errors import LabelgateError, Overloaded, ResourceExhausted, UpstreamError
from labelgate.gateway import metrics, reasons
from labelgate.gateway.upstream import MalformedUpstream
from labelgate.logs import get_logger

log = get_logger(__name__)


@dataclass
class OpenRequest:
    upstream_id: str
    target: Target
    # The message's own call (its request id), under which its request phase was decided: its
    # replies are decided under it too.
    call: Call
    # Labels the backend declared on any reply so far, per output: they stay with the request.
    backend: dict[str, set[str]] = field(default_factory=dict)


class StreamLedger:
    def __init__(self, stream_tag: str) -> None:
        self._tag = stream_tag
        self._numbers = itertools.count(1)
        self._open: dict[str, OpenRequest] = {}

    def open(self, target: Target, call: Call) -> str:
        """Register a request; returns the id to send upstream in place of the caller's."""
        upstream_id = f"lg-{self._tag}-{next(self._numbers)}"
        self._open[upstream_id] = OpenRequest(upstream_id, target, call)
        return upstream_id

    def match(self, reply_id: str) -> OpenRequest:
        request = self._open.get(reply_id)
        if request is None:
            raise MalformedUpstream("a streamed reply names no request this stream sent")
        return request

    def close(self, request: OpenRequest) -> None:
        self._open.pop(request.upstream_id, None)

    @property
    def pending(self) -> list[OpenRequest]:
        return list(self._open.values())


def is_final(response: object) -> bool:
    """Whether ``response`` is its request's last reply. A flag that is not a bool is the
    upstream's fault, not an answer: read as truthy, any text would close the request (and
    release what it holds) early; read as false, it would keep it open. Neither is safe to
    guess, so the stream ends (``MalformedUpstream``)."""
    parameters = response.parameters  # type: ignore[attr-defined]
    if FINAL_PARAMETER not in parameters:
        return True
    flag = parameters[FINAL_PARAMETER]
    if flag.WhichOneof("parameter_choice") != "bool_param":
        raise MalformedUpstream(f"a streamed reply's {FINAL_PARAMETER} parameter is not a bool")
    return bool(flag.bool_param)


def keep_backend_labels(
    request: OpenRequest, declared: Mapping[str, set[str]], limits: LimitSettings
) -> None:
    """Add a reply's backend labels (``backend_labels``) to those its request keeps.

    Only outputs the release can let out are kept (``Pipeline.release_inference``: the
    outputs the request names, or every output when it names none): an upstream naming fresh
    outputs on every reply would otherwise grow the request without end. What is kept is
    bounded like a reply's fields: each name's path by ``limits.max_path_bytes``, the names by
    ``limits.max_fields`` (UNAVAILABLE ``UPSTREAM_PATH_TOO_LONG`` / ``UPSTREAM_TOO_MANY_FIELDS``,
    as ``bounds.check_reply_fields`` refuses a reply: the upstream's fault, in a fixed text that
    names only the bound). Merged in place: a reply costs its own outputs.
    """
    kept = request.backend
    wanted = request.target.requested_outputs
    for name, labels in declared.items():
        if wanted and name not in wanted:
            continue
        known = kept.get(name)
        if known is None:
            if len((OUTPUTS_PREFIX + name).encode("utf-8", "surrogatepass")) > limits.max_path_bytes:
                raise UpstreamError(
                    reasons.UPSTREAM_PATH_TOO_LONG,
                    "a streamed reply names an output whose path is longer than "
                    f"{limits.max_path_bytes} bytes (limits.max_path_bytes)",
                )
            if len(kept) >= limits.max_fields:
                raise UpstreamError(
                    reasons.UPSTREAM_TOO_MANY_FIELDS,
                    f"a streamed request's replies name more than {limits.max_fields} outputs "
                    "(limits.max_fields)",
                )
            kept[name] = known = set()
        known |= labels  # a later reply cannot lower them


class OpenStreams:
    """The streams open in one gateway process (``limits.max_open_streams``), and of each
    authenticated caller (``limits.max_open_streams_per_caller``). Each holds memory whatever
    it sends (grpc's call state, the handler's tasks), and a caller may open thousands on one
    connection; ``grpc.aio.server(maximum_concurrent_rpcs=...)`` would count unary calls too.
    A stream is counted in all from its start (``opened``: before anyone is authenticated) and
    against its caller from its authentication (``of_caller``), so one caller cannot take every
    stream of the process. One event loop per process, so no lock."""

    def __init__(self, limit: int, per_caller: int | None = None, bound: str = "open_streams") -> None:
        self.limit = limit
        self.per_caller = limit if per_caller is None else per_caller
        self.bound = bound  # the setting named in refusals and in the shed metric
        self.count = 0
        self._callers: dict[str, int] = {}

    @contextmanager
    def opened(self) -> Iterator[None]:
        """One stream, from its start to its end; refused at once (RESOURCE_EXHAUSTED,
        ``TOO_MANY_STREAMS``) when ``limit`` are open: nothing is read, nothing is opened
        upstream. Not an audit record: refused before anyone is authenticated, as a request
        shed for want of request bytes is (``inflight.py``)."""
        if self.count >= self.limit:
            metrics.REQUESTS_SHED.labels(self.bound).inc()
            log.warning("stream refused", open_streams=self.count, limit=self.limit, bound=self.bound)
            raise Overloaded(
                reasons.TOO_MANY_STREAMS,
                f"the gateway has {self.limit} streams open, as many as it may (limits.max_{self.bound}); "
                "retry later",
            )
        self.count += 1
        metrics.ACTIVE_STREAMS.inc()
        try:
            yield
        finally:
            self.count -= 1
            metrics.ACTIVE_STREAMS.dec()

    @contextmanager
    def of_caller(self, caller: str) -> Iterator[None]:
        """One stream of ``caller`` (a qualified subject id), from its authentication to its
        end; refused (RESOURCE_EXHAUSTED, ``CALLER_STREAMS_EXHAUSTED``) when the caller has
        ``per_caller`` open. Refused after authentication: the caller's refusal is recorded."""
        held = self._callers.get(caller, 0)
        if held >= self.per_caller:
            metrics.REQUESTS_SHED.labels(f"{self.bound}_per_caller").inc()
            raise ResourceExhausted(
                reasons.CALLER_STREAMS_EXHAUSTED,
                f"you have {held} streams open, as many as one caller may "
                f"(limits.max_{self.bound}_per_caller); end one first",
            )
        self._callers[caller] = held + 1
        try:
            yield
        finally:
            left = self._callers[caller] - 1
            if left:
                self._callers[caller] = left
            else:
                del self._callers[caller]

    def of(self, caller: str) -> int:
        """The streams ``caller`` has open."""
        return self._callers.get(caller, 0)


class StreamIdle(LabelgateError):
    """A stream waited on its caller for longer than ``limits.stream_idle_seconds``."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            reasons.STREAM_IDLE,
            f"the stream sent no request for {seconds:g} seconds with none unanswered "
            "(limits.stream_idle_seconds)",
        )


class IdleClock:
    """How long a ``ModelStreamInfer`` stream has waited on its caller with nothing to answer.

    Its upstream stream (and ``upstream.timeout_seconds``) starts with its first request, so
    a stream that sends none would be held for ever. The clock runs while the gateway waits
    for the caller's next request and none of the stream's requests is unanswered (nor being
    admitted: a request held for an approver has its own bound); a request read stops it, a
    reply restarts it. Once a request is unanswered the upstream's deadline bounds the stream.
    """

    def __init__(self, limit: float, now: Callable[[], float] | None = None) -> None:
        self.limit = limit
        self._now = now or asyncio.get_running_loop().time
        self._since: float | None = None  # waiting on the caller since, or busy
        self._changed = asyncio.Event()

    def waiting(self) -> None:
        """The stream waits for the caller's next request."""
        self._since = self._now()
        self._changed.set()

    def busy(self) -> None:
        """A request was read: it is admitted, then answered."""
        self._since = None

    def answered(self) -> None:
        """A reply went to the caller: a stream waiting on its caller waits afresh."""
        if self._since is not None:
            self._since = self._now()
            self._changed.set()

    def left(self, unanswered: bool) -> float:
        """Seconds until the stream is idle for too long (``inf`` while it is not waiting)."""
        if self._since is None or unanswered:
            return math.inf
        return self._since + self.limit - self._now()

    async def expired(self, unanswered: Callable[[], bool]) -> None:
        """Returns once the stream has waited on its caller, with nothing unanswered, for
        ``limit`` seconds (awaited beside the stream's reads)."""
        while (left := self.left(unanswered())) > 0:
            self._changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), None if math.isinf(left) else left)
