"""Stream correlation: ids the gateway chose, never the caller's or the upstream's."""

from __future__ import annotations

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import Call, Target
from labelgate.gateway.streams import StreamLedger, is_final
from labelgate.gateway.upstream import MalformedUpstream

CALL = Call(
    method="/s/ModelStreamInfer", peer="p", metadata=(), auth_context={}, session_id="s", request_id="r"
)


def test_requests_sharing_a_caller_id_get_ids_of_their_own() -> None:
    ledger = StreamLedger("abc")
    first = ledger.open(Target(service="s", model="customer-profile", caller_id=""), CALL)
    second = ledger.open(Target(service="s", model="sentiment", caller_id=""), CALL)
    assert first != second
    assert ledger.match(first).target.model == "customer-profile"
    assert ledger.match(second).target.model == "sentiment"


@pytest.mark.parametrize("reply_id", ["", "lg-abc-9", "caller-chosen"])
def test_a_reply_naming_no_open_request_fails_closed(reply_id: str) -> None:
    ledger = StreamLedger("abc")
    ledger.open(Target(service="s", model="m", caller_id="caller-chosen"), CALL)
    with pytest.raises(MalformedUpstream):
        ledger.match(reply_id)


def test_a_closed_request_takes_no_more_replies() -> None:
    ledger = StreamLedger("abc")
    upstream_id = ledger.open(Target(service="s", model="m"), CALL)
    ledger.close(ledger.match(upstream_id))
    with pytest.raises(MalformedUpstream):
        ledger.match(upstream_id)


def test_final_is_the_triton_flag_or_a_reply_without_it() -> None:
    reply = pb.ModelInferResponse()
    assert is_final(reply)
    reply.parameters["triton_final_response"].bool_param = False
    assert not is_final(reply)
    reply.parameters["triton_final_response"].bool_param = True
    assert is_final(reply)
