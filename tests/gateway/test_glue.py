"""The per-call shortcuts of the gateway's glue give what their plain definitions give: the
ids, the masked summary of the record, the masked-fields metric."""

from __future__ import annotations

import uuid

from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome, uuid4_hex, uuid4_text
from labelgate.classify import Field
from labelgate.classify.labels import most_sensitive
from labelgate.enforce.strategies import Mask
from labelgate.gateway import metrics
from labelgate.gateway.pipeline import masked_summary
from labelgate.gateway.record import LogAndMetricsRecorder


def test_call_ids_are_random_version_4_uuids_as_the_uuid_module_writes_them() -> None:
    hexes = {uuid4_hex() for _ in range(2000)}
    texts = {uuid4_text() for _ in range(2000)}
    assert len(hexes) == len(texts) == 2000
    for text in hexes:
        parsed = uuid.UUID(hex=text)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, text)
    for text in texts:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    # Every bit that is not the version's or the variant's comes up both ways.
    ones = [0] * 128
    for text in hexes:
        bits = int(text, 16)
        for position in range(128):
            ones[position] += bits >> position & 1
    fixed = {76, 77, 78, 79, 62, 63}  # version 0100, variant 10
    assert all(0 < ones[position] < 2000 for position in range(128) if position not in fixed)


def _reference_summary(masks: list[Mask], fields: list[Field]) -> list[dict[str, str]]:
    """The summary as it was defined: every field's label ranked, masks looked up."""
    labels = {f.path: most_sensitive(f.labels) for f in fields}
    return [{"path": m.path, "strategy": m.strategy, "label": labels.get(m.path, "unknown")} for m in masks]


def test_the_masked_summary_labels_each_masked_path_as_its_last_field() -> None:
    fields = [
        Field("outputs.ssn", frozenset({"internal"}), {}),
        Field("outputs.name", frozenset({"public", "confidential"}), {}),
        Field("outputs.ssn", frozenset({"restricted", "confidential"}), {}),  # the later one counts
        Field("outputs.notes{us_ssn}", frozenset({"confidential"}), {}),
    ]
    masks = [
        Mask("outputs.ssn", "null"),
        Mask("outputs.notes{us_ssn}", "partial", {"keep_last": 4}),
        Mask("outputs.gone", "redact"),  # masked, yet no field of that path
    ]
    summary = masked_summary(masks, fields)
    assert summary == _reference_summary(masks, fields)
    assert [entry["label"] for entry in summary] == ["restricted", "confidential", "unknown"]
    assert masked_summary([], fields) == []


def _masked_count(label: str) -> float:
    return float(metrics.MASKED_FIELDS.labels(label)._value.get())


async def test_masked_fields_are_counted_once_each_by_label() -> None:
    call = Call("/inference.GRPCInferenceService/ModelInfer", "ipv4:127.0.0.1:1", (), {}, "s", "r")
    outcome = Outcome(subject=Subject("nora", ("analysts",)), model="m", upstream_status="OK")
    outcome.masked += [
        {"path": "outputs.ssn", "strategy": "partial", "label": "confidential"},
        {"path": "outputs.secret", "strategy": "null", "label": "restricted"},
        {"path": "outputs.card", "strategy": "partial", "label": "confidential"},
    ]
    before = {label: _masked_count(label) for label in ("confidential", "restricted", "internal")}
    await LogAndMetricsRecorder().record(CallRecord.of(call, outcome, None))
    after = {label: _masked_count(label) for label in before}
    assert {label: after[label] - before[label] for label in before} == {
        "confidential": 2,
        "restricted": 1,
        "internal": 0,
    }
