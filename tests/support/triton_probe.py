"""Drive a server with the real ``tritonclient.grpc`` client, in a child process.

tritonclient registers its own ``inference`` protos in protobuf's default descriptor pool,
which clash with labelgate's, so it never runs inside the pytest process: tests call
``tests.support.triton.run_probe(calls)``, which runs this script with the same Python.
This script therefore imports nothing from labelgate.

stdin: a JSON list of calls. stdout: a JSON list with one result per call, same order.

Every call is an object with ``op`` and ``url`` (HOST:PORT), and optionally ``headers``
(gRPC metadata, lowercase keys) and ``timeout`` (seconds, default 30). Ops:

``infer``
    ``model``, ``model_version`` (default ""), ``request_id`` (default ""), inputs as one of
    ``customer_ids`` (list of ints -> INT64 ``customer_ids``), ``text`` (list of str ->
    BYTES ``text``) or ``inputs`` (list of ``{name, datatype, shape?, values}``, or
    ``{name, datatype, shape, raw_hex}`` to send raw bytes as they are, past tritonclient's
    own checks); ``outputs`` (list of output names to request; absent = all);
    ``binary`` (true/false sets parameter ``binary_data`` on each requested output;
    absent sets nothing); ``parameters`` (request parameters: str, bool or int values).
    Result: ``{"id", "model_name", "model_version", "raw": bool, "parameters",
    "outputs": {name: {"datatype", "shape", "values", "parameters", "hex"?}}}``.
    Numbers are JSON numbers; BYTES elements are decoded as UTF-8 with errors="replace",
    and ``hex`` (one hex string per element) is added when an element is not valid UTF-8.
    Raw outputs are decoded by tritonclient's own ``InferResult.as_numpy``.
``stream_infer``
    ``requests``: a list of infer-like objects (no url/headers/timeout). Opens one
    ``ModelStreamInfer`` stream, sends them all, waits for as many responses.
    Result: ``{"responses": [infer result or {"error": ...}, ... in arrival order]}``.
    With ``until_final: true`` (decoupled models) it reads instead until every request has
    had its final response (``parameters["triton_final_response"]`` true, or absent) or the
    stream failed; an ``error_message`` reply counts as one request's final response, and
    nothing arriving for ``timeout`` seconds ends the reading with code ``PROBE_TIMEOUT``.
``is_server_live``, ``is_server_ready``, ``is_model_ready`` (``model``, ``version``?),
``get_server_metadata``, ``get_model_metadata`` (``model``, ``version``?)
    Result: ``{"value": bool}`` or ``{"value": <message as JSON, proto field names>}``.
``get_model_config`` (``model``, ``version``?), ``get_inference_statistics`` (``model``?,
``version``?), ``get_model_repository_index``
    Result: ``{"value": <reply as tritonclient parsed it, as JSON: proto field names, 64-bit
    integers as strings, fields at their default left out>}``.
``load_model``, ``unload_model`` (``model``)
    Result: ``{"value": null}``.

A failed call gives ``{"error": {"code": "NOT_FOUND", "message": "..."}}`` (``code`` is
the gRPC status name, or null when the server reported the error inside a stream).
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

_CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "BF16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def error_result(error: InferenceServerException) -> dict[str, Any]:
    status = error.status()
    code = status.removeprefix("StatusCode.") if status else None
    return {"error": {"code": code, "message": error.message()}}


def build_inputs(spec: dict[str, Any]) -> list[grpcclient.InferInput]:
    if "customer_ids" in spec:
        return [_input("customer_ids", "INT64", np.array(spec["customer_ids"], dtype=np.int64))]
    if "text" in spec:
        return [_input("text", "BYTES", np.array([t.encode() for t in spec["text"]], dtype=np.object_))]
    inputs = []
    for item in spec.get("inputs", []):
        if "raw_hex" in item:
            infer_input = grpcclient.InferInput(item["name"], item["shape"], item["datatype"])
            # Deliberately past tritonclient's checks: tests send malformed raw data this way.
            infer_input._raw_content = bytes.fromhex(item["raw_hex"])
            inputs.append(infer_input)
            continue
        values = item["values"]
        if item["datatype"] == "BYTES":
            array = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=triton_to_np_dtype(item["datatype"]))
        if "shape" in item:
            array = array.reshape(item["shape"])
        inputs.append(_input(item["name"], item["datatype"], array))
    return inputs


def _input(name: str, datatype: str, array: np.ndarray) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def build_outputs(spec: dict[str, Any]) -> list[grpcclient.InferRequestedOutput] | None:
    if "outputs" not in spec:
        return None
    outputs = []
    for name in spec["outputs"]:
        output = grpcclient.InferRequestedOutput(name)
        if spec.get("binary") is not None:
            # tritonclient.grpc has no binary_data option; set the parameter on the message.
            output._get_tensor().parameters["binary_data"].bool_param = bool(spec["binary"])
        outputs.append(output)
    return outputs


def parameter_value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def json_values(datatype: str, values: list[Any]) -> dict[str, Any]:
    if datatype != "BYTES":
        return {"values": [v.item() if isinstance(v, np.generic) else v for v in values]}
    result: dict[str, Any] = {"values": [bytes(v).decode("utf-8", errors="replace") for v in values]}
    try:
        for value in values:
            bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        result["hex"] = [bytes(v).hex() for v in values]
    return result


def infer_result(result: grpcclient.InferResult) -> dict[str, Any]:
    response = result.get_response()
    raw = len(response.raw_output_contents) > 0
    outputs = {}
    for output in response.outputs:
        if raw:
            values = result.as_numpy(output.name).reshape(-1).tolist()
        else:
            # tritonclient's as_numpy only reads typed BYTES; read the typed fields directly.
            values = list(getattr(output.contents, _CONTENTS_FIELDS[output.datatype]))
        outputs[output.name] = {
            "datatype": output.datatype,
            "shape": list(output.shape),
            "parameters": {k: parameter_value(v) for k, v in output.parameters.items()},
            **json_values(output.datatype, values),
        }
    return {
        "id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "raw": raw,
        "parameters": {k: parameter_value(v) for k, v in response.parameters.items()},
        "outputs": outputs,
    }


def infer_arguments(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_name": spec["model"],
        "inputs": build_inputs(spec),
        "model_version": spec.get("model_version", ""),
        "outputs": build_outputs(spec),
        "request_id": spec.get("request_id", ""),
        "parameters": spec.get("parameters"),
    }


def message_json(message: Any) -> dict[str, Any]:
    data = MessageToDict(message, preserving_proto_field_name=True)
    # JSON mapping writes int64 as strings; tensor shapes read better as numbers.
    for tensor in data.get("inputs", []) + data.get("outputs", []):
        tensor["shape"] = [int(dim) for dim in tensor.get("shape", [])]
    return data


def stream_infer(client: grpcclient.InferenceServerClient, call: dict[str, Any]) -> dict[str, Any]:
    received: queue.Queue = queue.Queue()
    client.start_stream(
        callback=lambda result, error: received.put((result, error)),
        headers=call.get("headers"),
    )
    try:
        for spec in call["requests"]:
            client.async_stream_infer(**infer_arguments(spec))
        if call.get("until_final"):
            return {"responses": _until_final(received, len(call["requests"]), call.get("timeout", 30))}
        responses = []
        for _ in call["requests"]:
            result, error = received.get(timeout=call.get("timeout", 30))
            responses.append(error_result(error) if error is not None else infer_result(result))
    finally:
        client.stop_stream()
    return {"responses": responses}


def _until_final(received: queue.Queue, pending: int, timeout: float) -> list[dict[str, Any]]:
    """Responses of a decoupled stream until ``pending`` requests each had a final one."""
    responses: list[dict[str, Any]] = []
    while pending > 0:
        try:
            result, error = received.get(timeout=timeout)
        except queue.Empty:
            responses.append({"error": {"code": "PROBE_TIMEOUT", "message": f"nothing for {timeout}s"}})
            break
        if error is not None:
            responses.append(error_result(error))
            if responses[-1]["error"]["code"] is not None:  # the stream itself failed
                break
            pending -= 1
            continue
        responses.append(infer_result(result))
        final = responses[-1]["parameters"].get("triton_final_response")
        if final is None or final:
            pending -= 1
    return responses


def _as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


# Triton's model extensions: op -> (client, call, headers, timeout) -> JSON value.
EXTENSION_OPS = {
    "get_model_config": lambda client, call, headers, timeout: _as_dict(
        client.get_model_config(
            call["model"], call.get("version", ""), headers=headers, client_timeout=timeout
        )
    ),
    "get_inference_statistics": lambda client, call, headers, timeout: _as_dict(
        client.get_inference_statistics(
            call.get("model", ""), call.get("version", ""), headers=headers, client_timeout=timeout
        )
    ),
    "get_model_repository_index": lambda client, call, headers, timeout: _as_dict(
        client.get_model_repository_index(headers=headers, client_timeout=timeout)
    ),
    "load_model": lambda client, call, headers, timeout: client.load_model(
        call["model"], headers=headers, client_timeout=timeout
    ),
    "unload_model": lambda client, call, headers, timeout: client.unload_model(
        call["model"], headers=headers, client_timeout=timeout
    ),
}


def run_call(call: dict[str, Any]) -> dict[str, Any]:
    op = call["op"]
    headers = call.get("headers")
    timeout = call.get("timeout", 30)
    client = grpcclient.InferenceServerClient(url=call["url"])
    try:
        if op == "infer":
            result = client.infer(**infer_arguments(call), headers=headers, client_timeout=timeout)
            return infer_result(result)
        if op == "stream_infer":
            return stream_infer(client, call)
        if op in ("is_server_live", "is_server_ready"):
            return {"value": getattr(client, op)(headers=headers, client_timeout=timeout)}
        if op == "is_model_ready":
            return {
                "value": client.is_model_ready(
                    call["model"], call.get("version", ""), headers=headers, client_timeout=timeout
                )
            }
        if op == "get_server_metadata":
            return {
                "value": message_json(client.get_server_metadata(headers=headers, client_timeout=timeout))
            }
        if op in EXTENSION_OPS:
            return {"value": EXTENSION_OPS[op](client, call, headers, timeout)}
        if op == "get_model_metadata":
            metadata = client.get_model_metadata(
                call["model"], call.get("version", ""), headers=headers, client_timeout=timeout
            )
            return {"value": message_json(metadata)}
        raise ValueError(f"unknown op {op!r}")
    except InferenceServerException as error:
        return error_result(error)
    finally:
        client.close()


def main() -> None:
    calls = json.load(sys.stdin)
    json.dump([run_call(call) for call in calls], sys.stdout)


if __name__ == "__main__":
    main()
