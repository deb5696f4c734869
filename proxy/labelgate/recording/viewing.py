"""Showing a recorded call is a policy decision for the viewer (phase ``replay``).

A recording holds the response as delivered to its caller, who may have been cleared (or
approved) to see real values. Nobody who reads the recording later inherits that clearance:
every call entry is classified again (the recorded response, plus the fields its
response-phase decision saw, ``decision.fields``), the policy decides for the *viewer*
(subject = the viewer, the recorded call's model and fields, the original caller in
``context.recorded_call``), and the policy's masks are applied to the recorded response
before anything shows it (``labelgate.enforce``, as on the data path).

Fail closed, per call: a deny, an engine error or timeout, a response that does not decode
or classify, leaves the call's response out (``response: null``) and says why. A
``require_approval`` result shows the values masked (the policy's masks; every field nulled
when the policy allowed nothing) and names the approval; never clear values. Request values
(``request_message``, kept only with ``recording.record_input_values``) are never classified,
so no view shows them.

The policy decides on the recorded fields as well as today's, but masks are applied against
today's classification of the response, and that can find fewer values than the call's did:
the recording holds the reply after the caller's masks (a key block nulled can glue an SSN to
the digit after it, or take away the BEGIN line that made other outputs part of a key), and a
detector may have been redefined since. A mask on part of a field, a detector span
(``outputs.t{d}``) or a JSON node (``outputs.t[].k``), reaches only what today's scan finds,
and finding that path today says nothing about finding the same values. So in a replay every
such mask, and a glob mask for each part-field path of the call or of today that it names,
becomes a ``null`` mask on the whole field it is part of (``outputs.t``; for a message, the
field before ``{``), always: no replay shows a value the call's classification found, at the
cost of the rest of that field. Keeping part masks only when today's scan provably reads what
the call's read would need the call's bytes before any mask and its exact detectors and
catalog; the recording holds neither.

``ReplayPolicy`` is handed in by whoever runs the viewer (the gateway's admin app, the CLI)
with the engine the gateway runs; this module never builds one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.classify import Classification, Classifier, Field, to_policy_fields
from labelgate.classify.catalog import OUTPUTS_PREFIX, compile_glob, is_glob, tensor_part
from labelgate.classify.labels import rank
from labelgate.enforce import Mask, MaskIndex, apply_masks, apply_message_masks
from labelgate.enforce.replies import infer_response, masked_markers
from labelgate.enforce.strategies import strongest
from labelgate.errors import LabelgateError
from labelgate.logs import get_logger
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, uses_raw_outputs
from labelgate.policy.contract import POLICY_ERROR, POLICY_TIMEOUT, REPLAY, Decision, build_input
from labelgate.recording.entries import checked, decode_message, encode_message

log = get_logger(__name__)

Decide = Callable[[dict[str, Any]], Awaitable[Decision]]
# What each way of showing a call is called in ``replay.outcome``.
SHOWN, MASKED, APPROVAL_REQUIRED, DENIED, FAILED, NOTHING = (
    "shown",
    "masked",
    "approval_required",
    "denied",
    "error",
    "no_response",
)


@dataclass(frozen=True)
class ReplayPolicy:
    """What a viewer needs: the gateway's engine (``decide``), its classifier as it is now
    (a callable, since the catalog follows its bundle; it returns the same object until a new
    catalog replaces it, which is how a view tells that one did), the masking hash key, and
    the decision deadline (``policy.decision_deadline_ms``)."""

    decide: Decide
    classifier: Callable[[], Classifier]
    hash_key: bytes
    deadline_seconds: float


@dataclass(frozen=True)
class _Response:
    """A recorded response decoded and classified, ready for masks."""

    message: Message
    classification: Classification
    tensors: list[Tensor] | None  # inference responses only
    classifier: Classifier  # the one that classified it (the catalog in force then)


async def view_entries(
    policy: ReplayPolicy, viewer: Subject, entries: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The entries of a session as ``viewer`` may see them; markers and torn lines as they are.
    An entry still sealed (read without its key) is shown as sealed, never as a call: what it
    holds, a response included, is not known here. An entry not of the shape its writer gives
    it (edited) is shown as damaged (``entries.checked``), so every renderer after this point
    can rely on the shape, and the session's other entries still show."""
    viewed = []
    for stored in entries:
        if "sealed" in stored:
            viewed.append(_unopened(stored))
            continue
        entry = checked(stored)
        if entry.get("kind") == "call":
            viewed.append(await view_call(policy, viewer, entry))
        else:
            viewed.append(entry)
    return viewed


def _unopened(entry: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {
        key: entry[key] for key in ("time", "session_id", "request_id", "seq") if key in entry
    }
    note = f"a sealed {entry.get('kind', 'entry')} (encrypted at rest) and no key is configured to open it"
    return {**kept, "kind": "damaged", "line": "?", "note": note}


async def view_call(policy: ReplayPolicy, viewer: Subject, entry: dict[str, Any]) -> dict[str, Any]:
    """One call entry as ``viewer`` may see it: ``response`` masked (or null) and ``replay``
    saying what the policy decided."""
    shown = {key: value for key, value in entry.items() if key not in ("response", "request_message")}
    shown["response"] = None
    stored = entry.get("response")
    if not stored:
        shown["replay"] = _verdict(NOTHING, "no response was delivered")
        return shown
    # Classified here, decided on the gateway's loop: a bundle activated in between would have
    # the new policy decide on the old catalog's labels. Classified and decided again then, and
    # once more it fails closed.
    for _attempt in range(2):
        response = _classified(policy, entry, stored)
        if response is None:
            why = "the recorded response cannot be classified, so it is not shown"
            shown["replay"] = _verdict(FAILED, why)
            return shown
        fields = _merged_fields(response.classification.fields, _recorded_fields(entry))
        decision = await _decide(policy, _replay_input(viewer, entry, fields))
        if policy.classifier() is response.classifier:
            break
    else:
        shown["replay"] = _verdict(FAILED, "the policy changed while the recording was viewed: view it again")
        return shown
    log.info(
        "recording viewed",
        subject=viewer.id,
        request_id=entry.get("request_id"),
        allow=decision.allow,
        approval=decision.require_approval is not None,
        fail_reason=decision.fail_reason,
    )
    if decision.failed_closed:
        shown["replay"] = _verdict(FAILED, decision.reason, decision)
        return shown
    if not decision.allow and decision.require_approval is None:
        shown["replay"] = _verdict(DENIED, decision.reason, decision)
        return shown
    try:
        if decision.allow:
            masks = [Mask.coerce(mask) for mask in decision.masks]
        else:  # held, with nothing allowed: the viewer may see none of the values yet
            masks = [Mask(item.path, "null") for item in fields]
        decided, masks = masks, _applicable(masks, response, fields)
        shown["response"] = encode_message(_masked(policy, response, masks))
    except (LabelgateError, ValueError) as error:
        log.error(
            "recording view failed", request_id=entry.get("request_id"), error_type=type(error).__name__
        )
        shown["replay"] = _verdict(FAILED, "the recorded response cannot be masked, so it is not shown")
        return shown
    outcome = APPROVAL_REQUIRED if decision.require_approval else MASKED if masks else SHOWN
    widened = {mask.path for mask in masks if mask not in decided}
    names = None if response.tensors is None else {tensor.name for tensor in response.tensors}
    shown["replay"] = _verdict(outcome, decision.reason, decision, _summary(masks, fields, widened, names))
    return shown


def _verdict(
    outcome: str,
    reason: str,
    decision: Decision | None = None,
    masked: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    approval = decision.require_approval if decision is not None else None
    return {
        "outcome": outcome,
        "reason": reason,
        "masked": masked or [],
        "approval": approval.reason if approval is not None else None,
        "approver_groups": list(approval.approver_groups) if approval is not None else [],
        "engine": decision.engine if decision is not None else "",
        "revision": decision.revision if decision is not None else "",
    }


def _classified(policy: ReplayPolicy, entry: dict[str, Any], stored: dict[str, Any]) -> _Response | None:
    message = decode_message(stored)
    if message is None:
        return None
    classifier = policy.classifier()
    try:
        if isinstance(message, pb.ModelInferResponse):
            tensors = decode_outputs(message)
            model = str(entry.get("model") or message.model_name)
            return _Response(message, classifier.classify_response(model, tensors), tensors, classifier)
        return _Response(message, classifier.classify_message(message), None, classifier)
    except LabelgateError as error:
        log.warning(
            "recorded response not classified", request_id=entry.get("request_id"), reason=error.reason
        )
        return None


def _recorded_fields(entry: dict[str, Any]) -> list[Field]:
    """What the call's own response-phase decision saw, and the labels of what it masked."""
    decision = entry.get("decision") or {}
    found: list[Field] = []
    for item in [*(decision.get("fields") or []), *(decision.get("masked") or [])]:
        path = item.get("path") if isinstance(item, dict) else None
        labels = item.get("labels", [item.get("label")]) if isinstance(item, dict) else []
        labels = [label for label in labels or [] if isinstance(label, str) and label]
        if isinstance(path, str) and path and labels:
            found.append(Field(path, frozenset(labels), {label: {"recording"} for label in labels}))
    return found


def _merged_fields(classified: Iterable[Field], recorded: Iterable[Field]) -> list[Field]:
    """One field per path with the union of its labels: a replay is never governed by fewer
    labels than the call was, nor than the recorded response classifies as today."""
    merged: dict[str, dict[str, set[str]]] = {}
    for item in [*classified, *recorded]:
        sources = merged.setdefault(item.path, {})
        for label in item.labels:
            sources.setdefault(label, set()).update(item.sources.get(label, ()))
    return [Field(path, frozenset(sources), sources) for path, sources in merged.items()]


def _replay_input(viewer: Subject, entry: dict[str, Any], fields: list[Field]) -> dict[str, Any]:
    method = str(entry.get("method") or "")
    summary = entry.get("request") or {}
    decision = entry.get("decision") or {}
    request: dict[str, Any] = {
        "service": method.strip("/").split("/", 1)[0],
        "method": method,
        "model": str(entry.get("model") or ""),
        "requested_outputs": [],  # the viewer asks for nothing by name
    }
    if summary.get("model_version"):
        request["model_version"] = str(summary["model_version"])
    caller = entry.get("subject")
    recorded_call = {
        "subject": {
            "id": str(caller.get("id", "")),
            "name": str(caller.get("name") or ""),
            "groups": [str(group) for group in caller.get("groups") or []],
            "auth": str(caller.get("auth", "")),
        }
        if isinstance(caller, dict)
        else None,
        "request_id": str(entry.get("request_id") or ""),
        "session_id": str(entry.get("session_id") or ""),
        "time": str(entry.get("time") or ""),
        "outcome": str(decision.get("outcome") or "error"),
        "labels": [str(label) for label in decision.get("labels") or []],
        "requested_outputs": [str(name) for name in summary.get("outputs") or []],
    }
    return build_input(
        phase=REPLAY,
        subject=viewer.to_policy(),
        request=request,
        fields=to_policy_fields(fields),
        approval=None,  # a replay never uses a grant
        time_ns=time.time_ns(),
        recorded_call=recorded_call,
    )


async def _decide(policy: ReplayPolicy, policy_input: dict[str, Any]) -> Decision:
    try:
        async with asyncio.timeout(policy.deadline_seconds):
            return await policy.decide(policy_input)
    except TimeoutError:
        return Decision.deny(POLICY_TIMEOUT)
    except Exception as error:  # an engine that raises instead of failing closed itself
        log.error("replay decision failed", error_type=type(error).__name__)
        return Decision.deny(POLICY_ERROR)


def _applicable(masks: list[Mask], response: _Response, fields: Sequence[Field]) -> list[Mask]:
    """The masks, each one on part of a field widened to that whole field (``null``), one per
    path (the most protective).

    A part mask (a ``{detector}`` span, a JSON node) reaches only what today's classification
    of the recorded bytes finds, which may be less than the call's (module docstring): so none
    is applied as it is. A glob is kept for the whole fields it names, and widened for every
    part-field path, recorded or found today, that it names.
    """
    names = None if response.tensors is None else {tensor.name for tensor in response.tensors}
    applicable: list[Mask] = []
    for mask in masks:
        if not is_glob(mask.path):
            wholes = _whole_paths(mask.path, names)
            applicable += [mask if whole == mask.path else Mask(whole, "null") for whole in wholes]
            continue
        applicable.append(mask)
        pattern = compile_glob(mask.path)
        for item in fields:
            if pattern.fullmatch(item.path):
                wholes = _whole_paths(item.path, names)
                applicable += [Mask(whole, "null") for whole in wholes if whole != item.path]
    return list(strongest(applicable).values())


def _whole_paths(path: str, names: set[str] | None) -> list[str]:
    """The whole fields a path is part of, or is: for an inference response (``names``: its
    outputs), ``outputs.t`` of ``outputs.t{d}`` or ``outputs.t[].k`` for every output ``t`` the
    path can be read as (an upstream names its outputs, ``a{b`` and ``x[y`` included, so a
    path is not cut at its first brace: review, eighth round; each reading is masked); the
    field before ``{`` in a message (field names hold no braces)."""
    if names is None or not path.startswith(OUTPUTS_PREFIX):
        return [path.split("{", 1)[0]]
    rest = path.removeprefix(OUTPUTS_PREFIX)
    wholes = [
        OUTPUTS_PREFIX + name
        for name in names
        if rest == name or (rest.startswith(name) and rest[len(name)] in "{[")
    ]
    return sorted(wholes) or [OUTPUTS_PREFIX + tensor_part(path)]


def _masked(policy: ReplayPolicy, response: _Response, masks: list[Mask]) -> Message:
    if response.tensors is None:
        return apply_message_masks(response.message, response.classification, masks, policy.hash_key)
    message = response.message
    assert isinstance(message, pb.ModelInferResponse)
    index = MaskIndex(masks)
    masked = (
        apply_masks(response.tensors, response.classification, masks, policy.hash_key)
        if index
        else response.tensors
    )
    # Rebuilt from the masked tensors, like a reply on the data path: nothing else of the
    # recorded message (its parameters) is carried over.
    return infer_response(
        model=message.model_name,
        model_version=message.model_version,
        caller_id=message.id,
        tensors=masked,
        raw=uses_raw_outputs(message),
        markers=masked_markers(response.tensors, masked, index),
    )


def _summary(
    masks: Sequence[Mask], fields: Sequence[Field], widened: set[str], names: set[str] | None
) -> list[dict[str, str]]:
    labels = {item.path: max(item.labels, key=rank) for item in fields}
    # A mask widened to a whole field (``_applicable``) is there for what was found inside it.
    inside: dict[str, str] = {}
    for item in fields:
        for whole in set(_whole_paths(item.path, names)) - {item.path}:
            if whole not in inside or rank(labels[item.path]) > rank(inside[whole]):
                inside[whole] = labels[item.path]
    summary = []
    for m in masks:
        found = [
            label
            for label in (labels.get(m.path), inside.get(m.path) if m.path in widened else None)
            if label
        ]
        label = max(found, key=rank) if found else "unknown"
        summary.append({"path": m.path, "strategy": m.strategy, "label": label})
    return summary
