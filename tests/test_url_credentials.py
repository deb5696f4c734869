"""A password written into a URL setting nothing checks it against is refused at load, and
the OPA engine's log lines never quote one (review: ``opa_url: http://opauser:PW@...`` was
accepted and logged whole on every OPA failure)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from labelgate.config import load_settings
from labelgate.errors import ConfigError
from labelgate.policy.opa import OpaEngine
from tests.support.procs import free_port
from tests.test_cli_bad_input import REPO, run_cli

AUTH: dict[str, Any] = {"api_keys": {}}
IDP = "https://idp.example.com"
SECRET = "SECRETPW"


@pytest.mark.parametrize(
    ("setting", "overrides"),
    [
        (
            "policy.opa_url",
            {"engine": "opa", "policy": {"opa_url": f"http://opauser:{SECRET}@127.0.0.1:28181"}},
        ),
        ("policy.bundle_url", {"policy": {"bundle_url": f"https://reader:{SECRET}@bundles.example.com"}}),
        ("approvals.public_url", {"approvals": {"public_url": f"https://u:{SECRET}@inbox.example.com"}}),
        (
            "admin.oidc.issuer",
            {"admin": {"oidc": {"issuer": f"https://u:{SECRET}@idp.example.com", "client_id": "inbox"}}},
        ),
        (
            "admin.oidc.redirect_url",
            {
                "admin": {
                    "oidc": {
                        "issuer": IDP,
                        "client_id": "inbox",
                        "redirect_url": f"https://u:{SECRET}@inbox.example.com/inbox/oidc/callback",
                    }
                }
            },
        ),
    ],
)
def test_a_url_setting_carrying_credentials_nothing_checks_is_refused(
    setting: str, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, **overrides)
    message = refused.value.message
    assert f"{setting}: " in message and "carries credentials" in message, message
    assert SECRET not in message and "***@" in message, message


def test_the_opa_url_option_carrying_credentials_is_refused() -> None:
    example = REPO / "proto/labelgate/v1/schema/examples/analyst-response.json"
    url = f"http://opauser:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens: OPA fails
    done = run_cli(["policy", "eval", "--input", example, "--engine", "opa", "--opa-url", url])
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr, done.stderr
    assert "--opa-url 'http://***@127.0.0.1" in done.stderr and "carries credentials" in done.stderr


async def test_the_opa_engine_never_logs_a_urls_credentials(caplog: pytest.LogCaptureFixture) -> None:
    """Defence in depth: an engine built with such a URL (not from the config) logs it as ***."""
    engine = OpaEngine(f"http://opauser:{SECRET}@127.0.0.1:{free_port()}", timeout=1.0)
    with caplog.at_level(logging.DEBUG):
        await engine.start()  # opa_unreachable_at_start
        try:
            decision = await engine.decide({"phase": "request"})  # opa_retry, opa_unavailable
        finally:
            await engine.close()
    assert decision.fail_reason == "POLICY_UNAVAILABLE"
    logged = [vars(record) for record in caplog.records if record.name.startswith("labelgate")]
    events = {record["msg"] for record in logged}
    assert {"opa_unreachable_at_start", "opa_retry", "opa_unavailable"} <= events, events
    assert all(SECRET not in repr(record) for record in logged), logged
    assert all(record["url"].startswith("http://***@127.0.0.1") for record in logged if "url" in record)
    assert SECRET not in engine.url
