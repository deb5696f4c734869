"""Scenario 4: content detectors, MB/s of free text scanned per core, with and without matches.

CPU time (``process_time``), so other work on the machine does not count against the
scanner. The baseline of each case is one plain compiled regex (a bare SSN shape, what a
naive single-pattern scanner would do) over the same text in the same run: the ratio is
what the six confirmed detectors cost against that.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence

from bench.context import Bench
from bench.figures import Figure, Scenario
from labelgate.classify import DetectorSet

_SENTENCES = (
    "the model returned a summary of the quarterly report with revenue growth in most regions",
    "customers asked about delivery times and the support team answered within hours while",
    "engineering shipped version upgrades to the platform and fixed several issues",
)
_WORDS = [word for sentence in _SENTENCES for word in sentence.split(" ")]
# Digits that look like, but are not, sensitive values: each one makes the scanner look closer.
_NUMBERS = ("12", "2024", "45", "3.5", "1,200", "99%", "7", "2019-03-14", "10:30", "#4521", "v2.1.0", "15th")
_SENSITIVE = (
    "4111 1111 1111 1111",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "jane.doe@example.com",
    "+1 (555) 234-5678",
    "10.1.2.3",
)
_NAIVE_SSN = re.compile(rb"\d{3}-\d{2}-\d{4}")
ELEMENT_BYTES = 200


def prose(rng: random.Random, size: int, sensitive_every: int | None, digits: bool = True) -> bytes:
    """English-like text (with numbers unless ``digits`` is false); a sensitive value every
    ``sensitive_every`` bytes if set."""
    parts: list[str] = []
    length = since = 0
    while length < size:
        if sensitive_every and since >= sensitive_every:
            word, since = rng.choice(_SENSITIVE), 0
        elif digits and rng.random() < 0.06:
            word = rng.choice(_NUMBERS)
        else:
            word = rng.choice(_WORDS)
        parts.append(word)
        length += len(word) + 1
        since += len(word) + 1
    return " ".join(parts)[:size].encode()


def prose_cases(rng: random.Random) -> dict[str, list[bytes]]:
    """The texts ``detector_throughput`` and ``native_scan`` time: one large text and many
    small elements, with and without matches."""
    return {
        "1 MB prose, no digits": [prose(rng, 1_000_000, None, digits=False)],
        "1 MB prose with numbers, no matches": [prose(rng, 1_000_000, None)],
        "1 MB prose, a match every ~500 B": [prose(rng, 1_000_000, 500)],
        "5000 x 200 B elements, numbers, no matches": [prose(rng, 200, None) for _ in range(5000)],
        "5000 x 200 B elements, one match each": [prose(rng, 200, 100) for _ in range(5000)],
    }


def cases(size: int) -> dict[str, tuple[str, list[bytes]]]:
    """name -> (description, texts). One long text, and the same volume as tensor elements."""
    rng = random.Random(7)  # noqa: S311 - reproducible synthetic text, not secrets
    elements = max(1, size // ELEMENT_BYTES)
    return {
        "text_no_matches": ("free text with numbers, no matches", [prose(rng, size, None)]),
        "text_with_matches": ("free text, a match every ~500 B", [prose(rng, size, 500)]),
        "elements_no_matches": (
            f"{elements} x {ELEMENT_BYTES} B tensor elements, no matches",
            [prose(rng, ELEMENT_BYTES, None) for _ in range(elements)],
        ),
        "elements_with_matches": (
            f"{elements} x {ELEMENT_BYTES} B tensor elements, one match each",
            [prose(rng, ELEMENT_BYTES, 100) for _ in range(elements)],
        ),
    }


def throughput(
    scan: Callable[[Sequence[bytes]], int], texts: list[bytes], seconds: float
) -> tuple[float, int]:
    """MB/s of CPU time and detections per pass."""
    total = sum(len(text) for text in texts)
    scan(texts)  # warm up (lazy compilation, caches)
    hits = rounds = 0
    began = time.process_time()
    while True:
        hits += scan(texts)
        rounds += 1
        elapsed = time.process_time() - began
        if elapsed >= seconds:
            break
    return total * rounds / elapsed / 1e6, hits // rounds


def run_detectors(bench: Bench) -> Scenario:
    scenario = Scenario("detectors", "Content detectors: MB/s of free text per core")
    detectors = DetectorSet.default()

    def scan_each_text(texts: Sequence[bytes]) -> int:
        return sum(len(detectors.scan(text)) for text in texts)

    def scan_elements(texts: Sequence[bytes]) -> int:
        # The gateway's path for a BYTES tensor: all elements in one scan.
        return sum(len(found) for found in detectors.scan_many(texts))

    def naive(texts: Sequence[bytes]) -> int:
        return sum(len(_NAIVE_SSN.findall(text)) for text in texts)

    details = {}
    for name, (description, texts) in cases(bench.plan.detector_bytes).items():
        scan = scan_elements if name.startswith("elements") else scan_each_text
        rate, hits = throughput(scan, texts, bench.plan.detector_s)
        base, _ = throughput(naive, texts, bench.plan.detector_s / 2)
        details[name] = {
            "description": description,
            "bytes": sum(map(len, texts)),
            "detections_per_pass": hits,
        }
        scenario.figures.append(
            Figure(
                f"detectors.{name}.mb_per_s",
                f"scan, {description}",
                rate,
                "MB/s per core",
                "one plain regex (SSN shape) over the same text",
                base,
                "higher",
            )
        )
    scenario.details = {"detectors": list(detectors.names), "cases": details}
    return scenario
