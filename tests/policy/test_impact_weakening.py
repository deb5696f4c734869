"""Impact reports name a weakened mask and the labels a glob mask covered (review findings 3, 4).

A mask's strategy changing to one that shows more of the value (redact -> partial, -> hash; a
partial keeping another number of characters) was reported as a plain ``mask strategy
changed``, which the publish gate does not hold; a removed ``outputs.*`` collected no labels,
because field paths were matched literally. The strategy order and defaults used here are
held to the enforcer's (this layer may not import it), and so is the choice of one mask of
several naming a path.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from labelgate.enforce.strategies import (
    DEFAULT_KEEP_LAST,
    DEFAULT_REPLACEMENT,
    STRATEGIES,
    Mask,
    Masker,
    covers,
    strongest,
)
from labelgate.policy import impact
from labelgate.policy.contract import DecidedMask, validate_result
from labelgate.policy.impact import (
    MASK_CHANGED,
    MASK_REMOVED,
    MASK_WEAKENED,
    Replayed,
    applied_masks,
    compare,
    field_labels,
    shows_more,
    summarize,
)

REDACT = DecidedMask("outputs.ssn", "redact", {})
NULL = DecidedMask("outputs.ssn", "null", {})
HASH = DecidedMask("outputs.ssn", "hash", {})


def partial(keep_last: int | None = None, path: str = "outputs.ssn") -> DecidedMask:
    return DecidedMask(path, "partial", {} if keep_last is None else {"keep_last": keep_last})


def allow(*masks: DecidedMask) -> Any:
    result = {
        "allow": True,
        "reason": "ok",
        "mask": [mask.to_json() for mask in masks],
        "require_approval": None,
        "cache_ttl_seconds": 0,
    }
    return validate_result(result, phase="response")


@pytest.mark.parametrize(
    ("was", "now"),
    [
        (REDACT, partial(10)),
        (REDACT, partial(0)),  # the length shows
        (REDACT, HASH),
        (NULL, HASH),
        (HASH, partial(4)),
        (partial(4), partial(10)),
        (partial(), partial(5)),  # keep_last defaults to 4
        (partial(10), partial(4)),  # an 8-character value was starred whole, now shows 4
        (partial(0), partial(1)),
    ],
)
def test_a_mask_that_shows_more_is_a_weakened_mask(was: DecidedMask, now: DecidedMask) -> None:
    assert shows_more(was, now)
    assert compare(allow(was), allow(now))[0].kind == MASK_WEAKENED


@pytest.mark.parametrize(
    ("was", "now"),
    [
        (partial(10), REDACT),
        (HASH, REDACT),
        (REDACT, NULL),
        (NULL, REDACT),  # neither shows anything of the value
        (partial(4), partial(0)),
        (partial(), partial(4)),
        (DecidedMask("outputs.ssn", "redact", {"replacement": "x"}), REDACT),
    ],
)
def test_a_mask_that_shows_no_more_is_a_strategy_change(was: DecidedMask, now: DecidedMask) -> None:
    assert not shows_more(was, now)
    found = compare(allow(was), allow(now))
    assert [change.kind for change in found] in ([], [MASK_CHANGED])


def test_the_orders_and_defaults_are_the_enforcers() -> None:
    assert impact.STRATEGY_ORDER == STRATEGIES
    assert set(impact.STRATEGY_EXPOSURE) == set(STRATEGIES)
    exposures = [impact.STRATEGY_EXPOSURE[strategy] for strategy in STRATEGIES]
    assert exposures == sorted(exposures), "a more protective strategy may not show more"
    assert (impact.DEFAULT_KEEP_LAST, impact.DEFAULT_REPLACEMENT) == (DEFAULT_KEEP_LAST, DEFAULT_REPLACEMENT)


def test_between_partials_showing_more_is_what_the_enforcer_says_does_not_cover() -> None:
    keeps = [None, 0, 1, 4, 10]
    for before, after in itertools.product(keeps, keeps):
        was, now = partial(before), partial(after)
        if was.params == now.params:
            continue
        assert shows_more(was, now) == (not covers(Mask.coerce(now), Mask.coerce(was))), (before, after)


def test_a_shorter_partial_shows_what_a_longer_one_starred() -> None:
    masker = Masker(b"k" * 32)
    assert masker.text("12345678", Mask.coerce(partial(10))) == "********"
    assert masker.text("12345678", Mask.coerce(partial(4))) == "****5678"


def test_of_several_masks_of_a_path_the_one_the_enforcer_applies_is_compared() -> None:
    masks = [
        REDACT,
        partial(4),
        HASH,
        NULL,
        partial(10),
        DecidedMask("outputs.ssn", "redact", {"replacement": "a"}),
    ]
    for pair in itertools.permutations(masks, 2):
        chosen = applied_masks(allow(*pair))["outputs.ssn"]
        assert Mask.coerce(chosen) == strongest(Mask.coerce(mask) for mask in pair)["outputs.ssn"]
    # Dropping the stronger of two masks of one path weakens it.
    (change,) = compare(allow(REDACT, partial(4)), allow(partial(4)))
    assert (change.kind, change.detail) == (MASK_WEAKENED, "redact -> partial(keep_last=4)")


FIELDS = {
    "fields": [
        {"path": "outputs.ssn", "labels": ["confidential"], "sources": {}},
        {"path": "outputs.doc.card[0]", "labels": ["restricted"], "sources": {}},
        {"path": "outputs.name", "labels": ["internal"], "sources": {}},
        {"path": "inputs.ssn", "labels": ["public"], "sources": {}},
    ]
}


@pytest.mark.parametrize(
    ("path", "labels"),
    [
        ("outputs.*", {"confidential", "restricted", "internal"}),
        ("outputs.?sn", {"confidential"}),
        ("*.ssn", {"confidential", "public"}),
        ("outputs.d?c", {"restricted"}),  # a field inside a path the glob names
        ("outputs.doc.card[?]", {"restricted"}),
        ("outputs.x*", set()),
        ("outputs.ssn", {"confidential"}),  # plain paths as before
        ("outputs.doc", {"restricted"}),
    ],
)
def test_a_glob_path_collects_the_labels_of_what_it_masks(path: str, labels: set[str]) -> None:
    assert field_labels(FIELDS, path) == labels


def test_a_removed_glob_mask_reports_the_labels_it_masked() -> None:
    glob = DecidedMask("outputs.*", "redact", {})
    report = summarize([Replayed("h", 1, FIELDS, allow(glob), allow())]).to_json()
    ((kind, field, labels),) = [(c["kind"], c["field"], c["labels"]) for c in report["changes"]]
    assert (kind, field, labels) == (MASK_REMOVED, "outputs.*", ["confidential", "internal", "restricted"])
    weakened = summarize([Replayed("h", 1, FIELDS, allow(glob), allow(partial(4, "outputs.*")))]).to_json()
    assert [(c["kind"], c["labels"]) for c in weakened["changes"]] == [
        (MASK_WEAKENED, ["confidential", "internal", "restricted"])
    ]
