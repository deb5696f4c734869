"""Real ``labelgate bundle-server`` and real ``opa run --server`` processes on loopback.

OPA is configured the way a deployment would be: bundle service with a bearer token, long
polling, status and decision-log reporting back to the bundle server, and (for signed
bundles) a public key. Every wait is a bounded poll on an observable outcome.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelgate.bundle.build import read_tarball, write_tarball
from tests.bundle.helpers import (
    INSTANCE,
    TOKEN,
    BundleServer,
    KeyPair,
    Opa,
    bundle_server,
    example_input,
    opa_config,
    opa_with_config,
    set_plain_ttl,
    wait_for,
)

pytestmark = pytest.mark.slow
INPUT = example_input()
EDITS = 5


def ttl_of(opa: Opa) -> int | None:
    return opa.decide(INPUT).get("result", {}).get("cache_ttl_seconds")


def only_instance(server: BundleServer) -> dict[str, Any] | None:
    with server.client() as client:
        instances = client.get("/fleet").raise_for_status().json()["instances"]
    assert len(instances) <= 1, instances  # an OPA with a wrong token must not get in
    return instances[0] if instances else None


def refused_with_401(server: BundleServer, route: str) -> bool:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        counter = line.startswith("labelgate_bundle_http_requests_total{")
        if counter and 'code="401"' in line and f'route="{route}"' in line:
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def test_opa_follows_valid_edits_within_seconds(
    policy_source: Path, tmp_path: Path, record_property: Any
) -> None:
    with (
        bundle_server(tmp_path, policy_source) as server,
        opa_with_config(tmp_path, opa_config(server.url, server.url)) as opa,
        opa_with_config(tmp_path, opa_config(server.url, server.url, token="wrong"), "stranger") as stranger,
    ):
        wait_for(opa.healthy, "OPA to activate the bundle (/health?bundles=true)")
        served = server.status()["revision"]
        baseline = opa.decide(INPUT)["result"]
        assert baseline["allow"] is True

        # The protocol as seen by any HTTP client: ETag, 304, token.
        with server.client(TOKEN) as client:
            etag = client.get("/bundles/labelgate").headers["etag"]
            assert etag == f'"{served}"'
            assert client.get("/bundles/labelgate", headers={"If-None-Match": etag}).status_code == 304
        wait_for(lambda: refused_with_401(server, "/bundles/{name}"), "the wrong-token OPA to be refused")
        assert not stranger.healthy()
        with server.client(token=None) as anonymous:
            assert anonymous.get("/bundles/labelgate").status_code == 401

        # Edits reach OPA's decisions without a restart; time each from the write.
        latencies = []
        for n in range(EDITS):
            ttl = 100 + n
            started = time.monotonic()
            set_plain_ttl(policy_source, ttl)
            wait_for(lambda ttl=ttl: ttl_of(opa) == ttl, f"OPA to decide with edit {n}", timeout=15)
            latencies.append(time.monotonic() - started)
            assert opa.decide(INPUT)["result"] == {**baseline, "cache_ttl_seconds": ttl}
        median = statistics.median(latencies)
        record_property("edit_to_decision_median_s", round(median, 3))
        print(f"\nedit -> changed OPA decision: median {median:.3f}s over {EDITS} edits {latencies}")
        served = server.status()["revision"]
        last_ttl = 100 + EDITS - 1

        # A syntax error and a failing test: rejected, reported, never served.
        broken = policy_source / "labelgate" / "decision" / "broken.rego"
        broken.write_text("package labelgate.decision\n\nbroken if {\n")
        wait_for(lambda: server.status()["error"] is not None, "the syntax error to be reported")
        assert server.status()["error"]["reason"] == "POLICY_CHECK_FAILED"
        broken.unlink()
        wait_for(lambda: server.status()["healthy"], "the source to be healthy again")
        set_plain_ttl(policy_source, -5)
        wait_for(lambda: server.status()["error"] is not None, "the failing test to be reported")
        assert server.status()["error"]["reason"] == "POLICY_TEST_FAILED"
        assert server.status()["revision"] == served
        assert ttl_of(opa) == last_ttl

        # The fleet view: OPA's status reports and its decision logs, linked by decision_id.
        decision = opa.decide(INPUT)
        wait_for(
            lambda: (only_instance(server) or {}).get("revision") == served,
            "OPA's status report with the served revision",
        )
        instance = only_instance(server)
        assert instance is not None and instance["up_to_date"] is True
        assert instance["plugins"]["bundle"] == "OK"
        # Filed under the credential OPA used, with the id OPA reports beside it.
        assert instance["id"] == INSTANCE and instance["authenticated"] is True
        assert instance["reported_id"] and instance["reported_id"] != INSTANCE

        def logged() -> bool:
            with server.client() as client:
                return client.get(f"/decisions/{decision['decision_id']}").status_code == 200

        wait_for(logged, "the decision log to arrive")
        with server.client() as client:
            found = client.get(f"/decisions/{decision['decision_id']}").json()
        assert found["instance"] == INSTANCE and found["conflict"] is False
        event = found["event"]
        assert event["path"] == "labelgate/decision/result"
        assert event["result"] == decision["result"]
        assert event["bundles"]["labelgate"]["revision"] == served
        wait_for(lambda: only_instance(server)["decision_logs"]["count"] >= EDITS, "decision log counts")
        assert refused_with_401(server, "/status")  # the stranger's reports were turned away too


class TamperingProxy:
    """Sits between OPA and the bundle server (a man in the middle): while ``tamper`` is set it
    edits a .rego file in every bundle that passes through, after the server signed it; while
    ``replay`` holds a bundle the server served earlier, it answers with that one instead."""

    def __init__(self, upstream: str, victim: str = "labelgate/decision/decision.rego") -> None:
        self.tamper = threading.Event()
        self.replay: bytes | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if proxy.replay is not None:
                    self.send_replay(proxy.replay)
                    return
                forwarded = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    reply = httpx.get(upstream + self.path, headers=forwarded, timeout=60)
                except httpx.HTTPError:  # the server is going away at the end of the test
                    self.send_error(502)
                    return
                body = reply.content
                if reply.status_code == 200 and proxy.tamper.is_set():
                    files = read_tarball(body)
                    files[victim] += b"\n# edited in transit\n"
                    body = write_tarball(files.items())
                self.send_response(reply.status_code)
                for name in ("etag", "content-type"):
                    if name in reply.headers:
                        self.send_header(name, reply.headers[name])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # OPA hung up (it is stopped mid long poll)
                    self.wfile.write(body)

            def send_replay(self, tarball: bytes) -> None:
                etag = '"{}"'.format(json.loads(read_tarball(tarball)[".manifest"])["revision"])
                if self.headers.get("If-None-Match") == etag:
                    time.sleep(0.5)
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(tarball)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(tarball)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[TamperingProxy]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def test_opa_accepts_signed_bundles_and_rejects_tampered_ones(
    policy_source: Path, tmp_path: Path, rsa_keys: KeyPair
) -> None:
    private, _ = rsa_keys.write(tmp_path, "bundle-signing")
    signing = ("--signing-key", str(private), "--signing-alg", "RS256", "--key-id", "labelgate")
    with bundle_server(tmp_path, policy_source, *signing) as server:
        proxy = TamperingProxy(server.url)
        config = opa_config(proxy.url, server.url, public_key=rsa_keys, key_id="labelgate")
        with proxy.running(), opa_with_config(tmp_path, config) as opa:
            wait_for(opa.healthy, "OPA to verify and activate the signed bundle")
            status = server.status()
            assert status["signed"] is True and ".signatures.json" in status["files"]
            assert status["sequence"] > 0
            genuine = status["revision"]
            before = ttl_of(opa)

            proxy.tamper.set()
            set_plain_ttl(policy_source, 4242)
            wait_for(lambda: server.status()["revision"] != genuine, "the server to publish the edit")

            def reported_error() -> bool:
                instance = only_instance(server)
                return bool(instance and instance["bundles"]["labelgate"]["code"])

            wait_for(reported_error, "OPA to report the tampered bundle in its status")
            rejected = only_instance(server)["bundles"]["labelgate"]
            assert "digest mismatch" in json.dumps(rejected)
            assert rejected["active_revision"] == genuine  # the previous revision stays active
            assert ttl_of(opa) == before

            proxy.tamper.clear()  # the genuine signed bundle gets through again
            wait_for(lambda: ttl_of(opa) == 4242, "OPA to activate the genuine bundle")


def test_opa_activates_an_older_signed_revision_replayed_to_it(
    policy_source: Path, tmp_path: Path, rsa_keys: KeyPair
) -> None:
    """OPA has no rollback check: any bundle whose signature verifies is activated, an earlier
    revision included. A fleet of real OPAs relies on TLS and the bundle server's access
    control against replay (docs/THREAT-MODEL.md); the in-process engines refuse it
    (``tests/policy/test_bundle_rollback.py``). Also: OPA loads manifests carrying
    ``metadata.labelgate_sequence``."""
    private, _ = rsa_keys.write(tmp_path, "bundle-signing")
    signing = ("--signing-key", str(private), "--key-id", "labelgate")
    with bundle_server(tmp_path, policy_source, *signing) as server:
        proxy = TamperingProxy(server.url)
        config = opa_config(proxy.url, server.url, public_key=rsa_keys, key_id="labelgate")
        with proxy.running(), opa_with_config(tmp_path, config) as opa:
            wait_for(opa.healthy, "OPA to verify and activate the signed bundle")
            with server.client(TOKEN) as client:
                earlier = client.get("/bundles/labelgate").raise_for_status().content
            assert json.loads(read_tarball(earlier)[".manifest"])["metadata"]["labelgate_sequence"] > 0
            before = ttl_of(opa)
            set_plain_ttl(policy_source, 4242)
            wait_for(lambda: ttl_of(opa) == 4242, "OPA to activate the newer revision")

            proxy.replay = earlier
            wait_for(lambda: ttl_of(opa) == before, "OPA to activate the replayed earlier revision")
