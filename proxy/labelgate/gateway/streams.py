"""Which request a streamed reply answers, decided by the gateway alone. Pure.

On ``ModelStreamInfer`` the caller chooses request ids (often all ``""``), and the
upstream chooses what it echoes. Neither may pick the catalog a reply is judged by: the
gateway sends each request upstream under an id of its own, and a reply is matched by
that id only. The caller's id goes back in the reply the gateway builds. A reply whose
id names no open request is the upstream's fault and ends the stream (fail closed).

A request stays open until its final reply: the reply carrying
``triton_final_response: true``, or any reply without that parameter (a model that is
not decoupled answers once).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from labelgate.calls import Call, Target
from labelgate.classify.parameters import parameter_value
from labelgate.gateway.upstream import MalformedUpstream

FINAL_PARAMETER = "triton_final_response"


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
    parameters = response.parameters  # type: ignore[attr-defined]
    if FINAL_PARAMETER not in parameters:
        return True
    return bool(parameter_value(parameters[FINAL_PARAMETER]))
