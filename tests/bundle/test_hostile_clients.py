"""Issue 19, findings 1-3, with real parts: the ``labelgate bundle-server`` process, a real
``opa run --server`` reporting status and decision logs to it with its own credential, and
scripted hostile clients over loopback TCP.

Every wait is a bounded poll on an observable outcome; nothing asserts on time.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bundle.helpers import (
    READER_TOKEN,
    BundleServer,
    KeyPair,
    bundle_server,
    example_input,
    opa_config,
    opa_with_config,
    wait_for,
    write_tokens_file,
)
from tests.support.pki import create_ca
from tests.support.procs import free_port, opa_binary, port_open, running

pytestmark = pytest.mark.slow

TOKEN_A = "opa-a-instance-token-0001"  # the real OPA's
TOKEN_B = "opa-b-instance-token-0002"  # another instance's, in the hands of an attacker
INPUT = example_input()
JSON = {"Content-Type": "application/json"}


def server_command(source: Path, port: int, state: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "labelgate.bundle.cli",
        "bundle-server",
        "--source",
        str(source),
        "--listen",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(state),
        "--opa",
        opa_binary(),
        *args,
    ]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LABELGATE_BUNDLE_")}


def test_the_server_process_needs_credentials_or_insecure_no_auth(
    policy_source: Path, tmp_path: Path
) -> None:
    port = free_port()
    refused = subprocess.run(
        server_command(policy_source, port, tmp_path / "state"),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "BUNDLE_AUTH_REQUIRED" in refused.stderr and "--insecure-no-auth" in refused.stderr
    assert not port_open(port)

    weak = subprocess.run(
        server_command(policy_source, port, tmp_path / "state", "--token", "short"),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert weak.returncode == 2 and "BUNDLE_TOKEN_WEAK" in weak.stderr

    command = server_command(policy_source, port, tmp_path / "state", "--insecure-no-auth")
    log_path = tmp_path / "insecure.log"
    with running(command, log_path, port=port) as process:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, "the insecure server to serve")
        assert httpx.get(f"{url}/bundles/labelgate").status_code == 200
        assert "bundle_server_auth_disabled" in process.output()


def post(server: BundleServer, token: str | None, path: str, body: bytes, **headers: str) -> httpx.Response:
    with server.client(token, **headers) as client:
        return client.post(path, content=body)


def versions_of(server: BundleServer, decision_id: str) -> dict[str, Any]:
    with server.client() as reader:
        response = reader.get(f"/decisions/{decision_id}")
    return response.json() if response.status_code == 200 else {"events": []}


def instance_count(server: BundleServer, name: str) -> int:
    with server.client() as reader:
        for item in reader.get("/fleet").raise_for_status().json()["instances"]:
            if item["id"] == name:
                return item["decision_logs"]["count"]
    return 0


def refused(server: BundleServer, route: str, code: int) -> bool:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        counter = line.startswith("labelgate_bundle_http_requests_total{")
        if counter and f'code="{code}"' in line and f'route="{route}"' in line:
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_real_opa_reports_while_hostile_clients_are_refused(policy_source: Path, tmp_path: Path) -> None:
    tokens = write_tokens_file(
        tmp_path / "tokens.yaml",
        instances={"opa-a": TOKEN_A, "opa-b": TOKEN_B},
        readers={"auditor": READER_TOKEN},
    )
    with (
        bundle_server(tmp_path, policy_source, env={"LABELGATE_BUNDLE_TOKENS_FILE": str(tokens)}) as server,
        opa_with_config(tmp_path, opa_config(server.url, server.url, token=TOKEN_A)) as opa,
        opa_with_config(
            tmp_path, opa_config(server.url, server.url, token=READER_TOKEN), "misconfigured"
        ) as reader_opa,
    ):
        wait_for(opa.healthy, "OPA to activate the bundle with its instance credential")

        # Finding 2: a forged event for a decision OPA made, posted as soon as its id is known
        # (a denied caller learns it from ErrorInfo), by another instance's credential ...
        real = opa.decide(INPUT)
        forged = {"decision_id": real["decision_id"], "labels": {"id": "opa-a"}, "result": {"allow": True}}
        stored = post(server, TOKEN_B, "/logs", json.dumps([forged]).encode(), **JSON)
        assert stored.status_code == 200, stored.text
        # ... and by the real OPA's own credential (stolen), for another decision.
        second = opa.decide(INPUT)
        forged_same = {"decision_id": second["decision_id"], "result": {"allow": "forged"}}
        assert post(server, TOKEN_A, "/logs", json.dumps([forged_same]).encode(), **JSON).status_code == 200

        def opa_logged(decision_id: str, count: int) -> bool:
            return len(versions_of(server, decision_id)["events"]) >= count

        wait_for(lambda: opa_logged(real["decision_id"], 2), "OPA's own event beside the forged one")
        found = versions_of(server, real["decision_id"])
        assert found["conflict"] is True and "event" not in found
        by_instance = {v["instance"]: v["event"] for v in found["events"]}
        assert set(by_instance) == {"opa-a", "opa-b"}
        assert by_instance["opa-a"]["result"] == real["result"]  # OPA's record is there, filed by credential
        assert by_instance["opa-a"]["path"] == "labelgate/decision/result"
        assert by_instance["opa-b"]["result"] == {"allow": True}
        with server.client() as reader:
            ours = reader.get(f"/decisions/{real['decision_id']}", params={"instance": "opa-a"}).json()
        assert ours["event"]["result"] == real["result"]

        wait_for(
            lambda: opa_logged(second["decision_id"], 2), "OPA's event beside the same-credential forgery"
        )
        both = versions_of(server, second["decision_id"])
        assert both["conflict"] is True
        assert {v["instance"] for v in both["events"]} == {"opa-a"}
        assert sorted(json.dumps(v["event"]["result"]) for v in both["events"]) == sorted(
            [json.dumps(second["result"]), json.dumps({"allow": "forged"})]
        )

        # OPA's status reports are filed under its credential, with the id it reports beside it.
        def reported() -> dict[str, Any] | None:
            with server.client() as reader:
                fleet = reader.get("/fleet").raise_for_status().json()["instances"]
            return next((i for i in fleet if i["id"] == "opa-a" and i.get("up_to_date")), None)

        wait_for(lambda: reported() is not None, "OPA's status report")
        instance = reported()
        assert instance is not None and instance["authenticated"] is True
        assert instance["reported_id"] not in (None, "opa-a")  # OPA's own uuid
        assert instance["decision_logs"]["conflicts"] == 2

        # Finding 1: roles, Content-Type, Host.
        assert post(server, READER_TOKEN, "/logs", b"[]", **JSON).status_code == 403  # a reader writing
        assert post(server, READER_TOKEN, "/status", b"{}", **JSON).status_code == 403
        with server.client(TOKEN_A) as instance_client:  # an instance reading decisions and the fleet
            denied = instance_client.get(f"/decisions/{real['decision_id']}")
            assert denied.status_code == 403 and denied.json()["reason"] == "BUNDLE_ROLE_FORBIDDEN"
            assert instance_client.get("/fleet").status_code == 403
        # An OPA holding the reader token gets no policy, and its reports are turned away.
        wait_for(lambda: refused(server, "/bundles/{name}", 403), "the reader-token OPA's pull to be refused")
        wait_for(lambda: refused(server, "/status", 403), "the reader-token OPA's report to be refused")
        assert not reader_opa.healthy()
        plain = json.dumps([{"decision_id": "no-cors-1"}]).encode()
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            response = post(server, TOKEN_B, "/logs", plain, **{"Content-Type": content_type})
            assert response.status_code == 415 and response.json()["reason"] == "CONTENT_TYPE_UNSUPPORTED"
        assert post(server, None, "/logs", plain, **{"Content-Type": "text/plain"}).status_code == 401
        rebound = {"Host": f"rebind.attacker.example:{server.url.rsplit(':', 1)[1]}"}
        for path in ("/fleet", f"/decisions/{real['decision_id']}", "/bundles/labelgate"):
            with server.client(**rebound) as client:
                response = client.get(path)
            assert response.status_code == 421 and response.json()["reason"] == "HOST_NOT_ALLOWED"
        with server.client(None, Host="localhost") as client:
            assert client.get("/fleet").status_code == 401  # an allowed name: on to authentication

        # Finding 3: malformed and oversized reports, refused with problems, nothing stored.
        b_before = instance_count(server, "opa-b")
        hostile: list[tuple[str, bytes, dict[str, str], int, str]] = [
            (
                "/status",
                b'{"labels": {"id": "x"}, "bundles": {"labelgate": {"active_revision": NaN}}}',
                JSON,
                400,
                "BODY_NOT_JSON",
            ),
            ("/logs", b'[{"decision_id": "nan-1", "result": Infinity}]', JSON, 400, "BODY_NOT_JSON"),
            (
                "/status",
                json.dumps({"labels": {"id": {"o": 1}}}).encode(),
                JSON,
                400,
                "STATUS_REPORT_INVALID",
            ),
            (
                "/status",
                json.dumps({"bundles": {"labelgate": {"active_revision": [1]}}}).encode(),
                JSON,
                400,
                "STATUS_REPORT_INVALID",
            ),
            ("/logs", json.dumps([{"decision_id": {"o": 1}}]).encode(), JSON, 400, "DECISION_LOGS_INVALID"),
            (
                "/logs",
                json.dumps([{"decision_id": "t-1", "path": ["x"]}]).encode(),
                JSON,
                400,
                "DECISION_LOGS_INVALID",
            ),
            ("/status", b"[" * 200_000 + b"]" * 200_000, JSON, 400, "JSON_TOO_DEEP"),
            ("/logs", b"[" * 200_000 + b"]" * 200_000, JSON, 400, "JSON_TOO_DEEP"),
            (
                "/logs",
                json.dumps([{"decision_id": f"many-{n}"} for n in range(10_001)]).encode(),
                JSON,
                413,
                "TOO_MANY_EVENTS",
            ),
        ]
        for path, body, headers, status, reason in hostile:
            response = post(server, TOKEN_B, path, body, **headers)
            assert response.status_code == status, (path, body[:50], response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["reason"] == reason

        # The gzip bomb: ~1.6 MB on the wire that inflated to 621k stored events.
        events = b"[" + b",".join(b'{"decision_id":"bomb-%d"}' % n for n in range(621_000)) + b"]"
        bomb = gzip.compress(events * 2, 9)  # ~30 MB inflated, far beyond the 8 MiB bound
        pid = server.process.popen.pid
        rss_before = rss_kib(pid)
        response = post(server, TOKEN_B, "/logs", bomb, **{**JSON, "Content-Encoding": "gzip"})
        assert response.status_code == 413 and response.json()["reason"] == "BODY_TOO_LARGE"
        small_bomb = gzip.compress(events[: 6 * 1024 * 1024].rsplit(b",", 1)[0] + b"]", 9)
        response = post(server, TOKEN_B, "/logs", small_bomb, **{**JSON, "Content-Encoding": "gzip"})
        assert response.status_code == 413 and response.json()["reason"] == "TOO_MANY_EVENTS"
        assert rss_kib(pid) - rss_before < 200 * 1024  # bounded by the limits, not by the attacker
        assert instance_count(server, "opa-b") == b_before

        # Reads still work, OPA keeps reporting, and nothing answered a 500.
        third = opa.decide(INPUT)
        wait_for(lambda: opa_logged(third["decision_id"], 1), "OPA's next decision log")
        assert versions_of(server, third["decision_id"])["conflict"] is False
        with server.client() as reader:
            assert reader.get("/fleet").status_code == 200
            assert reader.get("/fleet/page").status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'code="500"' not in metrics
        assert "labelgate_bundle_decision_conflicts_total 2.0" in metrics


def test_opa_over_tls_with_its_own_credential_and_signed_bundles(
    policy_source: Path, tmp_path: Path, rsa_keys: KeyPair
) -> None:
    """The shape the shipped OPA configs should have: https, a per-instance token, signatures."""
    ca = create_ca()
    ca_file = ca.write(tmp_path / "pki")
    cert, key = ca.server_cert().write(tmp_path / "pki", "bundle-server")
    private, _ = rsa_keys.write(tmp_path, "bundle-signing")
    tokens = write_tokens_file(
        tmp_path / "tokens.yaml", instances={"opa-a": TOKEN_A}, readers={"auditor": READER_TOKEN}
    )
    args = ("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    args += ("--signing-key", str(private), "--key-id", "labelgate")
    env = {"LABELGATE_BUNDLE_TOKENS_FILE": str(tokens)}
    with bundle_server(tmp_path, policy_source, *args, env=env, ca_file=ca_file) as server:
        config = opa_config(server.url, server.url, token=TOKEN_A, public_key=rsa_keys, ca_file=ca_file)
        with opa_with_config(tmp_path, config) as opa:
            wait_for(opa.healthy, "OPA to pull the signed bundle over TLS")
            decision = opa.decide(INPUT)

            def logged() -> bool:
                return len(versions_of(server, decision["decision_id"])["events"]) == 1

            wait_for(logged, "OPA's decision log over TLS")
            assert versions_of(server, decision["decision_id"])["instance"] == "opa-a"
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served next to TLS
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
