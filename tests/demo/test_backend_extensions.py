"""The demo backend's answers to Triton's model extensions, asked directly by tritonclient."""

from __future__ import annotations

from tests.support.triton import run_probe


def test_config_statistics_index_load_and_unload(demo_backend: str) -> None:
    (
        config,
        before,
        _,
        after,
        unloaded,
        index,
        refused_infer,
        refused_config,
        loaded,
        missing,
        ready_only,
    ) = run_probe(
        [
            {"op": "get_model_config", "model": "sentiment"},
            {"op": "get_inference_statistics", "model": "sentiment"},
            {"op": "infer", "model": "sentiment", "text": ["good", "bad"]},
            {"op": "get_inference_statistics"},
            {"op": "unload_model", "model": "sentiment"},
            {"op": "get_model_repository_index"},
            {"op": "infer", "model": "sentiment", "text": ["good"]},
            {"op": "get_model_config", "model": "sentiment"},
            {"op": "load_model", "model": "sentiment"},
            {"op": "load_model", "model": "no-such-model"},
            {"op": "get_model_repository_index"},
        ],
        url=demo_backend,
    )
    assert config["value"]["config"] == {
        "name": "sentiment",
        "platform": "labelgate-demo",
        "backend": "labelgate-demo",
        "input": [{"name": "text", "data_type": "TYPE_STRING", "dims": ["-1"]}],
        "output": [
            {"name": "label", "data_type": "TYPE_STRING", "dims": ["-1"]},
            {"name": "score", "data_type": "TYPE_FP32", "dims": ["-1"]},
        ],
        "instance_group": [{"name": "sentiment", "kind": "KIND_CPU", "count": 1}],
        "parameters": {"max_rows": {"string_value": "100000"}},
    }
    (fresh,) = before["value"]["model_stats"]
    assert (fresh["name"], fresh.get("inference_count")) == ("sentiment", None)
    stats = {s["name"]: s for s in after["value"]["model_stats"]}
    assert sorted(stats) == ["_debug-metadata", "customer-profile", "sentiment"]
    assert stats["sentiment"]["inference_count"] == "1"
    assert stats["sentiment"]["inference_stats"]["success"]["count"] == "1"
    assert "inference_count" not in stats["customer-profile"]
    assert unloaded == loaded == {"value": None}
    assert {"name": "sentiment", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in index[
        "value"
    ]["models"]
    assert refused_infer["error"]["code"] == refused_config["error"]["code"] == "NOT_FOUND"
    assert missing["error"]["code"] == "NOT_FOUND"
    assert [(m["name"], m["state"]) for m in ready_only["value"]["models"]] == [
        ("_debug-metadata", "READY"),
        ("customer-profile", "READY"),
        ("sentiment", "READY"),
    ]
