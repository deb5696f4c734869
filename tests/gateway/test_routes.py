"""Routed (non-inference) gRPC services through a real gateway and a real demo backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_tools import protoc

from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.auth import mint_dev_token
from labelgate.demo.data import customer
from labelgate.gateway.status import error_info
from tests.support.procs import REPO, free_port, labelgate_command, running

DIRECTORY = "/labelgate.v1.demo.CustomerDirectory/"


def descriptor_set(tmp_path: Path) -> Path:
    out = tmp_path / "demo.binpb"
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{REPO / 'proto'}", f"-I{include}", "--include_imports"]
    assert protoc.main([*args, f"--descriptor_set_out={out}", "labelgate/v1/demo.proto"]) == 0
    return out


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    command = labelgate_command("demo-backend", "--listen", f"127.0.0.1:{port}")
    with running(command, tmp_path_factory.mktemp("backend") / "backend.log", port=port):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def gateway_with_routes(tmp: Path, backend: str, routes: list[dict]) -> Iterator[str]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": None,
        "upstream": {"address": backend},
        "policy": {"dir": str(REPO / "rego")},
        "classification": {"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        "masking": {"hash_key": "routes-test-hash-key"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "routes": routes,
    }
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = labelgate_command("serve", "--config", str(tmp / "gateway.yaml"))
    with running(command, tmp / "gateway.log", port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def routed_gateway(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("routes")
    routes = [{"method_prefix": DIRECTORY, "descriptor_set": str(descriptor_set(tmp))}]
    with gateway_with_routes(tmp, backend, routes) as target:
        yield target


def token(sub: str, *groups: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {mint_dev_token(sub, list(groups), 300)}"),)


async def list_customers(target: str, ids: list[int], metadata: tuple) -> list[demo_pb2.Customer]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
        request = demo_pb2.ListCustomersRequest(customer_ids=ids)
        return [c async for c in stub.ListCustomers(request, metadata=metadata, timeout=10)]


def test_server_streaming_masks_every_message_by_field_options(routed_gateway: str) -> None:
    ids = [1, 2, 4]
    received = asyncio.run(list_customers(routed_gateway, ids, token("ann", "analysts")))
    assert [c.customer_id for c in received] == ids
    for got in received:
        row = customer(got.customer_id)
        assert got.name == row.name  # internal: analysts see it
        assert got.ssn == "*" * (len(row.ssn) - 4) + row.ssn[-4:]  # confidential: partial
        assert got.card_number.endswith(row.card_number[-4:]) and row.card_number not in got.card_number
        assert got.account_secret == ""  # restricted: null
        assert row.account_secret not in got.SerializeToString().decode("utf-8", "replace")


def test_unary_method_is_classified_for_a_caller_without_groups(routed_gateway: str) -> None:
    async def get() -> demo_pb2.Customer:
        async with grpc.aio.insecure_channel(routed_gateway) as channel:
            stub = demo_pb2_grpc.CustomerDirectoryStub(channel)
            request = demo_pb2.GetCustomerRequest(customer_id=7)
            return await stub.GetCustomer(request, metadata=token("alice"), timeout=10)

    got = asyncio.run(get())
    row = customer(7)
    assert got.customer_id == 7 and got.segment == row.segment  # public
    assert got.name == "[REDACTED]" and got.ssn == "[REDACTED]"
    assert got.account_secret == ""


def test_opaque_method_is_denied_unless_policy_allows_it(tmp_path: Path, backend: str) -> None:
    """Without descriptors nothing can be classified: the default policy denies the method."""
    with (
        gateway_with_routes(tmp_path, backend, [{"method_prefix": DIRECTORY}]) as target,
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        asyncio.run(list_customers(target, [1], token("ann", "analysts")))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(caught.value)
    assert info is not None and info.reason == "POLICY_DENIED"
    assert "opaque" in (caught.value.details() or "") or "method" in (caught.value.details() or "")


def test_unauthenticated_routed_call_is_refused(routed_gateway: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(list_customers(routed_gateway, [1], ()))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
