"""The floor of the data path: a bare ``grpc.aio`` pass-through proxy, bytes in, bytes out.

``python -m bench.bare_proxy --listen HOST:PORT --upstream HOST:PORT``. No pipeline, no
parsing: every unary call is forwarded as raw bytes with generic handlers. What the gateway
spends beyond what this spends is the gateway's own work (issue 12's floor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import grpc

MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]


class PassThrough(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
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


async def serve(listen: str, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream, options=OPTIONS)
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([PassThrough(channel)])
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
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
