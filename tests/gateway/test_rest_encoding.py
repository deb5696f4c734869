"""REST bodies in a Content-Encoding (gzip, deflate) and the routes the binding does not serve
(shared memory, unknown paths and methods), through a real gateway over loopback."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway import test_rest
from tests.gateway.test_rest import IDS, MAX_BODY, calls_logged, json_request, token

# The same gateway over loopback as test_rest's (its fixtures, shared by name).
backend = test_rest.backend
rest_url = test_rest.rest_url

INFER = "/v2/models/customer-profile/infer"


def triton_infer(rest_url: str, compression: str | None) -> dict[str, list[Any]]:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(rest_url.removeprefix("http://"))
    infer_input = triton.InferInput("customer_ids", [len(IDS)], "INT64")
    infer_input.set_data_from_numpy(np.array(IDS, dtype=np.int64))
    result = client.infer(
        "customer-profile",
        [infer_input],
        headers=token("ana", "analysts"),
        request_compression_algorithm=compression,
    )
    return {name: result.as_numpy(name).tolist() for name in ("customer_id", "ssn", "account_secret")}


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
async def test_tritonclient_compressed_requests_are_masked_like_plain_ones(
    rest_url: str, compression: str
) -> None:
    plain = await asyncio.to_thread(triton_infer, rest_url, None)
    compressed = await asyncio.to_thread(triton_infer, rest_url, compression)
    assert compressed == plain
    assert plain["customer_id"] == IDS
    assert plain["account_secret"] == [b"", b"", b""], "still masked"


async def test_curl_style_gzip_json_is_read(rest_url: str) -> None:
    import json

    body = gzip.compress(json.dumps(json_request(IDS)).encode())
    headers = {**token("ana", "analysts"), "content-encoding": "gzip", "content-type": "application/json"}
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{rest_url}{INFER}", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["customer_id"]["data"] == IDS
    assert outputs["account_secret"]["data"] == ["", "", ""]


async def test_a_gzip_bomb_is_refused_413_and_recorded(
    rest_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bomb = gzip.compress(b"{" + b" " * (64 * MAX_BODY) + b"}", 9)
    assert len(bomb) < MAX_BODY // 4
    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                f"{rest_url}{INFER}",
                content=bomb,
                headers={**token("ana", "analysts"), "content-encoding": "gzip"},
            )
    assert (reply.status_code, reply.json()["reason"]) == (413, "REQUEST_TOO_LARGE"), reply.text
    assert calls_logged(caplog) == [("REQUEST_TOO_LARGE", "deny")]


@pytest.mark.parametrize(
    ("encoding", "body", "expected"),
    [
        ("br", b'{"inputs": []}', (415, "REST_ENCODING_UNSUPPORTED")),
        ("gzip, br", b'{"inputs": []}', (415, "REST_ENCODING_UNSUPPORTED")),
        ("gzip, gzip", gzip.compress(gzip.compress(b"{}")), (415, "REST_ENCODING_UNSUPPORTED")),
        ("compress", b"{}", (415, "REST_ENCODING_UNSUPPORTED")),
        ("gzip", b'{"inputs": []}', (400, "REST_ENCODING_INVALID")),
        ("gzip", gzip.compress(b"{}")[:-4], (400, "REST_ENCODING_INVALID")),
        ("gzip", gzip.compress(b"{}") + b"trailing", (400, "REST_ENCODING_INVALID")),
        ("deflate", zlib.compress(b"{}")[2:], (400, "REST_ENCODING_INVALID")),  # raw deflate
    ],
    ids=["br", "list", "twice", "compress", "not-gzip", "truncated", "trailing", "raw-deflate"],
)
async def test_encodings_the_gateway_cannot_read_are_refused(
    rest_url: str, encoding: str, body: bytes, expected: tuple[int, str]
) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{rest_url}{INFER}",
            content=body,
            headers={**token("ana", "analysts"), "content-encoding": encoding},
        )
        anonymous = await client.post(
            f"{rest_url}{INFER}", content=body, headers={"content-encoding": encoding}
        )
    assert (reply.status_code, reply.json()["reason"]) == expected, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert (anonymous.status_code, anonymous.json()["reason"]) == (401, "NO_CREDENTIALS"), "auth first"


async def test_identity_is_no_encoding(rest_url: str) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{rest_url}{INFER}",
            json=json_request(IDS),
            headers={**token("ana", "analysts"), "content-encoding": "identity"},
        )
    assert reply.status_code == 200, reply.text


async def test_tritonclient_shared_memory_calls_are_refused_like_grpc(
    rest_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    def calls() -> list[tuple[str | None, str]]:
        client = triton.InferenceServerClient(rest_url.removeprefix("http://"))

        def h() -> dict[str, str]:  # a new dict each call: tritonclient mutates it
            return token("ana", "analysts")

        attempts: list[Callable[[], object]] = [
            lambda: client.get_system_shared_memory_status(headers=h()),
            lambda: client.get_system_shared_memory_status("r", headers=h()),
            lambda: client.register_system_shared_memory("r", "/k", 64, headers=h()),
            lambda: client.unregister_system_shared_memory(headers=h()),
            lambda: client.unregister_system_shared_memory("r", headers=h()),
            lambda: client.get_cuda_shared_memory_status(headers=h()),
            lambda: client.get_cuda_shared_memory_status("r", headers=h()),
            lambda: client.register_cuda_shared_memory("r", b"\0" * 64, 0, 64, headers=h()),
            lambda: client.unregister_cuda_shared_memory(headers=h()),
            lambda: client.unregister_cuda_shared_memory("r", headers=h()),
        ]
        refused = []
        for attempt in attempts:
            with pytest.raises(InferenceServerException) as raised:
                attempt()
            refused.append((raised.value.status(), raised.value.message()))
        return refused

    with caplog.at_level(logging.INFO, logger="labelgate.decision"):
        refused = await asyncio.to_thread(calls)
    assert len(refused) == 10
    for status, message in refused:
        assert status == "400" and "shared memory" in message, (status, message)
    assert calls_logged(caplog) == [("SHARED_MEMORY_UNSUPPORTED", "deny")] * 10

    async with httpx.AsyncClient() as client:
        raw = await client.post(f"{rest_url}/v2/systemsharedmemory/region/r/register", content=b"{}")
    assert (raw.status_code, raw.json()["reason"]) == (401, "NO_CREDENTIALS"), "authenticated first"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v2/trace/setting", (404, "REST_ROUTE_UNKNOWN")),
        ("POST", "/v2/logging", (404, "REST_ROUTE_UNKNOWN")),
        ("GET", "/nothing-here", (404, "REST_ROUTE_UNKNOWN")),
        ("GET", INFER, (405, "REST_METHOD_NOT_ALLOWED")),
        ("DELETE", "/v2/health/live", (405, "REST_METHOD_NOT_ALLOWED")),
        ("GET", "/v2/systemsharedmemory/region/r/register", (405, "REST_METHOD_NOT_ALLOWED")),
    ],
)
async def test_unknown_routes_and_methods_are_the_bindings_json_errors(
    rest_url: str, method: str, path: str, expected: tuple[int, str]
) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.request(method, f"{rest_url}{path}", headers=token("ana", "analysts"))
    assert reply.headers["content-type"] == "application/json", reply.text
    assert (reply.status_code, reply.json()["reason"]) == expected
    if expected[0] == 405:
        assert reply.headers["allow"]
