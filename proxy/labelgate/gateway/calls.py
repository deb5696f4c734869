"""The call types every stage shares: what the transport saw, what the call asks for, and
what happened to it. Plain data: no I/O, no gRPC objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from labelgate.auth import Subject
from labelgate.policy.contract import Decision


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
class Target:
    """What a call asks for: the model (or message type) and the outputs it names.

    ``caller_id`` is the id the caller gave the request (OIP ``id``): it goes back to the
    caller in the reply and never selects anything inside the gateway.
    """

    service: str
    model: str = ""
    model_version: str = ""
    requested_outputs: tuple[str, ...] = ()
    opaque: bool = False
    caller_id: str = ""

    def to_policy(self, call: Call) -> dict[str, Any]:
        return {
            "service": self.service,
            "method": call.method,
            "model": self.model,
            "model_version": self.model_version,
            "requested_outputs": list(self.requested_outputs),
            "request_id": call.request_id,
            "session_id": call.session_id,
            "peer": call.peer,
            "opaque": self.opaque,
        }


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
    decisions: list[tuple[str, Decision]] = field(default_factory=list)
    masked: list[dict[str, str]] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)


def infer_target(request: Message, method: str) -> Target:
    """The target of a ``ModelInferRequest``."""
    return Target(
        service=method.split("/")[1] if method.count("/") >= 2 else method,
        model=request.model_name,
        model_version=request.model_version,
        requested_outputs=tuple(output.name for output in request.outputs),
        caller_id=request.id,
    )


def request_summary(request: Message) -> dict[str, Any]:
    """An inference request without its values: model, input names, datatypes and shapes."""
    return {
        "model": request.model_name,
        "model_version": request.model_version,
        "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in request.inputs],
        "outputs": [o.name for o in request.outputs],
    }
