"""The floor of the data path: a bare ``grpc.aio`` pass-through proxy, bytes in, bytes out.

``python -m bench.bare_proxy --listen HOST:PORT --upstream HOST:PORT [--typed]``. No
pipeline, no parsing: every unary call is forwarded as raw bytes with generic handlers. What
the gateway spends beyond what this spends is the gateway's own work (issue 12's floor).

``--typed`` parses ModelInfer requests and responses into their protobuf messages and
serializes them again, and does nothing else: the least any gateway that reads the messages
must do in Python, and so how much of the gap to the floor no pipeline work can close
(``python -m bench.ab --typed-floor``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import grpc

from labelgate._proto.inference import open_inference_pb2 as pb

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]


class PassThrough(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel, typed: bool = False) -> None:
        self.channel = channel
        self.typed = typed

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if self.typed and details.method == MODEL_INFER:
            return self._typed(details.method)
        forward = self.channel.unary_unary(
            details.method, request_serializer=None, response_deserializer=None
        )

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await forward(request, metadata=context.invocation_metadata())
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise

        return grpc.unary_unary_rpc_method_handler(handle)

    def _typed(self, method: str) -> grpc.RpcMethodHandler:
        forward = self.channel.unary_unary(
            method,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )

        async def handle(
            request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
        ) -> pb.ModelInferResponse:
            try:
                return await forward(request, metadata=context.invocation_metadata())
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString,
        )


async def serve(listen: str, upstream: str, typed: bool = False) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=OPTIONS)
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([PassThrough(channel, typed)])
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)
    await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--typed", action="store_true", help="parse and re-serialize ModelInfer messages")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.upstream, args.typed))


if __name__ == "__main__":
    main()
