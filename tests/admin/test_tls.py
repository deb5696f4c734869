"""The admin listener over HTTPS (issue 19, finding 6): a real ``labelgate serve`` with
``admin.tls``; ``__Host-`` + Secure session cookies that hold a derived token (never the
bearer JWT), HSTS on every answer, no plain HTTP on the port, loopback by default."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import httpx
import pytest

from labelgate.config import GatewaySettings
from tests.admin.conftest import Admin, admin_gateway
from tests.approvals.conftest import person, token
from tests.support.procs import wait_until


def trust(admin: Admin) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(admin.ca_file))


@pytest.fixture(scope="module")
def tls_admin(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Admin]:
    with admin_gateway(tmp_path_factory.mktemp("admin-tls"), backend, tls=True) as running_admin:

        def up() -> bool:
            try:
                return httpx.get(f"{running_admin.base}/healthz", verify=trust(running_admin)).is_success
            except httpx.HTTPError:
                return False

        wait_until(up, 20, "the HTTPS admin listener")
        yield running_admin


def test_https_sessions_use_host_prefixed_secure_cookies_and_hsts(tls_admin: Admin) -> None:
    bearer = token(person("olivia"), "data-owners")
    with httpx.Client(base_url=tls_admin.base, verify=trust(tls_admin), timeout=10) as client:
        health = client.get("/healthz")
        assert health.headers["strict-transport-security"].startswith("max-age=")
        page = client.get("/inbox")
        signin = page.headers["set-cookie"]
        assert signin.startswith("__Host-labelgate_signin=") and "Secure" in signin and "Path=/;" in signin
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        done = client.post("/inbox/signin", data={"csrf": csrf.group(1), "next": "/inbox", "token": bearer})
        assert done.status_code == 303, done.text
        cookie = next(v for k, v in done.headers.multi_items() if k == "set-cookie" and "_session=" in v)
        assert cookie.startswith("__Host-labelgate_session=")
        for attribute in ("Secure", "HttpOnly", "Path=/;", "SameSite=strict"):
            assert attribute.lower() in cookie.lower(), (attribute, cookie)
        assert "Domain" not in cookie
        assert bearer not in cookie and bearer.rsplit(".", 1)[1] not in cookie
        inbox = client.get("/inbox")
        assert inbox.status_code == 200 and "Sign out" in inbox.text
        assert inbox.headers["strict-transport-security"].startswith("max-age=")


def test_the_https_port_speaks_no_plain_http(tls_admin: Admin) -> None:
    plain = tls_admin.base.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/healthz", timeout=5)


def test_the_admin_listener_binds_loopback_by_default() -> None:
    settings = GatewaySettings(auth={"jwt": {"trust_dev_key": True}})
    assert settings.admin_listen is not None and settings.admin_listen.startswith("127.0.0.1:")
    assert settings.admin.tls is None and settings.admin.api_docs is False
    assert settings.admin.max_body_bytes == 64 * 1024
