"""A call lasts no longer than the first of its caller's credentials to expire, on the paths
where a call outlives the moment it was authenticated by more than a stream's next message.

Found by review (fail-open): only streamed messages were checked (``still_valid``), so

- a call held for approval (request or response phase) was released once approved, though
  its token expired while it waited (the grant was spent on it too);
- a routed client stream (``stream Chunk -> Receipt``, bidirectional ``Exchange``) sent every
  chunk read after the expiry upstream, and released the one reply after it;
- ``ModelStreamInfer`` released the text it held when the upstream ended its stream, however
  long after the expiry that was.

Each is now refused UNAUTHENTICATED TOKEN_EXPIRED, nothing released and the call recorded
refused. Time is the test's: the pipeline's clock (what ``still_valid`` reads) is moved past
the token's ``exp`` at the moment the test chooses, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.hold import note_request
from labelgate.approvals.model import State
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.stage import HoldForApproval
from labelgate.auth import mint_dev_token
from labelgate.errors import LabelgateError, Unauthenticated
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from labelgate.policy.contract import ApprovalRequirement, Decision
from tests.approvals.test_service import OLIVIA
from tests.gateway.harness import recorded_calls
from tests.gateway.pipeline_clock import PipelineClock, moved_clock
from tests.gateway.test_pipeline import (
    STREAM,
    FakeStream,
    TableEngine,
    customer_reply,
    make_call,
    make_pipeline,
    reply,
    request,
    requests_of,
    stream_reply,
    upstream_returning,
)
from tests.gateway.test_routes import UPLOADS, gateway_in_process, uploads_descriptor_set
from tests.support.grpc_servers import serving_grpc
from tests.support.procs import REPO

AN_HOUR = 3600.0
# How long a test waits for something the gateway does at once (far beyond it, never reached).
PATIENCE = 20.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> PipelineClock:
    return moved_clock(monkeypatch)


def certificate_and_token(expires: float) -> dict[str, Any]:
    """A client certificate's subject with a bearer token beside it (the ``Authenticator``'s
    shape): the token's ``exp`` is the call's."""
    token = {"iss": "idp", "exp": expires, "jti": "t1"}
    return {
        "cert_sha256": "ab" * 32,
        "also_verified": {"jwt": "jwt:idp#nora"},
        "also_verified_credentials": {
            "jwt": {"id": "jwt:idp#nora", "name": "nora", "groups": [], "auth": "jwt", "attributes": token}
        },
    }


async def until(condition: Any) -> None:
    """Wait for ``condition()`` to hold (something the gateway does without the test's help)."""
    for _ in range(int(PATIENCE / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not so after {PATIENCE} s")


# -- (a) a call held for approval --------------------------------------------------------------


class GrantedAllows(TableEngine):
    """The table engine, allowing whatever it is asked under an approval."""

    async def decide(self, input: dict[str, Any]) -> Decision:
        if input["approval"]["state"] == "granted":
            self.journal.append(("decide", input["phase"], "granted"))
            return Decision(allow=True, reason="granted", engine=self.name, revision=self.revision)
        return await super().decide(input)


def held_once() -> Decision:
    return Decision(
        allow=False,
        reason="ask",
        require_approval=ApprovalRequirement(("data-owners",), 1, 900, "ask", single_use=True),
        engine="table",
        revision="r1",
    )


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ApprovalService]:
    approvals = ApprovalService(SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="http://inbox.test")
    await approvals.start(sweep=False)
    note_request(request().SerializeToString())  # what a transport notes (nothing noted: not held)
    try:
        yield approvals
    finally:
        note_request(None)
        await approvals.close()


async def approve_once_the_token_expired(service: ApprovalService, clock: PipelineClock) -> str:
    """The approver's side: the held call's request approved an hour later; its grant's id."""
    async with asyncio.timeout(PATIENCE):
        while True:
            pending = await service.visible_to(OLIVIA, [State.PENDING])
            if pending:
                break
            await asyncio.sleep(0.01)
    [held] = pending
    clock.ahead = AN_HOUR
    granted = await service.approve(OLIVIA, held.id)
    assert granted.grant_id is not None
    return granted.grant_id


@pytest.mark.parametrize("phase", ["request", "response"])
async def test_a_call_whose_token_expired_while_it_was_held_is_not_released(
    service: ApprovalService, clock: PipelineClock, phase: str
) -> None:
    pipeline, journal, _, recorder = make_pipeline()
    engine = GrantedAllows(journal, frozenset())
    pipeline.engine = engine
    engine.answers[phase] = held_once()
    pipeline.approvals = HoldForApproval(service, hold_timeout_seconds=PATIENCE)
    pipeline.authenticator.attributes = certificate_and_token(time.time() + 300)
    approver = asyncio.create_task(approve_once_the_token_expired(service, clock))
    with pytest.raises(Unauthenticated) as refused:
        await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    grant_id = await approver
    assert refused.value.reason == "TOKEN_EXPIRED"
    went_upstream = ("upstream", "customer-profile") in journal
    assert went_upstream is (phase == "response"), "a request-phase hold sends nothing upstream"
    [record] = recorder.records
    assert record.refusal == "TOKEN_EXPIRED" and record.delivered is None
    # Refused before the stage used the grant: the caller's next call (a fresh token) has it.
    grant = await service.get_grant(grant_id)
    assert grant is not None and grant.used_by is None, "the single-use grant was not spent"
    clock.ahead = 0.0
    released = await pipeline.infer(make_call(), request(), upstream_returning(customer_reply(), journal))
    assert [output.name for output in released.outputs] == ["customer_id", "ssn", "score"]
    assert recorder.records[-1].refusal is None


# -- (b) routed client streams -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def uploads_upstream() -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """``Uploads`` served in process: every chunk kept (what reached the upstream); ``Upload``
    answers once its caller's stream ended and the test sets the event it yields."""
    received: list[bytes] = []
    answer = asyncio.Event()

    async def exchange(requests: AsyncIterator[bytes], _: Any) -> AsyncIterator[bytes]:
        async for chunk in requests:
            received.append(chunk)
            yield bytes([8, len(received)])

    async def upload(requests: AsyncIterator[bytes], _: Any) -> bytes:
        async for chunk in requests:
            received.append(chunk)
        await answer.wait()
        return bytes([8, len(received)])

    handlers: dict[str, Any] = {
        "Exchange": grpc.stream_stream_rpc_method_handler(exchange),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
    }
    async with serving_grpc(UPLOADS.strip("/"), handlers) as (address, _):
        yield address, received, answer


def opaque_uploads_policy(tmp: Path) -> Path:
    """The default pack with ``Uploads/Exchange`` allowed opaque to analysts."""
    policy = tmp / "rego"
    shutil.copytree(REPO / "rego", policy)
    tables_file = policy / "labelgate/tables/data.json"
    tables = json.loads(tables_file.read_text())
    tables["opaque_methods"] = {UPLOADS + "Exchange": ["analysts"]}
    tables_file.write_text(json.dumps(tables))
    return policy


@contextlib.asynccontextmanager
async def uploads_gateway(
    tmp: Path, typed: bool = True
) -> AsyncIterator[tuple[str, list[bytes], asyncio.Event]]:
    """A gateway in process routing ``Uploads`` (typed from its descriptors, or opaque),
    recording into ``tmp/sessions``; its address, what reached the upstream, ``Upload``'s
    answer."""
    if typed:
        route = {
            "method_prefix": UPLOADS,
            "descriptor_set": str(uploads_descriptor_set(tmp)),
            "split_values": "per_message",
        }
        extra: dict[str, Any] = {}
    else:
        route = {"method_prefix": UPLOADS}
        extra = {"policy": {"dir": str(opaque_uploads_policy(tmp))}}
    recording = {"dir": str(tmp / "sessions")}
    async with (
        uploads_upstream() as (upstream, received, answer),
        gateway_in_process(upstream, routes=[route], recording=recording, **extra) as listen,
    ):
        yield listen, received, answer


def caller(session: str) -> tuple[tuple[str, str], ...]:
    """Ann's token, good for five minutes by the real clock, and her own session."""
    token = mint_dev_token("ann", ["analysts"], 300)
    return (("authorization", f"Bearer {token}"), ("x-labelgate-session", session))


async def last_refusal(tmp: Path, session: str, count: int) -> str | None:
    """The reason the last of the session's first ``count`` records gives (recorded after the
    caller got its answer: waited for)."""
    sessions = tmp / "sessions"
    await until(lambda: len(recorded_calls(sessions, session)) >= count)
    entries = recorded_calls(sessions, session)
    reason: str | None = entries[count - 1]["decision"]["reason"]
    return reason


def token_expired(error: grpc.aio.AioRpcError) -> bool:
    info = error_info(error)
    return (
        error.code() == grpc.StatusCode.UNAUTHENTICATED
        and info is not None
        and info.reason == "TOKEN_EXPIRED"
    )


async def test_a_chunk_read_after_the_token_expired_does_not_reach_the_upstream(
    tmp_path: Path, clock: PipelineClock
) -> None:
    """``Upload`` (``stream Chunk -> Receipt``): the stream ends at the first chunk read once
    the token expired, before it is sent on; the receipt is never released."""
    async with uploads_gateway(tmp_path) as (listen, received, answer):

        async def chunks() -> AsyncIterator[bytes]:
            yield bytes([8, 1])
            await until(lambda: len(received) == 1)
            clock.ahead = AN_HOUR
            yield bytes([8, 2])
            yield bytes([8, 3])

        answer.set()
        async with grpc.aio.insecure_channel(listen) as channel:
            upload: Any = channel.stream_unary(UPLOADS + "Upload")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload(chunks(), metadata=caller("upload-chunks"), timeout=PATIENCE)
        assert token_expired(refused.value), refused.value
        assert received == [bytes([8, 1])], "nothing read after the expiry went upstream"
        assert await last_refusal(tmp_path, "upload-chunks", 1) == "TOKEN_EXPIRED"


async def test_a_client_streams_reply_that_comes_after_the_token_expired_is_not_released(
    tmp_path: Path, clock: PipelineClock
) -> None:
    """Every chunk was sent in time; the upstream answered after the expiry."""
    async with uploads_gateway(tmp_path) as (listen, received, answer):

        async def chunks() -> AsyncIterator[bytes]:
            for number in (1, 2):
                yield bytes([8, number])

        async def answer_late() -> None:
            await until(lambda: len(received) == 2)
            clock.ahead = AN_HOUR
            answer.set()

        late = asyncio.create_task(answer_late())
        async with grpc.aio.insecure_channel(listen) as channel:
            upload: Any = channel.stream_unary(UPLOADS + "Upload")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload(chunks(), metadata=caller("upload-late"), timeout=PATIENCE)
        await late
        assert token_expired(refused.value), refused.value
        assert await last_refusal(tmp_path, "upload-late", 1) == "TOKEN_EXPIRED"


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "opaque"])
async def test_a_bidirectional_streams_chunk_read_after_the_token_expired_does_not_reach_the_upstream(
    tmp_path: Path, clock: PipelineClock, typed: bool
) -> None:
    """``Exchange`` (``stream Chunk -> stream Receipt``): the first receipt released in time,
    the chunk read after the expiry never sent on."""
    session = f"exchange-{'typed' if typed else 'opaque'}"
    async with uploads_gateway(tmp_path, typed) as (listen, received, _):
        receipts: list[bytes] = []

        async def chunks() -> AsyncIterator[bytes]:
            yield bytes([8, 1])
            await until(lambda: len(receipts) == 1)
            clock.ahead = AN_HOUR
            yield bytes([8, 2])

        async with grpc.aio.insecure_channel(listen) as channel:
            exchange: Any = channel.stream_stream(UPLOADS + "Exchange")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for receipt in exchange(chunks(), metadata=caller(session), timeout=PATIENCE):
                    receipts.append(receipt)
        assert token_expired(refused.value), refused.value
        assert receipts == [bytes([8, 1])]
        assert received == [bytes([8, 1])], "nothing read after the expiry went upstream"
        # The stream's admission, its first receipt (one record each, opaque too), then its end.
        assert await last_refusal(tmp_path, session, 3) == "TOKEN_EXPIRED"


# -- (c) ModelStreamInfer's end-of-stream flush --------------------------------------------------


class EndsAfterTheExpiry(FakeStream):
    """An upstream stream that ends (its replies all sent) only once the token has expired."""

    def __init__(self, answer: Any, clock: PipelineClock) -> None:
        super().__init__(answer)
        self.clock = clock

    async def _read(self) -> AsyncIterator[Any]:
        while (item := await self.queue.get()) is not None:
            yield item
        self.clock.ahead = AN_HOUR


async def test_what_a_stream_held_is_not_released_at_its_end_after_the_token_expired(
    clock: PipelineClock,
) -> None:
    """Each request's one reply is not final and ends in a value's possible start (held by the
    carry-over): only the upstream's end would release it. Both requests are recorded refused."""
    pipeline, _, _, recorder = make_pipeline(mask_labels=frozenset())
    pipeline.authenticator.attributes = certificate_and_token(time.time() + 300)
    held_text = b"the patient's record: diagnosis HIV+, ssn 123-4"

    def answer(sent: Any) -> list[Any]:
        message = reply("chat", [Tensor("text", "BYTES", [1], [held_text])], sent.id)
        message.parameters["triton_final_response"].bool_param = False
        return [stream_reply(message)]

    released: list[Any] = []
    upstream = EndsAfterTheExpiry(answer, clock)
    asked = (request("chat", caller_id="one"), request("chat", caller_id="two"))
    with pytest.raises(LabelgateError) as ended:
        async for message in pipeline.stream_infer(make_call(STREAM), requests_of(*asked), upstream):
            released.append(message)
    assert isinstance(ended.value, Unauthenticated) and ended.value.reason == "TOKEN_EXPIRED"
    assert len(released) == 2, "each request's reply, released in time"
    for message in released:
        [text] = decode_outputs(message.infer_response)
        assert held_text not in b"".join(text.values), "the held text was released"
    # The one whose release was refused, and the one left unanswered by the stream's end.
    refused = [entry.refusal for entry in recorder.records if entry.refusal is not None]
    assert refused == ["TOKEN_EXPIRED", "TOKEN_EXPIRED"]
