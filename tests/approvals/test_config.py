"""The ``approvals`` section of the gateway config: settings that cannot work are refused."""

from __future__ import annotations

import pytest

from labelgate.approvals.hold import RefuseUntilApproved
from labelgate.config import GatewaySettings, load_settings
from labelgate.errors import ConfigError
from labelgate.gateway.server import approval_stage, build_approvals

JWT = {"jwt": {"trust_dev_key": True}}


def test_a_postgres_store_needs_a_dsn_and_an_explicit_section_needs_jwt() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth={"api_keys": {}}, approvals={"store": "postgres"})
    message = refused.value.message
    assert "approvals.postgres_dsn is not set" in message
    assert "approvals need auth.jwt" in message


def test_several_workers_need_a_shared_store() -> None:
    with pytest.raises(ConfigError, match="shared store"):
        load_settings(auth=JWT, listen="127.0.0.1:8443", workers=2, approvals={"hold_timeout_seconds": 30})


def test_without_a_usable_setup_held_calls_are_refused_at_once() -> None:
    # No approvals section and no JWT: the gateway still starts, and holds become refusals.
    settings = GatewaySettings(auth={"api_keys": {}})
    assert build_approvals(settings) is None
    assert isinstance(approval_stage(settings, None), RefuseUntilApproved)
    off = GatewaySettings(auth=JWT, approvals={"enabled": False})
    assert build_approvals(off) is None
    assert build_approvals(GatewaySettings(auth=JWT)) is not None


@pytest.mark.parametrize(
    ("oidc", "problem"),
    [
        ({"issuer": "http://idp.example.com", "client_id": "inbox"}, r"https \(http only for loopback\)"),
        (
            {
                "issuer": "https://idp.example.com",
                "client_id": "inbox",
                "client_secret": "s",
                "client_secret_file": "f",
            },
            "both set",
        ),
        ({"issuer": "https://idp.example.com", "client_id": "inbox", "scopes": ["groups"]}, "include openid"),
        ({"issuer": "https://idp.example.com#x", "client_id": "inbox"}, "issuer"),
        ({"issuer": "https://idp.example.com"}, "client_id"),
    ],
)
def test_an_inbox_oidc_section_that_cannot_work_is_refused(oidc: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(auth=JWT, admin={"oidc": oidc})


def test_an_inbox_oidc_section_that_can_work_loads() -> None:
    settings = load_settings(
        auth=JWT, admin={"oidc": {"issuer": "http://127.0.0.1:9000", "client_id": "inbox"}}
    )
    assert settings.admin.oidc is not None and settings.admin.oidc.scopes == ["openid", "groups"]


def test_inbox_links_need_a_listener_that_serves_the_inbox() -> None:
    # admin.approvals off: the admin port answers 404 there, so links must name the approvals server.
    with pytest.raises(ConfigError, match=r"approvals need approvals.public_url"):
        load_settings(
            auth=JWT, admin_listen="127.0.0.1:9090", admin={"approvals": False}, approvals={"enabled": True}
        )
    served = load_settings(
        auth=JWT,
        admin_listen="127.0.0.1:9090",
        admin={"approvals": False},
        approvals={"public_url": "https://approvals.example.com"},
    )
    assert not served.admin.approvals
    assert load_settings(auth=JWT, admin_listen="127.0.0.1:9090", approvals={"enabled": True}).admin.approvals
