"""Durable replacement of small state files (``labelgate/durable.py``)."""

from __future__ import annotations

from pathlib import Path

from labelgate.durable import remove_leftovers, replace_durably


def test_the_file_holds_the_new_content_and_no_sibling_is_left(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cursor.json"
    replace_durably(path, b"old")
    replace_durably(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["cursor.json"]


def test_leftovers_of_this_file_alone_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    replace_durably(path, b"kept")
    left = [".cursor.json.a1b2c3.tmp", ".cursor.json.zz.tmp"]
    others = [".cursor.json.a1b2c3", "cursor.json.tmp", ".other.json.a1b2c3.tmp", ".cursor.jsonx.tmp"]
    for name in left + others:
        (tmp_path / name).write_bytes(b"half")
    remove_leftovers(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cursor.json", *others])
    assert path.read_bytes() == b"kept"


def test_removing_leftovers_of_a_file_in_a_missing_folder_is_nothing(tmp_path: Path) -> None:
    remove_leftovers(tmp_path / "absent" / "cursor.json")
