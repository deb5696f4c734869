"""Webhook notifications against a local HTTP receiver: payloads, retries, never blocking."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.model import Binding, FieldAtStake, Requirement, State
from labelgate.approvals.notify import WebhookNotifier
from labelgate.approvals.service import ApprovalService, Draft
from labelgate.auth import Subject
from labelgate.config import WebhookSettings
from tests.approvals.conftest import webhook_receiver

OWNER = Subject("olivia", ("data-owners",))


def draft(seconds: float = 60) -> Draft:
    return Draft(
        binding=Binding(
            "steve", "/inference.GRPCInferenceService/ModelInfer", "customer-profile", ("confidential",)
        ),
        requester_groups=("data-stewards",),
        phase="request",
        fields=(FieldAtStake("outputs.ssn", ("confidential",)),),
        requirement=Requirement(
            ("data-owners",), 1, 900, "confidential data needs 1 approval(s) from data-owners"
        ),
        justification="ticket <7> & co",
        mode="hold",
        expires_at=time.time() + seconds,
    )


async def eventually(check: Callable[[], bool], within: float = 15) -> None:
    """Like wait_until, but lets the event loop (and the deliveries) run meanwhile."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def service_with(hooks: list[WebhookSettings], tmp_path: Path) -> ApprovalService:
    service = ApprovalService(
        SqliteDatabase(tmp_path / "a.db"),
        node_id="n",
        link_base="https://gw.example",
        notifier=WebhookNotifier(hooks),
    )
    await service.start(sweep=False)
    return service


async def test_slack_and_generic_payloads_with_retries(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/slack"] = [500, 503]  # delivered on the third attempt
        hooks = [
            WebhookSettings(url=f"{receiver.url}/slack", format="slack", backoff_seconds=0.05),
            WebhookSettings(url=f"{receiver.url}/generic", events=["requested", "denied"]),
        ]
        service = await service_with(hooks, tmp_path)
        request = await service.open(draft())
        await service.deny(OWNER, request.id, "no ticket")
        await eventually(
            lambda: len(receiver.bodies("/slack")) == 3 and len(receiver.bodies("/generic")) == 2
        )
        await service.close()

    slack = receiver.bodies("/slack")[-1]
    link = f"https://gw.example/inbox/{request.id}"
    assert link in slack["text"] and slack["text"].startswith(
        "Approval needed: steve asks to see confidential"
    )
    assert [block["type"] for block in slack["blocks"]] == ["section", "section", "context", "actions"]
    assert slack["blocks"][3]["elements"][0]["url"] == link
    justification = slack["blocks"][2]["elements"][1]
    assert justification == {
        "type": "plain_text",
        "text": "Justification, in the requester's own words: ticket <7> & co",
        "emoji": False,
    }, "the caller's words are plain text: never mrkdwn, so never a link or a mention"
    requested, denied = receiver.bodies("/generic")
    assert requested["event"] == "approval.requested" and requested["link"] == link
    assert requested["approval"]["fields"] == [{"path": "outputs.ssn", "labels": ["confidential"]}]
    assert (
        denied["event"] == "approval.denied"
        and denied["approval"]["resolution"] == "denied by olivia: no ticket"
    )
    assert len(receiver.bodies("/slack")) == 3, "denied is not among the Slack hook's default events"


async def test_a_client_error_is_not_retried(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/gone"] = [404, 404, 404]
        service = await service_with(
            [WebhookSettings(url=f"{receiver.url}/gone", backoff_seconds=0.05)], tmp_path
        )
        await service.open(draft())
        await eventually(lambda: len(receiver.bodies("/gone")) >= 1)
        await service.close()  # lets the delivery finish or cancels it
    assert len(receiver.bodies("/gone")) == 1


async def test_a_dead_webhook_never_blocks_denial_or_expiry(tmp_path: Path) -> None:
    # A listener that accepts connections and never answers, and a port where nobody listens.
    with socket.socket() as black_hole, socket.socket() as closed:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        closed.bind(("127.0.0.1", 0))
        hooks = [
            WebhookSettings(
                url=f"http://127.0.0.1:{black_hole.getsockname()[1]}/h",
                timeout_seconds=30,
                events=["requested", "denied", "expired"],
            ),
            WebhookSettings(
                url=f"http://127.0.0.1:{closed.getsockname()[1]}/h",
                backoff_seconds=20,
                events=["requested", "denied", "expired"],
            ),
        ]
        service = await service_with(hooks, tmp_path)
        denied = await service.deny(OWNER, (await service.open(draft())).id, "no")
        expiring = await service.open(draft(seconds=0.2))
        expired = await service.wait(expiring.id, time.time() + 0.2)
        assert denied.state is State.DENIED and expired.state is State.EXPIRED
        assert service.notifier is not None and service.notifier._tasks, "deliveries are still trying"
        await service.close()
