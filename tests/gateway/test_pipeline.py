"""The pipeline in process, with scripted stages: order, release, failure, streams.

No server and no policy engine: an engine that answers from a table, a recorder that keeps
a list, an upstream that is a coroutine. Every stage writes into one ``journal``, so a test
can assert the order in which the stages ran, and what was (not) released.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Target
from labelgate.classify import Catalog, DetectorSet
from labelgate.config import ReleaseSettings
from labelgate.enforce.replies import MASKED_PARAMETER, STREAM_ERROR_TEXT
from labelgate.errors import (
    LabelgateError,
    PermissionDenied,
    PolicyUnavailable,
    Unauthenticated,
    Unsupported,
    UpstreamError,
)
from labelgate.gateway.classify_stage import ClassifierStage
from labelgate.gateway.pipeline import Pipeline
from labelgate.gateway.upstream import MalformedUpstream
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_outputs
from labelgate.policy.cache import CachingEngine
from labelgate.policy.contract import DecidedMask, Decision

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
KEY = b"pipeline-test-hash-key-012345678"
SSN = "123-45-6789"
CATALOG = Catalog.from_data(
    {
        "default_label": "internal",
        "entries": [
            {"model": "customer-profile", "path": "outputs.ssn", "labels": ["confidential"]},
            {"model": "customer-profile", "path": "outputs.account_secret", "labels": ["restricted"]},
            {"model": "sentiment", "path": "outputs.*", "labels": ["public"]},
        ],
    }
)


class Journal(list):
    def kinds(self) -> list[str]:
        return [entry[0] for entry in self]


class FakeAuthenticator:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.attributes: dict[str, Any] = {}

    def authenticate(self, metadata: Any, auth_context: Any) -> Subject:
        self.journal.append(("authenticate",))
        return Subject("nora", (), attributes=self.attributes)


class TableEngine:
    """Allows everything; masks every field whose labels ``mask_labels`` names (null), and
    answers per phase from ``answers`` when a test sets one."""

    name = "table"
    revision = "r1"

    def __init__(self, journal: Journal, mask_labels: frozenset[str] = frozenset()) -> None:
        self.journal = journal
        self.mask_labels = mask_labels
        self.answers: dict[str, Decision] = {}
        self.stall = asyncio.Event()
        self.stalling = False

    async def decide(self, input: dict[str, Any]) -> Decision:
        phase = input["phase"]
        self.journal.append(("decide", phase, [f["path"] for f in input["fields"]]))
        if self.stalling:
            await self.stall.wait()  # never set: a decision that does not come
        if phase in self.answers:
            return self.answers[phase]
        masks = tuple(
            DecidedMask(f["path"], "null", {}) for f in input["fields"] if self.mask_labels & set(f["labels"])
        )
        return Decision(allow=True, reason="ok", masks=masks, engine=self.name, revision=self.revision)


class ListRecorder:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.records: list[CallRecord] = []
        self.fail: LabelgateError | None = None

    async def record(self, entry: CallRecord) -> None:
        self.journal.append(("record", entry.refusal))
        self.records.append(entry)
        if self.fail is not None:
            raise self.fail


class RefuseUntilApproved:
    async def hold(
        self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
    ) -> Decision:
        return decision


def make_pipeline(mask_labels: frozenset[str] = frozenset({"confidential", "restricted"})) -> tuple:
    journal = Journal()
    stage = ClassifierStage(None, DetectorSet.default())
    stage.use_catalog(CATALOG)
    engine = TableEngine(journal, mask_labels)
    recorder = ListRecorder(journal)
    pipeline = Pipeline(
        authenticator=FakeAuthenticator(journal),  # type: ignore[arg-type]
        classifier=stage,
        engine=engine,  # type: ignore[arg-type]
        approvals=RefuseUntilApproved(),
        recorder=recorder,
        hash_key=KEY,
        decision_deadline_seconds=0.05,
    )
    return pipeline, journal, engine, recorder


def make_call(method: str = INFER) -> Call:
    return Call(
        method=method, peer="ipv4:127.0.0.1:1", metadata=(), auth_context={}, session_id="s", request_id="r"
    )


def request(model: str = "customer-profile", caller_id: str = "mine", outputs: tuple[str, ...] = ()) -> Any:
    message = pb.ModelInferRequest(model_name=model, id=caller_id)
    for name in outputs:
        message.outputs.add(name=name)
    return message


def reply(model: str, tensors: list[Tensor], reply_id: str = "upstream-id", raw: bool = True) -> Any:
    message = pb.ModelInferResponse(model_name=model, model_version="9", id=reply_id)
    encode_outputs(message, tensors, raw=raw)
    return message


def customer_reply(reply_id: str = "upstream-id") -> Any:
    return reply(
        "customer-profile",
        [
            Tensor("customer_id", "INT64", [1], [1]),
            Tensor("ssn", "BYTES", [1], [SSN.encode()]),
            Tensor("score", "FP32", [1], [0.5]),
        ],
        reply_id,
    )


def upstream_returning(message: Any, journal: Journal) -> Callable:
    async def send(sent: Any) -> Any:
        journal.append(("upstream", sent.model_name))
        return message

    return send


async def test_stages_run_in_order_and_the_record_comes_before_release() -> None:
    pipeline, journal, _, _ = make_pipeline()
    released = await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert journal.kinds() == ["authenticate", "decide", "upstream", "decide", "record"]
    assert [entry[1] for entry in journal if entry[0] == "decide"] == ["request", "response"]
    assert decode_outputs(released)[1].values == [b""], "the confidential ssn is masked"


async def test_the_reply_is_built_from_decided_parts_only() -> None:
    pipeline, journal, _, _ = make_pipeline(frozenset())
    side_door = "sk_side_door_value"
    upstream = customer_reply()
    upstream.parameters["leak"].string_param = side_door
    upstream.outputs[0].parameters["leak"].string_param = side_door
    unknown_field = b"\xfa\x3f" + bytes([len(side_door)]) + side_door.encode()  # field 1023
    parsed = pb.ModelInferResponse.FromString(upstream.SerializeToString() + unknown_field)
    released = await pipeline.infer(
        make_call(), request(caller_id="mine"), upstream_returning(parsed, journal)
    )
    assert (released.id, released.model_name, released.model_version) == ("mine", "customer-profile", "")
    assert not released.parameters and all(not output.parameters for output in released.outputs)
    assert side_door.encode() not in released.SerializeToString()
    assert [t.values for t in decode_outputs(released)][:2] == [[1], [SSN.encode()]], "policy allowed these"


async def test_masked_outputs_are_marked_for_the_client() -> None:
    pipeline, journal, _, _ = make_pipeline()
    released = await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    markers = {o.name: o.parameters[MASKED_PARAMETER].string_param for o in released.outputs if o.parameters}
    assert markers == {"ssn": "null"}


async def test_outputs_the_caller_did_not_ask_for_are_not_released() -> None:
    pipeline, journal, _, _ = make_pipeline(frozenset())
    released = await pipeline.infer(
        make_call(), request(outputs=("customer_id",)), upstream_returning(customer_reply(), journal)
    )
    assert [output.name for output in released.outputs] == ["customer_id"]


async def test_a_failed_record_releases_nothing_and_the_refusal_is_recorded_after_it() -> None:
    pipeline, journal, _, recorder = make_pipeline()
    recorder.fail = UpstreamError("AUDIT_UNAVAILABLE", "the audit writer is gone")
    with pytest.raises(UpstreamError):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    await pipeline.finish_records(5)
    # The release's record may still land (an acknowledgement late on its way back): the
    # call's last record is the refusal the caller got (it ended at the release's, before).
    assert [(entry.outcome, entry.refusal) for entry in recorder.records] == [
        ("mask", None),
        ("deny", "AUDIT_UNAVAILABLE"),
    ]


async def test_a_request_phase_deny_never_reaches_the_upstream() -> None:
    pipeline, journal, engine, recorder = make_pipeline()
    engine.answers["request"] = Decision(allow=False, reason="no", engine="table")
    with pytest.raises(PermissionDenied):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert "upstream" not in journal.kinds()
    assert recorder.records[-1].outcome == "deny"


async def test_a_decision_past_its_deadline_is_a_deny() -> None:
    pipeline, journal, engine, _recorder = make_pipeline()
    engine.stalling = True
    with pytest.raises(PolicyUnavailable) as refused:
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert refused.value.reason == "POLICY_TIMEOUT"
    assert "upstream" not in journal.kinds()


async def test_a_cached_decision_answers_without_the_engine_and_a_miss_keeps_its_deadline() -> None:
    pipeline, journal, engine, recorder = make_pipeline()
    cache = pipeline.engine = CachingEngine(engine)  # type: ignore[arg-type]
    for phase in ("request", "response"):
        engine.answers[phase] = Decision(
            allow=True, reason="ok", engine="table", revision=engine.revision, cache_ttl_seconds=60
        )
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert (cache.hits, cache.misses) == (0, 2)
    engine.stalling = True  # the engine no longer answers: only the cache can
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert (cache.hits, cache.misses) == (2, 2)
    assert recorder.records[-1].outcome == "allow"
    with pytest.raises(PolicyUnavailable) as refused:  # another query misses: still bounded
        await pipeline.infer(
            make_call(), request(outputs=("ssn",)), upstream_returning(customer_reply(), journal)
        )
    assert refused.value.reason == "POLICY_TIMEOUT"
    assert recorder.records[-1].outcome == "deny"


async def test_cancellation_is_recorded() -> None:
    pipeline, _journal, _, recorder = make_pipeline()
    started = asyncio.Event()

    async def hanging(sent: Any) -> Any:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(pipeline.infer(make_call(), request(), hanging))
    await started.wait()
    assert pipeline.in_flight() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pipeline.in_flight() == 0, "a cancelled call is no longer in flight"
    for _ in range(10):  # the record is written beside the cancellation, not before it
        await asyncio.sleep(0)
    assert recorder.records[-1].refusal == "CancelledError"
    # As gRPC and the metrics call it (it was UNKNOWN; found by review).
    assert recorder.records[-1].status_code == "CANCELLED"


async def test_too_many_requested_outputs_are_refused_before_policy() -> None:
    pipeline, journal, _, _ = make_pipeline()
    names = tuple(f"o{n}" for n in range(300))
    with pytest.raises(LabelgateError) as refused:
        await pipeline.infer(
            make_call(), request(outputs=names), upstream_returning(customer_reply(), journal)
        )
    assert refused.value.reason == "TOO_MANY_OUTPUTS"
    assert "decide" not in journal.kinds()


# -- ModelStreamInfer -----------------------------------------------------------------------


class FakeStream:
    """An upstream stream: answers each request with whatever ``answer`` makes of it."""

    def __init__(self, answer: Callable[[Any], list[Any]]) -> None:
        self.answer = answer
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent: list[Any] = []

    async def write(self, message: Any) -> None:
        self.sent.append(pb.ModelInferRequest.FromString(message.SerializeToString()))
        for item in self.answer(message):
            await self.queue.put(item)

    async def done_writing(self) -> None:
        await self.queue.put(None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._read()

    async def _read(self) -> AsyncIterator[Any]:
        while (item := await self.queue.get()) is not None:
            yield item


async def requests_of(*messages: Any) -> AsyncIterator[Any]:
    for message in messages:
        yield message


def stream_reply(message: Any) -> Any:
    return pb.ModelStreamInferResponse(infer_response=message)


async def collect(pipeline: Pipeline, stream: FakeStream, *messages: Any) -> list[Any]:
    return [r async for r in pipeline.stream_infer(make_call(STREAM), requests_of(*messages), stream)]


async def test_streamed_replies_are_judged_by_their_own_request_not_the_callers_id() -> None:
    pipeline, _, _, _ = make_pipeline()
    secret = b"sk_restricted_value"

    def answer(sent: Any) -> list[Any]:
        # Whatever was asked, the upstream answers with the secret, claims "sentiment"
        # (public) and echoes the id it was sent.
        message = reply("sentiment", [Tensor("account_secret", "BYTES", [1], [secret])], sent.id)
        return [stream_reply(message)]

    stream = FakeStream(answer)
    first, second = await collect(pipeline, stream, request("customer-profile", ""), request("sentiment", ""))
    assert len({sent.id for sent in stream.sent}) == 2, "the upstream saw ids of the gateway's own"
    assert (first.infer_response.id, second.infer_response.id) == ("", ""), "the caller's ids come back"
    assert first.infer_response.model_name == "customer-profile"
    assert secret not in first.SerializeToString(), "judged by the customer-profile catalog: restricted"
    assert secret in second.SerializeToString(), "judged by the sentiment catalog: public"


async def test_a_streamed_reply_naming_no_request_ends_the_stream() -> None:
    pipeline, _, _, recorder = make_pipeline()
    stream = FakeStream(lambda sent: [stream_reply(customer_reply("forged"))])
    with pytest.raises(MalformedUpstream):
        await collect(pipeline, stream, request())
    assert recorder.records[-1].refusal == "UPSTREAM_MALFORMED"


async def test_each_streamed_message_is_its_own_call_to_policy_and_approvals() -> None:
    # Grants are spent and row budgets charged per call id: a stream's messages sharing one
    # id let a single-use grant release every message of the stream.
    pipeline, _, engine, recorder = make_pipeline()
    seen: list[tuple[str, str]] = []
    decide = engine.decide

    async def noting(policy_input: dict[str, Any]) -> Decision:
        seen.append((policy_input["phase"], policy_input["request"]["request_id"]))
        return await decide(policy_input)

    engine.decide = noting  # type: ignore[method-assign]
    stream = FakeStream(lambda sent: [stream_reply(customer_reply(sent.id))])
    await collect(pipeline, stream, request(caller_id="a"), request(caller_id="b"))
    ids = {phase: [rid for p, rid in seen if p == phase] for phase in ("request", "response")}
    assert ids["request"] == ids["response"], "a message's reply is decided under its request's id"
    assert len(set(ids["request"])) == 2 and all(rid.startswith("r.") for rid in ids["request"])
    assert {record.call.request_id for record in recorder.records} == {"r"}, "records keep the stream's"


async def test_a_streamed_request_the_upstream_side_refuses_is_recorded_as_refused() -> None:
    # RoutedStream.write refuses shared memory (and models routed elsewhere) after the
    # request phase: the request's record says so, not "allow".
    pipeline, _, _, recorder = make_pipeline()

    class RefusingStream(FakeStream):
        async def write(self, message: Any) -> None:
            raise Unsupported("SHARED_MEMORY_UNSUPPORTED", "no shared memory")

    with pytest.raises(Unsupported):
        await collect(pipeline, RefusingStream(lambda sent: []), request())
    assert [record.refusal for record in recorder.records] == ["SHARED_MEMORY_UNSUPPORTED"]


async def test_a_stream_the_caller_leaves_is_recorded() -> None:
    pipeline, _, _, recorder = make_pipeline()
    written = asyncio.Event()

    def answer(sent: Any) -> list[Any]:
        written.set()
        return []  # the upstream never answers

    async def requests_then_silence() -> AsyncIterator[Any]:
        yield request()
        await asyncio.Event().wait()  # the caller keeps the stream open, writing nothing

    stream = pipeline.stream_infer(make_call(STREAM), requests_then_silence(), FakeStream(answer))
    task = asyncio.create_task(anext(stream))
    await written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(10):  # written beside the cancellation, not before it
        await asyncio.sleep(0)
    assert [record.refusal for record in recorder.records] == [None, "CancelledError"]
    left = [
        other for other in asyncio.all_tasks() if other is not asyncio.current_task() and not other.done()
    ]
    assert left == [], "the stream's read of the upstream ends with it"


async def test_a_stream_closed_while_a_reply_is_out_is_recorded_too() -> None:
    # The caller leaves while grpc sends a reply: the generator is closed at its yield
    # (GeneratorExit, not CancelledError), and the request still unanswered is recorded.
    pipeline, _, _, recorder = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        first = sent.id.endswith("-1")
        return [stream_reply(customer_reply(sent.id))] if first else []  # the second never answered

    async def two_then_silence() -> AsyncIterator[Any]:
        yield request(caller_id="a")
        yield request(caller_id="b")
        await asyncio.Event().wait()

    stream = pipeline.stream_infer(make_call(STREAM), two_then_silence(), FakeStream(answer))
    await anext(stream)  # the first reply is out: the generator waits at its yield
    for _ in range(20):  # the pump admits b meanwhile: in memory, a few turns of the loop
        await asyncio.sleep(0)
    assert len(recorder.records) == 3, "a's request and reply, b's request"
    await stream.aclose()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [record.refusal for record in recorder.records] == [None, None, None, "CancelledError"]


async def test_a_write_cancelled_mid_way_is_recorded_once() -> None:
    pipeline, _, _, recorder = make_pipeline()
    writing = asyncio.Event()

    class StalledStream(FakeStream):
        async def write(self, message: Any) -> None:
            writing.set()
            await asyncio.Event().wait()  # the upstream never takes it

    task = asyncio.create_task(collect(pipeline, StalledStream(lambda sent: []), request()))
    await writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(10):
        await asyncio.sleep(0)
    assert [record.refusal for record in recorder.records] == ["CancelledError"]


async def test_a_routed_streams_upstream_failure_is_recorded() -> None:
    pipeline, _, _, recorder = make_pipeline()
    failure = UpstreamError("UPSTREAM_FAILED_PRECONDITION", "the upstream failed")

    async def replies() -> AsyncIterator[Any]:
        yield pb.ModelInferResponse()
        raise failure

    target = Target(service="demo.Directory")
    subject = Subject(id="ana", groups=("analysts",), auth="jwt")
    received = []
    with pytest.raises(UpstreamError):
        async for reply in pipeline.upstream_replies(make_call(), subject, target, replies()):
            received.append(reply)
    assert len(received) == 1
    assert [record.refusal for record in recorder.records] == ["UPSTREAM_FAILED_PRECONDITION"]


async def test_a_streamed_error_is_released_as_a_stable_text() -> None:
    pipeline, _, _, recorder = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        leak = pb.ModelStreamInferResponse(error_message=f"row for ssn {SSN} failed")
        leak.infer_response.CopyFrom(customer_reply(sent.id))
        return [leak]

    (released,) = await collect(pipeline, FakeStream(answer), request(caller_id="c1"))
    assert released.error_message == STREAM_ERROR_TEXT
    assert released.infer_response.id == "c1" and not released.infer_response.outputs
    assert SSN.encode() not in released.SerializeToString()
    assert recorder.records[-1].refusal == "UPSTREAM_STREAM_ERROR"


async def test_a_card_split_across_decoupled_replies_is_masked_as_one_span() -> None:
    pipeline, _, _, _ = make_pipeline()
    pieces = [b"card 4111 11", b"11 1111 ", b"1111 thanks"]

    def answer(sent: Any) -> list[Any]:
        replies = []
        for position, piece in enumerate(pieces):
            message = reply("chat", [Tensor("text", "BYTES", [1], [piece])], sent.id)
            message.parameters["triton_final_response"].bool_param = position == len(pieces) - 1
            replies.append(stream_reply(message))
        return replies

    replies = await collect(pipeline, FakeStream(answer), request("chat"))
    text = b"".join(decode_outputs(r.infer_response)[0].values[0] for r in replies)
    assert text == b"card 4111 1111 1111 1111 thanks".replace(b"4111 1111 1111 1111", b"")
    finals = [r.infer_response.parameters["triton_final_response"].bool_param for r in replies]
    assert finals == [False, False, True]


SPLIT_PARAMETERS = {
    "string": ("string_param", ["card 4111 1111", " 1111 1111"]),
    # Numbers too (review): a card as int64 pieces, each too short alone to be scanned as one.
    "int64": ("int64_param", [4111, 1111, 1111, 1111]),
    "uint64": ("uint64_param", [123, 45, 6789]),
    "double": ("double_param", [41111111.0, 11111111.0]),
}


@pytest.mark.parametrize("kind", SPLIT_PARAMETERS)
async def test_a_streamed_requests_parameters_are_released_only_with_its_final_reply(kind: str) -> None:
    # Parameters are not carried across replies as outputs are: a card split across
    # replies' parameters would pass, so only the final reply's are released.
    pipeline, _, _, _ = make_pipeline()
    pipeline.release = ReleaseSettings(parameters={"triton_final_response": "public", "note": "internal"})
    field, pieces = SPLIT_PARAMETERS[kind]

    def answer(sent: Any) -> list[Any]:
        replies = []
        for position, piece in enumerate(pieces):
            message = reply("chat", [Tensor("text", "BYTES", [1], [b"x"])], sent.id)
            message.parameters["triton_final_response"].bool_param = position == len(pieces) - 1
            setattr(message.parameters["note"], field, piece)
            message.outputs[0].parameters["note"].CopyFrom(message.parameters["note"])
            # The final flag's name on an output is no flag of the stream's (review).
            message.outputs[0].parameters["triton_final_response"].CopyFrom(message.parameters["note"])
            replies.append(stream_reply(message))
        return replies

    *earlier, last = await collect(pipeline, FakeStream(answer), request("chat"))
    for released in earlier:
        assert "note" not in released.infer_response.parameters
        assert not released.infer_response.outputs[0].parameters
        assert released.infer_response.parameters["triton_final_response"].bool_param is False
    note = last.infer_response.parameters["note"]  # rebuilt by the gateway: a uint64 as an int64
    assert getattr(note, note.WhichOneof("parameter_choice")) == pieces[-1]


async def test_a_stream_ends_when_its_token_expires() -> None:
    pipeline, _, _, recorder = make_pipeline()
    # Valid when the stream opened (the authenticator said so); expired by the first message.
    pipeline.authenticator.attributes = {"exp": time.time() - 1}
    stream = FakeStream(lambda sent: [stream_reply(customer_reply(sent.id))])
    with pytest.raises(Unauthenticated) as refused:
        await collect(pipeline, stream, request())
    assert refused.value.reason == "TOKEN_EXPIRED"
    assert stream.sent == [], "nothing went upstream after the expiry"
    assert recorder.records[-1].refusal == "TOKEN_EXPIRED"


async def test_calls_in_flight_count_each_call_until_its_record_is_written() -> None:
    # The audit client's commit delay waits for the records of the calls this counts.
    pipeline, journal, _, recorder = make_pipeline()
    seen: list[int] = []
    record = recorder.record

    async def counting(entry: CallRecord) -> None:
        seen.append(pipeline.in_flight())
        await record(entry)

    recorder.record = counting  # type: ignore[method-assign]
    upstream_entered, go_on = asyncio.Event(), asyncio.Event()

    async def waiting(sent: Any) -> Any:
        upstream_entered.set()
        await go_on.wait()
        return customer_reply()

    first = asyncio.create_task(pipeline.infer(make_call(), request(), waiting))
    await upstream_entered.wait()
    assert pipeline.in_flight() == 1
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert seen == [2], "the second call was recorded while the first was in flight"
    go_on.set()
    await first
    assert seen == [2, 1]
    pipeline.engine.answers["request"] = Decision.deny("NO", engine="table", revision="r1")
    with pytest.raises(PermissionDenied):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert seen == [2, 1, 1] and pipeline.in_flight() == 0, "a refused call is counted and let go too"


def test_the_call_records_audit_client_reads_the_pipelines_count_of_calls(tmp_path) -> None:
    from labelgate.config import load_settings
    from labelgate.gateway.record import AuditRecorder
    from labelgate.gateway.server import build_pipeline

    settings = load_settings(
        auth={"api_keys": {}}, audit={"socket": str(tmp_path / "audit.sock"), "commit_delay_ms": 3}
    )
    pipeline = build_pipeline(settings, TableEngine(Journal()))  # type: ignore[arg-type]
    (audit,) = [r for r in pipeline.recorder.recorders if isinstance(r, AuditRecorder)]  # type: ignore[attr-defined]
    assert audit.client.commit_delay == 0.003 and audit.client.commit_siblings == 2
    pipeline.in_flight.count = 7
    assert audit.client._in_flight is not None and audit.client._in_flight() == 7


async def test_a_call_held_for_an_approver_is_not_in_flight() -> None:
    from labelgate.policy.contract import ApprovalRequirement

    pipeline, journal, engine, _ = make_pipeline()
    holding, release = asyncio.Event(), asyncio.Event()
    counted: list[int] = []

    class Approvals:
        async def hold(
            self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
        ) -> Decision:
            counted.append(pipeline.in_flight())
            holding.set()
            await release.wait()
            return Decision(allow=True, reason="granted", engine="table", revision="r1")

    pipeline.approvals = Approvals()
    engine.answers["request"] = Decision(
        allow=False,
        reason="ask",
        require_approval=ApprovalRequirement(("approvers",), 1, 60, "ask"),
        engine="table",
        revision="r1",
    )
    held = asyncio.create_task(
        pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    )
    await holding.wait()
    assert counted == [0], "a call waiting for an approver is not waited for"
    release.set()
    await held
    assert pipeline.in_flight() == 0


async def test_a_bool_final_flag_is_kept_as_false_on_replies_that_are_not_final() -> None:
    pipeline, _, _, _ = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        replies = []
        for final in (False, True):
            message = reply("chat", [Tensor("text", "BYTES", [1], [b"x"])], sent.id)
            message.parameters["triton_final_response"].bool_param = final
            replies.append(stream_reply(message))
        return replies

    first, last = await collect(pipeline, FakeStream(answer), request("chat"))
    assert (
        first.infer_response.parameters["triton_final_response"].WhichOneof("parameter_choice")
        == "bool_param"
    )
    assert first.infer_response.parameters["triton_final_response"].bool_param is False
    assert last.infer_response.parameters["triton_final_response"].bool_param is True


@pytest.mark.parametrize(
    "flag",
    [
        {"string_param": ""},  # read as false, it kept the request open
        {"string_param": f"Jane Doe, ssn {SSN}"},  # read as true, it ended it
        {"int64_param": 1},
        {"double_param": 0.0},
        {},  # no value at all
    ],
)
async def test_a_final_flag_that_is_not_a_bool_ends_the_stream_as_malformed(flag: dict[str, Any]) -> None:
    # Found by review: any text counted as final and a string "" as not final, the upstream
    # choosing when a request's held text was released.
    pipeline, _, _, recorder = make_pipeline()

    def answer(sent: Any) -> list[Any]:
        message = reply("chat", [Tensor("text", "BYTES", [1], [b"x"])], sent.id)
        message.parameters["triton_final_response"].CopyFrom(pb.InferParameter(**flag))
        return [stream_reply(message)]

    released = []
    with pytest.raises(MalformedUpstream):
        async for item in pipeline.stream_infer(
            make_call(STREAM), requests_of(request("chat")), FakeStream(answer)
        ):
            released.append(item)
    assert released == []
    assert recorder.records[-1].refusal == "UPSTREAM_MALFORMED"


async def test_an_anonymous_callers_request_is_not_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request digest reads every byte of the request (about a millisecond a MiB): an
    anonymous caller's 16 MiB bodies, refused anyway, are not hashed."""
    from labelgate import calls

    pipeline, journal, _, recorder = make_pipeline()
    hashed: list[Any] = []
    digest = calls.request_digest
    monkeypatch.setattr(
        calls, "request_digest", lambda message, key: hashed.append(message) or digest(message, key)
    )

    def refuse(metadata: Any, auth_context: Any) -> Subject:
        raise Unauthenticated("NO_CREDENTIALS", "no credentials")

    authenticator = pipeline.authenticator
    monkeypatch.setattr(authenticator, "authenticate", refuse)
    with pytest.raises(Unauthenticated):
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert hashed == [] and recorder.records[-1].refusal is not None
    monkeypatch.undo()
    monkeypatch.setattr(
        calls, "request_digest", lambda message, key: hashed.append(message) or digest(message, key)
    )
    await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert len(hashed) == 1, "an authenticated caller's request is hashed once"
