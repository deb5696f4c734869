"""A webhook URL's secrets (basic-auth userinfo, a Slack-style secret path) never reach a log
line when a delivery fails: the host is named with its userinfo as ``***``, as tracing
endpoints and other configured URLs are shown (review: what leaves the gateway, finding 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from labelgate.approvals.notify import shown_host
from labelgate.config import WebhookSettings
from labelgate.shown_urls import shown_problem
from tests.approvals.test_notify import draft, eventually, service_with
from tests.support.procs import free_port

PASSWORD = "S3cretHookPassw0rd"
PATH_TOKEN = "XoXb9Secr3tPathT0ken"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every webhook record with all its fields, as a log line would carry them."""
    return "\n".join(
        f"{record.getMessage()} {vars(record)}"
        for record in caplog.records
        if record.name == "labelgate.approvals.notify"
    )


async def _fail_one_delivery(url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> str:
    hook = WebhookSettings(url=url, max_attempts=1, backoff_seconds=0.01)
    with caplog.at_level(logging.INFO, logger="labelgate.approvals.notify"):
        service = await service_with([hook], tmp_path)
        await service.open(draft())
        await eventually(lambda: "approval webhook gave up" in _logged(caplog))
        await service.close()
    return _logged(caplog)


async def test_a_failed_delivery_names_the_host_without_its_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens: the attempt fails with a connection error
    logged = await _fail_one_delivery(
        f"https://hookuser:{PASSWORD}@127.0.0.1:{port}/notify", tmp_path, caplog
    )
    assert PASSWORD not in logged and "hookuser" not in logged
    failed = [r for r in caplog.records if r.getMessage() == "approval webhook failed"]
    assert [r.host for r in failed] == [f"***@127.0.0.1:{port}"]  # type: ignore[attr-defined]


async def test_an_invalid_url_error_repeats_neither_credentials_nor_secret_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's InvalidURL message is the whole URL: userinfo and path (the secret of a Slack
    incoming webhook) included."""
    url = f"https://hookuser:{PASSWORD}@127.0.0.1:99999/services/T0/B0/{PATH_TOKEN}"
    logged = await _fail_one_delivery(url, tmp_path, caplog)
    assert "InvalidUrl" in logged  # the failure is still named
    assert PASSWORD not in logged and PATH_TOKEN not in logged


def test_shown_host_and_problem() -> None:
    url = f"https://u:{PASSWORD}@hooks.example:8443/services/{PATH_TOKEN}"
    assert shown_host(url) == "***@hooks.example:8443"
    assert shown_host("https://hooks.example/x") == "hooks.example"
    shown = shown_problem(url, f"InvalidUrlClientError: {url}")
    assert shown == "InvalidUrlClientError: https://***@hooks.example:8443/…"
    assert shown_problem("https://h.example/", "HTTP 500") == "HTTP 500"
