"""The decision-input store is bounded in bytes, not only in age (review s12: a caller made
every call a new 82 KiB input, refused calls too, ~10 GB an hour at one client's rate)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from labelgate.gateway.record import InputStore


def _input(index: int, size: int = 1000) -> dict[str, object]:
    return {"phase": "request", "request": {"requested_outputs": [f"{index:06d}" + "x" * size]}}


def _stored(path: Path) -> tuple[int, set[str]]:
    with sqlite3.connect(path) as db:
        total = db.execute("SELECT COALESCE(SUM(LENGTH(input)), 0) FROM decision_inputs").fetchone()[0]
        hashes = {row[0] for row in db.execute("SELECT hash FROM decision_inputs")}
    return int(total), hashes


def test_the_least_recently_seen_inputs_go_first_once_the_store_is_full(tmp_path: Path) -> None:
    path = tmp_path / "inputs.db"
    store = InputStore(path, max_bytes=50_000)
    trimmed = 0
    for index in range(200):  # ~200 KB of distinct inputs, one a second
        trimmed += store.add([(f"h{index:03d}", "request", _input(index), float(index))], {})
    store.close()
    total, kept = _stored(path)
    assert total <= 50_000 and trimmed == 200 - len(kept)
    assert "h199" in kept and "h000" not in kept  # the newest stay, the oldest went
    assert all(f"h{index:03d}" in kept for index in range(200 - len(kept), 200))


def test_an_input_seen_again_counts_as_recent(tmp_path: Path) -> None:
    store = InputStore(tmp_path / "inputs.db", max_bytes=20_000)
    store.add([("old", "request", _input(0), 0.0)], {})
    for index in range(1, 40):
        store.add([(f"h{index:03d}", "request", _input(index), float(index))], {"old": (1, float(index))})
    store.close()
    _, kept = _stored(tmp_path / "inputs.db")
    assert "old" in kept and "h001" not in kept


def test_a_store_within_its_bound_keeps_everything_and_reopens_counting_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "inputs.db"
    store = InputStore(path, max_bytes=1_000_000)
    assert sum(store.add([(f"h{i}", "request", _input(i), float(i))], {}) for i in range(20)) == 0
    store.close()
    reopened = InputStore(path, max_bytes=15_000)  # what it holds already counts
    assert reopened.add([("new", "request", _input(99), 99.0)], {}) > 0
    reopened.close()
    total, kept = _stored(path)
    assert total <= 15_000 and "new" in kept
