"""``BoundedMemo``: each of its three bounds, and that it starts over rather than evicting.

Its users' tests (``tests/classify/test_jsonpaths.py``, ``tests/classify/test_native_json.py``,
``tests/enforce/test_native_json_mask.py``) check that each memo is wired to its bounds.
"""

from __future__ import annotations

from labelgate.memo import BoundedMemo


def test_a_put_is_found_by_its_key() -> None:
    memo: BoundedMemo[str, int | None] = BoundedMemo(4, 100, 10)
    assert memo.put("a", 1, 3)
    assert memo.put("none", None, 0)  # any value, None included: look up with ``in`` or ``[]``
    assert memo.entries == {"a": 1, "none": None}
    assert memo.weight == 3


def test_past_its_entries_it_starts_over() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(3, 100, 10)
    for key in range(3):
        memo.put(key, str(key), 1)
    assert memo.entries == {0: "0", 1: "1", 2: "2"}
    memo.entries.get(0)  # a hit does not save an entry: nothing is evicted, all is cleared
    assert memo.put(3, "3", 1)
    assert memo.entries == {3: "3"}
    assert memo.weight == 1


def test_past_its_weight_it_starts_over() -> None:
    memo: BoundedMemo[int, int] = BoundedMemo(100, 10, 10)
    for key in range(5):
        memo.put(key, key, 2)
    assert len(memo.entries) == 5 and memo.weight == 10  # at the bound, not past it
    assert memo.put(5, 5, 1)
    assert memo.entries == {5: 5}
    assert memo.weight == 1
    weights = {5: 1}
    for key in range(6, 20):
        memo.put(key, key, 3)
        weights[key] = 3
        assert sum(weights[kept] for kept in memo.entries) == memo.weight <= 10


def test_an_entry_heavier_than_allowed_is_not_kept() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(10, 100, 5)
    memo.put("kept", 1, 5)
    assert memo.keeps(5) and not memo.keeps(6)
    assert not memo.put("heavy", 2, 6)
    assert memo.entries == {"kept": 1}  # and nothing was cleared for it
    assert memo.weight == 5


def test_an_entry_heavier_than_the_whole_memo_is_not_kept() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(10, 8, 50)
    assert memo.keeps(8) and not memo.keeps(9)
    assert not memo.put("heavy", 1, 9)
    assert memo.entries == {}
    assert memo.weight == 0


def test_clear_forgets_entries_and_weight() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(10, 100, 50)
    entries = memo.entries
    memo.put("a", 1, 7)
    memo.clear()
    assert memo.entries == {} and memo.weight == 0
    assert memo.entries is entries  # cleared in place: a holder of ``entries`` sees it empty
