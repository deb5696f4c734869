"""A programmable, misbehaving Open Inference Protocol upstream, for the release tests and the
leak fuzzer.

``python planted_upstream.py --listen HOST:PORT`` serves ``ModelInfer`` and
``ModelStreamInfer`` through generic handlers with identity (de)serializers, so it can put
any bytes on the wire. The caller tells it what to send through the request itself: request
parameter ``plant`` (a string: JSON, or base64 of JSON, see ``plant_parameter``), which the
gateway forwards upstream unchanged. Base64 keeps the planted values out of the request's
own bytes, so finding one in a log proves it came from the reply.

The plant of a ``ModelInfer`` request::

    {"reply": REPLY,                     # the ModelInferResponse to send (default: see below)
     "error": ERROR,                     # instead of a reply: end the call with this status
     "initial_metadata": [[key, value], ...],
     "trailing_metadata": [[key, value], ...]}

The plant of a ``ModelStreamInfer`` request (each request on a stream carries its own)::

    {"stream": [STREAM_REPLY, ...],      # sent, in order, after the request arrived
     "error": ERROR,                     # then end the whole stream with this status
     "end": true,                        # then end the stream (OK) without waiting for more
     "initial_metadata": [...]}          # sent before the first reply (first request only)

    STREAM_REPLY = {"reply": REPLY, "error_message": str, "final": bool,
                    "after_requests": n,   # wait until n requests arrived on the stream
                    "unknown": [UNKNOWN, ...]}

Replies of a stream go out one at a time in the order the requests arrived, so a reply with
``after_requests`` holds back every later one: replies interleave without any timing.
``final`` sets ``infer_response.parameters["triton_final_response"]`` (decoupled models).

``REPLY`` (every key optional)::

    {"id": str | {"request": n},         # default: the request's id; {"request": n}: the id of
                                         # the n-th request on this stream (0-based)
     "model_name": str, "model_version": str,   # default: the request's
     "parameters": {key: PARAM},
     "raw": bool,                        # outputs in raw_output_contents (default) or typed
     "outputs": [OUTPUT, ...],           # default: one BYTES output "text" holding "ok"
     "extra_raw_hex": [hex, ...],        # more raw_output_contents entries than outputs
     "unknown": [UNKNOWN, ...]}          # unknown fields appended to the message

    OUTPUT = {"name", "datatype", "shape" (default [len(values)]),
              "values": [...],           # BYTES: str (UTF-8) or {"hex": ...}; else numbers
              "raw_hex": hex,            # this output's raw entry exactly (raw replies)
              "contents": {field: [values]},   # typed contents fields set as given
              "contents_unknown": [UNKNOWN, ...],
              "parameters": {key: PARAM}, "unknown": [UNKNOWN, ...],
              "copies": n}               # n outputs named name0..name{n-1}

    PARAM   = str | bool | int | float | {"string"|"bool"|"int64"|"uint64"|"double": value,
                                          "unknown": [UNKNOWN, ...]}
    UNKNOWN = {"field": number, "wire": "bytes"|"fixed64"|"fixed32"|"varint", "value": str | int}
    ERROR   = {"code": "INVALID_ARGUMENT", "message": str,
               "details": [{"type": "ErrorInfo", "reason", "domain", "metadata"}
                           | {"type": "DebugInfo", "detail": str}],
               "trailing_metadata": [[key, value], ...]}

Without a plant, a request gets the default reply. ``ModelInfer`` on model
``_planted-report`` (called directly, not through a gateway) answers with parameter
``events``: JSON, one entry per earlier request ``{"method", "id", "model_name",
"parameters"}`` (parameter names only), newest last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import struct
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from labelgate._proto.inference import open_inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
PLANT = "plant"
REPORT_MODEL = "_planted-report"
MAX_EVENTS = 2000

# --- building plants (used by the tests) -----------------------------------------------------


def plant_parameter(spec: dict[str, Any]) -> str:
    """The value of request parameter ``plant``: base64 of the JSON spec."""
    return base64.b64encode(json.dumps(spec).encode()).decode("ascii")


def plant_request(
    spec: dict[str, Any] | None,
    *,
    model: str,
    request_id: str = "",
    model_version: str = "",
    outputs: Iterable[str] = (),
    text: str = "hello",
) -> pb.ModelInferRequest:
    """A ``ModelInferRequest`` with one BYTES input ``text`` and the plant as a parameter."""
    request = pb.ModelInferRequest(model_name=model, id=request_id, model_version=model_version)
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(text.encode())) + text.encode())
    if spec is not None:
        request.parameters[PLANT].string_param = plant_parameter(spec)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def unknown(field: int, value: str | int, wire: str = "bytes") -> dict[str, Any]:
    return {"field": field, "wire": wire, "value": value}


# --- wire encoding ------------------------------------------------------------------------------


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def unknown_bytes(specs: Iterable[dict[str, Any]] | None) -> bytes:
    out = b""
    for spec in specs or ():
        number, wire, value = spec["field"], spec.get("wire", "bytes"), spec["value"]
        data = value.encode() if isinstance(value, str) else b""
        if wire == "bytes":
            out += length_delimited(number, data)
        elif wire == "fixed64":
            out += varint(number << 3 | 1) + (data or struct.pack("<q", value)).ljust(8, b"\0")[:8]
        elif wire == "fixed32":
            out += varint(number << 3 | 5) + (data or struct.pack("<i", value)).ljust(4, b"\0")[:4]
        elif wire == "varint":
            out += varint(number << 3) + varint(int(value))
        else:
            raise ValueError(f"unknown wire type {wire!r}")
    return out


def parameter_bytes(value: Any) -> bytes:
    extra = b""
    if isinstance(value, dict):
        extra = unknown_bytes(value.get("unknown"))
        kind, raw = next((k, v) for k, v in value.items() if k != "unknown")
    elif isinstance(value, bool):
        kind, raw = "bool", value
    elif isinstance(value, int):
        kind, raw = "int64", value
    elif isinstance(value, float):
        kind, raw = "double", value
    else:
        kind, raw = "string", str(value)
    return pb.InferParameter(**{f"{kind}_param": raw}).SerializeToString() + extra


def parameters_bytes(number: int, parameters: dict[str, Any] | None) -> bytes:
    """Map entries (``map<string, InferParameter>`` with field number ``number``)."""
    return b"".join(
        length_delimited(number, length_delimited(1, key.encode()) + length_delimited(2, parameter_bytes(v)))
        for key, v in (parameters or {}).items()
    )


_FORMATS = {
    "BOOL": "?",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP32": "f",
    "FP64": "d",
}
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def element_bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    return value.encode() if isinstance(value, str) else bytes(value)


def raw_of(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(e)) + e for e in map(element_bytes, values))
    return b"".join(struct.pack("<" + _FORMATS[datatype], v) for v in values)


def contents_bytes(output: dict[str, Any], typed: bool) -> bytes:
    contents = pb.InferTensorContents()
    datatype = output.get("datatype", "BYTES")
    if typed and "values" in output and datatype in _CONTENTS:
        values = output["values"]
        field = _CONTENTS[datatype]
        getattr(contents, field).extend([element_bytes(v) for v in values] if datatype == "BYTES" else values)
    for field, values in (output.get("contents") or {}).items():
        getattr(contents, field).extend(
            [element_bytes(v) for v in values] if field == "bytes_contents" else values
        )
    data = contents.SerializeToString() + unknown_bytes(output.get("contents_unknown"))
    return data


def expand_outputs(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    expanded = []
    for output in outputs:
        copies = output.get("copies")
        if copies is None:
            expanded.append(output)
        else:
            base = {k: v for k, v in output.items() if k != "copies"}
            expanded += [{**base, "name": f"{output['name']}{i}"} for i in range(copies)]
    return expanded


DEFAULT_OUTPUTS = [{"name": "text", "datatype": "BYTES", "values": ["ok"]}]


def response_bytes(spec: dict[str, Any], request: pb.ModelInferRequest, stream_ids: list[str]) -> bytes:
    """A serialized ``ModelInferResponse`` built from a REPLY spec (module docstring)."""
    reply_id = spec.get("id", request.id)
    if isinstance(reply_id, dict):
        index = reply_id["request"]
        reply_id = stream_ids[index] if index < len(stream_ids) else ""
    head = pb.ModelInferResponse(
        model_name=spec.get("model_name", request.model_name),
        model_version=spec.get("model_version", request.model_version),
        id=reply_id,
    ).SerializeToString()
    raw = spec.get("raw", True)
    outputs = expand_outputs(spec.get("outputs", DEFAULT_OUTPUTS))
    body = parameters_bytes(4, spec.get("parameters"))
    raws = []
    for output in outputs:
        datatype = output.get("datatype", "BYTES")
        values = output.get("values", [])
        shape = output.get("shape", [len(values)])
        tensor = pb.ModelInferResponse.InferOutputTensor(name=output["name"], datatype=datatype, shape=shape)
        data = tensor.SerializeToString() + parameters_bytes(4, output.get("parameters"))
        contents = contents_bytes(output, typed=not raw)
        if contents:
            data += length_delimited(5, contents)
        data += unknown_bytes(output.get("unknown"))
        body += length_delimited(5, data)
        if raw:
            raws.append(bytes.fromhex(output["raw_hex"]) if "raw_hex" in output else raw_of(datatype, values))
    raws += [bytes.fromhex(extra) for extra in spec.get("extra_raw_hex", [])]
    body += b"".join(length_delimited(6, entry) for entry in raws)
    return head + body + unknown_bytes(spec.get("unknown"))


def stream_reply_bytes(spec: dict[str, Any], request: pb.ModelInferRequest, stream_ids: list[str]) -> bytes:
    reply = dict(spec.get("reply", {}))
    if spec.get("final") is not None:
        reply["parameters"] = {**reply.get("parameters", {}), "triton_final_response": bool(spec["final"])}
    if "outputs" not in reply and "reply" not in spec:
        reply["outputs"] = [] if spec.get("error_message") else DEFAULT_OUTPUTS
    head = pb.ModelStreamInferResponse(error_message=spec.get("error_message", "")).SerializeToString()
    return (
        head
        + length_delimited(2, response_bytes(reply, request, stream_ids))
        + unknown_bytes(spec.get("unknown"))
    )


def status_trailers(error: dict[str, Any]) -> tuple[grpc.StatusCode, str, tuple[tuple[str, Any], ...]]:
    code = grpc.StatusCode[error.get("code", "INTERNAL")]
    details = []
    for item in error.get("details", []):
        if item.get("type") == "DebugInfo":
            message: Any = error_details_pb2.DebugInfo(detail=item.get("detail", ""))
        else:
            message = error_details_pb2.ErrorInfo(
                reason=item.get("reason", ""),
                domain=item.get("domain", ""),
                metadata=item.get("metadata", {}),
            )
        packed = any_pb2.Any()
        packed.Pack(message)
        details.append(packed)
    trailers: list[tuple[str, Any]] = [tuple(pair) for pair in error.get("trailing_metadata", [])]
    if details:
        status = status_pb2.Status(code=code.value[0], message=error.get("message", ""), details=details)
        trailers.append(("grpc-status-details-bin", status.SerializeToString()))
    return code, error.get("message", ""), tuple(trailers)


def metadata_pairs(pairs: Iterable[Iterable[Any]] | None) -> tuple[tuple[str, Any], ...]:
    return tuple((key, value.encode() if key.endswith("-bin") else value) for key, value in pairs or ())


def plant_of(request: pb.ModelInferRequest) -> dict[str, Any] | None:
    if PLANT not in request.parameters:
        return None
    text = request.parameters[PLANT].string_param
    return json.loads(text if text.lstrip().startswith("{") else base64.b64decode(text))


# --- the server -------------------------------------------------------------------------------


class Upstream:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def note(self, method: str, request: pb.ModelInferRequest) -> None:
        self.events.append(
            {
                "method": method,
                "id": request.id,
                "model_name": request.model_name,
                "parameters": sorted(request.parameters),
            }
        )
        del self.events[:-MAX_EVENTS]

    async def model_infer(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = pb.ModelInferRequest.FromString(data)
        if request.model_name == REPORT_MODEL:
            report = pb.ModelInferResponse(model_name=REPORT_MODEL, id=request.id)
            report.parameters["events"].string_param = json.dumps(self.events)
            return report.SerializeToString()
        self.note("ModelInfer", request)
        plant = plant_of(request) or {}
        if plant.get("initial_metadata"):
            await context.send_initial_metadata(metadata_pairs(plant["initial_metadata"]))
        trailing = metadata_pairs(plant.get("trailing_metadata"))
        if "error" in plant:
            code, message, trailers = status_trailers(plant["error"])
            await context.abort(code, message, trailing_metadata=trailing + trailers)
        if trailing:
            context.set_trailing_metadata(trailing)
        return response_bytes(plant.get("reply", {}), request, [])

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        arrived: list[pb.ModelInferRequest] = []
        changed = asyncio.Condition()
        work: asyncio.Queue[tuple[str, Any, pb.ModelInferRequest | None]] = asyncio.Queue()
        input_done = False

        async def read() -> None:
            nonlocal input_done
            try:
                async for data in requests:
                    request = pb.ModelInferRequest.FromString(data)
                    self.note("ModelStreamInfer", request)
                    first = not arrived
                    async with changed:  # before its replies are queued: they may name it
                        arrived.append(request)
                        changed.notify_all()
                    plant = plant_of(request)
                    if plant is None:
                        await work.put(("reply", {}, request))
                        continue
                    if plant.get("initial_metadata") and first:
                        await work.put(("initial", plant["initial_metadata"], request))
                    for spec in plant.get("stream", []):
                        await work.put(("reply", spec, request))
                    if "error" in plant:
                        await work.put(("error", plant["error"], request))
                    if plant.get("end"):
                        await work.put(("end", None, request))
            finally:
                async with changed:
                    input_done = True
                    changed.notify_all()
                await work.put(("done", None, None))

        reader = asyncio.create_task(read())
        try:
            while True:
                kind, spec, request = await work.get()
                if kind == "done":
                    return
                if kind == "initial":
                    await context.send_initial_metadata(metadata_pairs(spec))
                elif kind == "error":
                    code, message, trailers = status_trailers(spec)
                    await context.abort(code, message, trailing_metadata=trailers)
                elif kind == "end":
                    return
                else:
                    wanted = spec.get("after_requests", 0)
                    async with changed:
                        await changed.wait_for(lambda: len(arrived) >= wanted or input_done)  # noqa: B023
                    yield stream_reply_bytes(spec, request, [r.id for r in arrived])
        finally:
            reader.cancel()


async def serve(listen: str) -> None:
    upstream = Upstream()
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    )
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(upstream.model_infer),  # bytes in, bytes out
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(upstream.model_stream_infer),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", required=True)
    asyncio.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
