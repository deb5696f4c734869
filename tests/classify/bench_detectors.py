"""Throughput of DetectorSet.scan on free text, per core (a measurement to run by hand, not a test).

CPU time (process_time), so other work on the machine does not skew it.

    .venv/bin/python tests/classify/bench_detectors.py
"""

from __future__ import annotations

import random
import time

from labelgate.classify.detectors import DetectorSet

SENTENCES = (
    "the model returned a summary of the quarterly report with revenue growth in most regions",
    "customers asked about delivery times and the support team answered within hours while",
    "engineering shipped version upgrades to the platform and fixed several issues",
)
WORDS = [word for sentence in SENTENCES for word in sentence.split(" ")]
NUMBERS = ["12", "2024", "45", "3.5", "1,200", "99%", "7", "2019-03-14", "10:30", "#4521", "v2.1.0", "15th"]
SENSITIVE = [
    "4111 1111 1111 1111",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "jane.doe@example.com",
    "+1 (555) 234-5678",
    "10.1.2.3",
]


def prose(rng: random.Random, size: int, sensitive_every: int | None, digits: bool = True) -> str:
    parts, length, since = [], 0, 0
    while length < size:
        if sensitive_every and since >= sensitive_every:
            word, since = rng.choice(SENSITIVE), 0
        elif digits and rng.random() < 0.06:
            word = rng.choice(NUMBERS)
        else:
            word = rng.choice(WORDS)
        parts.append(word)
        length += len(word) + 1
        since += len(word) + 1
    return " ".join(parts)[:size]


def measure(
    detectors: DetectorSet, texts: list, seconds: float = 1.5, batch: bool = False
) -> tuple[float, int]:
    total = sum(len(text.encode()) for text in texts)
    elements = [text.encode() for text in texts]
    hits, rounds, began = 0, 0, time.process_time()
    while time.process_time() - began < seconds:
        if batch:
            hits += sum(len(found) for found in detectors.scan_many(elements))
        else:
            for text in texts:
                hits += len(detectors.scan(text))
        rounds += 1
    elapsed = time.process_time() - began
    return total * rounds / elapsed / 1e6, hits // rounds


def main() -> None:
    rng = random.Random(7)
    detectors = DetectorSet.default()
    cases = {
        "1 MB prose, no digits": [prose(rng, 1_000_000, None, digits=False)],
        "1 MB prose with numbers, no matches": [prose(rng, 1_000_000, None)],
        "1 MB prose, a match every ~500 B": [prose(rng, 1_000_000, 500)],
        "5000 x 200 B elements, numbers, no matches": [prose(rng, 200, None) for _ in range(5000)],
        "5000 x 200 B elements, one match each": [prose(rng, 200, 100) for _ in range(5000)],
    }
    for name, texts in cases.items():
        rate, hits = measure(detectors, texts)
        print(f"{name:45s} scan       {rate:8.1f} MB/s  ({hits} detections per pass)")
        if len(texts) > 1:
            rate, hits = measure(detectors, texts, batch=True)
            print(f"{name:45s} scan_many  {rate:8.1f} MB/s  ({hits} detections per pass)")


if __name__ == "__main__":
    main()
