"""``labelgate policy impact`` reports what the candidate's tables show more readily, and exits
3 (changed) for it, whatever the replayed inputs hold (review: a new group given ``see`` on
``confidential`` replayed as no change, exit 0, when none of its members had called)."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.cli import IMPACT_CHANGED, IMPACT_UNCHANGED, impact
from labelgate.policy.table_impact import ANY_OTHER_GROUP, table_changes
from tests.policy.conftest import REGO
from tests.policy.test_cli import valid_input

TABLES = "labelgate/tables/data.json"


def candidate_with(tmp_path: Path, group: str, offer: dict[str, object]) -> Path:
    candidate = tmp_path / "candidate"
    shutil.copytree(REGO, candidate)
    tables = json.loads((candidate / TABLES).read_text())
    tables["labels"]["confidential"]["groups"][group] = offer
    (candidate / TABLES).write_text(json.dumps(tables))
    return candidate


def run(tmp_path: Path, candidate: Path, output: str) -> int:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(json.dumps(valid_input()) + "\n")
    return impact(
        candidate=candidate, current=REGO, inputs=inputs, since=None, engine="embedded", output=output
    )


@pytest.mark.parametrize("output", ["json", "table", "markdown"])
def test_a_table_change_showing_a_label_is_a_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code = run(tmp_path, candidate_with(tmp_path, "contractors", {"see": True}), output)
    out, _ = capsys.readouterr()
    assert code == IMPACT_CHANGED
    if output != "json":
        shown = " ".join(out.split())  # the table wraps its lines
        assert "tables show a label: confidential for contractors: masked (redact) -> in clear" in shown, out
        assert "no changes" not in shown.lower(), out
    else:
        assert json.loads(out)["tables"] == [
            {
                "kind": "tables show a label",
                "label": "confidential",
                "group": "contractors",
                "labels": ["confidential"],
                "was": "masked (redact)",
                "now": "in clear",
                "how": [],
            }
        ]


def test_a_stricter_table_change_is_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    candidate = candidate_with(tmp_path, "contractors", {"mask": {"strategy": "null", "params": {}}})
    code = run(tmp_path, candidate, "json")
    assert json.loads(capsys.readouterr().out)["tables"] == []
    assert code == IMPACT_UNCHANGED


# -- who may call a method, view recorded calls, or ask for a label by name -----------------
# (review: opaque_methods, model_admin_methods, deny_when_requested and replay.viewer_groups
# were not compared, so a candidate giving a new group the model admin methods published unless
# the replay window held such a call.) Pure: ``table_changes`` on two tables documents.

LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"
OPAQUE = "/uploads.Uploads/Exchange"
Edit = Callable[[dict[str, Any]], None]


def served_tables() -> dict[str, Any]:
    tables: dict[str, Any] = json.loads((REGO / TABLES).read_text())
    return tables


def changes(edit: Edit, served_edit: Edit | None = None) -> list[dict[str, Any]]:
    served = served_tables()
    if served_edit is not None:
        served_edit(served)
    proposed = copy.deepcopy(served)
    edit(proposed)
    return table_changes(served, proposed)


def found(edit: Edit, served_edit: Edit | None = None) -> set[tuple[str, str, str]]:
    """(kind, where, group) of every change."""
    return {(change["kind"], change["label"], change["group"]) for change in changes(edit, served_edit)}


def put(*keys: str, value: Any) -> Edit:
    """Set tables[keys[0]]...[keys[-1]] to ``value``."""

    def edit(tables: dict[str, Any]) -> None:
        node = tables
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def drop(*keys: str) -> Edit:
    def edit(tables: dict[str, Any]) -> None:
        node = tables
        for key in keys[:-1]:
            node = node[key]
        node.pop(keys[-1])

    return edit


def both(*edits: Edit) -> Edit:
    def edit(tables: dict[str, Any]) -> None:
        for each in edits:
            each(tables)

    return edit


OPENED, VIEWER, NOT_DENIED, UNREADABLE = (
    "tables open a method",
    "tables let a group view recorded calls",
    "tables stop denying a requested label",
    "tables change a grant the gate cannot read",
)
ANYONE = "* (any authenticated caller)"
WHOEVER = "(whoever it lets in)"
ADMIN_LOAD, OPAQUE_CALL = f'model_admin_methods["{LOAD}"]', f'opaque_methods["{OPAQUE}"]'
VIEWERS = "replay.viewer_groups"


def admin(value: Any, method: str = LOAD) -> Edit:
    return put("model_admin_methods", method, value=value)


def opaque(value: Any) -> Edit:
    return put("opaque_methods", OPAQUE, value=value)


def viewers(value: Any) -> Edit:
    return put("replay", "viewer_groups", value=value)


def deny(value: Any, label: str = "restricted") -> Edit:
    return put("labels", label, "deny_when_requested", value=value)


NO_DENY = drop("labels", "restricted", "deny_when_requested")
NO_UNKNOWN_DENY = drop("unknown_label", "deny_when_requested")


@pytest.mark.parametrize(
    ("edit", "served_edit", "expected"),
    [
        # model_admin_methods: a group, a method, "*" (a group of that name there, no wildcard)
        (admin(["model-admins", "analysts"]), None, (OPENED, ADMIN_LOAD, "analysts")),
        (
            admin(["analysts"], method="/inference.GRPCInferenceService/RepositoryIndex"),
            None,
            (OPENED, 'model_admin_methods["/inference.GRPCInferenceService/RepositoryIndex"]', "analysts"),
        ),
        (admin(["*"]), None, (OPENED, ADMIN_LOAD, "*")),
        # a table the served tables lack (no one) given an entry
        (admin(["ops"]), drop("model_admin_methods"), (OPENED, ADMIN_LOAD, "ops")),
        # opaque_methods: a method, a group, the wildcard
        (opaque(["analysts"]), None, (OPENED, OPAQUE_CALL, "analysts")),
        (opaque(["analysts", "contractors"]), opaque(["analysts"]), (OPENED, OPAQUE_CALL, "contractors")),
        (opaque(["analysts", "*"]), opaque(["analysts"]), (OPENED, OPAQUE_CALL, ANYONE)),
        (opaque(["analysts"]), drop("opaque_methods"), (OPENED, OPAQUE_CALL, "analysts")),
        # replay.viewer_groups: a group; a replay table where the served tables had none
        (viewers(["auditors", "analysts"]), None, (VIEWER, VIEWERS, "analysts")),
        (viewers(["auditors"]), drop("replay"), (VIEWER, VIEWERS, "auditors")),
        # deny_when_requested: removed, or a value the rule (`== true`) does not read as true
        (NO_DENY, None, (NOT_DENIED, "restricted", ANY_OTHER_GROUP)),
        (deny("true"), None, (NOT_DENIED, "restricted", ANY_OTHER_GROUP)),
        (deny(1), None, (NOT_DENIED, "restricted", ANY_OTHER_GROUP)),
        # restricted left to unknown_label, which does not deny
        (
            both(drop("labels", "restricted"), NO_UNKNOWN_DENY),
            None,
            (NOT_DENIED, "restricted", ANY_OTHER_GROUP),
        ),
        # `not tables.labels[label]` holds for false too: unknown_label's entry applies
        (
            both(put("labels", "restricted", value=False), NO_UNKNOWN_DENY),
            None,
            (NOT_DENIED, "restricted", ANY_OTHER_GROUP),
        ),
        (
            both(
                put("labels", "confidential", value=False),
                put("unknown_label", "default", value={"see": True}),
            ),
            None,
            ("tables show a label", "confidential", ANY_OTHER_GROUP),
        ),
        # each group that may not see the label is named
        (
            NO_DENY,
            put(
                "labels", "restricted", "groups", "ops", value={"mask": {"strategy": "redact", "params": {}}}
            ),
            (NOT_DENIED, "restricted", "ops"),
        ),
    ],
)
def test_each_widening_of_who_may_do_what_is_a_change(
    edit: Edit, served_edit: Edit | None, expected: tuple[str, str, str]
) -> None:
    assert expected in found(edit, served_edit)


def test_a_widening_names_the_table_key_and_group_and_no_labels() -> None:
    # No labels: the gate holds it whatever labels its rule watches.
    assert changes(put("model_admin_methods", LOAD, value=["model-admins", "analysts"])) == [
        {
            "kind": OPENED,
            "table": "model_admin_methods",
            "key": LOAD,
            "label": ADMIN_LOAD,
            "group": "analysts",
            "was": "may not call it",
            "now": "may call it",
            "how": [],
        }
    ]
    (denied,) = changes(drop("labels", "restricted", "deny_when_requested"))
    assert denied == {
        "kind": NOT_DENIED,
        "label": "restricted",
        "group": ANY_OTHER_GROUP,
        "labels": ["restricted"],
        "was": "denied (labels.restricted.deny_when_requested: true)",
        "now": "masked (null) (labels.restricted.deny_when_requested: absent)",
        "how": [],
    }


@pytest.mark.parametrize(
    ("edit", "served_edit", "where"),
    [
        (opaque("analysts"), None, OPAQUE_CALL),  # a string, not a list
        (opaque({"any": "analysts"}), None, OPAQUE_CALL),  # the rules read its values
        (opaque(["analysts", 7]), None, OPAQUE_CALL),
        (opaque(None), opaque(["analysts"]), OPAQUE_CALL),
        (put("opaque_methods", value=[OPAQUE]), None, "opaque_methods"),  # the table is no object
        (admin("model-admins"), None, ADMIN_LOAD),
        (admin([True]), admin([1]), ADMIN_LOAD),  # equal in Python, not to the rules
        (put("model_admin_methods", value=None), None, "model_admin_methods"),
        (viewers("auditors"), None, VIEWERS),
        (put("replay", value=["auditors"]), None, "replay"),
        # the served value unreadable: what it let in is unknown, so any grant holds
        (opaque(["analysts"]), opaque("analysts"), OPAQUE_CALL),
        (
            put("model_admin_methods", value={LOAD: ["model-admins"]}),
            put("model_admin_methods", value=[]),
            ADMIN_LOAD,
        ),
    ],
)
def test_a_changed_grant_the_comparison_cannot_read_is_a_change(
    edit: Edit, served_edit: Edit | None, where: str
) -> None:
    assert (UNREADABLE, where, WHOEVER) in found(edit, served_edit)


@pytest.mark.parametrize(
    ("edit", "served_edit"),
    [
        (admin([]), None),
        (drop("model_admin_methods", LOAD), None),
        (drop("model_admin_methods"), None),  # no table: the methods are denied (requests.rego)
        (admin(["model-admins"]), admin(["model-admins", "ops"])),
        (admin(["model-admins", "model-admins"]), None),
        (drop("opaque_methods"), None),
        (opaque(["analysts"]), opaque(["*"])),
        (opaque(["*", "contractors"]), opaque(["*"])),  # "*" let in everyone already
        (opaque([]), opaque("analysts")),  # an unreadable grant emptied
        (drop("opaque_methods"), put("opaque_methods", value=["x"])),  # an unreadable table removed
        (opaque("analysts"), opaque("analysts")),  # the same unreadable value both times
        (viewers([]), None),
        (drop("replay"), None),
        (viewers(["ops", "auditors"]), viewers(["auditors", "ops"])),
        (put("replay", "keep_days", value=90), None),  # a key the rules do not read
        (deny(True, label="confidential"), None),
        (deny(True), deny("true")),
        (drop("labels", "restricted"), None),  # unknown_label denies it too (and nulls it)
    ],
)
def test_a_narrowing_of_who_may_do_what_is_no_change(edit: Edit, served_edit: Edit | None) -> None:
    assert changes(edit, served_edit) == []
