"""What a discovering upstream's index can make the gateway spend (``gateway/discovery.py``).

Found by review: ``Discovery.refresh`` parsed the whole reply (up to 16 MiB) and walked every
entry in Python before it counted the models; duplicates collapse in the set, so an index of
1.29 million entries all named ``ab`` passed as one model and held the event loop ~0.5 s on
every refresh. An upstream on loopback (a grpc.aio server in this process) answers the index
with what each test sets.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.config import GatewaySettings
from labelgate.gateway.discovery import INDEX_METHOD, MAX_MODELS, Discovery
from labelgate.gateway.upstream import Upstream
from tests.support.procs import REPO

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
AUTH = {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}}
Index = ext.RepositoryIndexResponse


def entries(name: str, count: int) -> bytes:
    """An index of ``count`` READY entries all named ``name``, as its wire bytes."""
    entry = Index.ModelIndex(name=name, state="READY").SerializeToString()
    return (b"\x0a" + bytes([len(entry)]) + entry) * count


class IndexUpstream:
    """Answers ``RepositoryIndex`` with ``reply`` (wire bytes), whatever it is asked."""

    def __init__(self) -> None:
        self.reply = Index(models=[Index.ModelIndex(name="sentiment", state="READY")]).SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:
        async def index(_: bytes, context: Any) -> bytes:
            return self.reply

        service, method = INDEX_METHOD.lstrip("/").split("/")
        return grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(index)}
        )


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[IndexUpstream, Discovery]]:
    served = IndexUpstream()
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 32 << 20)])
    server.add_generic_rpc_handlers([served.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    edge = Upstream(GatewaySettings(auth=AUTH).upstream, 32 << 20, f"127.0.0.1:{port}", name="finder")
    try:
        yield served, Discovery(edge)
    finally:
        await edge.close()
        await server.stop(0)


def refused_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        getattr(record, "reason", "")
        for record in caplog.records
        if record.getMessage() == "model discovery failed"
    ]


async def test_an_index_of_a_million_duplicate_entries_is_refused_before_it_is_walked(
    upstream: tuple[IndexUpstream, Discovery], caplog: pytest.LogCaptureFixture
) -> None:
    served, discovery = upstream
    assert await discovery.refresh()
    assert discovery.names() == {"sentiment"}
    served.reply = entries("ab", (16 * 1024 * 1024 - 1024) // 13)  # 1.29 million, as the review's
    with caplog.at_level(logging.WARNING):
        assert not await discovery.refresh()
    assert refused_reasons(caplog) == ["DISCOVERY_TOO_MANY_MODELS"]
    assert discovery.names() == {"sentiment"}, "the last good list stands"


async def test_more_entries_than_models_allowed_are_refused_even_when_they_name_one_model(
    upstream: tuple[IndexUpstream, Discovery], caplog: pytest.LogCaptureFixture
) -> None:
    """Small enough in bytes to be parsed: counted before any entry is read."""
    served, discovery = upstream
    assert await discovery.refresh()
    served.reply = entries("ab", MAX_MODELS + 1)
    with caplog.at_level(logging.WARNING):
        assert not await discovery.refresh()
    assert refused_reasons(caplog) == ["DISCOVERY_TOO_MANY_MODELS"]
    assert discovery.names() == {"sentiment"}


async def test_an_index_of_as_many_entries_as_allowed_is_read(
    upstream: tuple[IndexUpstream, Discovery],
) -> None:
    served, discovery = upstream
    served.reply = Index(
        models=[
            Index.ModelIndex(name=f"model-{i:05d}", version="1", state="READY") for i in range(MAX_MODELS)
        ]
    ).SerializeToString()
    assert await discovery.refresh()
    assert len(discovery.names()) == MAX_MODELS


async def test_an_index_that_does_not_parse_is_a_failed_refresh(
    upstream: tuple[IndexUpstream, Discovery], caplog: pytest.LogCaptureFixture
) -> None:
    served, discovery = upstream
    assert await discovery.refresh()
    served.reply = b"\xff\xff\xff"
    with caplog.at_level(logging.WARNING):
        assert not await discovery.refresh()
    assert refused_reasons(caplog) == ["UPSTREAM_MALFORMED"]
    assert discovery.names() == {"sentiment"}
