"""Text other people wrote (a caller's justification, model name and identity; an approver's
reason) can neither drive an approver's terminal nor become a link in a Slack notification.

Reasons and justifications lose control characters (C0, C1) and format characters (bidi
overrides, zero-width ones) when they are accepted; the CLI prints every stored string with
what is not printable escaped; Slack gets such text as plain_text, links defanged.
"""

from __future__ import annotations

import re
import time
import unicodedata
from typing import Any

import pytest
from typer.testing import CliRunner

from labelgate.approvals import cli as approvals_cli
from labelgate.approvals.model import ApprovalRequest, Binding, FieldAtStake, Requirement, State, Vote
from labelgate.approvals.notify import slack_payload
from labelgate.approvals.stage import read_options
from labelgate.cli import app
from labelgate.untrusted_text import cleaned, shown
from tests.approvals.conftest import Stack, person, token
from tests.approvals.test_approvals_server import cli
from tests.approvals.test_inbox_security import ask_async, hidden, signed_in

# A co-approver's reason that would rewrite the "labels:" line above it and set the title.
PLANTED = "ok\x1b[2A\r\x1b[2K  labels:        public\x1b[2B\r\x1b]0;title\x07\x9b2J\u202edeneid\u200b!"


def unsafe(text: str) -> list[str]:
    """The characters of ``text`` a terminal (or a bidi-aware reader) would act on."""
    return [char for char in text if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


# -- accepted text ------------------------------------------------------------------------------
def test_cleaned_drops_c0_c1_and_format_characters() -> None:
    assert cleaned(PLANTED) == "ok [2A [2K  labels:        public [2B ]0;title 2Jdeneid!"
    assert cleaned(" ticket\r\n42\t") == "ticket 42"
    assert cleaned("CS-1042\u2028next\u0085line\x9bx") == "CS-1042 next line x"
    assert cleaned("Zoë 🙂 — résumé") == "Zoë 🙂 — résumé", "printable text is kept as it is"


def test_a_justification_from_a_rest_header_loses_c1_and_bidi_characters() -> None:
    # A REST header is decoded as latin-1: C1 controls (U+009B is a one-character CSI) arrive
    # as characters; UTF-8 for U+202E (e2 80 ae) arrives as "\xe2\x80\xae".
    header = "pre-approved\x9b2A\x9b2K by CISO\xe2\x80\xae\x1b[31mnow\x85"
    options = read_options((("x-labelgate-justification", header),))
    assert not unsafe(options.justification), options.justification
    assert options.justification == "pre-approved 2A 2K by CISO\xe2 \xae [31mnow"
    assert read_options((("x-labelgate-justification", "ok\u202ekO\u2066"),)).justification == "okkO"


def test_vote_reasons_are_kept_without_control_or_format_characters(stack: Stack) -> None:
    owner, other = person("owner"), person("owner")
    owner_token, other_token = token(owner, "data-owners"), token(other, "data-owners")

    denied_id = ask_async(stack, token(person("steward"), "data-stewards"))
    denied = stack.api.deny(denied_id, owner_token, PLANTED)
    assert denied.status_code == 200, denied.text
    vote = denied.json()["votes"][0]
    assert vote["reason"] == cleaned(PLANTED) and not unsafe(vote["reason"])
    assert not unsafe(denied.json()["resolution"])
    shown_there = cli(stack, other_token, "show", denied_id)
    assert shown_there.returncode == 0, shown_there.stderr
    assert not unsafe(shown_there.stdout.replace("\n", "")), shown_there.stdout

    approved_id = ask_async(stack, token(person("steward"), "data-stewards"))
    approved = stack.api.approve(approved_id, other_token, "fine\u202e\x9b1;1H")
    assert approved.status_code == 200, approved.text
    assert approved.json()["votes"][0]["reason"] == "fine 1;1H"

    # The web inbox keeps a reason as the API does.
    inbox_id = ask_async(stack, token(person("steward"), "data-stewards"))
    with signed_in(stack, owner_token) as client:
        csrf = hidden(client.get(f"/inbox/{inbox_id}").text, "csrf")
        done = client.post(f"/inbox/{inbox_id}/deny", data={"csrf": csrf, "reason": PLANTED})
        assert done.status_code == 303, done.text
    assert stack.api.show(inbox_id, owner_token)["votes"][0]["reason"] == cleaned(PLANTED)


def test_input_and_output_names_reach_approvers_without_format_characters(stack: Stack) -> None:
    """The caller names inputs and outputs: a right-to-left override in a name would have the
    inbox display another name (this one reads "customer_ids (test fixture, synthetic)")."""
    import grpc

    from labelgate._proto.inference import open_inference_pb2 as pb
    from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
    from labelgate.gateway.status import error_info

    disguised, output = "customer_ids \u202e)citehtnys ,erutxif tset(\u202c", "customer_id\u200b"
    request = pb.ModelInferRequest(model_name="customer-profile")
    ids = request.inputs.add()
    ids.name, ids.datatype = "customer_ids", "INT64"
    ids.shape.append(2)
    ids.contents.int64_contents.extend([1, 2])
    extra = request.inputs.add()
    extra.name, extra.datatype = disguised, "INT64"
    extra.shape.append(1)
    extra.contents.int64_contents.append(7)
    for name in ("ssn", output):  # ssn holds the call
        request.outputs.add().name = name
    steward, owner_token = token(person("steward"), "data-stewards"), token(person("owner"), "data-owners")
    metadata = [("authorization", f"Bearer {steward}"), ("x-labelgate-approval", "async")]
    with grpc.insecure_channel(stack.grpc) as channel, pytest.raises(grpc.RpcError) as pending:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=20)
    info = error_info(pending.value)
    assert info is not None and "approval_id" in info.metadata, pending.value
    approval_id = info.metadata["approval_id"]

    query = stack.api.show(approval_id, owner_token)["query"]
    assert [i["name"] for i in query["inputs"]] == ["customer_ids", cleaned(disguised)]
    assert query["requested_outputs"] == ["ssn", "customer_id"]
    with signed_in(stack, owner_token) as client:
        page = client.get(f"/inbox/{approval_id}").text
    assert not unsafe(page.replace("\n", "").replace("\t", "")), unsafe(page)
    assert f"<code>{cleaned(disguised)}</code>" in page


# -- the CLI ------------------------------------------------------------------------------------
def stored_item() -> dict[str, Any]:
    """An approval as the API answers it, every string of it planted (text stored before it
    was cleaned, or a server's own)."""
    return {
        "id": "apr-0123456789abcdef",
        "state": "denied",
        "mode": "async",
        "requester": "jwt:dev#eve\x1b]0;pwned\x07",
        "requester_groups": ["data-stewards\x9b2J"],
        "method": "/inference.GRPCInferenceService/ModelInfer",
        "model": "customer-profile\x1b[1A\u202e",
        "phase": "request",
        "labels": ["confidential"],
        "fields": [{"path": "outputs.ssn\x1b[8m", "labels": ["confidential"]}],
        "query": {
            "inputs": [{"name": "ids\u202e", "datatype": "INT64", "shape": [1]}],
            "requested_outputs": ["ssn\x1b]8;;https://evil.example/\x07"],
            "rows": 1,
        },
        "grant_scope": "query",
        "single_use": False,
        "row_budget": None,
        "grant_ttl_seconds": 900,
        "policy_reason": "confidential data needs 1 approval(s) from data-owners",
        "justification": "ticket\r\x1b[2Kall clear",
        "approver_groups": ["data-owners"],
        "min_approvals": 1,
        "approvals": 0,
        "created_at": "2999-01-01T00:00:00+00:00",
        "expires_at": "2999-01-01T00:10:00+00:00",
        "resolution": f"denied by jwt:dev#olivia: {PLANTED}",
        "votes": [
            {"verdict": "deny", "approver": "jwt:dev#olivia", "at": "2999-01-01T00:01:00", "reason": PLANTED}
        ],
        "link": "http://127.0.0.1:9090/inbox/apr-0123456789abcdef",
    }


MISSING_ID = "apr-00000000000000ff"  # well formed (the CLI refuses others before asking)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    item = stored_item()

    def call_api(url: str, token: str | None, path: str, body: Any = None) -> dict[str, Any]:
        if path.startswith("/api/v1/approvals?"):
            return {"items": [item]}
        if path.endswith(MISSING_ID):
            raise approvals_cli.ApiError(404, "NOT_FOUND\x1b[2J", "no approval \x1b]0;x\x07here")
        return item

    monkeypatch.setattr(approvals_cli, "call_api", call_api)
    return item


@pytest.mark.parametrize(
    "command",
    [
        ["show", "apr-0123456789abcdef"],
        ["approve", "apr-0123456789abcdef"],
        ["deny", "apr-0123456789abcdef", "--reason", "no"],
        ["list"],
        ["show", MISSING_ID],
    ],
)
def test_the_cli_prints_stored_text_with_controls_escaped(
    answers: dict[str, Any], command: list[str]
) -> None:
    result = CliRunner().invoke(app, ["approvals", *command, "--token", "t"], terminal_width=400)
    printed = result.output
    assert printed.strip(), result
    assert not unsafe(printed.replace("\n", "")), repr(printed)
    assert "\\x1b" in printed, "what was there is shown, escaped"


def test_describe_shows_each_planted_string_escaped(answers: dict[str, Any]) -> None:
    text = approvals_cli.describe(answers)
    # Runs of spaces are one space: the planted "  labels:        public" cannot line up.
    assert f"by jwt:dev#olivia at 2999-01-01T00:01:00: {' '.join(shown(PLANTED).split())}" in text
    assert "\\u202edeneid" in text and "\\x9b2J" in text and "\\r" in text
    assert "justification: ticket\\r\\x1b[2Kall clear" in text
    assert "model customer-profile\\x1b[1A\\u202e" in text
    assert re.search(r"^  labels: +confidential$", text, re.MULTILINE)
    assert "fields:        outputs.ssn\\x1b[8m (confidential)" in text and "ids\\u202e INT64 [1]" in text
    assert "outputs:       ssn\\x1b]8;;https://evil.example/\\x07" in text
    assert len(text.splitlines()) == 17  # no line added or hidden by a planted newline


def test_shown_escapes_only_what_is_not_printable() -> None:
    assert shown("Zoë 🙂 a\\b") == "Zoë 🙂 a\\b"
    assert shown("a\x1b[2Ab\u202ec\x9bd\ud800e\nf") == "a\\x1b[2Ab\\u202ec\\x9bd\\ud800e\\nf"


# -- Slack --------------------------------------------------------------------------------------
def request_with(state: State, justification: str, model: str, resolution: str = "") -> ApprovalRequest:
    now = time.time()
    return ApprovalRequest(
        id="apr-0123456789abcdef",
        state=state,
        mode="async",
        binding=Binding(
            "jwt:dev#steve", "/inference.GRPCInferenceService/ModelInfer", model, ("confidential",)
        ),
        requester_groups=("data-stewards",),
        phase="request",
        fields=(FieldAtStake("outputs.ssn", ("confidential",)),),
        requirement=Requirement(("data-owners",), 1, 900, "confidential data needs 1 approval(s)"),
        justification=justification,
        created_at=now,
        expires_at=now + 60,
        node_id="n",
        call_request_id="r",
        session_id="",
        resolution=resolution,
        votes=(Vote("jwt:dev#olivia", ("data-owners",), "deny", "x", now),) if resolution else (),
    )


def texts(value: Any) -> list[dict[str, Any]]:
    """Every text object (a dict with a type and a text) in a Slack payload."""
    if isinstance(value, dict):
        found = [value] if "type" in value and isinstance(value.get("text"), str) else []
        return found + [t for item in value.values() for t in texts(item)]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    return []


LINK = "https://gw.example/inbox/apr-0123456789abcdef"
# What a Slack client would make a link of: a scheme, a dotted host name.
LINKABLE = re.compile(r"://|[^\W_]\.[^\W\d_]{2}")


@pytest.mark.parametrize(
    ("state", "resolution"),
    [
        (State.PENDING, ""),
        (State.DENIED, "denied by jwt:dev#olivia: see https://evil.example.net/inbox/ok for why"),
    ],
)
def test_caller_text_reaches_slack_as_plain_text_with_no_link(state: State, resolution: str) -> None:
    justification = (
        "pre-approved by CISO, details https://labelgate-inbox.example.net/inbox/apr-approve-now "
        "or www.approve.example.com, <https://evil.example|Approve> *now* <!here>"
    )
    model = "customer-profile <http://evil.example.com|Approve>"
    payload = slack_payload(request_with(state, justification, model, resolution), LINK)

    objects = texts(payload["blocks"])
    assert objects and all(t["type"] in ("plain_text", "button") for t in objects), objects
    written = [t["text"] for t in objects if t["type"] == "plain_text"]
    assert not [t for t in written if LINKABLE.search(t)], written
    said = next(t for t in written if "Justification" in t)
    assert said.startswith("Justification, in the requester's own words: pre-approved by CISO")
    assert "https[:]//labelgate-inbox[.]example[.]net/inbox/apr-approve-now" in said, said
    buttons = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["url"] for b in buttons] == [LINK], "the inbox button is the one link"

    # The fallback text is mrkdwn: nothing in it makes a link but the inbox's own URL.
    fallback = payload["text"]
    assert fallback.endswith(f": {LINK}")
    head = fallback.removesuffix(f": {LINK}")
    assert "<" not in head and "://" not in head and "example.com" not in head, head


def test_a_defanged_reason_still_fits_slacks_limits() -> None:
    reason = "denied by jwt:dev#olivia: " + "a.bc" * 250  # 1000 characters, 1750 once defanged
    payload = slack_payload(request_with(State.DENIED, "x.yz" * 125, "m.od" * 200, reason * 3), LINK)
    for text in texts(payload["blocks"]):
        assert len(text["text"]) <= 3000, text
    fields = [f for b in payload["blocks"] for f in b.get("fields", [])]
    assert fields and all(len(f["text"]) <= 2000 for f in fields)
