"""The default pack decides a field with several labels by all of them, on every engine.

A field is in clear only when every one of its labels is, waits for an approval when any of
its labels does, and otherwise takes the strongest mask among its labels
(rego/labelgate/decision/clearance.rego). The shipped tables are not monotone in rank
(break-glass sees restricted after two security approvals, internal and confidential only
redacted), so deciding by the top-ranked label alone released a field in clear once an
upstream added `restricted` to it. The Rego tests (monotone_test.rego) check the rule over
the tables with OPA; here the embedded engine (rego-cpp) must give the same JSON on the
inputs that reach the new rules: several labels, a path listed twice, an approval pending
on a field another label masks, replays, requests by name, and two masks of one strategy
(with tables that have them), and a grant whose approvers' groups meet one of a field's
two requirements but not the other.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from regopy import Interpreter

from tests.policy.test_rego_examples import EXAMPLES, QUERY, REGO, canonical
from tests.support.procs import opa_binary

SECURITY_GRANT = {"state": "granted", "grant_id": "g", "approved_by": ["sec-1", "sec-2"]}


def _approved_in(*people: tuple[str, list[str]]) -> dict[str, Any]:
    """A grant as the gateway gives it: the approvers with the groups they approved in."""
    return {
        "state": "granted",
        "grant_id": "g",
        "approved_by": sorted({person for person, _ in people}),
        "approvers": [{"id": person, "groups": groups} for person, groups in people],
    }


SECURITY_APPROVERS = _approved_in(("sec-1", ["security"]), ("sec-2", ["security"]))


def _field(path: str, labels: list[str]) -> dict[str, Any]:
    return {"path": path, "labels": labels, "sources": {label: ["catalog"] for label in labels}}


def _call(
    groups: list[str], fields: list[dict[str, Any]], approval: Any, phase: str, requested: list[str]
) -> Any:
    base = json.loads((EXAMPLES / "analyst-response.json").read_text())
    return {
        **base,
        "phase": phase,
        "subject": {**base["subject"], "groups": groups},
        "request": {**base["request"], "requested_outputs": requested},
        "fields": fields,
        "labels": sorted({label for f in fields for label in f["labels"]}),
        "approval": approval,
    }


def _cases() -> list[Any]:
    label_sets = [
        ["confidential", "restricted"],
        ["internal", "restricted"],
        ["public", "restricted"],
        ["internal", "confidential"],
        ["confidential", "top-secret"],
    ]
    group_sets = [[], ["analysts"], ["data-stewards"], ["break-glass"], ["analysts", "break-glass"]]
    group_sets.append(["analysts", "data-stewards", "break-glass"])
    one_owner = {"state": "granted", "grant_id": "g", "approved_by": ["o-1"]}
    approvals = [
        {"state": "none"},
        SECURITY_GRANT,
        one_owner,
        SECURITY_APPROVERS,
        _approved_in(("o-1", ["data-owners"])),
        _approved_in(("sec-1", ["security", "data-owners"]), ("sec-2", ["security"])),
        _approved_in(("sec-1", ["security"]), ("sec-2", ["security"]), ("o-1", ["data-owners"])),
    ]
    cases = []
    for labels, groups, approval in itertools.product(label_sets, group_sets, approvals):
        as_one = [_field("outputs.x", labels), _field("outputs.y", ["confidential"])]
        twice = [_field("outputs.x", [label]) for label in labels] + [_field("outputs.y", ["internal"])]
        cases += [
            _call(groups, as_one, approval, "response", []),
            _call(groups, as_one, approval, "request", ["x"]),
            _call(groups, twice, approval, "response", []),
            _call([*groups, "auditors"], as_one, {"state": "none"}, "replay", []),
        ]
    return cases


def _policy(tmp_path: Path, tables: dict[str, Any] | None = None) -> Path:
    """rego/ without its tests, with other tables when given."""
    folder = tmp_path / "rego"
    shutil.copytree(REGO, folder, ignore=shutil.ignore_patterns("*_test.rego"))
    if tables is not None:
        (folder / "labelgate" / "tables" / "data.json").write_text(json.dumps(tables))
    return folder


def _opa(folder: Path, cases: list[Any], tmp_path: Path) -> list[Any]:
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"cases": cases}))
    query = f"[r | some c in input.cases; r := {QUERY} with input as c]"
    command = [opa_binary(), "eval", "--format", "json", "-d", str(folder), "-i", str(batch), query]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    (result,) = json.loads(completed.stdout)["result"]
    return list(result["expressions"][0]["value"])


def _embedded(folder: Path, cases: list[Any]) -> list[Any]:
    rego = Interpreter()
    for path in sorted(folder.rglob("*.rego")):
        rego.add_module(str(path.relative_to(folder)), path.read_text())
    data = {
        "labelgate": {
            "tables": json.loads((folder / "labelgate" / "tables" / "data.json").read_text()),
            "catalog": json.loads((folder / "labelgate" / "catalog" / "data.json").read_text()),
        }
    }
    rego.add_data_json(json.dumps(data))
    bundle = rego.build(QUERY)
    results = []
    for case in cases:
        rego.set_input_term(json.dumps(case))
        output = str(rego.query_bundle(bundle))
        assert output != "undefined"
        results.append(json.loads(output)["expressions"][0])
    return results


def _assert_same(folder: Path, cases: list[Any], tmp_path: Path) -> list[Any]:
    from_opa = _opa(folder, cases, tmp_path)
    from_embedded = _embedded(folder, cases)
    mismatches = [
        {"input": case, "opa": a, "embedded": b}
        for case, a, b in zip(cases, from_opa, from_embedded, strict=True)
        if canonical(a) != canonical(b)
    ]
    assert not mismatches, json.dumps(mismatches[:2], indent=2)
    return from_opa


def test_the_engines_agree_on_fields_with_several_labels(tmp_path: Path) -> None:
    cases = _cases()
    results = _assert_same(_policy(tmp_path), cases, tmp_path)
    # The case that leaked: break-glass with the security grant gets [confidential,
    # restricted] redacted, as [confidential] alone, not in clear.
    both = [_field("outputs.x", ["confidential", "restricted"])]
    leaked = _call(["break-glass"], both, SECURITY_GRANT, "response", [])
    (decision,) = _assert_same(_policy(tmp_path / "again"), [leaked], tmp_path)
    assert decision["allow"] is True
    assert decision["mask"] == [{"path": "outputs.x", "strategy": "redact", "params": {}}]
    # Every kind of decision shows up, so the agreement is not about one kind only.
    kinds = {(r["allow"], r["require_approval"] is not None, bool(r["mask"])) for r in results}
    assert {(True, False, True), (False, True, False), (False, False, False), (True, True, True)} <= kinds


def test_the_engines_agree_on_two_masks_of_one_strategy(tmp_path: Path) -> None:
    tables = json.loads((REGO / "labelgate" / "tables" / "data.json").read_text())
    keep_two = {"mask": {"strategy": "partial", "params": {"keep_last": 2}}}
    tables["labels"]["internal"]["groups"]["analysts"] = keep_two
    tables["unknown_label"]["default"] = {"mask": {"strategy": "redact", "params": {}}}
    folder = _policy(tmp_path, tables)
    cases = [
        _call(["analysts"], [_field("outputs.x", labels)], {"state": "none"}, "response", [])
        for labels in (["internal", "confidential"], ["internal"], ["top-secret"])
    ]
    results = _assert_same(folder, cases, tmp_path)
    assert [r["mask"][0]["strategy"] for r in results] == ["null", "partial", "redact"]


def test_the_engines_agree_that_each_requirement_needs_its_own_groups(tmp_path: Path) -> None:
    """Review finding (t5): a steward in break-glass, with confidential and restricted outputs,
    held for two security approvals; the two people were counted for the data-owners rule too
    and the SSN came out in clear. Now it is held for a data owner, on both engines."""
    groups = ["data-stewards", "break-glass"]
    fields = [_field("outputs.ssn", ["confidential"]), _field("outputs.account_secret", ["restricted"])]
    owner = ("o-1", ["data-owners"])
    cases = [
        _call(groups, fields, SECURITY_APPROVERS, "response", []),
        _call(groups, fields, SECURITY_GRANT, "response", []),
        _call(
            groups,
            fields,
            _approved_in(*[(p["id"], p["groups"]) for p in SECURITY_APPROVERS["approvers"]], owner),
            "response",
            [],
        ),
    ]
    by_security, without_groups, by_both = _assert_same(_policy(tmp_path), cases, tmp_path)
    assert by_security["allow"] is False
    assert by_security["require_approval"]["approver_groups"] == ["data-owners"]
    assert (
        by_security["reason"] == "held for approval: confidential data needs 1 approval(s) from data-owners"
    )
    assert without_groups["allow"] is False
    assert without_groups["require_approval"]["approver_groups"] == ["security"]
    assert (by_both["allow"], by_both["mask"]) == (True, [])
