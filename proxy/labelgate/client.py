"""A small Open Inference Protocol client for people: `labelgate infer`."""

from __future__ import annotations

import json

import grpc
from rich.console import Console
from rich.table import Table

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.errors import InvalidInput, LabelgateError
from labelgate.gateway.status import error_info
from labelgate.oip.tensors import Tensor, decode_outputs, encode_inputs


def build_request(model: str, ids_csv: str, outputs_csv: str) -> pb.ModelInferRequest:
    try:
        ids = [int(part) for part in ids_csv.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput("BAD_IDS", f"--ids must be comma-separated integers, got {ids_csv!r}") from None
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[len(ids)])
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(ids)], ids)], raw=True)
    for name in filter(None, (part.strip() for part in outputs_csv.split(","))):
        request.outputs.add(name=name)
    return request


def _show(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def infer_command(
    target: str, model: str, ids_csv: str, token: str | None, outputs: str, as_json: bool
) -> None:
    request = build_request(model, ids_csv, outputs)
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target) as channel:
        try:
            response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=metadata, timeout=30
            )
        except grpc.RpcError as error:
            info = error_info(error)
            reason = f" [{info.reason}]" if info else ""
            raise LabelgateError(
                f"RPC_{error.code().name}", f"{error.code().name}: {error.details()}{reason}"
            ) from None
    tensors = decode_outputs(response)
    if as_json:
        print(json.dumps({t.name: [_show(v) for v in t.values] for t in tensors}, indent=2))
        return
    table = Table(title=f"{model} through {target}")
    for tensor in tensors:
        table.add_column(tensor.name, overflow="fold")
    rows = max((len(t.values) for t in tensors), default=0)
    for row in range(rows):
        table.add_row(*(_show(t.values[row]) if row < len(t.values) else "" for t in tensors))
    Console().print(table)
