"""Viewing a recorded call is a policy decision for the viewer (phase ``replay``), made by the
real engines on the real policy pack, and fails closed.

The recorded call is nora's (an analyst) response as ``make_outcome`` delivers it; here it
holds a clear SSN, as a cleared caller would have received it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from labelgate._proto.labelgate.v1 import demo_pb2
from labelgate.auth import Subject
from labelgate.calls import CallRecord
from labelgate.classify import Catalog, Classifier, DetectorSet, to_policy_fields
from labelgate.classify.detectors import CustomPattern
from labelgate.enforce.replies import infer_response
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from labelgate.policy.contract import ApprovalRequirement, DecidedMask, Decision
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.engine import PolicyEngine
from labelgate.policy.opa import OpaEngine
from labelgate.policy.wasm import WasmEngine
from labelgate.recording.entries import call_entry, decode_message, encode_message
from labelgate.recording.viewing import ReplayPolicy, view_call, view_entries
from tests.recording.conftest import (
    GLUED_SSN,
    Clock,
    delivered_response,
    make_call,
    make_outcome,
    masked_before_recording,
)
from tests.support.procs import REPO, free_port

CLEAR_SSN = "536-22-1234"
HASH_KEY = b"viewing-test-hash-key-0123456789"
AUDITOR = Subject.proven("jwt", "ada", issuer="labelgate-dev", groups=("auditors",))
STEWARD_AUDITOR = Subject.proven("jwt", "sam", issuer="labelgate-dev", groups=("auditors", "data-stewards"))
ANALYST = Subject.proven("jwt", "ana", issuer="labelgate-dev", groups=("analysts",))


@functools.cache
def classifier() -> Classifier:
    """The same one until a catalog replaces it, as the gateway's classify stage gives it."""
    return Classifier(Catalog.from_file(REPO / "rego/labelgate/catalog/data.json"), DetectorSet.default())


def recorded(**overrides: Any) -> dict[str, Any]:
    """A recorded call whose delivered response holds a clear SSN (as a cleared caller got it)."""
    outcome = make_outcome(delivered_response(ssn=CLEAR_SSN, notes=f"call me, SSN {CLEAR_SSN}"), masked=[])
    entry = call_entry(CallRecord.of(make_call(), outcome, None, Clock()()), record_input_values=False)
    entry.update(overrides)
    return entry


def policy_of(decide: Callable[[dict[str, Any]], Any]) -> ReplayPolicy:
    return ReplayPolicy(decide=decide, classifier=classifier, hash_key=HASH_KEY, deadline_seconds=5)


def shown(view: dict[str, Any]) -> dict[str, list[Any]]:
    message = decode_message(view["response"])
    assert message is not None
    return {t.name: t.values for t in decode_outputs(message)}  # type: ignore[arg-type]


ENGINES = ["embedded", "wasm", "opa"]


@pytest.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[PolicyEngine]:
    """Each engine the gateway can run, on the repository's policy pack."""
    made: PolicyEngine
    if request.param == "embedded":
        made = EmbeddedEngine(REPO / "rego", watch_interval=None)
    elif request.param == "wasm":
        made = WasmEngine(REPO / "rego")
    else:
        url, _ = request.getfixturevalue("opa_server")  # a real `opa run --server` on rego/
        made = OpaEngine(url, timeout=5)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


async def test_an_auditor_sees_the_policy_masks_not_the_delivered_values(engine: PolicyEngine) -> None:
    view = await view_call(policy_of(engine.decide), AUDITOR, recorded())
    values = shown(view)
    assert values["customer_id"] == [1, 2]  # public
    assert values["ssn"] == [b"[REDACTED]", b"[REDACTED]"]  # confidential, redacted for auditors
    # internal, but an SSN was found in them: a replay masks the whole field for it (null)
    assert values["notes"] == [b"", b""]
    assert values["risk_score"] == [0.0, 0.0]  # internal FP32: zeroed
    assert CLEAR_SSN.encode() not in json.dumps(view).encode()
    assert view["replay"]["outcome"] == "masked" and view["replay"]["approval"] is None
    assert {m["path"]: m["strategy"] for m in view["replay"]["masked"]} == {
        "outputs.notes": "null",  # widened from outputs.notes{us_ssn} (redact)
        "outputs.risk_score": "redact",
        "outputs.ssn": "redact",
    }
    assert "request_message" not in view


async def test_an_approval_gated_viewer_sees_masked_values_and_is_told_so(engine: PolicyEngine) -> None:
    view = await view_call(policy_of(engine.decide), STEWARD_AUDITOR, recorded())
    values = shown(view)
    assert values["ssn"] == [b"", b""]  # nulled until an approval, never clear
    # notes are internal (in clear for stewards), but the SSN found in them is confidential:
    # its mask is widened to the whole field, as every part-field mask of a replay is
    assert values["notes"] == [b"", b""]
    assert view["replay"]["outcome"] == "approval_required"
    assert view["replay"]["approval"] == "confidential data needs 1 approval(s) from data-owners"
    assert view["replay"]["approver_groups"] == ["data-owners"]


async def test_a_viewer_the_policy_denies_sees_none_of_the_values(engine: PolicyEngine) -> None:
    view = await view_call(policy_of(engine.decide), ANALYST, recorded())
    assert view["response"] is None
    assert view["replay"]["outcome"] == "denied"
    assert "may not view recorded calls" in view["replay"]["reason"]
    assert CLEAR_SSN not in json.dumps(view)


async def test_labels_the_call_saw_still_govern_the_replay(engine: PolicyEngine) -> None:
    """A backend labelled customer_id restricted at call time (not delivered): the catalog says
    public, yet the replay masks it."""
    entry = recorded()
    entry["decision"]["fields"].append({"path": "outputs.customer_id", "labels": ["restricted"]})
    values = shown(await view_call(policy_of(engine.decide), AUDITOR, entry))
    assert values["customer_id"] == [0, 0]


async def test_an_unreachable_engine_fails_closed() -> None:
    dead = OpaEngine(f"http://127.0.0.1:{free_port()}", timeout=1, retries=0)
    await dead.start()
    try:
        view = await view_call(policy_of(dead.decide), AUDITOR, recorded())
    finally:
        await dead.close()
    assert view["response"] is None and view["replay"]["outcome"] == "error"
    assert view["replay"]["reason"] == "policy engine unavailable"


async def test_an_engine_that_raises_or_hangs_fails_closed() -> None:
    async def raises(_: dict[str, Any]) -> Decision:
        raise RuntimeError("engine bug")

    async def hangs(_: dict[str, Any]) -> Decision:
        import asyncio

        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    for decide in (raises, hangs):
        policy = ReplayPolicy(decide=decide, classifier=classifier, hash_key=HASH_KEY, deadline_seconds=0.05)
        view = await view_call(policy, AUDITOR, recorded())
        assert view["response"] is None and view["replay"]["outcome"] == "error", decide


async def test_a_policy_that_does_not_know_the_replay_phase_shows_nothing(tmp_path: Path) -> None:
    """A pack written before the replay phase: it allows calls and knows nothing else."""
    (tmp_path / "old.rego").write_text(
        "package labelgate.decision\n\n"
        'default result := {"allow": false, "reason": "unknown phase", "mask": [],'
        ' "require_approval": null, "cache_ttl_seconds": 0}\n\n'
        'result := {"allow": true, "reason": "ok", "mask": [], "require_approval": null,'
        ' "cache_ttl_seconds": 0} if input.phase in {"request", "response"}\n'
    )
    engine = EmbeddedEngine(tmp_path, watch_interval=None)
    await engine.start()
    try:
        view = await view_call(policy_of(engine.decide), AUDITOR, recorded())
    finally:
        await engine.close()
    assert view["response"] is None and view["replay"]["outcome"] == "denied"


async def test_a_response_that_cannot_be_decoded_is_not_shown() -> None:
    async def allow_all(_: dict[str, Any]) -> Decision:
        return Decision(allow=True, reason="everything")

    entry = recorded()
    entry["response"] = {**entry["response"], "base64": "bm90IGEgcHJvdG9idWY="}
    view = await view_call(policy_of(allow_all), AUDITOR, entry)
    assert view["response"] is None and view["replay"]["outcome"] == "error"
    unknown = recorded()
    unknown["response"] = {**unknown["response"], "type": "nobody.Knows"}
    assert (await view_call(policy_of(allow_all), AUDITOR, unknown))["response"] is None


async def test_markers_and_refused_calls_pass_through() -> None:
    async def never(_: dict[str, Any]) -> Decision:
        raise AssertionError("no decision is needed")

    marker = {"kind": "truncated", "time": "t", "session_id": "s", "limit_bytes": 1, "recorded_bytes": 2}
    refused = recorded(response=None)
    viewed = await view_entries(policy_of(never), AUDITOR, [marker, refused])
    assert viewed[0] == marker
    assert viewed[1]["response"] is None and viewed[1]["replay"]["outcome"] == "no_response"


async def test_a_held_result_with_nothing_allowed_shows_every_value_nulled() -> None:
    """A pack may answer a replay with the held shape (allow false, no masks): the values exist,
    none may be seen yet, so every field is nulled and the approval is named."""

    async def held(_: dict[str, Any]) -> Decision:
        requirement = ApprovalRequirement(("data-owners",), 1, 900, "replays need a data owner")
        return Decision(allow=False, reason="held for approval", require_approval=requirement)

    view = await view_call(policy_of(held), AUDITOR, recorded())
    values = shown(view)
    assert values == {"customer_id": [0, 0], "ssn": [b"", b""], "risk_score": [0.0, 0.0], "notes": [b"", b""]}
    assert view["replay"]["outcome"] == "approval_required"
    assert view["replay"]["approval"] == "replays need a data owner"


def _recorded_sentiment(label: bytes, fields: list[dict[str, Any]]) -> dict[str, Any]:
    """A recorded ``sentiment`` call delivered in clear to a restricted reader, whose
    response-phase decision saw ``fields``."""
    response = infer_response(
        model="sentiment",
        model_version="",
        caller_id="1",
        tensors=[Tensor("label", "BYTES", [1], [label])],
        raw=False,
    )
    return {
        "kind": "call",
        "request_id": "r",
        "session_id": "s",
        "method": "/inference.GRPCInferenceService/ModelInfer",
        "model": "sentiment",
        "subject": {"id": "jwt:x#boss", "groups": ["restricted-readers"], "auth": "jwt"},
        "request": {"model": "sentiment", "outputs": ["label"]},
        "decision": {"outcome": "allowed", "labels": ["restricted"], "masked": [], "fields": fields},
        "response": encode_message(response),
    }


async def test_a_recorded_span_todays_detectors_miss_masks_the_whole_field(engine: PolicyEngine) -> None:
    """The call's detector (since disabled or renamed) found a restricted span in
    ``outputs.label`` that today's detectors do not: the policy masks that span, which today's
    classification cannot locate, so the whole tensor is nulled rather than shown in clear."""
    secret = b"badge EMP-778812 cleared"
    entry = _recorded_sentiment(
        secret,
        [
            {"path": "outputs.label", "labels": ["public"]},
            {"path": "outputs.label{employee_id}", "labels": ["restricted"]},
        ],
    )
    view = await view_call(policy_of(engine.decide), AUDITOR, entry)
    assert shown(view) == {"label": [b""]}
    assert b"EMP-778812" not in json.dumps(view).encode()
    assert view["replay"]["outcome"] == "masked"
    assert {"path": "outputs.label", "strategy": "null", "label": "restricted"} in view["replay"]["masked"]


async def test_a_recorded_json_node_todays_classification_lacks_masks_the_whole_field() -> None:
    """A mask on a JSON node (or by a glob on a recorded span) that today's classification
    did not find is widened to the whole tensor too."""

    async def masks(_: dict[str, Any]) -> Decision:
        return Decision(
            allow=True,
            reason="masked",
            masks=(
                DecidedMask("outputs.label[].secret", "redact"),
                DecidedMask("outputs.*{employee_id}", "hash"),
            ),
        )

    entry = _recorded_sentiment(
        b"plain words", [{"path": "outputs.label[].secret", "labels": ["restricted"]}]
    )
    assert shown(await view_call(policy_of(masks), AUDITOR, entry)) == {"label": [b""]}
    entry = _recorded_sentiment(
        b"badge EMP-1", [{"path": "outputs.label{employee_id}", "labels": ["restricted"]}]
    )
    view = await view_call(policy_of(masks), AUDITOR, entry)
    assert shown(view) == {"label": [b""]}

    async def held(_: dict[str, Any]) -> Decision:  # nothing allowed: every field nulled
        requirement = ApprovalRequirement(("data-owners",), 1, 900, "replays need a data owner")
        return Decision(allow=False, reason="held for approval", require_approval=requirement)

    only_span = _recorded_sentiment(
        b"badge EMP-1", [{"path": "outputs.label{employee_id}", "labels": ["restricted"]}]
    )
    assert shown(await view_call(policy_of(held), AUDITOR, only_span)) == {"label": [b""]}


async def test_a_replay_never_shows_more_of_a_span_than_its_own_mask() -> None:
    """Review s13 (rev-labels 3): the viewer may see ``outputs.label`` partially (keep_last 4)
    but not the secret found in it: a recording is masked by the same code as a reply, so the
    secret's mask covers the whole element rather than the label's showing its last characters."""

    async def masks(_: dict[str, Any]) -> Decision:
        return Decision(
            allow=True,
            reason="masked",
            masks=(
                DecidedMask("outputs.label", "partial", {"keep_last": 4}),
                DecidedMask("outputs.label{secret}", "null"),
            ),
        )

    entry = _recorded_sentiment(
        b"key AKIAIOSFODNN7EXAMPLE",
        [
            {"path": "outputs.label", "labels": ["confidential"]},
            {"path": "outputs.label{secret}", "labels": ["restricted"]},
        ],
    )
    view = await view_call(policy_of(masks), AUDITOR, entry)
    assert shown(view) == {"label": [b""]}
    assert b"MPLE" not in json.dumps(view).encode()


async def test_a_value_the_call_found_but_the_recorded_bytes_hide_is_masked(engine: PolicyEngine) -> None:
    """Review (replay masks, case a): the recording holds the reply after the caller's masks,
    which glued an SSN to the ``.5`` after a nulled key block. Today's scan of those bytes
    finds the other SSN, so ``outputs.label{us_ssn}`` is still there today, yet it would miss
    this one: every part-field mask of a replay masks its whole field."""
    entry = masked_before_recording()
    today = classifier().classify_response("sentiment", decode_outputs(decode_message(entry["response"])))  # type: ignore[arg-type]
    assert "outputs.label{us_ssn}" in {item.path for item in today.fields}  # the path is still found...
    assert GLUED_SSN.encode() in shown({"response": entry["response"]})["label"][0]  # ...not this value
    view = await view_call(policy_of(engine.decide), AUDITOR, entry)
    assert shown(view) == {"label": [b""]}
    assert GLUED_SSN not in json.dumps(view) and "537-33-5678" not in json.dumps(view)
    assert view["replay"]["outcome"] == "masked"
    assert view["replay"]["masked"] == [{"path": "outputs.label", "strategy": "null", "label": "restricted"}]


async def test_a_detector_narrowed_since_the_call_masks_the_whole_field(engine: PolicyEngine) -> None:
    """Review (replay masks, case b): ``emp_id`` (``EMP-\\d{4,8}`` then) found two ids when
    the call was made; redefined since (the same name, a narrower pattern), it finds one of
    them, so ``outputs.label{emp_id}`` is found today and a mask on it alone would show the
    other id."""
    now = Classifier(
        Catalog.from_file(REPO / "rego/labelgate/catalog/data.json"),
        DetectorSet(None, [CustomPattern("emp_id", r"EMP-\d{4}(?!\d)", "restricted")]),
    )
    entry = _recorded_sentiment(
        b"ids EMP-1234 and EMP-87654321",
        [
            {"path": "outputs.label", "labels": ["public"]},
            {"path": "outputs.label{emp_id}", "labels": ["restricted"]},
        ],
    )
    today = now.classify_response("sentiment", decode_outputs(decode_message(entry["response"])))  # type: ignore[arg-type]
    assert "outputs.label{emp_id}" in {item.path for item in today.fields}
    policy = ReplayPolicy(decide=engine.decide, classifier=lambda: now, hash_key=HASH_KEY, deadline_seconds=5)
    view = await view_call(policy, AUDITOR, entry)
    assert shown(view) == {"label": [b""]}
    assert b"EMP-87654321" not in json.dumps(view).encode()
    assert view["replay"]["masked"] == [{"path": "outputs.label", "strategy": "null", "label": "restricted"}]


async def test_a_span_mask_on_a_typed_reply_masks_the_whole_field() -> None:
    """The same for a routed typed reply: ``notes{us_ssn}`` of a ``Customer`` is found today
    (the first SSN), not for the glued one; the replay clears ``notes``."""

    async def masks(_: dict[str, Any]) -> Decision:
        return Decision(allow=True, reason="masked", masks=(DecidedMask("notes{us_ssn}", "redact"),))

    notes = decode_outputs(decode_message(masked_before_recording()["response"]))[0].values[0]  # type: ignore[arg-type]
    entry = _recorded_sentiment(b"", [{"path": "notes{us_ssn}", "labels": ["confidential"]}])
    entry.update(method="/labelgate.v1.demo.CustomerService/Get", model="")
    entry["response"] = encode_message(demo_pb2.Customer(customer_id=1, notes=notes.decode()))
    view = await view_call(policy_of(masks), AUDITOR, entry)
    message = decode_message(view["response"])
    assert isinstance(message, demo_pb2.Customer)
    assert message.customer_id == 1 and message.notes == ""
    assert [(m["path"], m["strategy"]) for m in view["replay"]["masked"]] == [("notes", "null")]


def _catalog_labelling_ssn(label: str) -> Classifier:
    data = json.loads((REPO / "rego/labelgate/catalog/data.json").read_text())
    for entry in data["entries"]:
        if entry["path"] == "outputs.ssn":
            entry["labels"] = [label]
    return Classifier(Catalog.from_data(data), DetectorSet.default())


async def test_a_catalog_replaced_between_classifying_and_deciding_is_classified_again() -> None:
    """The recording is classified on the admin thread and decided on the gateway's loop: a
    bundle activated in that hop would have the new policy decide on the old catalog's labels."""
    current = [_catalog_labelling_ssn("confidential")]
    seen: list[list[str]] = []

    async def decide(doc: dict[str, Any]) -> Decision:
        seen.append(next(f["labels"] for f in doc["fields"] if f["path"] == "outputs.ssn"))
        if len(seen) == 1:
            current[0] = _catalog_labelling_ssn("restricted")  # activated during the hop
        return Decision(allow=True, reason="shown", engine="fake", revision="r")

    policy = ReplayPolicy(decide=decide, classifier=lambda: current[0], hash_key=HASH_KEY, deadline_seconds=5)
    view = await view_call(policy, AUDITOR, recorded())
    assert seen == [["confidential"], ["restricted"]], "decided again on the new catalog's labels"
    assert view["replay"]["outcome"] == "shown"


async def test_a_catalog_replaced_on_every_decision_shows_nothing() -> None:
    async def decide(doc: dict[str, Any]) -> Decision:
        current[0] = _catalog_labelling_ssn("restricted")
        return Decision(allow=True, reason="shown", engine="fake", revision="r")

    current = [_catalog_labelling_ssn("confidential")]
    policy = ReplayPolicy(decide=decide, classifier=lambda: current[0], hash_key=HASH_KEY, deadline_seconds=5)
    view = await view_call(policy, AUDITOR, recorded())
    assert view["response"] is None and view["replay"]["outcome"] == "error"
    assert "changed while the recording was viewed" in view["replay"]["reason"]


def _recorded_output(name: str, text: bytes) -> dict[str, Any]:
    """A call to ``sentiment`` whose one output, named by the upstream, holds ``text``, with
    the fields the call's decision saw."""
    tensors = [Tensor(name, "BYTES", [1], [text])]
    live = classifier().classify_response("sentiment", tensors)
    response = infer_response(model="sentiment", model_version="", caller_id="1", tensors=tensors, raw=False)
    return recorded(
        model="sentiment",
        response=encode_message(response),
        decision={
            "outcome": "allowed",
            "labels": sorted({label for item in live.fields for label in item.labels}),
            "masked": [],
            "fields": to_policy_fields(live.fields),
        },
    )


@pytest.mark.parametrize("name", ["a{b", "x[y", "a{us_ssn}", "n[]"])
async def test_an_output_named_with_braces_is_masked_whole_in_a_replay(
    engine: PolicyEngine, name: str
) -> None:
    """Review of the replay fix (eighth round): the whole field was found by cutting a path at
    its first brace, so an output the upstream named ``a{b`` was masked as ``outputs.a`` (no
    such output) and its SSN shown in clear."""
    view = await view_call(
        policy_of(engine.decide), AUDITOR, _recorded_output(name, b"call me, SSN 536-22-1234")
    )
    assert "536-22-1234" not in json.dumps(view)
    assert shown(view) == {name: [b""]}
