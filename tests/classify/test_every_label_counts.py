"""Every label of what an output holds reaches the policy, not the most sensitive alone.

The default tables are not monotone in rank: a granted ``break-glass`` caller sees
``restricted`` data and never ``confidential`` or ``internal`` data, and the pack decides a
field by all of its labels (in clear only if each is visible). So wherever the classifier let
the most sensitive label stand for the rest, a less sensitive value went out in clear to such
a caller (review s13, non-monotone tables):

- overlapping detections merged into one span named after the most sensitive detector: an
  SSN, a card or an e-mail address inside a private key block (``detectors._cluster_spans``);
- an uncatalogued JSON leaf in which a detector fired lost its default label: the rest of the
  leaf's text went with the detector's ``restricted`` (``json_elements.classify_json``);
- JSON that is not a bare object stayed text unless a key under the output was labelled
  *above* it: an ``internal`` key inside a ``restricted`` output was lost
  (``json_elements.keys_say_more``);
- opaque elements, and an output with too many labelled nodes, carried the most sensitive
  label under the output only (``classifier``, ``json_elements``).

Each case plants values with the label that protects them and checks, for every set of labels
a caller may see in clear, that under the masks such a policy asks for (a mask on every field
one of whose labels is not visible) no value of a label outside the set survives.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import pytest

from labelgate.classify import Catalog, DetectorSet, classify_outputs, native
from labelgate.classify.fields import Classification
from labelgate.classify.json_elements import MAX_JSON_PATHS
from labelgate.classify.labels import LABELS
from labelgate.enforce import apply_masks
from labelgate.oip.tensor import Tensor

DETECTORS = DetectorSet.default()
HASH_KEY = b"0123456789abcdef0123456789abcdef"
SSN = "078-05-1121"
CARD = "4111111111111111"
EMAIL = "ann@example.com"
PEM = "-----BEGIN RSA PRIVATE KEY-----"  # no END marker: the block runs to the end of the text
NOTE = "PLTnote4c2e"  # no detector finds these: only a label protects them
MEMO = "PLTmemo9b1f"
KEY = "PLTkey5e1d"
CATALOG = Catalog.from_data(
    {
        "default_label": "internal",
        "entries": [
            {"model": "m", "path": "outputs.segment", "labels": ["public"]},
            {"model": "m", "path": "outputs.vault", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.vault[].memo", "labels": ["internal"]},
            {"model": "m", "path": "outputs.wide", "labels": ["restricted"]},
            {"model": "m", "path": "outputs.wide[].*", "labels": ["internal"]},
        ],
    }
)
# Every set of labels a caller may see in clear (public always).
VISIBLE = [
    frozenset({"public", *chosen}) for size in range(len(LABELS)) for chosen in combinations(LABELS[1:], size)
]
STRATEGIES = {"null": {}, "redact": {}, "hash": {}, "partial": {"keep_last": 4}}

# name: (output, its elements, the planted values with the label protecting each)
CASES: dict[str, tuple[str, list[bytes], list[tuple[str, str]]]] = {
    "values inside a key block, in text": (
        "segment",
        [f"note: {PEM} {SSN} {CARD} {EMAIL}".encode()],
        [(PEM, "restricted"), (SSN, "confidential"), (CARD, "confidential"), (EMAIL, "internal")],
    ),
    "values inside a key block, in a JSON leaf": (
        "segment",
        [json.dumps({"note": f"{PEM} {SSN} {CARD} {EMAIL}"}).encode()],
        [(PEM, "restricted"), (SSN, "confidential"), (CARD, "confidential"), (EMAIL, "internal")],
    ),
    "an uncatalogued JSON leaf holding a key block and other text": (
        "segment",
        [json.dumps({"note": f"{NOTE} called; {PEM} MIIE"}).encode()],
        [(PEM, "restricted"), (NOTE, "internal")],
    ),
    "an internal key in an array, in a restricted output": (
        "vault",
        [json.dumps([{"memo": MEMO}]).encode()],
        [(MEMO, "internal")],
    ),
    "an internal key after a byte-order mark, in a restricted output": (
        "vault",
        b"\xef\xbb\xbf" + json.dumps({"memo": MEMO}).encode(),
        [(MEMO, "internal")],
    ),
    "an internal key in an opaque element (a duplicate key)": (
        "vault",
        [b'{"memo": "%s", "memo": "x"}' % MEMO.encode()],
        [(MEMO, "internal")],
    ),
    "an internal key among too many paths": (
        "vault",
        [json.dumps({"memo": MEMO, **{f"k{n}": n for n in range(MAX_JSON_PATHS + 1)}}).encode()],
        [(MEMO, "internal")],
    ),
    "a key under too many labelled nodes": (
        "wide",
        [json.dumps({KEY: "v", **{f"k{n}": {} for n in range(MAX_JSON_PATHS + 1)}}).encode()],
        [(KEY, "internal")],
    ),
}
# The byte-order-mark case holds one element: a bytes value, not a list of them.
CASES = {
    name: (output, [elements] if isinstance(elements, bytes) else elements, planted)
    for name, (output, elements, planted) in CASES.items()
}


def classify(output: str, elements: list[bytes]) -> Classification:
    return classify_outputs("m", [Tensor(output, "BYTES", [len(elements)], elements)], CATALOG, DETECTORS)


def masks_for(classification: Classification, visible: frozenset[str], strategy: str) -> list[dict[str, Any]]:
    """What the default pack asks for: a mask on every field one of whose labels the caller
    may not see in clear."""
    return [
        {"path": field.path, "strategy": strategy, "params": STRATEGIES[strategy]}
        for field in classification.fields
        if not field.labels <= visible
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("visible", VISIBLE, ids=lambda visible: "+".join(sorted(visible)))
@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("case", CASES)
def test_no_value_reaches_a_caller_who_may_not_see_its_label(
    case: str, use_native: bool, visible: frozenset[str], strategy: str
) -> None:
    output, elements, planted = CASES[case]
    with native.forced(use_native):
        classification = classify(output, elements)
        [released] = apply_masks(
            [Tensor(output, "BYTES", [len(elements)], list(elements))],
            classification,
            masks_for(classification, visible, strategy),
            HASH_KEY,
        )
    text = b"\x00".join(released.byte_elements())
    for value, label in planted:
        if label not in visible:
            assert value.encode() not in text, (value, label, text[:300])


def test_a_key_block_names_what_it_covers() -> None:
    """The fields the policy sees: one per detector in the merged span, not the key block's alone."""
    output, elements, _ = CASES["values inside a key block, in text"]
    paths = {field.path: field.labels for field in classify(output, elements).fields}
    assert paths == {
        "outputs.segment": {"public"},
        "outputs.segment{secret}": {"restricted"},
        "outputs.segment{us_ssn}": {"confidential"},
        "outputs.segment{credit_card}": {"confidential"},
        "outputs.segment{email}": {"internal"},
    }


def test_what_a_caller_may_see_in_clear_stays_readable() -> None:
    """Not masked whole for nothing: a caller who may see every label gets the values."""
    for output, elements, planted in CASES.values():
        classification = classify(output, elements)
        assert masks_for(classification, frozenset(LABELS), "null") == []
        assert all(value.encode() in b"".join(elements) for value, _ in planted)


def test_the_default_pack_shows_a_granted_break_glass_caller_no_value_of_a_label_it_may_not_see() -> None:
    """The shipped tables and pack, on the classifier's own input: a ``break-glass`` caller
    whose two-person security grant is verified sees ``restricted`` data in clear, and no
    ``confidential`` or ``internal`` value of any case."""
    import asyncio
    import time
    from pathlib import Path

    from labelgate.classify import to_policy_fields
    from labelgate.policy.contract import build_input
    from labelgate.policy.embedded import EmbeddedEngine

    repo = Path(__file__).resolve().parents[2]

    def policy_input(classification: Classification) -> dict[str, Any]:
        return build_input(
            phase="response",
            subject={"id": "jwt:dev#bob", "groups": ["break-glass"], "auth": "jwt"},
            request={
                "service": "inference.GRPCInferenceService",
                "method": "/inference.GRPCInferenceService/ModelInfer",
                "model": "m",
                "requested_outputs": [],
                "model_version": "1",
                "request_id": "every-label",
            },
            fields=to_policy_fields(classification.fields),
            approval={"state": "granted", "approved_by": ["jwt:dev#sec-1", "jwt:dev#sec-2"]},
            time_ns=time.time_ns(),
        )

    classified = {name: classify(output, elements) for name, (output, elements, _) in CASES.items()}

    async def decide() -> dict[str, Any]:
        engine = EmbeddedEngine(repo / "rego", watch_interval=None)
        await engine.start()
        try:
            return {name: await engine.decide(policy_input(result)) for name, result in classified.items()}
        finally:
            await engine.close()

    decisions = asyncio.run(decide())
    for name, decision in decisions.items():
        output, elements, planted = CASES[name]
        assert decision.allow, name
        [released] = apply_masks(
            [Tensor(output, "BYTES", [len(elements)], list(elements))],
            classified[name],
            list(decision.masks),
            HASH_KEY,
        )
        text = b"\x00".join(released.byte_elements())
        for value, label in planted:
            if label != "restricted":
                assert value.encode() not in text, (name, value, label, text[:300])
    # The grant is in force: what is restricted alone goes out in clear.
    masked = {mask.path for mask in decisions["values inside a key block, in text"].masks}
    assert "outputs.segment{secret}" not in masked
    assert "outputs.segment{us_ssn}" in masked
