"""A decision's masks are compiled once per masks tuple, and remembered glob lookups give
the answers a fresh index gives."""

from __future__ import annotations

from labelgate.enforce.compiled import compile_masks
from labelgate.enforce.strategies import Mask, MaskIndex
from labelgate.policy.contract import DecidedMask


def decided() -> tuple[DecidedMask, ...]:
    return (
        DecidedMask("outputs.ssn", "partial", {"keep_last": 4}),
        DecidedMask("outputs.notes[].*.iban", "redact", {}),
        DecidedMask("outputs.*", "hash", {}),
    )


def test_one_masks_tuple_is_compiled_once() -> None:
    masks = decided()
    coerced, index = compile_masks(masks)
    assert compile_masks(masks) == (coerced, index)
    assert compile_masks(masks)[1] is index
    assert [mask.path for mask in coerced] == [mask.path for mask in masks]
    assert all(isinstance(mask, Mask) for mask in coerced)


def test_an_equal_tuple_or_a_list_is_compiled_anew() -> None:
    _, first = compile_masks(decided())
    _, again = compile_masks(decided())  # another decision (no cache): its own index
    _, listed = compile_masks(list(decided()))
    assert again is not first and listed is not first
    for path in ("outputs.ssn", "outputs.notes[].<key:1>.iban", "outputs.x", "inputs.x"):
        assert again.lookup(path) == first.lookup(path) == listed.lookup(path)


def test_remembered_glob_lookups_equal_fresh_ones() -> None:
    masks = [Mask(m.path, m.strategy, dict(m.params)) for m in decided()]
    shared = MaskIndex(masks)
    paths = [f"outputs.notes[].<key:{n}>.iban" for n in range(5)] + ["outputs.ssn", "outputs.a", "other"]
    first = [shared.lookup(path) for path in paths]
    second = [shared.lookup(path) for path in paths]  # from the memo
    fresh = [MaskIndex(masks).lookup(path) for path in paths]
    assert first == second == fresh
    assert first[0] is not None and first[0].strategy == "redact"  # the strongest of two globs
    assert first[-1] is None
