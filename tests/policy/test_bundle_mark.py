"""The bundle high-water mark on disk (``policy/bundle_mark.py``)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labelgate.policy.bundle_mark import BundleMark, read_mark, write_mark


def test_writers_at_once_leave_the_highest_mark_and_no_stray_files(tmp_path: Path) -> None:
    """The workers of one ``serve`` share the file: each writes the mark it applied, some late."""
    path = tmp_path / "state" / "bundle.json"
    for round_ in range(20):
        marks = [BundleMark(f"rev-{round_}-{n}", round_ * 100 + n) for n in range(8)]
        random.Random(round_).shuffle(marks)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda mark: write_mark(path, mark), marks))
        assert read_mark(path) == max(marks, key=lambda mark: mark.sequence)
    assert sorted(p.name for p in path.parent.iterdir()) == ["bundle.json", "bundle.json.lock"]


def test_a_lower_mark_written_later_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    write_mark(path, BundleMark("newer", 7))
    write_mark(path, BundleMark("older", 5))
    write_mark(path, BundleMark("same", 7))
    assert read_mark(path) == BundleMark("newer", 7)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_sibling_left_by_a_writer_killed_before_its_rename_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    write_mark(path, BundleMark("first", 1))
    (tmp_path / ".bundle.json.k1ll3d.tmp").write_text('{"revision": "half')
    (tmp_path / ".other.json.k1ll3d.tmp").write_text("not this file's")
    write_mark(path, BundleMark("second", 2))
    assert read_mark(path) == BundleMark("second", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.json.k1ll3d.tmp",
        "bundle.json",
        "bundle.json.lock",
    ]
