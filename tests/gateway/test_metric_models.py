"""A model gets its own ``model`` label value only when the gateway knows it independently of
the caller (review: what leaves the gateway, finding 4).

An upstream's OK was taken as proof a model exists, but Triton answers ``ModelReady`` for a
model it does not have with ``ready=false`` and status OK: any authenticated caller could
take all 64 label slots with made-up names (a person's name and birth date, say), put them in
/metrics for the life of the process and leave the real models counted as ``other``. The
names the classification catalog or the configuration (``upstreams[].models``, no glob) give
are label values; any other name is ``other``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.classify.catalog import Catalog
from labelgate.gateway.record import KnownModels, LogAndMetricsRecorder
from tests.gateway.aio import as_metadata, channel
from tests.gateway.harness import Gateway, TokenIssuer, gateway_config, start_gateway
from tests.gateway.test_metric_labels import scrape
from tests.support.procs import free_port, running, wait_until

UPSTREAM = Path(__file__).with_name("triton_like_upstream.py")
CONFIGURED = "scoring-model"  # named in upstreams[].models; not in the catalog


def _model_labels(gateway: Gateway) -> set[str]:
    return {s.labels["model"] for s in scrape(gateway) if s.name == "labelgate_call_duration_seconds_count"}


async def test_made_up_model_names_take_no_label_slot(tmp_path: Path, token_issuer: TokenIssuer) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with running([sys.executable, str(UPSTREAM), address], tmp_path / "upstream.log", port=port):
        upstreams = [{"name": "scoring", "address": address, "models": [CONFIGURED, "fraud-*"]}]
        config = gateway_config(upstream=address, engine="embedded", issuer=token_issuer, upstreams=upstreams)
        with start_gateway(config, tmp_path) as gateway:
            made_up = [f"Jane Roe DOB 1984-03-{i:02d} acct {i:04d}" for i in range(70)]
            metadata = as_metadata(token_issuer.headers("analyst"))
            async with channel(gateway.address) as opened:
                stub = pb_grpc.GRPCInferenceServiceStub(opened)
                for name in [*made_up, "fraud-by-glob", "customer-profile", CONFIGURED]:
                    reply = await stub.ModelReady(
                        pb.ModelReadyRequest(name=name), metadata=metadata, timeout=10
                    )
                    assert reply.ready == (name == "customer-profile")  # status OK for every one
            # The log line is written after the call's metrics: once it is there, so are they.
            wait_until(lambda: f'"model":"{CONFIGURED}"' in gateway.output(), 10, "the last call's log line")
            models = _model_labels(gateway)
            _, body = gateway.get("/metrics")
    assert models == {"customer-profile", CONFIGURED, "other"}, sorted(models)[:5]
    assert "Jane Roe" not in body.decode() and "fraud-by-glob" not in body.decode()


def test_known_models_follow_the_catalog_in_force_and_skip_globs() -> None:
    entry = {"path": "outputs.*", "labels": ["public"]}
    catalogs = [Catalog.from_data({"entries": [{**entry, "model": "first"}]})]
    settings: Any = SimpleNamespace(upstreams=[SimpleNamespace(models=["listed", "fraud-*", "v?", "[ab]"])])
    known = KnownModels.from_settings(settings, lambda: catalogs[-1])
    assert "listed" in known and "first" in known
    assert not [
        name for name in ("fraud-x", "fraud-*", "v1", "v?", "a", "[ab]", "second", "") if name in known
    ]
    catalogs.append(Catalog.from_data({"entries": [{**entry, "model": "second"}]}))  # a reload
    assert "second" in known and "first" not in known
    # The slot cap still bounds what the known names may take.
    recorder = LogAndMetricsRecorder(KnownModels([f"m{i}" for i in range(5)]), max_models=2)
    assert [recorder._model_label(f"m{i}") for i in range(5)] == ["m0", "m1", "other", "other", "other"]
