"""Webhook notifications: a Slack-compatible payload (text and blocks with the deep link) or
the request as generic JSON.

Deliveries run in background tasks with retries and exponential backoff. Nothing waits for
them: a webhook that is down never delays a held call, an expiry or a denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client import Counter

from labelgate import retry
from labelgate.approvals.model import ApprovalRequest, State
from labelgate.background import BackgroundTasks
from labelgate.config import WebhookSettings
from labelgate.logs import get_logger
from labelgate.shown_urls import shown_problem, shown_url

log = get_logger(__name__)
DELIVERIES = Counter(
    "labelgate_approval_webhook_deliveries_total", "Webhook deliveries by outcome", ["outcome"]
)
MAX_BACKOFF_SECONDS = 30.0
FIELD_LIMIT = 2000  # characters in a Slack section field
# The notification event for each state a request can reach.
EVENTS = {
    State.PENDING: "requested",
    State.GRANTED: "granted",
    State.DENIED: "denied",
    State.EXPIRED: "expired",
    State.ABANDONED: "abandoned",
}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# What a Slack client may still make a link of in plain_text: a scheme (https://) and a dotted
# host name (labelgate-inbox.example.net, someone@example.com). Defanged the usual way, visibly.
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}):(?=//)")
_HOST_DOT = re.compile(r"(?<=[^\W_])\.(?=[^\W\d_]{2})")


def _unlinked(text: str) -> str:
    """Free text a caller or an approver wrote, with nothing in it a reader could click:
    ``https://x.example`` becomes ``https[:]//x[.]example``."""
    return _HOST_DOT.sub("[.]", _SCHEME.sub(r"\1[:]", text))


def _plain(text: str, limit: int = 3000) -> dict[str, Any]:
    """A plain_text object: no mrkdwn (no links, mentions or styling), no emoji codes. Cut to
    Slack's limit (3000 characters, 2000 in a field): defanged, a reason can outgrow it, and
    Slack refuses the whole message for one text too long."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text, "emoji": False}


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def headline(request: ApprovalRequest) -> str:
    """One line on the request; the model name and the outcome (an approver's reason) are
    written by the caller and the approvers, so what would read as a link is defanged."""
    labels = ", ".join(request.binding.labels)
    target = _unlinked(request.binding.model) if request.binding.model else request.binding.method
    if request.state is State.PENDING:
        return f"Approval needed: {request.requester} asks to see {labels} data from {target}"
    if request.state is State.GRANTED:
        people = ", ".join(v.approver for v in request.votes if v.verdict == "approve")
        return f"Approval {request.id} granted by {people}"
    return f"Approval {request.id} {request.state.value}: {_unlinked(request.resolution)}"


def slack_payload(request: ApprovalRequest, link: str) -> dict[str, Any]:
    """Blocks of plain_text only, so text that callers and approvers wrote (the requester's
    name, the model, the justification, an approver's reason in the outcome) is never read as
    mrkdwn; in the free text of those (the model, the justification, the outcome) what would
    read as a link is defanged too, so the inbox button is the one link in the message. The
    generic format is JSON for programs: its values are the stored text, as the API gives it."""
    needs = f"{request.requirement.min_approvals} approval(s) from " + ", ".join(
        request.requirement.approver_groups
    )
    fields = [
        _plain(f"Requester\n{request.requester}", FIELD_LIMIT),
        _plain(f"Model\n{_unlinked(request.binding.model) or '-'}", FIELD_LIMIT),
        _plain(f"Labels\n{', '.join(request.binding.labels)}", FIELD_LIMIT),
        _plain(f"Needs\n{needs}", FIELD_LIMIT),
        _plain(f"Expires\n{_when(request.expires_at)}", FIELD_LIMIT),
        _plain(f"State\n{request.state.value}", FIELD_LIMIT),
    ]
    why = (
        f"Justification, in the requester's own words: {_unlinked(request.justification)}"
        if request.justification
        else "The requester gave no justification."
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _plain(headline(request))},
        {"type": "section", "fields": fields},
        {
            "type": "context",
            "elements": [
                _plain(f"Policy: {request.requirement.reason}"),
                _plain(why),
            ],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": _plain("Open in the approval inbox"),
                    "url": link,
                    **({"style": "primary"} if request.state is State.PENDING else {}),
                }
            ],
        },
    ]
    # The fallback text (notifications, clients without blocks) is mrkdwn: escaped as well.
    return {"text": f"{_slack_escape(headline(request))}: {link}", "blocks": blocks}


def generic_payload(event: str, request: ApprovalRequest, link: str) -> dict[str, Any]:
    return {"event": f"approval.{event}", "approval": request.to_json(), "link": link}


def shown_host(url: str) -> str:
    """The hook's HOST[:PORT] as a log line names it: basic-auth userinfo as ``***``."""
    return shown_url(url, url.split("/")[2])


class _TryAgain(Exception):
    """A failed delivery worth another attempt (a 5xx, 429, timeout or connection error)."""


class _Refused(Exception):
    """A delivery the receiver refused for good (any other status)."""


def _retry_settings(hook: WebhookSettings) -> retry.RetrySettings:
    """The hook's ``retry:``; unset, the older ``max_attempts`` and ``backoff_seconds``."""
    if hook.retry is not None:
        return hook.retry
    initial = min(hook.backoff_seconds, MAX_BACKOFF_SECONDS)
    return retry.RetrySettings(
        max_attempts=hook.max_attempts,
        initial_seconds=initial,
        max_seconds=MAX_BACKOFF_SECONDS,
        jitter_seconds=initial / 2,
    )


class WebhookNotifier:
    def __init__(self, hooks: Sequence[WebhookSettings]) -> None:
        self.hooks = list(hooks)
        self._tasks = BackgroundTasks()
        self._session: aiohttp.ClientSession | None = None

    def notify(self, request: ApprovalRequest, link: str) -> None:
        """Queue deliveries for the request's current state; returns at once."""
        event = EVENTS[request.state]
        for hook in self.hooks:
            if event not in hook.events:
                continue
            body = (
                slack_payload(request, link)
                if hook.format == "slack"
                else generic_payload(event, request, link)
            )
            self._tasks.start(self._deliver(hook, body, request.id, event))

    async def _deliver(
        self, hook: WebhookSettings, body: dict[str, Any], approval_id: str, event: str
    ) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
        session, number = self._session, 0

        async def attempt() -> None:
            nonlocal number
            number, retryable = number + 1, True
            try:
                async with session.post(hook.url, json=body, timeout=timeout) as response:
                    if 200 <= response.status < 300:
                        return
                    retryable = response.status >= 500 or response.status == 429
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"{type(error).__name__}: {error}"
            DELIVERIES.labels(outcome="failed_attempt").inc()
            problem = shown_problem(hook.url, problem)
            log.warning(
                "approval webhook failed",
                approval_id=approval_id,
                notification=event,
                attempt=number,
                problem=problem,
                host=shown_host(hook.url),
            )
            raise (_TryAgain if retryable else _Refused)(problem)

        try:
            await retry.policy(_retry_settings(hook), _TryAgain)(attempt)
            DELIVERIES.labels(outcome="delivered").inc()
            return
        except (_TryAgain, _Refused):
            pass
        DELIVERIES.labels(outcome="gave_up").inc()
        log.error("approval webhook gave up", approval_id=approval_id, notification=event)

    async def close(self, grace: float = 1.0) -> None:
        """Give deliveries in flight a moment, then cancel the rest."""
        late = await self._tasks.wait(grace)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
