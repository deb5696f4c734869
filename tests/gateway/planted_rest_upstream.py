"""A programmable, misbehaving KServe v2 REST upstream, for the REST leak fuzzer.

``python planted_rest_upstream.py --listen HOST:PORT [--cert FILE --key FILE]`` serves the
binding's routes (infer, model metadata and readiness, server metadata, health) with
Starlette under uvicorn, and answers each as the caller's plant says, so it can put any bytes
in the status, the headers and the body. The plant travels in the request: the JSON body's
``parameters.plant`` (what a caller's request parameter becomes), else the ``x-request-id``
header (which the gateway forwards by default), both base64 of JSON::

    {"status": 200,                          # the HTTP status
     "headers": [[key, value], ...],         # response headers
     "json": ANY,                            # the body, as JSON
     "text": str,                            # or the body as it is (anything, not JSON)
     "binary_hex": hex,                      # appended after the JSON (Triton's extension);
     "header_length": str,                   # Inference-Header-Content-Length (default: the
                                             # JSON's length when binary_hex is given)
     "pad": {"value": str, "bytes": n}}      # the value repeated to n more bytes of body

Without a plant: infer answers one BYTES output ``text`` holding ``ok`` (model ``_echo``:
output ``headers``, one ``key: value`` element per request header); the metadata and health
routes answer as a well-behaved server. Nothing here imports labelgate.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def plant_of(request: Request, body: bytes) -> dict[str, Any] | None:
    encoded = None
    if body:
        try:
            document = json.loads(body)
            encoded = document.get("parameters", {}).get("plant")
        except (ValueError, AttributeError):
            encoded = None
    encoded = encoded or request.headers.get("x-request-id")
    if not encoded:
        return None
    try:
        plant = json.loads(base64.b64decode(encoded))
    except ValueError:
        return None
    return plant if isinstance(plant, dict) else None


def planted(plant: dict[str, Any]) -> Response:
    headers: list[tuple[bytes, bytes]] = [
        (str(k).lower().encode(), str(v).encode()) for k, v in plant.get("headers", [])
    ]
    if "text" in plant:
        content = str(plant["text"]).encode("utf-8", "surrogatepass")
    else:
        content = json.dumps(plant.get("json", {})).encode()
    length = len(content)
    if "binary_hex" in plant:
        content += bytes.fromhex(plant["binary_hex"])
    if "binary_hex" in plant or "header_length" in plant:
        headers.append((b"inference-header-content-length", str(plant.get("header_length", length)).encode()))
    pad = plant.get("pad")
    if pad:
        unit = str(pad["value"]).encode() + b" "
        content += unit * (int(pad["bytes"]) // len(unit) + 1)
    response = Response(content, status_code=int(plant.get("status", 200)), media_type="application/json")
    response.raw_headers.extend(headers)
    return response


async def infer(request: Request) -> Response:
    body = await request.body()
    plant = plant_of(request, body)
    if plant is not None:
        return planted(plant)
    model = request.path_params["model"]
    if model == "_echo":  # what reached this upstream: one "key: value" element per header
        lines = [f"{key}: {value}" for key, value in request.headers.items()]
        output = {"name": "headers", "datatype": "BYTES", "shape": [len(lines)], "data": lines}
        return JSONResponse({"model_name": model, "outputs": [output]})
    output = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}
    return JSONResponse({"model_name": model, "outputs": [output]})


def answer(default: Any) -> Any:
    async def route(request: Request) -> Response:
        plant = plant_of(request, b"")
        if plant is not None:
            return planted(plant)
        value = default(request) if callable(default) else default
        return JSONResponse(value)

    return route


def app() -> Starlette:
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    metadata = answer(lambda r: {"name": r.path_params["model"], "versions": [], "platform": "planted"})
    routes = [
        Route("/v2", answer({"name": "planted", "version": "1", "extensions": []})),
        Route("/v2/health/live", answer({"live": True})),
        Route("/v2/health/ready", answer({"ready": True})),
    ]
    for path in (model, versioned):
        routes += [
            Route(path, metadata),
            Route(f"{path}/ready", answer({"ready": True})),
            Route(f"{path}/infer", infer, methods=["POST"]),
        ]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(
        app(),
        host=host,
        port=int(port),
        log_level="warning",
        access_log=False,
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
    )


if __name__ == "__main__":
    main()
