"""The native detectors (``labelgate_native``) against the Python reference, in one process.

    .venv/bin/python -m bench.native_scan [--rounds 21] [--rows 1,100,1000]

Two measurements, each taking turns between the paths (``native.forced``) so that a busy
spell on the shared machine lands on both alike; CPU time of this thread
(``time.thread_time``), medians over rounds; ratios are Python time / native time:

1. ``DetectorSet.scan_many`` on the texts of ``bench.detector_throughput`` (MB/s).
2. The ``classify`` stage of ``bench.profile_response`` (the demo ``customer-profile``
   response, ``Classifier.classify_response``), per row count.

The two paths must agree on every pass (checked here too, not only in the tests): a
faster scan that found something else would be no result.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from functools import partial

from bench.detectors import prose, prose_cases
from bench.profile_response import CATALOG_FILE, MODEL, customer_response
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify import native
from labelgate.classify.catalog import Catalog
from labelgate.classify.classifier import Classifier, backend_labels
from labelgate.classify.detectors import DetectorSet
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

PATHS = ("python", "native")


def _interleaved(actions: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """CPU seconds of each path's action, ``rounds`` times, the paths taking turns."""
    samples: dict[str, list[float]] = {path: [] for path in actions}
    results: dict[str, object] = {}
    for path, action in actions.items():  # warm-up, and the agreement check
        with native.forced(path == "native"):
            results[path] = action()
    if results["python"] != results["native"]:
        raise AssertionError("the native and the Python scan disagree")
    for turn in range(rounds):
        for path in actions if turn % 2 == 0 else reversed(list(actions)):
            action = actions[path]
            with native.forced(path == "native"):
                started = time.thread_time()
                action()
                samples[path].append(time.thread_time() - started)
    return samples


def throughput(rounds: int) -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible synthetic text, not secrets
    detectors = DetectorSet.default()
    cases = prose_cases(rng)
    cases["100 x 40 B elements, one match each"] = [prose(rng, 40, 20) for _ in range(100)]
    print("DetectorSet.scan_many, MB/s of CPU time (median of rounds), Python vs native")
    for name, texts in cases.items():
        size = sum(map(len, texts))
        samples = _interleaved(dict.fromkeys(PATHS, partial(detectors.scan_many, texts)), rounds)
        rates = {path: size / statistics.median(samples[path]) / 1e6 for path in PATHS}
        print(
            f"  {name:45s} python {rates['python']:8.1f}  native {rates['native']:8.1f}"
            f"  ratio {rates['native'] / rates['python']:6.1f}x"
        )


def _classify(classifier: Classifier, tensors: list[Tensor], response: pb.ModelInferResponse) -> object:
    return classifier.classify_response(MODEL, tensors, backend=backend_labels(response))


def classify_stage(rows_list: list[int], rounds: int) -> None:

    print("classify stage of bench.profile_response, median CPU µs, Python (LABELGATE_NATIVE=0) vs native")
    for rows in rows_list:
        response = customer_response(rows)
        classifier = Classifier(Catalog.from_file(CATALOG_FILE), DetectorSet.default())
        tensors = oip.decode_outputs(response)

        classify = partial(_classify, classifier, tensors, response)
        repeats = max(rounds, min(301, 20_000 // max(rows, 1)))
        samples = _interleaved(dict.fromkeys(PATHS, classify), repeats)
        medians = {path: statistics.median(samples[path]) * 1e6 for path in PATHS}
        print(
            f"  rows {rows:>5}  python {medians['python']:9.1f}  native {medians['native']:9.1f}"
            f"  ratio {medians['python'] / medians['native']:5.2f}x  ({repeats} rounds)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="turns per path")
    parser.add_argument("--rows", default="1,100,1000", help="row counts for the classify stage")
    args = parser.parse_args()
    if not native.available():
        raise SystemExit("labelgate_native is not installed: pip install ./proxy/native")
    throughput(args.rounds)
    classify_stage([int(part) for part in args.rows.split(",")], args.rounds)


if __name__ == "__main__":
    main()
