"""The publish gate holds a revision whose tables show a watched label more readily, whatever
the replay window holds (review: a candidate giving ``security_two_person`` one approval and
break-glass as approvers, dropping break-glass's approval for ``restricted`` and giving a new
``contractors`` group ``see`` on ``confidential`` replayed as ``changed 0`` and was published:
how an approval weakened was worked out only from replayed calls held both times).

The tables are compared as data (``labelgate.policy.table_impact``); a stricter change publishes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelgate.bundle import gate
from labelgate.bundle.gate import HoldRule, hold_reasons
from labelgate.policy import cli
from labelgate.policy.contract import Decision, build_input
from labelgate.policy.table_impact import ANY_OTHER_GROUP, describe_treatment
from tests.bundle.helpers import (
    REGO,
    TABLES,
    BundleServer,
    bundle_server,
    copy_source,
    wait_for,
    write_atomically,
)
from tests.bundle.test_gate_catalog_labels import STORED  # one analysts' response, no held call

Edit = Callable[[dict[str, Any]], None]


def folders(tmp_path: Path, *edits: Edit) -> tuple[Path, Path]:
    current, candidate = tmp_path / "current", tmp_path / "candidate"
    shutil.copytree(REGO, current)
    shutil.copytree(REGO, candidate)
    tables = json.loads((candidate / TABLES).read_text())
    for edit in edits:
        edit(tables)
    (candidate / TABLES).write_text(json.dumps(tables))
    return current, candidate


def verdict(tmp_path: Path, *edits: Edit, rule: HoldRule | None = None) -> list[str]:
    report = {"distinct": 1, "inputs": 1, "changed": 0, "changes": [], "errors": []}
    report["tables"] = cli.table_changes(*folders(tmp_path, *edits))
    return hold_reasons(report, rule or HoldRule())


def approval(key: str, **changes: Any) -> Edit:
    return lambda tables: tables["approvals"][key].update(changes)


def offer(label: str, group: str, value: dict[str, Any]) -> Edit:
    return lambda tables: tables["labels"][label]["groups"].__setitem__(group, value)


def default_offer(label: str, value: dict[str, Any]) -> Edit:
    return lambda tables: tables["labels"][label].__setitem__("default", value)


def mask(strategy: str, **params: Any) -> dict[str, Any]:
    return {"mask": {"strategy": strategy, "params": params}}


def both(*edits: Edit) -> Edit:
    def edit(tables: dict[str, Any]) -> None:
        for each in edits:
            each(tables)

    return edit


REVIEWED = (
    approval("security_two_person", min_approvals=1, approver_groups=["security", "break-glass"]),
    offer("restricted", "break-glass", {"see": True}),
    offer("confidential", "contractors", {"see": True}),
)


def test_the_reviewed_weakening_holds_although_the_replay_shows_no_change(tmp_path: Path) -> None:
    current, candidate = folders(tmp_path, *REVIEWED)
    report = cli.replay_report(current, candidate, STORED, engine="embedded").to_json()
    assert (report["distinct"], report["changed"], report["catalog"]) == (1, 0, [])
    assert hold_reasons(report, HoldRule()) == [
        "tables drop an approval: restricted for break-glass: in clear after approval "
        "security_two_person (2 from security) -> in clear",
        "tables show a label: confidential for contractors: masked (redact) -> in clear",
        "tables weaken an approval: approval security_two_person (restricted): fewer approvals: 2 -> 1; "
        "other approver groups: break-glass",
    ]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            approval("security_two_person", min_approvals=1),
            "tables weaken an approval: approval security_two_person (restricted): fewer approvals: 2 -> 1",
        ),
        (
            approval("data_owner_grant", approver_groups=["data-owners", "analysts"]),
            "tables weaken an approval: approval data_owner_grant (confidential): "
            "other approver groups: analysts",
        ),
        (
            approval("data_owner_grant", grant_scope="model", grant_ttl_seconds=3600),
            "tables weaken an approval: approval data_owner_grant (confidential): "
            "longer grants: 900 -> 3600 s; wider grants: query -> model",
        ),
        (
            # Another, easier approval for the same group and label.
            offer("restricted", "break-glass", {"see": True, "approval": "data_owner_grant"}),
            "tables weaken an approval: restricted for break-glass: in clear after approval "
            "security_two_person (2 from security) -> in clear after approval data_owner_grant "
            "(1 from data-owners) (fewer approvals: 2 -> 1; other approver groups: data-owners)",
        ),
        (
            offer("confidential", "data-stewards", {"see": True}),
            "tables drop an approval: confidential for data-stewards: in clear after approval "
            "data_owner_grant (1 from data-owners) -> in clear",
        ),
        (
            offer("restricted", "auditors", {"see": True, "approval": "security_two_person"}),
            "tables show a label: restricted for auditors: masked (null) -> in clear after approval "
            "security_two_person (2 from security)",
        ),
        (
            default_offer("confidential", {"see": True}),
            f"tables show a label: confidential for {ANY_OTHER_GROUP}: masked (redact) -> in clear",
        ),
        (
            default_offer("confidential", mask("partial", keep_last=4)),
            f"tables weaken a mask: confidential for {ANY_OTHER_GROUP}: masked (redact) -> "
            "masked (partial(keep_last=4))",
        ),
        (
            offer("confidential", "analysts", mask("partial", keep_last=8)),
            "tables weaken a mask: confidential for analysts: masked (partial(keep_last=4)) -> "
            "masked (partial(keep_last=8))",
        ),
        (
            # A watched label the tables no longer name is shown as unknown_label says.
            lambda tables: (
                tables["labels"].pop("confidential"),
                tables["unknown_label"].update(default={"see": True}),
            ),
            f"tables show a label: confidential for {ANY_OTHER_GROUP}: masked (redact) -> in clear",
        ),
        (
            # The most permissive offer wins: a group offer (partial) beats the default (redact).
            offer("confidential", "contractors", mask("partial", keep_last=4)),
            "tables weaken a mask: confidential for contractors: masked (redact) -> "
            "masked (partial(keep_last=4))",
        ),
    ],
)
def test_tables_showing_a_watched_label_more_readily_hold(tmp_path: Path, edit: Edit, reason: str) -> None:
    # One reason per kind lists every such change: the one the edit is about is among them.
    kind, change = reason.split(": ", 1)
    reasons = verdict(tmp_path, edit)
    assert any(found.startswith(f"{kind}: ") and change in found for found in reasons), reasons


@pytest.mark.parametrize(
    "edit",
    [
        approval("security_two_person", min_approvals=3),
        approval("security_two_person", approver_groups=[]),
        approval("data_owner_grant", grant_ttl_seconds=60, single_use=True, row_budget=10),
        offer("confidential", "analysts", mask("redact")),
        offer("confidential", "analysts", mask("hash")),
        offer("confidential", "contractors", mask("null")),  # the default (redact) still wins
        both(  # another approval, of more people from the same group
            lambda tables: tables["approvals"].update(
                two_owners={"approver_groups": ["data-owners"], "min_approvals": 2, "grant_ttl_seconds": 900}
            ),
            offer("confidential", "data-stewards", {"see": True, "approval": "two_owners"}),
        ),
        offer("restricted", "break-glass", mask("null")),
        lambda tables: tables["labels"].pop("confidential"),  # unknown_label: nulled
        lambda tables: tables["offer_scores"].update(see=0, see_after_approval=0),  # masks win
        offer("internal", "contractors", {"see": True}),  # internal is not watched by default
        lambda tables: tables["approvals"].update(unused={"approver_groups": ["x"], "min_approvals": 0}),
    ],
)
def test_a_stricter_or_unwatched_table_change_is_published(tmp_path: Path, edit: Edit) -> None:
    assert verdict(tmp_path, edit) == []


def test_the_rule_watches_the_labels_it_names(tmp_path: Path) -> None:
    edit = offer("internal", "contractors", {"see": True})
    assert verdict(tmp_path, edit, rule=HoldRule(unmasked_labels=["internal"])) == [
        "tables show a label: internal for contractors: masked (redact) -> in clear"
    ]


def test_unchanged_tables_are_no_change(tmp_path: Path) -> None:
    current, candidate = folders(tmp_path)
    (candidate / TABLES).write_text(json.dumps(json.loads((current / TABLES).read_text()), indent=4))
    assert cli.table_changes(current, candidate) == []


def test_a_table_change_that_names_no_labels_holds() -> None:
    report = {"distinct": 1, "changes": [], "errors": [], "tables": [{"kind": gate.TABLE_SHOWN}]}
    assert len(hold_reasons(report, HoldRule())) == 1


# -- the treatments the comparison works out are the ones the policy decides ----------------


def response(label: str, group: str) -> dict[str, Any]:
    """A response with one field labelled ``label``, to a caller in ``group``."""
    return build_input(
        phase="response",
        subject={"id": "jwt:idp#x", "groups": [group], "auth": "jwt", "attributes": {}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": "m",
            "requested_outputs": [],
            "request_id": "r",
            "session_id": "s",
            "peer": "ipv4:10.0.0.1",
            "digest": "f" * 64,
            "opaque": False,
        },
        fields=[{"path": "outputs.x", "labels": [label], "sources": {label: ["catalog"]}}],
        approval=None,
        time_ns=1,
    )


def as_treatment(decision: Decision) -> str:
    if decision.require_approval is not None:
        requirement = decision.require_approval
        return f"held: {requirement.min_approvals} from {', '.join(requirement.approver_groups)}"
    assert decision.allow, decision
    if not decision.masks:
        return "in clear"
    (applied,) = decision.masks
    return f"masked ({applied.strategy})"


def as_decided(treatment: str) -> str:
    """``in clear after approval KEY (2 from security)`` -> ``held: 2 from security``;
    ``masked (partial(keep_last=4))`` -> ``masked (partial)``."""
    if treatment.startswith("in clear after approval"):
        return "held: " + treatment.split("(", 1)[1].rstrip(")")
    if treatment.startswith("masked ("):
        strategy = treatment.removeprefix("masked (").split("(")[0].rstrip(")")
        return f"masked ({strategy})"
    return treatment


@pytest.mark.parametrize("edits", [(), REVIEWED], ids=["served", "reviewed"])
def test_each_treatment_is_the_policys_decision(tmp_path: Path, edits: tuple[Edit, ...]) -> None:
    _, folder = folders(tmp_path, *edits)
    tables = json.loads((folder / TABLES).read_text())
    groups = {group for table in tables["labels"].values() for group in table["groups"]} | {"nobody"}
    slots = [(label, group) for label in tables["labels"] for group in sorted(groups)]
    stored = [(f"{label} {group}", 1, response(label, group)) for label, group in slots]
    replays = asyncio.run(cli._replay(stored, engine="embedded", folders=(folder, folder), urls=[]))
    for (label, group), replay in zip(slots, replays, strict=True):
        named = group if group in tables["labels"][label]["groups"] else None
        expected = as_decided(describe_treatment(tables, label, named))
        assert as_treatment(replay.current) == expected, (label, group)


# -- who may call a method, view recorded calls, or ask for a label by name -----------------
# (review: these tables were not compared, so a candidate giving a new group the model admin
# methods was published unless the replay window held such a call.)

LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"
OPAQUE = "/uploads.Uploads/Exchange"


def put(*keys: str, value: Any) -> Edit:
    def edit(tables: dict[str, Any]) -> None:
        node = tables
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def no_deny(label: str) -> Edit:
    return lambda tables: tables["labels"][label].pop("deny_when_requested")


WIDENED = (
    put("model_admin_methods", LOAD, value=["model-admins", "analysts"]),
    put("opaque_methods", OPAQUE, value=["*"]),
    put("replay", "viewer_groups", value=["auditors", "analysts"]),
    no_deny("restricted"),
)
# What the gate says of WIDENED: one reason per kind, each naming the table, key and group.
WIDENED_REASONS = [
    "tables let a group view recorded calls: replay.viewer_groups for analysts: "
    "may not view recorded calls -> may view recorded calls",
    f'tables open a method: model_admin_methods["{LOAD}"] for analysts: may not call it -> may call it; '
    f'opaque_methods["{OPAQUE}"] for * (any authenticated caller): may not call it -> may call it',
    "tables stop denying a requested label: restricted for (any other group): denied "
    "(labels.restricted.deny_when_requested: true) -> masked (null) "
    "(labels.restricted.deny_when_requested: absent)",
]


def test_widened_access_holds_whatever_labels_the_rule_watches(tmp_path: Path) -> None:
    assert verdict(tmp_path, *WIDENED) == WIDENED_REASONS
    # A method or a replay concerns no one label; a requested label is held as its rule says.
    unwatched = HoldRule(unmasked_labels=[])
    assert verdict(tmp_path / "unwatched", *WIDENED, rule=unwatched) == WIDENED_REASONS[:2]


@pytest.mark.parametrize(
    "edit",
    [
        put("opaque_methods", OPAQUE, value="analysts"),
        put("model_admin_methods", value=[LOAD]),
        put("replay", "viewer_groups", value={"all": "analysts"}),
    ],
)
def test_a_grant_the_comparison_cannot_read_holds(tmp_path: Path, edit: Edit) -> None:
    (reason,) = verdict(tmp_path, edit)
    assert reason.startswith("tables change a grant the gate cannot read: "), reason


def test_a_watched_label_no_longer_denied_when_requested_holds(tmp_path: Path) -> None:
    # Served: internal denied when requested by name; the candidate: the project's tables,
    # which do not deny it. internal is not watched by default.
    plain, denying = folders(tmp_path, put("labels", "internal", "deny_when_requested", value=True))
    report = {"distinct": 1, "changes": [], "errors": [], "tables": cli.table_changes(denying, plain)}
    assert hold_reasons(report, HoldRule()) == []
    assert hold_reasons(report, HoldRule(unmasked_labels=["internal"])) == [
        "tables stop denying a requested label: internal for (any other group): denied "
        "(labels.internal.deny_when_requested: true) -> masked (redact) "
        "(labels.internal.deny_when_requested: absent)"
    ]


@pytest.mark.parametrize(
    "edit",
    [
        put("model_admin_methods", LOAD, value=[]),
        lambda tables: tables.pop("model_admin_methods"),
        lambda tables: tables.pop("replay"),
        put("replay", "viewer_groups", value=[]),
        put("labels", "confidential", "deny_when_requested", value=True),
    ],
)
def test_narrowed_access_is_published(tmp_path: Path, edit: Edit) -> None:
    assert verdict(tmp_path, edit) == []


# -- through the bundle server ---------------------------------------------------------------


def gate_settings(tmp_path: Path) -> Path:
    """A ``--publish-gate`` file: the replay window holds one analysts' response (``STORED``)."""
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(stored) + "\n" for _, _, stored in STORED))
    approvals = tmp_path / "approvals.yaml"
    approvals.write_text(
        yaml.safe_dump(
            {
                "auth": {"jwt": {"trust_dev_key": True}},
                "approvals": {"store": "sqlite", "sqlite_file": str(tmp_path / "approvals.db")},
            }
        )
    )
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text(
        yaml.safe_dump(
            {
                "inputs": str(inputs),
                "engine": "embedded",
                "approvals": {"config": str(approvals), "approver_groups": ["policy-approvers"]},
            }
        )
    )
    return gate_file


def revisions(server: BundleServer) -> list[dict[str, Any]]:
    with server.client() as client:
        found: list[dict[str, Any]] = client.get("/revisions").raise_for_status().json()["revisions"]
        return found


def test_the_bundle_server_holds_widened_access_the_replay_window_never_saw(tmp_path: Path) -> None:
    """A real ``labelgate bundle-server --publish-gate``: its window holds one analysts'
    response (no method call, no replay, no restricted output asked for), so the replay changes
    nothing; the revision is held, for the reasons above, and the served one stays."""
    source = copy_source(tmp_path / "source")
    with bundle_server(tmp_path, source, "--publish-gate", str(gate_settings(tmp_path))) as server:
        wait_for(lambda: server.status()["revision"] is not None, "the first revision")
        served = server.status()["revision"]
        tables = json.loads((source / TABLES).read_text())
        for edit in WIDENED:
            edit(tables)
        write_atomically(source / TABLES, json.dumps(tables, indent=2))
        wait_for(lambda: len(revisions(server)) >= 2, "the candidate judged", timeout=120)
        judged = revisions(server)[0]
        assert judged["state"] == "held", judged
        assert (judged["impact"]["distinct"], judged["impact"]["changed"]) == (1, 0)
        assert judged["hold_reasons"] == WIDENED_REASONS
        assert server.status()["revision"] == served


# -- tables a module defines -------------------------------------------------------------------
# (review: the gate compared the data.json alone, but the rules read data.labelgate.tables,
# which a module can define: a candidate that moved opaque_methods and replay from its
# data.json into a module giving "*" on a method and contractors the replays read as a
# narrowing, ``table_changes: []``, and was published. OPA refuses a rule and data on one path,
# so the keys leave the data.json.)

RULES = "labelgate/tables/access.rego"
EXPORT = "/acme.audit.v1.Audit/Export"
# The review's candidate.
WIDENING_RULES = f"""package labelgate.tables

opaque_methods := {{"{EXPORT}": ["*"]}}

replay := {{"viewer_groups": ["auditors", "contractors"]}}
"""
WIDENING_REASONS = [
    "tables let a group view recorded calls: replay.viewer_groups for contractors: "
    "may not view recorded calls -> may view recorded calls",
    f'tables open a method: opaque_methods["{EXPORT}"] for * (any authenticated caller): '
    "may not call it -> may call it",
]


def by_rules(folder: Path, rules: str, *moved: str, module: str = RULES) -> None:
    """``moved`` keys of ``folder``'s data.json tables left out, and ``rules`` written to ``module``."""
    tables = json.loads((folder / TABLES).read_text())
    for key in moved:
        tables.pop(key)
    write_atomically(folder / TABLES, json.dumps(tables, indent=2))
    write_atomically(folder / module, rules)


def test_the_bundle_server_holds_tables_a_module_widens(tmp_path: Path) -> None:
    """The review's candidate, through a real bundle server: held for what the module grants,
    and the served revision stays."""
    source = copy_source(tmp_path / "source")
    with bundle_server(tmp_path, source, "--publish-gate", str(gate_settings(tmp_path))) as server:
        wait_for(lambda: server.status()["revision"] is not None, "the first revision")
        served = server.status()["revision"]
        by_rules(source, WIDENING_RULES, "opaque_methods", "replay")
        wait_for(lambda: len(revisions(server)) >= 2, "the candidate judged", timeout=120)
        judged = revisions(server)[0]
        assert judged["state"] == "held", judged
        assert (judged["impact"]["distinct"], judged["impact"]["changed"]) == (1, 0)
        assert judged["hold_reasons"] == WIDENING_REASONS
        assert server.status()["revision"] == served


def assessed(tmp_path: Path, rules: str, *moved: str, module: str = RULES) -> list[str]:
    """The publish gate's reasons to hold a candidate that moves ``moved`` into ``rules``: the
    bundle server's rule (``PublishGate.assess``) over the replay its analyzer runs."""
    current, candidate = folders(tmp_path)
    by_rules(candidate, rules, *moved, module=module)

    def analyze(served: Path, proposed: Path) -> dict[str, Any]:
        return cli.replay_report(served, proposed, STORED, engine="embedded").to_json()

    publish_gate = gate.PublishGate(analyze, HoldRule(), approvals=None)  # type: ignore[arg-type]
    return publish_gate.assess(current, candidate)[1]


def test_a_module_granting_what_the_data_did_is_published(tmp_path: Path) -> None:
    # The served tables' opaque_methods and replay, written as rules instead of data: no hold.
    rules = 'package labelgate.tables\n\nopaque_methods := {}\n\nreplay := {"viewer_groups": ["auditors"]}\n'
    assert assessed(tmp_path, rules, "opaque_methods", "replay") == []


def test_the_reviewed_module_is_held_by_the_gates_rule(tmp_path: Path) -> None:
    assert assessed(tmp_path, WIDENING_RULES, "opaque_methods", "replay") == WIDENING_REASONS


def test_a_ref_head_in_another_package_is_compared_too(tmp_path: Path) -> None:
    rules = (
        "package labelgate\n\ntables.opaque_methods := {}\n\n"
        'tables.replay.viewer_groups contains "auditors"\n\n'
        'tables.replay.viewer_groups contains "contractors"\n'
    )
    assert assessed(tmp_path, rules, "opaque_methods", "replay", module="labelgate/more.rego") == [
        WIDENING_REASONS[0]
    ]


ACCESS = 'replay := {"viewer_groups": ["auditors"]}\n'


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        (
            # Two values for one key: an evaluation error in every engine.
            f'opaque_methods["{EXPORT}"] := ["*"]\n\nopaque_methods["{EXPORT}"] := ["auditors"]\n\n{ACCESS}',
            "the impact could not be computed (POLICY_ERROR): the candidate's tables "
            "(data.labelgate.tables) cannot be evaluated (`opa eval`, exit 2): "
            "labelgate/tables/access.rego:5: eval_conflict_error: rule "
            f'data.labelgate.tables.opaque_methods["{EXPORT}"] produced conflicting values: '
            '["*"] at labelgate/tables/access.rego:3 ["auditors"] at labelgate/tables/access.rego:5',
        ),
        (
            'opaque_methods := {}\n\nreplay := {"viewer_groups": ["auditors"], "n": 1 / 0}\n',
            "the impact could not be computed (POLICY_ERROR): the candidate's tables "
            "(data.labelgate.tables) cannot be evaluated (`opa eval`, exit 2): "
            "labelgate/tables/access.rego:5: eval_builtin_error: div: divide by zero",
        ),
        (
            # Empty without an input, "*" for whatever method a call names.
            f'opaque_methods[method] := ["*"] if method := input.request.method\n\n{ACCESS}',
            "the impact could not be computed (POLICY_DATA_INVALID): the candidate's tables "
            "(data.labelgate.tables) read input.request.method: a gateway's call or the fleet's data "
            "can change them, so the gate cannot compare them (write the tables as data)",
        ),
        (
            f'opaque_methods := {{"{EXPORT}": ["*"]}} if data.elsewhere.open\n\n{ACCESS}',
            "the impact could not be computed (POLICY_DATA_INVALID): the candidate's tables "
            "(data.labelgate.tables) read data.elsewhere.open: a gateway's call or the fleet's data "
            "can change them, so the gate cannot compare them (write the tables as data)",
        ),
        (
            f'opaque_methods := {{"{EXPORT}": ["*"]}} if time.now_ns() > 1900000000000000000\n\n{ACCESS}',
            "the impact could not be computed (POLICY_DATA_INVALID): the candidate's tables "
            "(data.labelgate.tables) depend on more than the revision (the input, or a builtin such "
            "as time.now_ns, opa.runtime or http.send): the gate cannot compare them (write the "
            "tables as data)",
        ),
    ],
    ids=["conflict", "builtin-error", "input", "outside-data", "time"],
)
def test_tables_a_module_defines_that_the_gate_cannot_compare_hold(
    tmp_path: Path, rules: str, reason: str
) -> None:
    assert assessed(tmp_path, f"package labelgate.tables\n\n{rules}", "opaque_methods", "replay") == [reason]
