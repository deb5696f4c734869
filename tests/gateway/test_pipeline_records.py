"""What the pipeline records of a call: what the caller got, every decision made for it and
the input each was made on, how it ended. Scripted stages, as in ``test_pipeline.py``.

Found by a review of the records (none of it reached a caller): refused calls recorded as
delivered, gRPC refusals made before authentication and never recorded, approved and
index calls naming only some of their decision inputs, calls ending inside an approval hold
recorded without their decision, and a caller's deadline recorded as a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from labelgate._proto.inference import model_extensions_pb2 as ext
from labelgate.approvals import deadline
from labelgate.approvals.errors import ApprovalPending
from labelgate.audit import AuditReceipt, AuditUnavailable
from labelgate.auth import Subject
from labelgate.calls import Target
from labelgate.classify import Catalog
from labelgate.errors import PermissionDenied, Unauthenticated, Unsupported, UpstreamError
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.record import AuditRecorder, audit_event
from labelgate.policy.contract import ApprovalRequirement, Decision
from labelgate.recording.entries import call_entry
from tests.gateway.test_pipeline import (
    CATALOG,
    STREAM,
    FakeStream,
    ListRecorder,
    customer_reply,
    make_call,
    make_pipeline,
    request,
    requests_of,
    upstream_returning,
)

GRANT = {"state": "granted", "grant_id": "g-1", "approved_by": ["olga"]}
INDEX = "/inference.GRPCInferenceService/RepositoryIndex"


def held(reason: str = "ask an owner") -> Decision:
    return Decision(
        allow=False,
        reason=reason,
        require_approval=ApprovalRequirement(("data-owners",), 1, 60, reason),
        engine="table",
        revision="r1",
    )


class HeldUntilGranted:
    """The request phase asks for an approval; under a grant it allows (and masks ``ssn``)."""

    name, revision = "table", "r1"

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        if policy_input["phase"] == "request" and policy_input["approval"]["state"] == "none":
            return held()
        return Decision(allow=True, reason="ok", engine="table", revision="r1")


class GrantAtOnce:
    async def hold(
        self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
    ) -> Decision:
        return await again(GRANT)


class PendingApproval:
    async def hold(
        self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
    ) -> Decision:
        raise ApprovalPending("APPROVAL_PENDING", "held for approval: call again once granted")


def approving_pipeline(stage: Any) -> tuple[Pipeline, Any]:
    pipeline, _, _, recorder = make_pipeline()
    pipeline.engine = HeldUntilGranted()  # type: ignore[assignment]
    pipeline.approvals = stage
    return pipeline, recorder


# -- what the caller got --------------------------------------------------------------------


async def test_a_reply_the_binding_cannot_carry_is_recorded_without_a_response() -> None:
    # REST renders the released reply inside the record (infer_as); a reply it cannot carry
    # is refused, and its record must not hold a response nobody received.
    pipeline, journal, _, recorder = make_pipeline()

    def render(reply: Any) -> Any:
        raise UpstreamError("REST_OUTPUT_NOT_TEXT", "output 1 is not UTF-8 text")

    with pytest.raises(UpstreamError):
        await pipeline.infer_as(make_call(), request(), upstream_returning(customer_reply(), journal), render)
    (record,) = recorder.records
    assert (record.refusal, record.delivered) == ("REST_OUTPUT_NOT_TEXT", None)
    assert call_entry(record, record_input_values=False)["response"] is None


async def test_a_release_refused_for_its_record_is_recorded_without_a_response() -> None:
    pipeline, journal, _, recorder = make_pipeline()
    recorder.fail = UpstreamError("AUDIT_UNAVAILABLE", "no acknowledgement in time")
    with pytest.raises(UpstreamError):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    await pipeline.finish_records(5)
    released, refused = recorder.records
    assert released.delivered is not None, "the release's own record, written before the failure"
    assert (refused.refusal, refused.delivered) == ("AUDIT_UNAVAILABLE", None)


class UnacknowledgedOnce:
    """An audit client whose first append goes unacknowledged; notes how each was sent."""

    def __init__(self) -> None:
        self.appends: list[tuple[str, bool]] = []

    async def append(self, event: dict[str, Any], *, after_unacknowledged: bool = False) -> AuditReceipt:
        self.appends.append((event["decision"], after_unacknowledged))
        if len(self.appends) == 1:
            raise AuditUnavailable("no durable acknowledgement within 1.0s")
        return AuditReceipt(seq=len(self.appends), hash="0" * 64)

    async def close(self) -> None:
        pass


async def test_the_refusal_after_an_unacknowledged_release_goes_without_the_writers_deadline() -> None:
    """The release's record may land late (read in time, acknowledged behind a slow fsync); the
    refusal sent after it carried the same short deadline, which the stall outlasted, so the
    writer refused it unwritten and the call's last record said released."""
    pipeline, journal, _, _ = make_pipeline()
    client = UnacknowledgedOnce()
    pipeline.recorder = AuditRecorder(client)  # type: ignore[arg-type]
    with pytest.raises(AuditUnavailable):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    await pipeline.finish_records(5)
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    # The release, its refusal (no deadline), then the next call as usual: the flag stays in
    # the refusal's own task.
    assert client.appends == [("mask", False), ("deny", True), ("mask", False)]


async def past_the_deadline() -> None:
    """Return once the current call's deadline has passed (by the clock, not by a guess)."""
    left = deadline.seconds_left()
    assert left is not None
    # The loop's timers may fire a clock tick early, and run on another clock than the deadline's.
    await asyncio.sleep(max(0.0, left) + 0.01)
    assert (deadline.seconds_left() or 0) <= 0


class AcknowledgedPastTheDeadline(ListRecorder):
    """A writer whose acknowledgement of a release comes after the caller's deadline, with no
    cancellation from grpc before it (on a loaded gateway grpc's comes behind it)."""

    async def record(self, entry: Any) -> None:
        await super().record(entry)
        if entry.refusal is None:
            await past_the_deadline()


async def served_with_deadline(call: Any, seconds: float, *, grpc_deadline: bool) -> None:
    async def serve() -> None:
        deadline.set_deadline(seconds, late_reply_dropped=grpc_deadline)  # as each edge does
        await call()

    await asyncio.create_task(serve())


@pytest.mark.parametrize("stalled", ["acknowledgement", "upstream"])
async def test_a_grpc_reply_its_deadline_passed_under_is_recorded_as_gone_not_released(stalled: str) -> None:
    """CI under load (eleventh and twelfth rounds): a caller's deadline fell while its release's
    record awaited the writer, grpc's cancellation of the handler came after the writer's
    acknowledgement, and the call's only record said released ("mask", OK) while grpc
    dropped the reply and the caller got DEADLINE_EXCEEDED."""
    pipeline, journal, _, _ = make_pipeline()
    recorder = pipeline.recorder = AcknowledgedPastTheDeadline(journal)
    upstream = upstream_returning(customer_reply(), journal)

    async def late_upstream(message: Any) -> Any:
        await past_the_deadline()
        return await upstream(message)

    async def infer() -> None:
        await pipeline.infer(
            make_call(), request(), upstream if stalled == "acknowledgement" else late_upstream
        )

    with pytest.raises(asyncio.CancelledError):
        await served_with_deadline(infer, 0.05, grpc_deadline=True)
    await pipeline.finish_records(5)
    ended = [(r.outcome, r.status_code) for r in recorder.records]
    if stalled == "acknowledgement":  # the release's record is durable: the cancellation follows it
        assert ended == [("mask", "OK"), ("error", "DEADLINE_EXCEEDED")]
    else:  # past its deadline before anything was released: nothing says released
        assert ended == [("error", "DEADLINE_EXCEEDED")]


async def test_a_rest_reply_past_its_timeout_parameter_is_still_released() -> None:
    # A REST reply past the request's ``timeout`` parameter still reaches its caller.
    pipeline, journal, _, _ = make_pipeline()
    recorder = pipeline.recorder = AcknowledgedPastTheDeadline(journal)

    async def infer() -> None:
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))

    await served_with_deadline(infer, 0.05, grpc_deadline=False)
    await pipeline.finish_records(5)
    assert [(r.outcome, r.status_code) for r in recorder.records] == [("mask", "OK")]


# -- refusals of requests the gateway cannot serve ------------------------------------------


async def test_a_request_check_runs_after_authentication_and_its_refusal_is_recorded() -> None:
    pipeline, journal, _, recorder = make_pipeline()

    def shared_memory(message: Any) -> None:
        journal.append(("check",))
        raise Unsupported("SHARED_MEMORY_UNSUPPORTED", "no shared memory")

    upstream = upstream_returning(customer_reply(), journal)
    with pytest.raises(Unsupported):
        await pipeline.infer(make_call(), request(), upstream, check=shared_memory)
    assert journal.kinds() == ["authenticate", "check", "record"], "refused before policy and upstream"
    (record,) = recorder.records
    assert record.refusal == "SHARED_MEMORY_UNSUPPORTED" and record.subject is not None
    assert record.request_summary["model"] == "customer-profile"

    def anonymous(metadata: Any, auth_context: Any) -> Subject:
        raise Unauthenticated("TOKEN_MISSING", "no token")

    pipeline.authenticator.authenticate = anonymous  # type: ignore[method-assign]
    with pytest.raises(Unauthenticated):
        await pipeline.infer(make_call(), request(), upstream, check=shared_memory)
    assert journal.kinds().count("check") == 1, "an anonymous caller learns nothing of its request"
    assert recorder.records[-1].refusal == "TOKEN_MISSING"


# -- every decision, with its input ----------------------------------------------------------


async def test_an_approved_call_records_the_decision_that_held_it_and_the_one_that_released_it() -> None:
    pipeline, recorder = approving_pipeline(GrantAtOnce())
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), []))  # type: ignore[arg-type]
    (record,) = recorder.records
    made = [(phase, doc["approval"]["state"]) for phase, _, doc in record.decision_inputs]
    assert made == [("request", "none"), ("request", "granted"), ("response", "none")]
    # Each input replays to the decision recorded beside it (``policy impact`` sees approvers' calls).
    engine = HeldUntilGranted()
    replayed = [(phase, (await engine.decide(doc)).allow) for phase, _, doc in record.decision_inputs]
    assert replayed == [(phase, decision.allow) for phase, decision in record.decisions]
    assert record.superseded_inputs == (0,)
    hashes = [digest for _, digest, _ in record.decision_inputs]
    assert audit_event(record)["decision_inputs"] == [
        {"phase": "request", "hash": hashes[0], "superseded": True},
        {"phase": "request", "hash": hashes[1]},
        {"phase": "response", "hash": hashes[2]},
    ]


# The pipeline tests' catalog with ``ssn`` relabelled: a bundle that changed the catalog.
RELABELLED = Catalog.from_data(
    {
        "default_label": CATALOG.default_label,
        "entries": [
            {
                "model": e.model,
                "path": e.path,
                "labels": ["restricted"] if e.path == "outputs.ssn" else sorted(e.labels),
            }
            for e in CATALOG.entries
        ],
    }
)


class RevisionActivatedWhileHeld:
    """The approver grants after a revision with ``catalog`` was activated (a bundle)."""

    def __init__(self, pipeline: Pipeline, catalog: Catalog) -> None:
        self.pipeline, self.catalog = pipeline, catalog

    async def hold(
        self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
    ) -> Decision:
        self.pipeline.classifier.use_catalog(self.catalog, "a new revision")
        return await again(GRANT)


async def test_a_grant_after_a_policy_only_revision_releases_the_held_call() -> None:
    pipeline, recorder = approving_pipeline(None)
    pipeline.approvals = RevisionActivatedWhileHeld(pipeline, CATALOG)  # type: ignore[assignment]
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), []))  # type: ignore[arg-type]
    (record,) = recorder.records
    assert record.refusal is None and pipeline.classifier.revision == "a new revision"


async def test_a_grant_after_the_catalog_changed_refuses_the_held_call() -> None:
    # Decided again under the new policy with the labels of the old catalog, the call could be
    # released with masks neither revision would have chosen for it.
    pipeline, recorder = approving_pipeline(None)
    pipeline.approvals = RevisionActivatedWhileHeld(pipeline, RELABELLED)  # type: ignore[assignment]
    upstream = upstream_returning(customer_reply(), [])
    with pytest.raises(PermissionDenied) as refused:
        await pipeline.infer(make_call(), request(), upstream)  # type: ignore[arg-type]
    assert refused.value.reason == "CATALOG_CHANGED"
    (record,) = recorder.records
    assert record.refusal == "CATALOG_CHANGED"
    assert [(phase, d.fail_reason) for phase, d in record.decisions] == [
        ("request", None),
        ("request", "CATALOG_CHANGED"),
    ]
    assert [phase for phase, _, _ in record.decision_inputs] == ["request"], "nothing decided again"
    # Called again, it is classified and decided under what is in force.
    pipeline.approvals = GrantAtOnce()  # type: ignore[assignment]
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), []))  # type: ignore[arg-type]


async def test_a_call_ending_inside_the_hold_is_recorded_with_its_decision_and_labels() -> None:
    pipeline, recorder = approving_pipeline(PendingApproval())
    with pytest.raises(ApprovalPending):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), []))  # type: ignore[arg-type]
    (record,) = recorder.records
    assert record.refusal == "APPROVAL_PENDING"
    assert record.labels, "the labels the policy held the call on"
    assert [(phase, d.require_approval is not None) for phase, d in record.decisions] == [("request", True)]
    event = audit_event(record)
    assert (event["phase"], event["engine"]) == ("request", "table")


async def test_an_index_records_the_decision_on_each_model_it_lists_or_leaves_out() -> None:
    pipeline, _, _, recorder = make_pipeline()
    call = make_call(INDEX)

    async def send(message: Any) -> Any:
        names = ("customer-profile", "sentiment")
        return ext.RepositoryIndexResponse(
            models=[ext.RepositoryIndexResponse.ModelIndex(name=n) for n in names]
        )

    async def narrow(subject: Subject, reply: Any) -> Any:
        usable = await pipeline.usable_models(call, subject, [m.name for m in reply.models])
        return ext.RepositoryIndexResponse(models=[m for m in reply.models if m.name in usable])

    await pipeline.unary_message(
        call, Target(service=call.service), ext.RepositoryIndexRequest(), send, narrow
    )
    (record,) = recorder.records
    decided = [
        (phase, doc["request"]["method"].rsplit("/", 1)[1], doc["request"]["model"])
        for phase, _, doc in record.decision_inputs
    ]
    assert decided == [
        ("request", "RepositoryIndex", ""),
        ("request", "ModelInfer", "customer-profile"),
        ("request", "ModelInfer", "sentiment"),
        ("response", "RepositoryIndex", ""),
    ]
    # Outside a call (nothing to record them under) the models are still decided.
    assert await pipeline.usable_models(call, record.subject, ["sentiment"]) == {"sentiment"}  # type: ignore[arg-type]


async def test_model_names_an_index_lists_that_hold_data_or_run_long_reach_no_decision_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The names are the upstream's text: decision inputs are kept at rest (the input store) and
    # hashed into the audit record, where a short value such as an SSN is easily guessed.
    pipeline, _, _, recorder = make_pipeline()
    call = make_call(INDEX)
    planted = [
        "patient 123-45-6789",
        "card 4111 1111 1111 1111",
        "ssn \\u0031\\u0032\\u0033-45-6789",  # escaped: what a JSON reader shows
        "ssn \uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19",  # full-width digits: folded
        "x" * 200_000,
    ]

    async def send(message: Any) -> Any:
        names = ("sentiment", *planted)
        listed = [ext.RepositoryIndexResponse.ModelIndex(name=name) for name in names]
        return ext.RepositoryIndexResponse(models=listed)

    async def narrow(subject: Subject, reply: Any) -> Any:
        usable = await pipeline.usable_models(call, subject, [m.name for m in reply.models])
        return ext.RepositoryIndexResponse(models=[m for m in reply.models if m.name in usable])

    with caplog.at_level("WARNING"):
        reply = await pipeline.unary_message(
            call, Target(service=call.service), ext.RepositoryIndexRequest(), send, narrow
        )
    assert [model.name for model in reply.models] == ["sentiment"]  # type: ignore[attr-defined]
    (record,) = recorder.records
    assert [doc["request"]["model"] for _, _, doc in record.decision_inputs] == ["", "sentiment", ""]
    (line,) = [r for r in caplog.records if r.getMessage().startswith("models left out")]
    assert line.count == len(planted) and not [name for name in planted if name in str(vars(line))]


class DecidesOnItsOwnCatalogsLabels:
    """Allows a model when its input's labels are those of the catalog this engine's revision
    came with; holds every decision until ``release`` (a stalling engine, no timing)."""

    name, revision = "table", "r1"

    def __init__(self, label: str) -> None:
        self.label = label
        self.in_flight = 0
        self.sixteen_in_flight = asyncio.Event()
        self.release = asyncio.Event()

    async def decide(self, policy_input: dict[str, Any]) -> Decision:
        labels = {label for item in policy_input["fields"] for label in item["labels"]}
        expected = self.label  # the revision in force when the evaluation starts
        self.in_flight += 1
        if self.in_flight == 16:
            self.sixteen_in_flight.set()
        await self.release.wait()
        return Decision(allow=labels == {expected}, reason="ok", engine="table", revision="r1")


async def test_a_model_waiting_for_a_decision_slot_is_classified_under_the_revision_deciding_it() -> None:
    # 16 decisions at a time: a model waiting for a slot across a catalog's activation must not
    # carry the old catalog's labels into the new policy's decision.
    pipeline, _, _, _ = make_pipeline()
    pipeline.decision_deadline_seconds = 30
    engine = DecidesOnItsOwnCatalogsLabels("internal")
    pipeline.engine = engine  # type: ignore[assignment]
    models = [f"m{index:02d}" for index in range(24)]

    def catalog(label: str) -> Catalog:
        entries = [{"model": model, "path": "outputs.o", "labels": [label]} for model in models]
        return Catalog.from_data({"default_label": label, "entries": entries})

    pipeline.classifier.use_catalog(catalog("internal"))
    listing = asyncio.create_task(pipeline.usable_models(make_call(INDEX), Subject("nora", ()), models))
    await engine.sixteen_in_flight.wait()
    pipeline.classifier.use_catalog(catalog("restricted"))  # a bundle activates: catalog and policy
    engine.label = "restricted"
    engine.release.set()
    assert sorted(await listing) == models


# -- how it ended ----------------------------------------------------------------------------


async def hang(message: Any) -> Any:
    await asyncio.Event().wait()


async def ended_by_cancel(pipeline: Pipeline, call: Any, seconds_to_deadline: float | None) -> None:
    async def serve() -> None:
        if seconds_to_deadline is not None:
            deadline.set_deadline(seconds_to_deadline)  # as the gRPC interceptor does per call
        await call()

    task = asyncio.create_task(serve())
    await asyncio.sleep(0.05)
    task.cancel()  # what grpc does to the handler when its caller leaves or its deadline passes
    with pytest.raises(asyncio.CancelledError):
        await task
    await pipeline.finish_records(5)


async def test_a_call_its_deadline_ends_is_recorded_as_deadline_exceeded() -> None:
    pipeline, _, _, recorder = make_pipeline()

    async def infer() -> None:
        await pipeline.infer(make_call(), request(), hang)

    await ended_by_cancel(pipeline, infer, 0.01)
    await ended_by_cancel(pipeline, infer, 60)
    await ended_by_cancel(pipeline, infer, None)
    assert [r.status_code for r in recorder.records] == ["DEADLINE_EXCEEDED", "CANCELLED", "CANCELLED"]


async def test_a_routed_stream_ended_while_waiting_on_its_upstream_is_recorded() -> None:
    pipeline, _, _, recorder = make_pipeline()
    subject = Subject(id="ana", groups=("analysts",), auth="jwt")
    call, target = make_call("/demo.Directory/ListCustomers"), Target(service="demo.Directory")

    async def silent() -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None

    async def stream() -> None:
        async for _ in pipeline.upstream_replies(call, subject, target, silent()):
            pass

    await ended_by_cancel(pipeline, stream, 0.01)
    await ended_by_cancel(pipeline, stream, None)
    assert [(r.status_code, r.subject) for r in recorder.records] == [
        ("DEADLINE_EXCEEDED", subject),
        ("CANCELLED", subject),
    ]


class SilentStream(FakeStream):
    """An upstream stream that takes every request and never answers, nor ends."""

    async def done_writing(self) -> None:
        pass


async def test_a_streamed_requests_deadline_is_recorded_as_deadline_exceeded() -> None:
    pipeline, _, _, recorder = make_pipeline()

    async def stream() -> None:
        upstream = SilentStream(lambda sent: [])
        async for _ in pipeline.stream_infer(make_call(STREAM), requests_of(request()), upstream):
            pass

    await ended_by_cancel(pipeline, stream, 0.01)
    assert [r.status_code for r in recorder.records] == ["OK", "DEADLINE_EXCEEDED"]
