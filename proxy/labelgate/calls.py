"""The call types every stage shares: what the transport saw (``Call``), what the call
asks for (``Target``), what happened to it (``Outcome``, then the frozen ``CallRecord`` the
record stage makes). Plain data: no I/O, no gRPC objects. It sits below the gateway,
recording, audit and approvals packages, which all speak of calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import hashlib
import hmac
import itertools
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.deadlines import seconds_left
from labelgate.errors import LabelgateError
from labelgate.policy import reasons as policy_reasons
from labelgate.policy.contract import Decision
from labelgate.timestamps import utc_now


@dataclass(frozen=True)
class Call:
    """What the transport tells the pipeline about one RPC."""

    method: str
    peer: str
    metadata: tuple[tuple[str, Any], ...]
    auth_context: dict[str, list[bytes]]
    session_id: str
    request_id: str

    @property
    def service(self) -> str:
        return self.method.split("/")[1] if self.method.count("/") >= 2 else self.method


@dataclass(frozen=True)
class Proven:
    """Who the current call was proven to be, and the gateway's id of the call."""

    subject: Subject
    request_id: str


# Set by the authenticate stage (``Pipeline.authenticate``) in the task serving the call; read
# by the upstream edge to sign the subject assertion it adds to the upstream call.
PROVEN: contextvars.ContextVar[Proven | None] = contextvars.ContextVar("labelgate_proven", default=None)


@dataclass(frozen=True)
class Target:
    """What a call asks for: the model (or message type) and the outputs it names.

    ``caller_id`` is the id the caller gave the request (OIP ``id``): it goes back to the
    caller in the reply and never selects anything inside the gateway.

    ``request_digest`` identifies the query (``request_digest()``: inputs with their values,
    requested outputs, parameters; not the caller's id), so that an approval grant releases
    the query it was granted for and no other; ``inputs`` are the input tensors as
    ``(name, datatype, shape)``, without values. Both are set for inference requests only
    (``infer_target``); empty means "not known" and a grant then never carries over to
    another call.

    ``input_count`` and ``input_name_bytes`` (the longest input name, in UTF-8 bytes) are what
    ``check_target`` bounds (``limits.max_inputs``, ``limits.max_path_bytes``). A request past
    what any configuration allows (``INPUTS_KEPT``, ``INPUT_NAME_BYTES_KEPT``) keeps neither
    its inputs nor a digest: it is refused, and nothing built for it before then (the record's
    summary above all) grows with it.
    """

    service: str
    model: str = ""
    model_version: str = ""
    requested_outputs: tuple[str, ...] = ()
    opaque: bool = False
    caller_id: str = ""
    request_digest: str = ""
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    input_count: int = 0
    input_name_bytes: int = 0
    inputs_malformed: bool = False

    @property
    def inputs_dropped(self) -> bool:
        """More inputs, or a longer input name, than any configuration allows, or an input of
        more dimensions or a longer datatype than any model takes: not kept."""
        return (
            self.input_count > INPUTS_KEPT
            or self.input_name_bytes > INPUT_NAME_BYTES_KEPT
            or self.inputs_malformed
        )

    def to_policy(self, call: Call) -> dict[str, Any]:
        request: dict[str, Any] = {
            "service": self.service,
            "method": call.method,
            "model": self.model,
            "model_version": self.model_version,
            "requested_outputs": list(self.requested_outputs),
            "request_id": call.request_id,
            "session_id": call.session_id,
            "peer": peer_address(call.peer),
            "opaque": self.opaque,
        }
        if self.request_digest:
            request["digest"] = self.request_digest
            request["inputs"] = [
                {"name": name, "datatype": datatype, "shape": list(shape)}
                for name, datatype, shape in self.inputs
            ]
        return request


@dataclass
class Outcome:
    """What the record stage learns about a call (or one streamed message)."""

    subject: Subject | None = None
    model: str = ""
    upstream_status: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # For session recording: what was asked (names and shapes, no values) and what the
    # caller received, exactly as delivered (after masking).
    request_summary: dict[str, Any] = field(default_factory=dict)
    delivered: Message | None = None
    # The request with its values, for recordings that opt into them (record_input_values);
    # the pipeline leaves it unset.
    request: Message | None = None
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    masked: list[dict[str, str]] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    # (phase, hash, input) of each decision made for the call, in order: the input as the
    # policy saw it, its hash the decision cache's key (hex); the audit record keeps the
    # hashes, an input store the inputs. Besides the call's own phases: the decision made
    # under an approval (after the one that held the call) and, for a call that lists or
    # names models, each model's (``Pipeline.usable_models``).
    decision_inputs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # Positions in ``decision_inputs`` whose decision was not the one enforced: a later
    # decision of the same phase replaced it (the held call re-decided under its approval).
    superseded_inputs: tuple[int, ...] = ()
    # (grant id, approval id) of each approval grant the call was released under, every round's.
    released_under: tuple[tuple[str, str], ...] = ()


class CallsInFlight:
    """How many calls (or streamed messages) are between their start and their record, less
    those held for an approver: the records about to be written (the audit client's commit
    delay waits for them). A call waiting on its upstream counts."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def transport_peer(peer: str) -> str:
    """A peer as every binding writes it: grpc percent-encodes an IPv6 address's brackets
    (``ipv6:%5B::1%5D:5000``), REST's ``ipv6:[::1]:5000`` does not; records and policy see one
    form for one caller whichever binding it used."""
    if peer.startswith("ipv6:%5B"):
        return "ipv6:" + urllib.parse.unquote(peer[5:])
    return peer


def rest_peer(host: str, port: int) -> str:
    """The peer of a REST caller, written as grpc writes a gRPC caller's (``transport_peer``)."""
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def peer_address(peer: str) -> str:
    """The caller's address without its port (``ipv4:10.1.2.3``, ``ipv6:[::1]``): what the
    policy input carries as ``request.peer``. A policy may decide on where a call comes from;
    the port changes with every connection, and a decision keyed on it would be cached per
    connection (``policy.cache``). Anything else (a Unix socket) is kept whole."""
    kind, colon, rest = peer.partition(":")
    if not colon or kind not in ("ipv4", "ipv6"):
        return peer
    host, colon, port = rest.rpartition(":")
    if colon and port.isascii() and port.isdigit() and (kind == "ipv4" or host.endswith("]")):
        return f"{kind}:{host}"
    return peer


# The most inputs, and the longest input name (UTF-8 bytes), any configuration allows: the
# upper bounds of ``limits.max_inputs`` and ``limits.max_path_bytes``. A target is built before
# its call's bounds are checked (``check_target``, which knows the configured ones), and its
# inputs go into the record's summary even when it is refused: past these, none are copied.
INPUTS_KEPT = 16_384
INPUT_NAME_BYTES_KEPT = 65_536
# An input's rank and datatype are copied with it: more dimensions than any model takes (as an
# output's, ``oip.tensors.MAX_OUTPUT_RANK``) or a datatype longer than any the protocol names
# (``UINT64``) make the request malformed, and its inputs are not copied (a 16 MiB request can
# hold a shape of two million dimensions).
INPUT_RANK_KEPT = 32
INPUT_DATATYPE_BYTES_KEPT = 16
# The most requested outputs any configuration allows (``limits.max_requested_outputs``): one
# more is kept, so that a request past it is refused without every name being copied.
OUTPUTS_KEPT = 100_000


def infer_target(request: pb.ModelInferRequest, method: str, digest_key: bytes | None) -> Target:
    """The target of a ``ModelInferRequest``; ``digest_key`` keys its ``request_digest`` (None:
    no digest yet, ``with_digest`` adds it once the caller is authenticated). Its inputs are
    counted and their names measured before they are copied (``Target.inputs_dropped``)."""
    count = len(request.inputs)
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    longest = 0
    malformed = False
    if count <= INPUTS_KEPT:
        malformed = any(
            len(i.shape) > INPUT_RANK_KEPT or len(i.datatype) > INPUT_DATATYPE_BYTES_KEPT
            for i in request.inputs
        )
        if not malformed:
            inputs = tuple((i.name, i.datatype, tuple(i.shape)) for i in request.inputs)
            longest = max((len(name.encode("utf-8", "surrogatepass")) for name, _, _ in inputs), default=0)
    # not Target.inputs_dropped
    kept = count <= INPUTS_KEPT and longest <= INPUT_NAME_BYTES_KEPT and not malformed
    return Target(
        service=method.split("/")[1] if method.count("/") >= 2 else method,
        model=request.model_name,
        model_version=request.model_version,
        requested_outputs=tuple(
            output.name for output in itertools.islice(request.outputs, OUTPUTS_KEPT + 1)
        ),
        caller_id=request.id,
        request_digest=request_digest(request, digest_key) if kept and digest_key is not None else "",
        inputs=inputs if kept else (),
        input_count=count,
        input_name_bytes=longest,
        inputs_malformed=malformed,
    )


def with_digest(target: Target, request: pb.ModelInferRequest, digest_key: bytes) -> Target:
    """``target`` with the ``request_digest`` of ``request``. Hashing reads every byte of the
    request (about a millisecond a MiB): done for authenticated callers only, so an anonymous
    one cannot have the gateway hash 16 MiB bodies that are refused anyway; nor for a target
    whose inputs were dropped (``Target.inputs_dropped``), which is refused too."""
    if target.inputs_dropped:
        return target
    return dataclasses.replace(target, request_digest=request_digest(request, digest_key))


_DIGEST_DOMAIN = b"labelgate.request-digest.v1"


@functools.lru_cache(maxsize=8)
def digest_subkey(key: bytes) -> bytes:
    """The digests' own key, derived from the masking hash key: the ``hash`` mask shows callers
    HMAC-SHA256 under that key of bytes an upstream writes, which must never be a digest (as
    ``jsonpaths.placeholder_key`` derives the placeholders' key for the same reason)."""
    return hmac.new(key, _DIGEST_DOMAIN, hashlib.sha512).digest()


def request_digest(request: pb.ModelInferRequest, key: bytes) -> str:
    """HMAC-SHA256 (hex) under ``key`` of what a ``ModelInferRequest`` asks: model name and
    version, every input tensor (name, datatype, shape, parameters, contents),
    ``raw_input_contents``, every requested output (name and parameters) and the request
    parameters, each part length-prefixed; the caller's ``id`` is left out (it names the
    call, not the query). Protobuf's deterministic encoding makes equal requests hash equal;
    any change to what is asked, however small, gives another digest.

    Keyed (the gateway's masking hash key), because the digest travels where the input values
    never do: to approvers, webhooks, logs and the policy input. A plain hash of a request
    whose only unknown is one short value (a customer id, an SSN) gives that value back to
    anyone who tries the candidates."""
    digest = hmac.new(digest_subkey(key), _DIGEST_DOMAIN, hashlib.sha256)

    def part(tag: bytes, data: bytes) -> None:
        digest.update(tag + len(data).to_bytes(8, "big") + data)

    part(b"M", request.model_name.encode())
    part(b"V", request.model_version.encode())
    for tensor in request.inputs:
        part(b"I", tensor.SerializeToString(deterministic=True))
    for raw in request.raw_input_contents:
        part(b"R", raw)
    for output in request.outputs:
        part(b"O", output.SerializeToString(deterministic=True))
    for name in sorted(request.parameters):
        part(b"P", name.encode() + b"\x00" + request.parameters[name].SerializeToString(deterministic=True))
    return digest.hexdigest()


def target_summary(target: Target) -> dict[str, Any]:
    """The request ``target`` was made from (``infer_target``) without its values: model,
    input names, datatypes and shapes, requested outputs; from what the target already read,
    so the request is not walked again."""
    return {
        "model": target.model,
        "model_version": target.model_version,
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(shape)}
            for name, datatype, shape in target.inputs
        ],
        "outputs": list(target.requested_outputs),
    }


@dataclass(frozen=True)
class CallRecord:
    """What happened to one call (or one streamed message), made once by the record stage.

    The log line, the audit record and the session recording are views of this one value
    (``gateway/record.py``, ``recording/entries.py``), so they cannot disagree on the
    outcome, the reason or the time.
    """

    time: datetime
    event_id: str
    call: Call
    subject: Subject | None
    model: str
    request_summary: dict[str, Any]
    decisions: tuple[tuple[str, Decision], ...]
    labels: tuple[str, ...]
    masked: tuple[dict[str, str], ...]
    outcome: str  # allow | mask | deny | approval_required | error
    refusal: str | None  # the stable reason of the error that ended the call, if any
    upstream_status: str | None
    latency_ms: float
    delivered: Message | None
    request: Message | None
    error_kind: str | None  # the type of an unexpected (non-labelgate) error
    decision_inputs: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    status_code: str = "OK"  # the gRPC status code name the caller got
    superseded_inputs: tuple[int, ...] = ()  # as ``Outcome.superseded_inputs``
    released_under: tuple[tuple[str, str], ...] = ()  # as ``Outcome.released_under``

    @classmethod
    def of(
        cls, call: Call, outcome: Outcome, error: BaseException | None, now: datetime | None = None
    ) -> CallRecord:
        # One record per call: filled in directly, not through the frozen dataclass's
        # ``__init__`` (an ``object.__setattr__`` per field); every field is given, and there
        # is no ``__post_init__`` to skip (``tests/test_calls.py`` holds both to that).
        record = object.__new__(cls)
        record.__dict__.update(
            time=now or utc_now(),
            event_id=uuid4_text(),
            call=call,
            subject=outcome.subject,
            model=outcome.model,
            request_summary=dict(outcome.request_summary),
            decisions=tuple(outcome.decisions),
            labels=tuple(sorted(outcome.labels)),
            masked=tuple(outcome.masked),
            outcome=_outcome_name(outcome, error),
            refusal=_refusal(error),
            upstream_status=outcome.upstream_status,
            latency_ms=round((time.perf_counter() - outcome.started) * 1000, 3),
            # A call that ends in an error delivered nothing, whatever reply was built for it
            # (one its binding could not carry, one refused for want of its audit record).
            delivered=outcome.delivered if error is None else None,
            request=outcome.request,
            error_kind=None if error is None or isinstance(error, LabelgateError) else type(error).__name__,
            decision_inputs=tuple(outcome.decision_inputs),
            status_code=_status_code(error),
            superseded_inputs=outcome.superseded_inputs,
            released_under=outcome.released_under,
        )
        return record

    @property
    def last_decision(self) -> tuple[str, Decision] | None:
        return self.decisions[-1] if self.decisions else None

    @property
    def reason(self) -> str | None:
        """Why: the refusal's reason, else what the last decision said."""
        last = self.last_decision
        return self.refusal or (last[1].reason if last else None)

    def subject_json(self) -> dict[str, Any] | None:
        subject = self.subject
        if subject is None:
            return None
        return {"id": subject.id, "name": subject.name, "groups": list(subject.groups), "auth": subject.auth}


# The bits ``uuid.UUID(..., version=4)`` clears and sets: version 4, variant RFC 4122.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def uuid4_hex() -> str:
    """``uuid.uuid4().hex``: the same random bits, without building a ``UUID`` (two ids are
    made for every call)."""
    return f"{(int.from_bytes(os.urandom(16), 'big') & _UUID4_CLEAR) | _UUID4_SET:032x}"


def uuid4_text() -> str:
    """``str(uuid.uuid4())``, as ``uuid4_hex``."""
    digits = uuid4_hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _status_code(error: BaseException | None) -> str:
    """The gRPC status code name of how a call ended (``OK`` when it did not fail)."""
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        # gRPC cancels the handler alike when its caller leaves, when the gateway stops and
        # when the caller's deadline passes; the caller gets DEADLINE_EXCEEDED in the last case.
        return "DEADLINE_EXCEEDED" if _deadline_passed() else "CANCELLED"
    code = getattr(error, "code", None)
    if callable(code):  # a grpc.RpcError from the upstream
        code = code()
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else "UNKNOWN"


# grpc cancels a call at its deadline; the deadline the gateway keeps (``deadlines``) is read
# a moment after grpc's, so it may fall this much later.
_DEADLINE_SLACK_SECONDS = 0.05


def _deadline_passed() -> bool:
    """Whether the current call's deadline has passed (the task's, or a context copied from it)."""
    left = seconds_left()
    return left is not None and left <= _DEADLINE_SLACK_SECONDS


def _outcome_name(outcome: Outcome, error: BaseException | None) -> str:
    if error is None:
        return "mask" if outcome.masked else "allow"
    if isinstance(error, LabelgateError):
        return "approval_required" if error.reason == policy_reasons.APPROVAL_REQUIRED else "deny"
    return "error"


def _refusal(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return error.reason if isinstance(error, LabelgateError) else type(error).__name__
