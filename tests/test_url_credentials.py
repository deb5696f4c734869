"""A password written into a URL setting nothing checks it against is refused at load, and
the log lines and errors of what fetches a URL never quote one (review: ``opa_url:
http://opauser:PW@...`` was accepted and logged whole on every OPA failure; ``jwks_url`` on
every key refresh, ``bundle_url`` on every failed poll)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from labelgate.approvals.oidc import OidcSignin, OidcUnavailable
from labelgate.audit.export.destinations import DeliveryFailed, HttpBatch
from labelgate.audit.export.tail import Cursor, LogRecord
from labelgate.auth.remote_jwks import RemoteJwks
from labelgate.config import OidcSettings, load_settings
from labelgate.errors import ConfigError
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.opa import OpaEngine
from labelgate.policy.source import PolicySource
from tests.auth.conftest import AUDIENCE, ISSUER
from tests.auth.test_remote_jwks import jwks_server
from tests.support.pki import jwks, rsa_signing_key
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
            "auth.jwt",  # jwks_url: the provider's public keys, served to anyone
            {
                "auth": {
                    "jwt": {
                        "issuer": IDP,
                        "audience": "labelgate",
                        "jwks_url": f"https://keys:{SECRET}@idp.example.com/jwks.json",
                    }
                }
            },
        ),
        (
            "auth.jwt",  # issuer: matched against each token's iss, never fetched
            {
                "auth": {
                    "jwt": {
                        "issuer": f"https://u:{SECRET}@idp.example.com",
                        "audience": "labelgate",
                        "jwks_url": f"{IDP}/jwks.json",
                    }
                }
            },
        ),
        ("tracing", {"tracing": {"endpoint": f"otel:{SECRET}@collector.example:4317"}}),
        ("tracing", {"tracing": {"endpoint": f"https://otel:{SECRET}@collector.example:4317"}}),
        ("upstream.address", {"upstream": {"address": f"triton:{SECRET}@127.0.0.1:8001"}}),
        (
            "upstreams.0.address",  # a REST upstream: httpx would send it instead of token
            {
                "upstreams": [
                    {
                        "name": "rest",
                        "address": f"triton:{SECRET}@127.0.0.1:8000",
                        "protocol": "rest",
                        "models": ["m"],
                    }
                ]
            },
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
        load_settings(**{"auth": AUTH, **overrides})
    message = refused.value.message
    assert f"{setting}: " in message and "carries credentials" in message, message
    assert SECRET not in message and "***@" in message, message


def test_credentials_a_receiver_checks_and_issuers_that_are_not_urls_still_load() -> None:
    """The OTLP/HTTP exporter sends userinfo as basic auth (a collector behind basic auth),
    and ``iss`` may be any string: a service account's e-mail address holds an ``@``."""
    endpoint = f"https://otel:{SECRET}@collector.example:4318"
    account = "signer@project.iam.gserviceaccount.com"
    jwt = {"issuer": account, "audience": "labelgate", "jwks_url": f"{IDP}/jwks.json"}
    settings = load_settings(auth={"jwt": jwt}, tracing={"endpoint": endpoint, "protocol": "http"})
    assert settings.tracing.endpoint == endpoint
    assert settings.auth.jwt is not None and settings.auth.jwt.issuer == account


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


def _labelgate_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(record) for record in caplog.records if record.name.startswith("labelgate")]


def _with_userinfo(url: str) -> str:
    return url.replace("http://", f"http://keys:{SECRET}@", 1)


async def test_the_jwks_fetch_never_logs_nor_raises_a_urls_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defence in depth, as for OPA: a RemoteJwks built with such a URL (settings refuse it)
    names it as *** when the first fetch fails, when a refresh fails and when keys load."""
    options: dict[str, Any] = {
        "algorithms": ["RS256"],
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "refresh_seconds": 300,
        "timeout_seconds": 2,
    }
    down = RemoteJwks(f"http://keys:{SECRET}@127.0.0.1:{free_port()}/jwks.json", **options)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ConfigError) as unavailable:
            await down.start()
        assert not await down.refresh()  # jwks_refresh_failed
        async with jwks_server(jwks(rsa_signing_key())) as served:
            up = RemoteJwks(_with_userinfo(served.url), **options)
            await up.start()  # jwks_loaded
            await up.close()
    message = unavailable.value.message
    assert SECRET not in message and "from http://***@127.0.0.1:" in message, message
    logged = _labelgate_records(caplog)
    assert {"jwks_refresh_failed", "jwks_loaded"} <= {record["msg"] for record in logged}, logged
    assert all(SECRET not in repr(record) for record in logged), logged
    assert all(record["url"].startswith("http://***@127.0.0.1:") for record in logged if "url" in record)


async def _no_revision(source: PolicySource) -> bool:
    raise AssertionError("nothing listens: no revision arrives")


@pytest.mark.parametrize("port", [None, 99999], ids=["unreachable", "invalid-url"])
async def test_the_bundle_client_never_logs_nor_raises_a_urls_credentials(
    port: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed poll's log line, the start's error and the status name the server as ***; an
    invalid URL's aiohttp error, whose text is the whole URL, does not repeat it either."""
    url = f"http://reader:{SECRET}@127.0.0.1:{port or free_port()}"
    client = BundleClient(url, start_timeout=1.0, retry_min=0.05, retry_max=0.1)
    with caplog.at_level(logging.DEBUG):
        follower = asyncio.create_task(client.follow(_no_revision))
        try:
            with pytest.raises(ConfigError) as unavailable:
                await client.wait_first(follower)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    message = unavailable.value.message
    assert "BUNDLE_SERVER_UNREACHABLE" in message and "http://***@127.0.0.1:" in message, message
    assert SECRET not in message and SECRET not in str(client.status.last_error_detail)
    logged = _labelgate_records(caplog)
    assert "policy_bundle_unavailable" in {record["msg"] for record in logged}, logged
    assert all(SECRET not in repr(record) for record in logged), logged
    assert all(record["url"].startswith("http://***@127.0.0.1:") for record in logged if "url" in record)


async def test_oidc_provider_lines_never_log_a_urls_credentials(caplog: pytest.LogCaptureFixture) -> None:
    """The issuer refuses userinfo at load; an endpoint a discovery document names may hold it."""
    signin = OidcSignin(OidcSettings(issuer=IDP, client_id="inbox", timeout_seconds=2))
    with caplog.at_level(logging.DEBUG), pytest.raises(OidcUnavailable):
        await signin._get_json(f"http://u:{SECRET}@127.0.0.1:{free_port()}/keys", "keys")
    logged = _labelgate_records(caplog)
    urls = [record["url"] for record in logged if "url" in record]
    assert urls and all(url.startswith("http://***@127.0.0.1:") for url in urls), logged
    assert all(SECRET not in repr(record) for record in logged), logged


async def test_an_audit_http_destinations_error_repeats_neither_credentials_nor_secret_path() -> None:
    token = "XoXb9Secr3tPathT0ken"
    destination = HttpBatch(
        "http-test", f"http://u:{SECRET}@127.0.0.1:99999/in/{token}", token=None, timeout=2
    )
    record = LogRecord(1, "0" * 64, {"event": "test"}, Cursor())
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await destination.deliver([record])
    finally:
        await destination.close()
    assert SECRET not in failed.value.message and token not in failed.value.message, failed.value.message
