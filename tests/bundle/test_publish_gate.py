"""The publish gate (issue 18): impact of every candidate revision, and holds released by approval.

Real processes only: a bundle server with ``--publish-gate`` reading the decision logs that
a real OPA (``opa run --server`` following it) posts to it; ``labelgate approvals-server``
on a real PostgreSQL that the bundle server shares; approvers with development-key JWTs.

- an edit that decides nothing differently is published, with an empty impact;
- an edit that unmasks ``confidential`` for ``analysts`` is held: the fleet page shows it with
  the right counts, OPA keeps the served revision, the author's own approval is refused, and
  a second person's approval publishes it, after which OPA serves it.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labelgate.auth.devkeys import mint_dev_token
from labelgate.bundle.access import Credentials
from labelgate.bundle.gate import HoldRule, hold_reasons
from labelgate.errors import PermissionDenied
from labelgate.policy.contract import build_input
from tests.bundle.helpers import (
    READER_TOKEN,
    TABLES,
    TOKEN,
    BundleServer,
    Opa,
    bundle_server,
    opa_config,
    opa_with_config,
    wait_for,
    write_atomically,
)
from tests.support.postgres import running_postgres
from tests.support.procs import REPO, free_port, labelgate_command, running

PUBLISHER_TOKENS = {"alice": "alice-publisher-token-0123456789", "bob": "bob-publisher-token-0123456789"}
APPROVERS = "policy-approvers"
MODEL = "customer-profile"


def policy_input(groups: list[str], fields: list[tuple[str, str]], request_id: str) -> dict[str, Any]:
    """A response-phase labelgate.v1 input as the gateway sends OPA (names and labels, no values)."""
    return build_input(
        phase="response",
        subject={"id": f"jwt:idp#{'-'.join(groups)}", "groups": groups, "auth": "jwt", "attributes": {}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": MODEL,
            "requested_outputs": [],
            "request_id": request_id,
            "session_id": "s",
            "peer": "ipv4:10.0.0.1:5",
            "digest": "f" * 64,
            "opaque": False,
        },
        fields=[{"path": path, "labels": [label], "sources": {label: ["catalog"]}} for path, label in fields],
        approval=None,
        time_ns=1,
    )


# What OPA is asked (and logs): one analyst call shape three times, another once, a steward once.
ANALYST_SSN = [("outputs.ssn", "confidential"), ("outputs.customer_id", "internal")]
ANALYST_EMAIL = [("outputs.email", "confidential")]
STEWARD = [("outputs.ssn", "confidential")]
WORKLOAD = [
    (["analysts"], ANALYST_SSN, 3),
    (["analysts"], ANALYST_EMAIL, 1),
    (["data-stewards"], STEWARD, 1),
]


@dataclass
class Stack:
    server: BundleServer
    opa: Opa
    approvals: str
    source: Path

    def reader(self) -> httpx.Client:
        return self.server.client(READER_TOKEN)

    def revisions(self) -> list[dict[str, Any]]:
        with self.reader() as client:
            return client.get("/revisions").raise_for_status().json()["revisions"]

    def serving(self) -> str | None:
        return self.server.status()["revision"]

    def judged(self, count: int) -> dict[str, Any]:
        """The newest judged revision once ``count`` revisions are recorded."""
        wait_for(lambda: len(self.revisions()) >= count, f"{count} judged revisions", timeout=120)
        return self.revisions()[0]

    def opa_revision(self) -> str | None:
        """The revision OPA has activated (a query of data.system, not of the decision)."""
        answer = httpx.get(f"{self.opa.url}/v1/data/system/bundles/labelgate/manifest/revision", timeout=5)
        return answer.json().get("result") if answer.status_code == 200 else None


def approvals_config(folder: Path, dsn: str) -> Path:
    path = folder / "approvals.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "auth": {"jwt": {"trust_dev_key": True}},
                "approvals": {"store": "postgres", "postgres_dsn": dsn, "node_id": "gate-approvals"},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.bundle.helpers import copy_source

    folder = tmp_path_factory.mktemp("publish-gate")
    source = copy_source(folder / "source")
    tokens = folder / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {"instances": {"opa": TOKEN}, "readers": {"reader": READER_TOKEN}, "publishers": PUBLISHER_TOKENS}
        )
    )
    with running_postgres() as postgres:
        config = approvals_config(folder, postgres.create_database())
        gate = folder / "gate.yaml"
        gate.write_text(
            yaml.safe_dump(
                {
                    "inputs": "decision-logs",
                    "window": "24h",
                    "engine": "embedded",
                    "hold": {"unmasked_labels": ["confidential", "restricted"]},
                    "approvals": {"config": str(config), "approver_groups": [APPROVERS]},
                }
            )
        )
        port = free_port()
        approvals_url = f"http://127.0.0.1:{port}"
        with (
            running(
                labelgate_command(
                    "approvals-server", "--config", str(config), "--listen", f"127.0.0.1:{port}"
                ),
                folder / "approvals-server.log",
                port=port,
            ),
            bundle_server(
                folder,
                source,
                "--publish-gate",
                str(gate),
                env={"LABELGATE_BUNDLE_TOKENS_FILE": str(tokens)},
            ) as server,
        ):
            wait_for(lambda: server.status()["revision"] is not None, "the first revision")
            config_for_opa = opa_config(f"{server.url}/", f"{server.url}/")
            with opa_with_config(folder, config_for_opa) as opa:
                stack = Stack(server, opa, approvals_url, source)
                wait_for(lambda: stack.opa_revision() == stack.serving(), "OPA on the first revision")
                for groups, fields, times in WORKLOAD:
                    for _ in range(times):
                        opa.decide(policy_input(groups, fields, uuid.uuid4().hex))
                wait_for(lambda: logged_calls(stack) == 5, "OPA's decision logs at the bundle server")
                yield stack


def logged_calls(stack: Stack) -> int:
    with stack.reader() as client:
        inputs = client.get("/decisions/inputs").raise_for_status().json()["inputs"]
    return sum(item["seen"] for item in inputs)


def edit_tables(source: Path, change: Any) -> None:
    path = source / TABLES
    tables = json.loads(path.read_text())
    change(tables)
    write_atomically(path, json.dumps(tables, indent=2))


def unmask_confidential_for_analysts(tables: dict[str, Any]) -> None:
    tables["labels"]["confidential"]["groups"]["analysts"] = {"see": True}


def fleet_page_changes(stack: Stack, revision: str) -> list[dict[str, str]]:
    """The change rows the fleet page shows under ``revision``."""
    with stack.reader() as client:
        page = client.get("/fleet/page").raise_for_status().text
    section = re.search(
        rf'<section class="card revision" data-revision="{revision}"(.*?)</section>', page, re.S
    )
    assert section, "the fleet page does not show the revision"
    rows = []
    for row in re.finditer(
        r'<tr class="change" data-kind="([^"]*)" data-group="([^"]*)" data-field="([^"]*)">(.*?)</tr>',
        section.group(1),
        re.S,
    ):
        cells = dict(re.findall(r'data-testid="(inputs|calls)">(\d+)<', row.group(4)))
        state = re.search(r'data-testid="revision-state">(\w+)<', section.group(1))
        rows.append(
            {
                "kind": html.unescape(row.group(1)),
                "group": row.group(2),
                "field": row.group(3),
                "inputs": cells["inputs"],
                "calls": cells["calls"],
                "state": state.group(1) if state else "",
            }
        )
    return rows


def approve(stack: Stack, approval_id: str, person: str) -> httpx.Response:
    bearer = mint_dev_token(person, [APPROVERS], 900)
    return httpx.post(
        f"{stack.approvals}/api/v1/approvals/{approval_id}/approve",
        json={"reason": "impact reviewed"},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    )


def ask_release(stack: Stack, revision: str, token: str) -> httpx.Response:
    with stack.server.client(token) as client:
        return client.post(f"/revisions/{revision}/approval", json={})


def test_an_edit_that_decides_nothing_differently_is_published_with_an_empty_impact(stack: Stack) -> None:
    count = len(stack.revisions())
    module = stack.source / "labelgate" / "decision" / "gate_probe.rego"
    write_atomically(module, "package labelgate.gate_probe\n\n# no rule: decides nothing\nnote := 1\n")
    judged = stack.judged(count + 1)
    assert judged["state"] == "published", judged
    impact = judged["impact"]
    assert impact["changes"] == [] and impact["errors"] == []
    assert (impact["distinct"], impact["inputs"], impact["changed"]) == (3, 5, 0)
    wait_for(lambda: stack.serving() == judged["revision"], "the unchanged edit served")
    assert stack.server.status()["held"] is None


def test_unmasking_confidential_for_analysts_is_held_until_a_second_person_approves(stack: Stack) -> None:
    served = stack.serving()
    count = len(stack.revisions())
    edit_tables(stack.source, unmask_confidential_for_analysts)
    judged = stack.judged(count + 1)
    revision = judged["revision"]
    assert judged["state"] == "held", judged
    assert any("releases confidential" in reason for reason in judged["hold_reasons"])
    changes = {
        (c["kind"], c["group"], c["model"], c["field"]): (c["inputs"], c["calls"], c["labels"])
        for c in judged["impact"]["changes"]
    }
    assert changes == {
        ("mask removed", "analysts", MODEL, "outputs.ssn"): (1, 3, ["confidential"]),
        ("mask removed", "analysts", MODEL, "outputs.email"): (1, 1, ["confidential"]),
    }
    assert stack.serving() == served  # the previous revision is still what OPA gets
    assert stack.server.status()["held"]["revision"] == revision

    # The fleet page shows the held revision beside the served one, with the counts.
    rows = fleet_page_changes(stack, revision)
    assert sorted((r["kind"], r["group"], r["field"], r["inputs"], r["calls"], r["state"]) for r in rows) == [
        ("mask removed", "analysts", "outputs.email", "1", "1", "held"),
        ("mask removed", "analysts", "outputs.ssn", "1", "3", "held"),
    ]

    # Only a publisher may ask; the author asks once.
    assert ask_release(stack, revision, READER_TOKEN).status_code == 403
    assert ask_release(stack, "0" * 64, PUBLISHER_TOKENS["alice"]).status_code == 404
    asked = ask_release(stack, revision, PUBLISHER_TOKENS["alice"])
    assert asked.status_code == 202, asked.text
    approval_id = asked.json()["approval_id"]
    assert ask_release(stack, revision, PUBLISHER_TOKENS["alice"]).status_code == 409

    # The author's own approval is refused by the approvals service; nothing is published.
    own = approve(stack, approval_id, "alice")
    assert own.status_code == 403 and own.json()["reason"] == "SELF_APPROVAL", own.text
    assert stack.serving() == served and stack.revisions()[0]["state"] == "held"

    # A second person's approval releases it, and OPA then serves it.
    granted = approve(stack, approval_id, "bob")
    assert granted.status_code == 200 and granted.json()["state"] == "granted", granted.text
    wait_for(lambda: stack.serving() == revision, "the approved revision served", timeout=60)
    wait_for(lambda: stack.opa_revision() == revision, "OPA on the approved revision", timeout=60)
    decided = stack.opa.decide(policy_input(["analysts"], ANALYST_SSN, uuid.uuid4().hex))
    assert "outputs.ssn" not in {mask["path"] for mask in decided["result"].get("masks", [])}
    record = stack.revisions()[0]
    assert (record["revision"], record["state"], record["author"]) == (revision, "published", "alice")
    assert "bob" in record["approval"]["resolution"]


def test_a_gate_file_with_an_error_stops_the_server_with_one_line(tmp_path: Path) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text(yaml.safe_dump({"inputs": "x.db", "window": "soon", "approvals": {"config": "a.yaml"}}))
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "labelgate.bundle.cli", "bundle-server", "--source", str(tmp_path),
         "--insecure-no-auth", "--publish-gate", str(gate), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "PUBLISH_GATE_INVALID" in result.stderr and "approver_groups" in result.stderr
    assert "Traceback" not in result.stderr


def change(kind: str, labels: list[str], inputs: int = 1) -> dict[str, Any]:
    return {"kind": kind, "group": "analysts", "model": MODEL, "field": "outputs.ssn", "labels": labels,
            "inputs": inputs}  # fmt: skip


def test_the_hold_rule_counts_releases_of_watched_labels_changes_and_failures() -> None:
    rule = HoldRule(unmasked_labels=["confidential"], max_changed_inputs=2)
    assert hold_reasons({"changed": 2, "changes": [change("mask removed", ["internal"])]}, rule) == []
    assert hold_reasons({"changed": 1, "changes": [change("mask added", ["confidential"])]}, rule) == []
    for kind in ("mask removed", "deny -> allow", "no longer held"):
        reasons = hold_reasons({"changed": 1, "changes": [change(kind, ["confidential", "public"])]}, rule)
        assert len(reasons) == 1 and reasons[0].startswith("releases confidential data"), kind
    assert hold_reasons({"changed": 3, "changes": []}, rule) == ["3 distinct inputs change, the limit is 2"]
    failed = hold_reasons({"changed": 0, "changes": [], "errors": [{"hash": "x"}]}, rule)
    assert failed == ["1 decision(s) failed closed during the replay"]


def test_publishers_are_a_role_of_their_own() -> None:
    credentials = Credentials.from_mapping({"publishers": {"alice": PUBLISHER_TOKENS["alice"]}})
    assert credentials.check(f"Bearer {PUBLISHER_TOKENS['alice']}", "publisher", "ask").name == "alice"
    with pytest.raises(PermissionDenied):
        credentials.check(f"Bearer {PUBLISHER_TOKENS['alice']}", "reader", "read")


def test_an_unreachable_approval_store_stops_the_server_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = approvals_config(tmp_path, f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        yaml.safe_dump(
            {"inputs": "decision-logs", "approvals": {"config": str(config), "approver_groups": ["a"]}}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "labelgate.bundle.cli", "bundle-server", "--source", str(tmp_path),
         "--insecure-no-auth", "--publish-gate", str(gate), "--listen", f"127.0.0.1:{free_port()}",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode != 0
    assert "(APPROVALS_STORE_UNREACHABLE)" in result.stderr and "Traceback" not in result.stderr


def test_a_replay_of_too_few_inputs_holds_the_candidate() -> None:
    """No stored input (an empty window, a new fleet) is no evidence: the candidate waits for
    a person, unless the rule says that fewer inputs are enough."""
    empty = {"distinct": 0, "inputs": 0, "changed": 0, "changes": [], "errors": []}
    (reason,) = hold_reasons(empty, HoldRule())
    assert reason.startswith("only 0 distinct decision input(s) were replayed"), reason
    assert hold_reasons(empty, HoldRule(min_inputs=0)) == []
    assert hold_reasons({**empty, "distinct": 3}, HoldRule(min_inputs=3)) == []
    assert len(hold_reasons({**empty, "distinct": 2}, HoldRule(min_inputs=3))) == 1
    # The first revision has nothing to be compared with: it is not held for that.
    assert hold_reasons({"baseline": True, "changes": [], "errors": []}, HoldRule()) == []


@pytest.mark.parametrize("window", ["nan", "NaNh", "inf", "1e400", "-1h"])
def test_a_window_that_is_not_a_finite_positive_duration_is_refused(tmp_path: Path, window: str) -> None:
    from labelgate.bundle.cli import load_publish_gate
    from labelgate.errors import ConfigError

    gate = tmp_path / "gate.yaml"
    gate.write_text(
        yaml.safe_dump(
            {
                "inputs": "x.jsonl",
                "window": window,
                "approvals": {"config": "a.yaml", "approver_groups": ["a"]},
            }
        )
    )
    with pytest.raises(ConfigError, match="window") as raised:
        load_publish_gate(gate, tmp_path)
    assert raised.value.reason == "PUBLISH_GATE_INVALID"
