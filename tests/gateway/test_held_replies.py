"""A call held in its response phase keeps the upstream's reply: it counts under the approval
bounds with its request (``approvals.hold.reply_kept``).

Counted by the request alone, a caller asking for a few bytes of a reply of megabytes was
held as a few bytes: ``approvals.max_held_bytes_per_requester`` bounded nothing of what the
gateway kept for the hundred holds ``max_open_per_requester`` allows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.approvals import reasons
from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.hold import note_request, reply_kept, request_bytes
from labelgate.approvals.service import ApprovalService
from labelgate.approvals.stage import HoldForApproval
from labelgate.errors import ResourceExhausted
from labelgate.oip.tensor import Tensor
from labelgate.policy.contract import ApprovalRequirement, Decision
from tests.approvals.test_service import OLIVIA
from tests.gateway.test_pipeline import make_call, make_pipeline, reply, request, upstream_returning

KIB = 1024


def held() -> Decision:
    return Decision(
        allow=False,
        reason="ask",
        require_approval=ApprovalRequirement(("data-owners",), 1, 60, "ask"),
        engine="table",
        revision="r1",
    )


def big_reply(size: int) -> object:
    return reply("customer-profile", [Tensor("notes", "BYTES", [1], [b"n" * size])])


def test_a_reply_counts_only_while_its_response_phase_lasts() -> None:
    sent = b"r" * 100
    kept = big_reply(50 * KIB)
    note_request(sent)
    try:
        assert request_bytes() == 100
        with reply_kept(kept):  # type: ignore[arg-type]
            assert request_bytes() == 100 + kept.ByteSize()  # type: ignore[attr-defined]
        assert request_bytes() == 100
        note_request(None)
        with reply_kept(kept):  # type: ignore[arg-type]
            assert request_bytes() is None  # no request noted: not held, whatever the reply
    finally:
        note_request(None)


async def test_a_response_phase_hold_counts_the_reply_it_keeps(tmp_path: Path) -> None:
    service = ApprovalService(
        SqliteDatabase(tmp_path / "a.db"),
        node_id="n",
        link_base="http://inbox.test",
        max_held_bytes=1024 * KIB,
        max_held_bytes_per_requester=64 * KIB,
    )
    await service.start(sweep=False)
    pipeline, journal, engine, recorder = make_pipeline()
    pipeline.approvals = HoldForApproval(service, hold_timeout_seconds=2)  # fails soon if held
    engine.answers["response"] = held()
    sent = request()
    note_request(sent.SerializeToString())  # a few bytes, as the transport read them
    try:
        with pytest.raises(ResourceExhausted) as refused:
            await pipeline.infer(make_call(), sent, upstream_returning(big_reply(200 * KIB), journal))
        assert refused.value.reason == reasons.APPROVAL_HELD_BYTES_EXHAUSTED
        assert await service.visible_to(OLIVIA) == []  # nothing opened for it
        assert [entry.refusal for entry in recorder.records] == [reasons.APPROVAL_HELD_BYTES_EXHAUSTED]
    finally:
        note_request(None)
        await service.close()
