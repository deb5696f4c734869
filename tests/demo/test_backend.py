"""The demo backend as a real process, driven by the real tritonclient (via the probe) and grpc.aio."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labelgate._proto.labelgate.v1 import demo_pb2, demo_pb2_grpc
from labelgate.demo.data import customer
from labelgate.demo.models import MAX_ROWS, sentiment_of
from tests.support.procs import free_port, labelgate_command, running
from tests.support.triton import probe_one, run_probe

CUSTOMER_OUTPUTS = [
    "customer_id",
    "segment",
    "name",
    "email",
    "risk_score",
    "ssn",
    "card_number",
    "notes",
    "account_secret",
]
IDS = [*range(12), 987654321]  # every notes variant, twice, and a large id


def expected_column(name: str, ids: list[int]) -> list:
    return [getattr(customer(i), name) for i in ids]


def assert_rows(result: dict, ids: list[int], names: list[str]) -> None:
    assert "error" not in result, result
    assert list(result["outputs"]) == names
    for name in names:
        output = result["outputs"][name]
        assert output["shape"] == [len(ids)]
        assert output["values"] == expected_column(name, ids), name


def test_customer_profile_raw_and_typed_outputs_match_the_data(demo_backend: str) -> None:
    default, raw, typed = run_probe(
        [
            {"op": "infer", "model": "customer-profile", "customer_ids": IDS, "request_id": "req-7"},
            {
                "op": "infer",
                "model": "customer-profile",
                "customer_ids": IDS,
                "outputs": CUSTOMER_OUTPUTS,
                "binary": True,
            },
            {
                "op": "infer",
                "model": "customer-profile",
                "customer_ids": IDS,
                "outputs": CUSTOMER_OUTPUTS,
                "binary": False,
            },
        ],
        url=demo_backend,
    )
    # tritonclient sends raw inputs, so by default it gets raw outputs, as from Triton.
    assert default["raw"] is True and raw["raw"] is True and typed["raw"] is False
    for result in (default, raw, typed):
        assert_rows(result, IDS, CUSTOMER_OUTPUTS)
        assert result["model_name"] == "customer-profile" and result["model_version"] == "1"
    assert default["id"] == "req-7"
    datatypes = {name: out["datatype"] for name, out in default["outputs"].items()}
    assert datatypes == {name: "FP32" if name == "risk_score" else "BYTES" for name in CUSTOMER_OUTPUTS} | {
        "customer_id": "INT64"
    }


def test_requested_outputs_are_honoured_in_their_order(demo_backend: str) -> None:
    result = probe_one(
        {
            "op": "infer",
            "model": "customer-profile",
            "customer_ids": [3, 1],
            "outputs": ["ssn", "customer_id"],
        },
        url=demo_backend,
    )
    assert_rows(result, [3, 1], ["ssn", "customer_id"])


def test_server_and_model_metadata(demo_backend: str) -> None:
    live, ready, model_ready, versioned, metadata, server = run_probe(
        [
            {"op": "is_server_live"},
            {"op": "is_server_ready"},
            {"op": "is_model_ready", "model": "customer-profile"},
            {"op": "is_model_ready", "model": "sentiment", "version": "1"},
            {"op": "get_model_metadata", "model": "customer-profile"},
            {"op": "get_server_metadata"},
        ],
        url=demo_backend,
    )
    assert live == ready == model_ready == versioned == {"value": True}
    assert metadata["value"]["name"] == "customer-profile"
    assert metadata["value"]["versions"] == ["1"]
    assert metadata["value"]["inputs"] == [{"name": "customer_ids", "datatype": "INT64", "shape": [-1]}]
    outputs = metadata["value"]["outputs"]
    assert [o["name"] for o in outputs] == CUSTOMER_OUTPUTS
    assert {o["name"]: o["datatype"] for o in outputs}["risk_score"] == "FP32"
    assert all(o["shape"] == [-1] for o in outputs)
    assert server["value"]["name"] == "labelgate-demo-backend"
    assert server["value"]["version"]


def test_unknown_model_or_version_is_not_found(demo_backend: str) -> None:
    results = run_probe(
        [
            {"op": "infer", "model": "credit-score", "customer_ids": [1]},
            {"op": "is_model_ready", "model": "credit-score"},
            {"op": "get_model_metadata", "model": "credit-score"},
            {"op": "infer", "model": "customer-profile", "model_version": "2", "customer_ids": [1]},
            {"op": "get_model_metadata", "model": "sentiment", "version": "7"},
        ],
        url=demo_backend,
    )
    assert all(r["error"]["code"] == "NOT_FOUND" for r in results), results
    assert "no model named 'credit-score'" in results[0]["error"]["message"]
    assert "customer-profile, sentiment" in results[0]["error"]["message"]
    assert "has no version '2'" in results[3]["error"]["message"]


MALFORMED = [
    (
        {"inputs": [{"name": "ids", "datatype": "INT64", "values": [1]}]},
        "model 'customer-profile' has no input 'ids'; its inputs: customer_ids (INT64 [N])",
    ),
    ({"inputs": []}, "model 'customer-profile' needs input 'customer_ids' (INT64, shape [N])"),
    (
        {"inputs": [{"name": "customer_ids", "datatype": "FP32", "values": [1.0]}]},
        "input 'customer_ids' must be INT64, got FP32",
    ),
    (
        {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [1, 2], "values": [1, 2]}]},
        "input 'customer_ids' must have shape [N], got [1, 2]",
    ),
    (
        {"inputs": [{"name": "customer_ids", "datatype": "INT64", "shape": [3], "raw_hex": "01" * 10}]},
        "input 'customer_ids' has 10 raw bytes; INT64 shape [3] needs 24 (3 x 8)",
    ),
    ({"customer_ids": [-4]}, "customer ids are non-negative; got -4"),
    ({"customer_ids": [1], "outputs": ["ssn", "salary"]}, "model 'customer-profile' has no output 'salary'"),
    ({"customer_ids": [0] * (MAX_ROWS + 1)}, f"has {MAX_ROWS + 1} elements; at most {MAX_ROWS} per call"),
]


def test_malformed_input_is_invalid_argument_with_a_clear_message(demo_backend: str) -> None:
    calls = [{"op": "infer", "model": "customer-profile", **call} for call, _ in MALFORMED]
    for result, (_, message) in zip(run_probe(calls, url=demo_backend), MALFORMED, strict=True):
        assert result.get("error", {}).get("code") == "INVALID_ARGUMENT", result
        assert message in result["error"]["message"]


def test_sentiment(demo_backend: str) -> None:
    texts = [
        "Great service, thanks!",
        "Terrible and slow.",
        "The parcel arrived on Tuesday.",
        "good but slow",
        "",
    ]
    result = probe_one({"op": "infer", "model": "sentiment", "text": texts}, url=demo_backend)
    assert result["outputs"]["label"]["values"] == ["positive", "negative", "neutral", "neutral", "neutral"]
    assert result["outputs"]["score"]["values"] == [1.0, 0.0, 0.5, 0.5, 0.5]
    assert [sentiment_of(t) for t in texts] == list(
        zip(result["outputs"]["label"]["values"], result["outputs"]["score"]["values"], strict=True)
    )


def test_stream_infer_answers_every_request_in_order(demo_backend: str) -> None:
    result = probe_one(
        {
            "op": "stream_infer",
            "requests": [
                {"model": "customer-profile", "customer_ids": [5], "outputs": ["notes"], "request_id": "a"},
                {"model": "sentiment", "customer_ids": [1], "request_id": "b"},
                {"model": "sentiment", "text": ["love it"], "request_id": "c"},
            ],
        },
        url=demo_backend,
    )
    first, bad, last = result["responses"]
    assert first["id"] == "a"
    assert first["outputs"]["notes"]["values"] == [customer(5).notes]
    assert (
        bad["error"]["message"]
        == "model 'sentiment' has no input 'customer_ids'; its inputs: text (BYTES [N])"
    )
    assert last["id"] == "c" and last["outputs"]["label"]["values"] == ["positive"]


def test_debug_metadata_reports_what_reached_the_backend(demo_backend: str) -> None:
    _, debug = run_probe(
        [
            {
                "op": "infer",
                "model": "customer-profile",
                "customer_ids": [1],
                "headers": {"authorization": "Bearer abc", "x-labelgate-subject": "spoofed"},
            },
            {"op": "infer", "model": "_debug-metadata", "headers": {"x-trace": "t1"}},
        ],
        url=demo_backend,
    )
    outputs = debug["outputs"]
    assert ["x-trace", "t1"] in [
        list(p) for p in zip(outputs["key"]["values"], outputs["value"]["values"], strict=True)
    ]
    previous = json.loads(outputs["recent"]["values"][0])
    assert previous["method"] == "ModelInfer" and previous["model"] == "customer-profile"
    assert ["authorization", "Bearer abc"] in previous["metadata"]
    assert ["x-labelgate-subject", "spoofed"] in previous["metadata"]


async def test_customer_directory_over_grpc_aio(demo_backend: str) -> None:
    async with grpc.aio.insecure_channel(demo_backend) as channel:
        directory = demo_pb2_grpc.CustomerDirectoryStub(channel)
        streamed = [
            c async for c in directory.ListCustomers(demo_pb2.ListCustomersRequest(customer_ids=[4, 5, 0]))
        ]
        assert [c.customer_id for c in streamed] == [4, 5, 0]
        for message in streamed:
            row = customer(message.customer_id)
            assert (
                message.name,
                message.ssn,
                message.card_number,
                message.notes,
                message.account_secret,
            ) == (
                row.name,
                row.ssn,
                row.card_number,
                row.notes,
                row.account_secret,
            )
        single = await directory.GetCustomer(demo_pb2.GetCustomerRequest(customer_id=9))
        assert single.email == customer(9).email and single.segment == customer(9).segment
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await directory.GetCustomer(demo_pb2.GetCustomerRequest(customer_id=-1))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "non-negative" in caught.value.details()

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    with running(
        labelgate_command("demo-backend", "--listen", f"127.0.0.1:{port}"), tmp_path / "log", port=port
    ) as proc:
        assert probe_one({"op": "is_server_live"}, url=f"127.0.0.1:{port}") == {"value": True}
        proc.signal(sig)
        assert proc.popen.wait(timeout=10) == 0, proc.output()
        assert '"event":"demo_backend_stopping"' in proc.output()


def test_bad_listen_address_and_busy_port_fail_clearly(demo_backend: str) -> None:
    for listen, message in [
        ("nonsense", "must be HOST:PORT"),
        (demo_backend, f"--listen {demo_backend}: the address is already in use"),
    ]:
        completed = subprocess.run(
            labelgate_command("demo-backend", "--listen", listen), capture_output=True, text=True, timeout=30
        )
        assert completed.returncode == 2, completed
        assert message in completed.stderr
