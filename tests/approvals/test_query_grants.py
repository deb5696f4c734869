"""Grants bound to the query (issue 13, gap 1), through a real gateway and demo backend.

``sam`` is approved for customer 1; the same grant must not release 500 customers (the
widened query is refused, with the approval id or without), while customer 1 again passes.
Approvers see what was asked (input names, shapes, rows), never its values. A policy can
widen a grant to the model and make it single-use (``require_approval.grant_scope`` and
``single_use``, from the approvals table here).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator

import grpc
import pytest

from tests.approvals.conftest import (
    CUSTOMER,
    Answer,
    Api,
    Stack,
    gateway_config,
    person,
    running_gateway,
    token,
)
from tests.support.procs import REPO, free_port, labelgate_command, running

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
ASYNC = {"x-labelgate-approval": "async"}
WIDE = list(range(1, 501))


def ask(address: str, bearer: str | None, customer_ids: list[int], **headers: str) -> Answer:
    """ModelInfer for ``customer_ids`` with labelgate's own protos (``bearer`` None: other
    credentials in ``headers``)."""
    from labelgate._proto.inference import open_inference_pb2 as pb
    from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
    from labelgate.gateway.status import error_info
    from labelgate.oip import tensors

    request = pb.ModelInferRequest(model_name=CUSTOMER)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "customer_ids", "INT64"
    tensor.shape.append(len(customer_ids))
    tensor.contents.int64_contents.extend(customer_ids)
    metadata = [*([("authorization", f"Bearer {bearer}")] if bearer else []), *headers.items()]
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        try:
            response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=metadata, timeout=20
            )
        except grpc.RpcError as error:
            info = error_info(error)
            return Answer(
                code=error.code().name,
                message=error.details() or "",
                reason=info.reason if info else "",
                metadata=dict(info.metadata) if info else {},
            )
    return Answer(code="OK", outputs={t.name: list(t.values) for t in tensors.decode_outputs(response)})


def approval_of(answer: Answer) -> str:
    assert (answer.code, answer.reason) == ("FAILED_PRECONDITION", "APPROVAL_PENDING"), answer
    return answer.metadata["approval_id"]


def clear_ssns(answer: Answer) -> bool:
    return answer.code == "OK" and all(SSN.match(v.decode()) for v in answer.outputs["ssn"])


def test_a_grant_for_one_customer_does_not_release_500(stack: Stack) -> None:
    sam, owner = person("sam"), person("owner")
    sam_token, owner_token = token(sam, "data-stewards"), token(owner, "data-owners")
    approval = approval_of(ask(stack.grpc, sam_token, [1], **ASYNC, **{"x-labelgate-justification": "CS-7"}))

    # What the approver sees: the shape of the query and what would be released, no values.
    shown = stack.api.show(approval, owner_token)
    assert shown["query"] == {
        "inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1]}],
        "requested_outputs": [],
        "rows": 1,
    }
    assert re.fullmatch(r"[0-9a-f]{64}", shown["digest"])
    assert shown["grant_scope"] == "query" and shown["single_use"] is False
    assert "confidential" in shown["labels"]
    assert stack.api.approve(approval, owner_token).json()["state"] == "granted"

    named = {"x-labelgate-approval-id": approval}
    assert clear_ssns(ask(stack.grpc, sam_token, [1], **named))
    # The same grant, named, for 500 customers: refused, it covers another query.
    widened = ask(stack.grpc, sam_token, WIDE, **named)
    assert (widened.code, widened.reason) == ("PERMISSION_DENIED", "GRANT_NOT_APPLICABLE"), widened
    assert "another query" in widened.message
    # Not named: the live grant is not found for it either; a new approval is asked for.
    fresh = approval_of(ask(stack.grpc, sam_token, WIDE, **ASYNC))
    assert fresh != approval
    assert stack.api.show(fresh, owner_token)["query"]["rows"] == 500
    # Two customers (a superset of the approved one) and other outputs are other queries too.
    assert approval_of(ask(stack.grpc, sam_token, [1, 2], **ASYNC)) not in (approval, fresh)
    # The approved query itself keeps passing while the grant lives.
    assert clear_ssns(ask(stack.grpc, sam_token, [1]))


@pytest.fixture(scope="module")
def widening_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Api]]:
    """A gateway whose policy (the default pack, tables changed) makes data-owner grants cover
    the model and single-use."""
    folder = tmp_path_factory.mktemp("widening")
    rego = folder / "rego"
    shutil.copytree(REPO / "rego", rego)
    tables_file = rego / "labelgate" / "tables" / "data.json"
    tables = json.loads(tables_file.read_text())
    tables["approvals"]["data_owner_grant"].update(grant_scope="model", single_use=True)
    tables_file.write_text(json.dumps(tables))
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with running(
        labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
    ):
        config, address, admin = gateway_config(folder, backend, {"sqlite_file": str(folder / "a.db")})
        text = config.read_text().replace(str(REPO / "rego") + "\n", str(rego) + "\n")
        config.write_text(text)
        assert str(rego) in config.read_text()
        with running_gateway(config, address, folder / "gateway.log"):
            yield address, Api(admin)


def test_a_policy_can_widen_a_grant_to_the_model_and_make_it_single_use(
    widening_stack: tuple[str, Api],
) -> None:
    address, api = widening_stack
    sam, owner = person("sam"), person("owner")
    sam_token, owner_token = token(sam, "data-stewards"), token(owner, "data-owners")
    approval = approval_of(ask(address, sam_token, [1], **ASYNC))
    shown = api.show(approval, owner_token)
    assert (shown["grant_scope"], shown["single_use"]) == ("model", True)
    assert api.approve(approval, owner_token).json()["state"] == "granted"

    # The model-wide grant releases another query, once.
    assert clear_ssns(ask(address, sam_token, [3, 4, 5], **{"x-labelgate-approval-id": approval}))
    again = ask(address, sam_token, [3, 4, 5], **{"x-labelgate-approval-id": approval})
    assert (again.code, again.reason) == ("PERMISSION_DENIED", "GRANT_NOT_APPLICABLE"), again
    assert "used" in again.message
    assert approval_of(ask(address, sam_token, [1], **ASYNC)) != approval
