"""``labelgate approvals``: what the caller types never changes which request is sent.

A review found ``approvals deny 'apr-…/approve#'`` recorded an approval: the id was pasted
into the URL path, ``/approve`` became the path and ``#`` cut ``/deny`` off as a fragment.
The id, the token and a missing token are refused before any request (exit 2, a sentence),
against a stub API that records what reaches it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from labelgate.approvals import cli as approvals_cli
from labelgate.approvals.service import APPROVAL_ID, new_id
from tests.support.procs import REPO, labelgate_command

GOOD_ID = "apr-0123456789abcdef"


def item(state: str = "granted", verdict: str = "approve") -> dict[str, Any]:
    return {
        "id": GOOD_ID,
        "state": state,
        "mode": "async",
        "requester": "jwt:dev#sam",
        "requester_groups": ["data-stewards"],
        "method": "/inference.GRPCInferenceService/ModelInfer",
        "model": "customer-profile",
        "phase": "request",
        "labels": ["restricted", "confidential"],
        "fields": [
            {"path": "outputs.ssn", "labels": ["restricted"]},
            {"path": "outputs.name", "labels": ["confidential"]},
        ],
        "query": {
            "inputs": [{"name": "ids", "datatype": "INT64", "shape": [2]}],
            "requested_outputs": ["ssn", "name"],
            "rows": 2,
        },
        "digest": "0" * 64,
        "grant_scope": "query",
        "single_use": False,
        "row_budget": 10,
        "grant_ttl_seconds": 900,
        "policy_reason": "restricted data needs 1 approval(s) from data-owners",
        "justification": "",
        "approver_groups": ["data-owners"],
        "min_approvals": 1,
        "approvals": 1,
        "created_at": "2999-01-01T00:00:00+00:00",
        "expires_at": "2999-01-01T00:10:00+00:00",
        "resolution": f"{state} by jwt:dev#olivia",
        "votes": [
            {"verdict": verdict, "approver": "jwt:dev#olivia", "at": "2999-01-01T00:01:00", "reason": ""}
        ],
        "link": f"http://127.0.0.1:9090/inbox/{GOOD_ID}",
    }


def stub_answer(method: str, path: str) -> dict[str, Any]:
    """A listing, a request pending, or a vote answered with the state its path's last part says."""
    if method == "GET":
        return {"items": [item("pending")]} if "?" in path else item("pending")
    return item("denied", "deny") if path.endswith("/deny") else item("granted", "approve")


class StubApi:
    """The approvals API as far as these commands go: each request's method and raw path is
    kept; ``answer(method, path)`` is the JSON body of the reply (``stub_answer`` by default)."""

    def __init__(self, answer: Callable[[str, str], dict[str, Any]] = stub_answer) -> None:
        self.seen: list[tuple[str, str]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                seen.append((method, self.path))
                raw = json.dumps(answer(method, self.path)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self._answer("POST")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def serving(stub: StubApi) -> Iterator[StubApi]:
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()
    thread.join(5)


@pytest.fixture
def api() -> Iterator[StubApi]:
    yield from serving(StubApi())


def approvals(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real program: a token from the environment arrives as the OS gives it (bytes)."""
    environment = {k: v for k, v in os.environ.items() if k != "LABELGATE_TOKEN"}
    return subprocess.run(
        labelgate_command("approvals", *args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**environment, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    "crafted",
    [
        f"{GOOD_ID}/approve#",  # the review's: deny became approve
        f"{GOOD_ID}/approve?",
        f"{GOOD_ID}/../{GOOD_ID}/approve#",
        f"{GOOD_ID}%2Fapprove#",
        f"{GOOD_ID}\n",
        GOOD_ID.upper(),
        "missing",
    ],
)
def test_deny_with_a_crafted_id_is_refused_before_any_request(api: StubApi, crafted: str) -> None:
    done = approvals("deny", crafted, "--url", api.url, "--token", "t", "--reason", "no way")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "APPROVAL_ID_INVALID" in done.stderr and "is not an approval id" in done.stderr, done.stderr
    assert "granted" not in done.stdout and "vote:" not in done.stdout, done.stdout
    assert api.seen == [], "nothing was sent"


@pytest.mark.parametrize("command", [["show"], ["approve"], ["deny", "--reason", "no"]])
def test_show_and_approve_refuse_a_crafted_id_too(api: StubApi, command: list[str]) -> None:
    done = approvals(command[0], f"{GOOD_ID}/deny#", *command[1:], "--url", api.url, "--token", "t")
    assert done.returncode == 2 and "APPROVAL_ID_INVALID" in done.stderr, done.stderr
    assert api.seen == []


def test_a_well_formed_id_reaches_the_path_its_command_names(api: StubApi) -> None:
    denied = approvals("deny", GOOD_ID, "--url", api.url, "--token", "t", "--reason", "no way")
    assert denied.returncode == 0, denied.stderr
    assert "vote:          deny" in denied.stdout
    assert approvals("show", GOOD_ID, "--url", api.url, "--token", "t").returncode == 0
    assert approvals("list", "--url", api.url, "--token", "t").returncode == 0
    assert api.seen == [
        ("POST", f"/api/v1/approvals/{GOOD_ID}/deny"),
        ("GET", f"/api/v1/approvals/{GOOD_ID}"),
        ("GET", "/api/v1/approvals?state=pending"),
    ]


def test_the_cli_knows_the_ids_the_server_makes() -> None:
    """The CLI keeps its own copy of the pattern (importing the service costs a second)."""
    assert approvals_cli.APPROVAL_ID.pattern == APPROVAL_ID.pattern
    assert approvals_cli.approval_path(new_id("apr"), "deny").endswith("/deny")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("\udcff", "outside ASCII"),  # the review's LABELGATE_TOKEN=$'\xff': a byte, not UTF-8
        ("abc\u00e9", "outside ASCII"),
        ("two words", "a space"),
        ("a\tb", "control character"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_up_front(api: StubApi, token: str, says: str) -> None:
    done = approvals("list", "--url", api.url, env={"LABELGATE_TOKEN": token})
    assert done.returncode == 2, done.stderr
    assert "OPTION_INVALID" in done.stderr and says in done.stderr, done.stderr
    assert "ANSWER_INVALID" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert api.seen == []


def test_no_token_is_an_input_problem_exit_2(api: StubApi) -> None:
    done = approvals("list", "--url", api.url)
    assert done.returncode == 2, done.stderr
    assert "NO_CREDENTIALS" in done.stderr and "--token" in done.stderr
    assert api.seen == []


def test_a_url_path_urllib_cannot_send_is_an_input_problem(api: StubApi) -> None:
    done = approvals("list", "--url", f"{api.url}/a b", "--token", "t")
    assert done.returncode == 2, done.stderr
    assert "OPTION_INVALID" in done.stderr and "HTTP/1.1" not in done.stderr, done.stderr


@pytest.mark.parametrize("suffix", [f"/api/v1/approvals/{GOOD_ID}/approve#", "/?x=", "/#"])
def test_a_url_with_a_query_or_fragment_is_refused(api: StubApi, suffix: str) -> None:
    """Each command's path goes after --url: a ``#`` there would cut it off too."""
    done = approvals("deny", GOOD_ID, "--url", api.url + suffix, "--token", "t", "--reason", "no")
    assert done.returncode == 2 and "no ?query or #fragment" in done.stderr, done.stderr
    assert api.seen == []
