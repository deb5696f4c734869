"""An upstream that answers ``ModelReady`` as Triton does, for the model label tests.

``python triton_like_upstream.py HOST:PORT``: ``ModelReady`` for a model it does not have
answers ``ready=false`` with status OK (Triton's ``TRITONSERVER_ServerModelIsReady``
contract, triton-inference-server/core#508, #510), so an OK status is no proof a model
exists. It has one model, ``customer-profile``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc

MODEL = "customer-profile"


class TritonLike(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == MODEL)


async def serve(address: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(TritonLike(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
