"""The one retry policy (labelgate/retry.py) on its real paths: approval webhooks and the audit
export forwarder against a real local HTTP receiver that fails a planned number of times
(``webhook_receiver``: it answers the listed statuses in order, then 200, and keeps every
request it got, so attempts are counted exactly). Limits are attempts, never time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from labelgate.approvals.db import SqliteDatabase
from labelgate.approvals.notify import WebhookNotifier
from labelgate.approvals.service import ApprovalService
from labelgate.config import WebhookSettings
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.opa import OpaEngine
from labelgate.retry import RetrySettings, policy
from tests.approvals.conftest import webhook_receiver
from tests.approvals.test_notify import draft
from tests.audit.conftest import writer_process
from tests.audit.test_export_forwarding import append, run_once
from tests.policy.conftest import VALID_RESULT
from tests.policy.test_opa import INPUT, RawHttpServer

FAST = RetrySettings(max_attempts=4, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)


async def _notify_once(hook: WebhookSettings, tmp_path: Path) -> None:
    """Open one held request (one ``requested`` delivery) and wait for the delivery to end."""
    notifier = WebhookNotifier([hook])
    service = ApprovalService(
        SqliteDatabase(tmp_path / "a.db"), node_id="n", link_base="https://gw.example", notifier=notifier
    )
    await service.start(sweep=False)
    await service.open(draft())
    await notifier.close(grace=60)  # waits for the delivery (it ends well before)
    await service.close()


async def test_a_webhook_that_fails_three_times_is_delivered_on_the_fourth_attempt(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/hook"] = [503, 500, 429]
        await _notify_once(WebhookSettings(url=f"{receiver.url}/hook", retry=FAST), tmp_path)
        assert len(receiver.bodies("/hook")) == 4
        assert receiver.failures["/hook"] == []


async def test_a_webhook_stops_at_its_attempt_limit(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/hook"] = [503] * 10
        limited = FAST.model_copy(update={"max_attempts": 3})
        await _notify_once(WebhookSettings(url=f"{receiver.url}/hook", retry=limited), tmp_path)
        assert len(receiver.bodies("/hook")) == 3


async def test_a_webhook_refused_for_good_is_not_retried(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/hook"] = [400, 400]
        await _notify_once(WebhookSettings(url=f"{receiver.url}/hook", retry=FAST), tmp_path)
        assert len(receiver.bodies("/hook")) == 1


async def test_without_retry_the_older_webhook_settings_still_count(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/hook"] = [503] * 10
        hook = WebhookSettings(url=f"{receiver.url}/hook", max_attempts=2, backoff_seconds=0.01)
        await _notify_once(hook, tmp_path)
        assert len(receiver.bodies("/hook")) == 2


def _forward_once(tmp_path: Path, url: str, *extra: str) -> tuple[int, str]:
    sock, log_dir, state = tmp_path / "w.sock", tmp_path / "log", tmp_path / "state"
    with writer_process(sock, log_dir):
        append(sock, 3)  # one batch (batch size 5)
    return run_once(
        log_dir, state, "--http", url, "--retry-first-seconds", "0.01", "--retry-max-seconds", "0.05", *extra
    )


def test_the_forwarder_retries_the_same_batch_until_the_receiver_takes_it(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/ingest"] = [503, 502, 500]
        status, output = _forward_once(tmp_path, f"{receiver.url}/ingest")
        assert status == 0, output
        batches = receiver.bodies("/ingest")
        assert len(batches) == 4 and all(batch == batches[0] for batch in batches)
        assert len(batches[0]) == 3


def test_the_forwarder_once_gives_up_at_its_attempt_limit(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        receiver.failures["/ingest"] = [503] * 10
        status, output = _forward_once(tmp_path, f"{receiver.url}/ingest", "--retry-attempts", "3")
        assert status == 1 and "audit_export_gave_up" in output
        assert len(receiver.bodies("/ingest")) == 3


def test_bad_forwarder_retry_settings_are_one_clear_error(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        status, output = _forward_once(tmp_path, f"{receiver.url}/ingest", "--retry-attempts", "0")
    assert status == 2 and "error: retry settings: max_attempts" in output and "Traceback" not in output


async def test_no_wait_runs_past_the_deadline() -> None:
    """The clock does not move while the recorded sleeps 'run', so this is exact."""
    slept: list[float] = []
    calls: list[int] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def always_fails() -> None:
        calls.append(1)
        raise ConnectionError("down")

    settings = RetrySettings(max_attempts=100, initial_seconds=30, max_seconds=1000, jitter_seconds=0)
    deadline = time.monotonic() + 100
    with pytest.raises(ConnectionError):
        await policy(settings, ConnectionError, deadline=deadline, sleep=record)(always_fails)
    assert slept == [30, 60] and len(calls) == 3  # a 120 s wait would end past the deadline


async def test_only_the_named_errors_are_retried() -> None:
    calls: list[int] = []

    async def wrong() -> None:
        calls.append(1)
        raise KeyError("not a network error")

    with pytest.raises(KeyError):
        await policy(FAST, ConnectionError, sleep=lambda _: asyncio.sleep(0))(wrong)
    assert len(calls) == 1


def test_bad_retry_settings_are_refused() -> None:
    for bad in (
        {"max_attempts": 0},
        {"initial_seconds": 5, "max_seconds": 1},
        {"jitter_seconds": -1},
        {"x": 1},
    ):
        with pytest.raises(ValidationError):
            RetrySettings.model_validate(bad)


# -- OPA over HTTP: connection errors only, never past the decision's timeout ------------------
async def _decide_against(
    script: list[str], settings: RetrySettings, decision_seconds: float = 5.0
) -> tuple[str | None, int]:
    raw = RawHttpServer(script, {"result": VALID_RESULT})
    async with raw as url:
        engine = OpaEngine(url, timeout=decision_seconds, retry=settings)
        try:
            decision = await engine.decide(INPUT)
        finally:
            await engine.close()
    return decision.fail_reason, raw.requests


async def test_opa_retries_dropped_connections_within_its_attempts() -> None:
    assert await _decide_against(["close"] * 3, FAST) == (None, 4)
    assert await _decide_against(["close"] * 5, FAST.model_copy(update={"max_attempts": 3})) == (
        "POLICY_UNAVAILABLE",
        3,
    )


async def test_opa_never_waits_for_a_retry_past_the_decision_timeout() -> None:
    slow = RetrySettings(max_attempts=5, initial_seconds=10, max_seconds=10, jitter_seconds=0)
    assert await _decide_against(["close"] * 5, slow, decision_seconds=0.5) == ("POLICY_UNAVAILABLE", 1)


# -- the bundle client: follows for good, failed polls retried with the policy's backoff -------
async def test_the_bundle_client_keeps_following_through_failures() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    answers = [503, 502, 503]  # then 304: nothing new, ask again
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = answers.pop(0) if answers else 304
            seen.append(status)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    client = BundleClient(
        f"http://127.0.0.1:{server.server_address[1]}",
        wait_seconds=0,
        retry_min=0.01,
        retry=RetrySettings(initial_seconds=0.01, max_seconds=0.02, jitter_seconds=0.01),
    )

    async def refuse(_: object) -> bool:
        raise AssertionError("no bundle is ever served")

    follower = asyncio.create_task(client.follow(refuse))
    try:
        deadline = time.monotonic() + 20
        while seen.count(304) < 2:
            assert time.monotonic() < deadline, f"the client stopped asking: {seen}"
            await asyncio.sleep(0.01)
    finally:
        follower.cancel()
        server.shutdown()
        server.server_close()
    assert seen[:3] == [503, 502, 503] and client.status.unavailable == 3
    assert client.status.last_error == "BUNDLE_HTTP_503"
