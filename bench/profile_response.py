"""Per-call CPU cost of the gateway's response path, stage by stage.

    .venv/bin/python -m bench.profile_response [--rows 1,100,1000] [--json]

The stages are those of ``Pipeline.release_inference``: ``decode`` (``decode_outputs``),
``classify`` (``backend_labels`` + ``Classifier.classify_response``), ``mask``
(``apply_masks``) and ``encode`` (``encode_outputs``). The response is the demo backend's
own ``customer-profile`` answer for customers ``0..rows-1`` (built in process by
``InferenceService.infer``, raw outputs, as tritonclient asks for them), and the masks are
the real policy's decision for an ``analysts`` caller, asked once of the embedded engine
on ``rego/``: so the work is what the gateway does on that call, not a stand-in. A decoded
tensor builds its values when first read (``oip.tensor.Tensor``), so each run of
``classify`` and ``mask`` gets freshly decoded tensors (``mask`` after an untimed
classification of them, as in a call): the stage that first reads them pays for that.

Times are CPU time of this thread (``time.thread_time``), medians over ``repeats`` runs
after a warm-up, the stages taking turns, so other work on a shared machine inflates them
less (it still does: a VM's CPU time includes time stolen by its neighbours; ``min_us``
is the steadier floor). Nothing here asserts on them.

Run from the command line, the process first sets its heap up as the gateway does at start
(``gateway.heap.prepare_heap``: startup's objects out of the collector's sight, a large reply's
memory kept mapped between calls); without that a 10,000-row call spends about a third of its
decode and over half its encode faulting pages in. ``--default-heap`` measures without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify.catalog import Catalog
from labelgate.classify.classifier import Classifier, backend_labels
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.fields import Classification, to_policy_fields
from labelgate.demo.backend import CallLog, InferenceService
from labelgate.demo.models import CUSTOMER_PROFILE
from labelgate.enforce import apply_masks
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor
from tests.support.procs import REPO

POLICY_DIR = REPO / "rego"
CATALOG_FILE = POLICY_DIR / "labelgate" / "catalog" / "data.json"
MODEL = CUSTOMER_PROFILE.name
HASH_KEY = b"profile-response-hash-key-32byte"
PERSONA = {"id": "ana@example.com", "groups": ["analysts"], "auth": "jwt"}
STAGES = ("decode", "classify", "mask", "encode")


def customer_response(rows: int, raw: bool = True) -> pb.ModelInferResponse:
    """The demo backend's answer to a ``customer-profile`` call for customers ``0..rows-1``."""
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[rows])
    request.parameters["binary_data_output"].bool_param = raw
    oip.encode_inputs(request, [Tensor("customer_ids", "INT64", [rows], list(range(rows)))], raw=True)
    return InferenceService({MODEL: CUSTOMER_PROFILE}, CallLog()).infer(request)


def analyst_masks(
    classification: Classification, policy_dir: Path = POLICY_DIR, model: str = MODEL
) -> tuple[Any, ...]:
    """The masks the real policy applies for an ``analysts`` caller on these fields of ``model``."""
    from labelgate.policy.contract import build_input
    from labelgate.policy.embedded import EmbeddedEngine

    policy_input = build_input(
        phase="response",
        subject=PERSONA,
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": model,
            "requested_outputs": [],
            "model_version": "1",
            "request_id": "profile-response",
        },
        fields=to_policy_fields(classification.fields),
        approval=None,
        time_ns=time.time_ns(),
    )

    async def decide() -> Any:
        engine = EmbeddedEngine(policy_dir, watch_interval=None)
        await engine.start()
        try:
            return await engine.decide(policy_input)
        finally:
            await engine.close()

    decision = asyncio.run(decide())
    if not decision.allow:
        raise RuntimeError(f"the policy denied the profiling call: {decision.reason}")
    return decision.masks  # the decision's own tuple, as the pipeline passes it


def _stage_times(
    stages: dict[str, Callable[[], Callable[[], object]]], repeats: int
) -> dict[str, list[float]]:
    """CPU seconds of each stage, ``repeats`` times, the stages taking turns within each
    round so that a busy spell on the machine lands on all of them alike.

    A stage is a function that prepares one run, untimed, and returns the timed action.
    """
    for prepare in stages.values():  # warm-up: caches, allocator
        prepare()()
    samples: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(repeats):
        for name, prepare in stages.items():
            action = prepare()
            started = time.thread_time()
            action()
            samples[name].append(time.thread_time() - started)
    return samples


def measure_response_path(rows: int = 100, repeats: int = 50, raw: bool = True) -> dict[str, Any]:
    """CPU µs per stage of the response path (see the module docstring).

    Returns medians as ``decode_us``, ``classify_us``, ``mask_us``, ``encode_us`` and their
    sum ``total_us``; the fastest runs as ``min_us`` (per stage, a floor that machine load
    hardly moves); and what was measured: ``rows``, ``repeats``, ``raw``, ``bytes_elements``
    (size of the BYTES payload), ``fields`` (classified fields), ``masks`` (the decision's).
    """
    response = customer_response(rows, raw=raw)
    classifier = Classifier(Catalog.from_file(CATALOG_FILE), DetectorSet.default())
    tensors = oip.decode_outputs(response)
    classification = classifier.classify_response(MODEL, tensors, backend=backend_labels(response))
    masks = analyst_masks(classification)
    masked = apply_masks(tensors, classification, masks, HASH_KEY)

    def encode() -> Callable[[], object]:
        # encode_outputs rewrites a response in place: each run gets a fresh copy, untimed.
        target = pb.ModelInferResponse()
        target.CopyFrom(response)
        return lambda: oip.encode_outputs(target, masked, raw=oip.uses_raw_outputs(target))

    def classify() -> Callable[[], object]:
        # Freshly decoded tensors build their values when first read, as in a call: the
        # stage that first reads them pays for it.
        fresh = oip.decode_outputs(response)
        return lambda: classifier.classify_response(MODEL, fresh, backend=backend_labels(response))

    def mask() -> Callable[[], object]:
        fresh = oip.decode_outputs(response)
        classified = classifier.classify_response(MODEL, fresh, backend=backend_labels(response))
        return lambda: apply_masks(fresh, classified, masks, HASH_KEY)

    samples = _stage_times(
        {
            "decode": lambda: lambda: oip.decode_outputs(response),
            "classify": classify,
            "mask": mask,
            "encode": encode,
        },
        repeats,
    )
    medians = {f"{stage}_us": round(statistics.median(samples[stage]) * 1e6, 1) for stage in STAGES}
    payload = sum(len(value) for tensor in tensors if tensor.datatype == "BYTES" for value in tensor.values)
    return {
        "rows": rows,
        "repeats": repeats,
        "raw": raw,
        **medians,
        "total_us": round(sum(medians.values()), 1),
        "min_us": {stage: round(min(samples[stage]) * 1e6, 1) for stage in STAGES},
        "bytes_elements": payload,
        "fields": len(classification.fields),
        "masks": len(masks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,100,1000", help="comma-separated row counts")
    parser.add_argument("--repeats", type=int, default=0, help="runs per stage (default: by size)")
    parser.add_argument("--typed", action="store_true", help="typed contents instead of raw outputs")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--default-heap", action="store_true", help="skip the gateway's heap set-up")
    args = parser.parse_args()
    if not args.default_heap:
        from labelgate.gateway.heap import prepare_heap

        prepare_heap()
    results = []
    for rows in (int(part) for part in args.rows.split(",")):
        repeats = args.repeats or max(5, min(300, 20_000 // max(rows, 1)))
        results.append(measure_response_path(rows, repeats, raw=not args.typed))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("median CPU µs per stage (min in brackets)")
    print(f"{'rows':>6} " + " ".join(f"{stage:>17}" for stage in (*STAGES, "total")))
    for result in results:
        cells = [f"{result[stage + '_us']:>8.1f} ({result['min_us'][stage]:>6.1f})" for stage in STAGES]
        cells.append(f"{result['total_us']:>8.1f} ({sum(result['min_us'].values()):>6.1f})")
        print(f"{result['rows']:>6} {' '.join(cells)}   ({result['fields']} fields, {result['masks']} masks)")


if __name__ == "__main__":
    main()
