"""Throughput of DetectorSet.scan and scan_many on free text, per core (run by hand).

More cases than the ``detectors`` scenario of ``make bench`` (prose without digits; each
element set scanned one by one and in one ``scan_many``), from the same text generator.
CPU time (process_time), so other work on the machine does not skew it.

    .venv/bin/python -m bench.detector_throughput
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from bench.detectors import prose_cases, throughput
from labelgate.classify.detectors import DetectorSet

SECONDS = 1.5


def main() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible synthetic text, not secrets
    detectors = DetectorSet.default()

    def scan(texts: Sequence[bytes]) -> int:
        return sum(len(detectors.scan(text)) for text in texts)

    def scan_many(texts: Sequence[bytes]) -> int:
        return sum(len(found) for found in detectors.scan_many(texts))

    cases = prose_cases(rng)
    for name, texts in cases.items():
        rate, hits = throughput(scan, texts, SECONDS)
        print(f"{name:45s} scan       {rate:8.1f} MB/s  ({hits} detections per pass)")
        if len(texts) > 1:
            rate, hits = throughput(scan_many, texts, SECONDS)
            print(f"{name:45s} scan_many  {rate:8.1f} MB/s  ({hits} detections per pass)")


if __name__ == "__main__":
    main()
