"""A deliberately misbehaving Open Inference Protocol upstream, for the fault tests.

``python misbehaving_upstream.py --listen HOST:PORT`` serves ``ModelInfer`` through a
generic handler with identity (de)serializers, so it can put any bytes on the wire. What it
does depends on the request ``id``:

``garbage``
    bytes that do not parse as a ``ModelInferResponse`` (with a secret in them);
``mismatch``
    a well-formed message whose ``raw_output_contents`` do not match the outputs' shapes;
``big``
    a valid response of 100 customer rows (``customer_id``, ``ssn``, ``account_secret``),
    far larger than the fault tests' message size limit;
``slow:<seconds>[#<anything>]``
    waits that long, then answers like the default;
``report``
    answers with parameter ``events`` (JSON): one entry per earlier call, ``{"id",
    "time_remaining", "outcome"}`` with outcome ``arrived``, ``completed`` or ``cancelled``,
    so a test can see the deadline the gateway passed on and whether it cancelled;
anything else
    a valid ``customer-profile`` response: ``customer_id`` and ``ssn`` of customer 1.

Every secret it sends is ``SECRET`` (customer 1's SSN), so tests can look for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import grpc

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.demo.data import customer
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs

SECRET = customer(1).ssn
SERVICE = "inference.GRPCInferenceService"
BIG_ROWS = range(100)


def valid_response(request_id: str) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="customer-profile", model_version="1", id=request_id)
    tensors = [Tensor("customer_id", "INT64", [1], [1]), Tensor("ssn", "BYTES", [1], [SECRET.encode()])]
    encode_outputs(response, tensors, raw=True)
    return response


def big_response(request_id: str) -> pb.ModelInferResponse:
    rows = [customer(i) for i in BIG_ROWS]
    response = pb.ModelInferResponse(model_name="customer-profile", model_version="1", id=request_id)
    tensors = [
        Tensor("customer_id", "INT64", [len(rows)], [row.customer_id for row in rows]),
        Tensor("ssn", "BYTES", [len(rows)], [row.ssn.encode() for row in rows]),
        Tensor("account_secret", "BYTES", [len(rows)], [row.account_secret.encode() for row in rows]),
    ]
    encode_outputs(response, tensors, raw=True)
    return response


def garbage() -> bytes:
    # Field 1 (model_name) claims a length far beyond the message: no parser accepts it.
    return b"\x0a\xff\xff\xff\xff\x0f" + SECRET.encode()


def mismatched(request_id: str) -> bytes:
    response = valid_response(request_id)
    response.outputs[1].shape[:] = [2]  # two elements declared, one sent
    return response.SerializeToString()


class Upstream:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def note(self, request_id: str, context: grpc.aio.ServicerContext, outcome: str) -> None:
        self.events.append({"id": request_id, "time_remaining": context.time_remaining(), "outcome": outcome})

    async def model_infer(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = pb.ModelInferRequest.FromString(data)
        request_id = request.id
        if request_id == "report":
            report = pb.ModelInferResponse(model_name=request.model_name, id="report")
            report.parameters["events"].string_param = json.dumps(self.events)
            return report.SerializeToString()
        if request_id == "garbage":
            return garbage()
        if request_id == "mismatch":
            return mismatched(request_id)
        if request_id == "big":
            return big_response(request_id).SerializeToString()
        if request_id.startswith("slow:"):
            self.note(request_id, context, "arrived")
            try:
                await asyncio.sleep(float(request_id.removeprefix("slow:").partition("#")[0]))
            except asyncio.CancelledError:
                self.note(request_id, context, "cancelled")
                raise
            self.note(request_id, context, "completed")
        return valid_response(request_id).SerializeToString()


async def serve(listen: str) -> None:
    upstream = Upstream()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(upstream.model_infer)  # bytes in, bytes out
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})])
    server.add_insecure_port(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    with contextlib.suppress(Exception):
        await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
