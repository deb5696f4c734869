"""``labelgate infer``: a URL's password never reaches the terminal, and a token, approval id
or justification no header can carry is refused up front (exit 2, a sentence), not an
``internal error`` or an obscure status from the transport after connecting."""

from __future__ import annotations

import os
import subprocess

import pytest

from labelgate.client import GrpcTransport, RestTransport, Tls, _approval_api
from tests.support.procs import REPO, labelgate_command

SECRET = "S3cretPW"


def infer(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "LABELGATE_TOKEN"}
    return subprocess.run(
        labelgate_command("infer", *args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=environment,
        check=False,
    )


def test_an_unreachable_rest_url_is_named_without_its_password() -> None:
    done = infer("--rest", f"http://u:{SECRET}@127.0.0.1:1", "--token", "X")
    assert done.returncode == 1, done.stderr
    assert "SERVER_UNREACHABLE" in done.stderr and "http://***@127.0.0.1:1" in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_where_a_transport_goes_is_shown_without_a_password() -> None:
    """``where()`` names the server in messages and in the result table's title."""
    rest = RestTransport(f"https://u:{SECRET}@127.0.0.1:1/", Tls(), None, 1.0)
    assert rest.where() == "https://***@127.0.0.1:1"
    grpc = GrpcTransport(f"u:{SECRET}@127.0.0.1:1", Tls(), None, 1.0)
    try:
        assert grpc.where() == "***@127.0.0.1:1"
    finally:
        grpc.close()


@pytest.mark.parametrize("transport", [["--rest", "http://127.0.0.1:1"], ["--target", "127.0.0.1:1"]])
@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("abc\udcff", "outside ASCII"),  # the review's --token $'abc\xff': a byte, not UTF-8
        ("abc\u00e9", "outside ASCII"),
        ("two words", "a space"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_up_front(transport: list[str], token: str, says: str) -> None:
    done = infer(*transport, "--token", token)
    assert done.returncode == 2, done.stderr
    assert "OPTION_INVALID" in done.stderr and says in done.stderr, done.stderr
    assert "internal error" not in done.stderr and "Invalid metadata" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--approval-id", "apr-0123456789abcdef\n", "APPROVAL_ID_INVALID"),
        ("--approval-id", "apr-1", "APPROVAL_ID_INVALID"),
        ("--justification", "chargeback \U0001f642", "OPTION_INVALID"),
        ("--justification", "line\nbreak", "OPTION_INVALID"),
    ],
)
def test_header_options_no_header_can_carry_are_refused_up_front(
    option: str, value: str, reason: str
) -> None:
    done = infer("--rest", "http://127.0.0.1:1", "--token", "t", option, value)
    assert done.returncode == 2, done.stderr
    assert reason in done.stderr and "internal error" not in done.stderr, done.stderr


def test_the_approval_poll_url_takes_only_an_approval_id() -> None:
    """The id comes from the gateway's answer and goes into a URL path."""
    good = "apr-0123456789abcdef"
    assert _approval_api(f"http://h:1/inbox/{good}", good) == f"http://h:1/api/v1/approvals/{good}"
    crafted = f"{good}/approve#"
    assert _approval_api(f"http://h:1/inbox/{crafted}", crafted) is None


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/#", "http://127.0.0.1:1/?x=1", "http://127.0.0.1:1?"])
def test_a_rest_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    """The model's path goes after --rest: a ``#`` would cut it off."""
    done = infer("--rest", url, "--token", "t")
    assert done.returncode == 2 and "REST_URL_INVALID" in done.stderr, done.stderr
