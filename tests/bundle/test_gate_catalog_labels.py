"""The publish gate holds a revision whose catalog takes a watched label from a field (review:
a change relabelling ``outputs.ssn`` (confidential) and ``outputs.account_secret`` (restricted)
``public`` showed no change and was published: the replay reuses stored inputs, which carry the
labels the served catalog gave, so the candidate's catalog was never applied).

The catalogs are compared by what they label (``labelgate.policy.catalog_impact``); the replay
is not re-labelled, since that is not exact (see there).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labelgate.bundle.build import Bundle
from labelgate.bundle.cli import check_catalog
from labelgate.bundle.gate import ApprovalState, ApprovalTicket, HoldRule, PublishGate, hold_reasons
from labelgate.bundle.publisher import Publisher
from labelgate.bundle.revisions import RevisionStore
from labelgate.bundle.source import OpaValidator, SourceSnapshot
from labelgate.policy.cli import replay_report
from labelgate.policy.contract import build_input
from tests.bundle.helpers import REGO, write_atomically

CATALOG = "labelgate/catalog/data.json"
MODEL = "customer-profile"


def recorded_input() -> dict[str, Any]:
    """A response as the served catalog labelled it, recorded for the replay."""
    return build_input(
        phase="response",
        subject={"id": "jwt:idp#a", "groups": ["analysts"], "auth": "jwt", "attributes": {}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": MODEL,
            "requested_outputs": [],
            "request_id": "r",
            "session_id": "s",
            "peer": "ipv4:10.0.0.1",
            "digest": "f" * 64,
            "opaque": False,
        },
        fields=[
            {"path": path, "labels": [label], "sources": {label: ["catalog"]}}
            for path, label in (("outputs.ssn", "confidential"), ("outputs.account_secret", "restricted"))
        ],
        approval=None,
        time_ns=1,
    )


STORED = [("h1", 5, recorded_input())]
Edit = Callable[[dict[str, Any]], None]


def relabel(path: str, *labels: str) -> Edit:
    def edit(catalog: dict[str, Any]) -> None:
        for entry in catalog["entries"]:
            if entry.get("model") == MODEL and entry["path"] == path:
                entry["labels"] = list(labels)

    return edit


def drop(path: str) -> Edit:
    def edit(catalog: dict[str, Any]) -> None:
        catalog["entries"] = [e for e in catalog["entries"] if e["path"] != path]

    return edit


def add(path: str, *labels: str) -> Edit:
    return lambda catalog: catalog["entries"].append({"model": MODEL, "path": path, "labels": list(labels)})


def default_label(label: str) -> Edit:
    return lambda catalog: catalog.update(default_label=label)


def folders(tmp_path: Path, *edits: Edit) -> tuple[Path, Path]:
    current, candidate = tmp_path / "current", tmp_path / "candidate"
    shutil.copytree(REGO, current)
    shutil.copytree(REGO, candidate)
    catalog = json.loads((candidate / CATALOG).read_text())
    for edit in edits:
        edit(catalog)
    (candidate / CATALOG).write_text(json.dumps(catalog))
    return current, candidate


def catalog_changes(current: Path, candidate: Path) -> list[dict[str, Any]]:
    from labelgate.policy.cli import catalog_changes

    return catalog_changes(current, candidate)


def verdict(tmp_path: Path, *edits: Edit, rule: HoldRule | None = None) -> list[str]:
    report = {"distinct": 1, "inputs": 1, "changed": 0, "changes": [], "errors": []}
    report["catalog"] = catalog_changes(*folders(tmp_path, *edits))
    return hold_reasons(report, rule or HoldRule())


def test_the_reviewed_downgrade_holds_although_the_replay_shows_no_change(tmp_path: Path) -> None:
    current, candidate = folders(
        tmp_path, relabel("outputs.ssn", "public"), relabel("outputs.account_secret", "public")
    )
    report = replay_report(current, candidate, STORED, engine="embedded").to_json()
    assert (report["changed"], report["changes"]) == (0, [])  # the stored labels are the old ones
    assert hold_reasons(report, HoldRule()) == [
        "catalog label lowered: customer-profile outputs.account_secret restricted -> public; "
        "customer-profile outputs.ssn confidential -> public"
    ]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            drop("outputs.ssn"),
            "catalog field removed: customer-profile outputs.ssn confidential -> internal "
            "(the default label)",
        ),
        # Not monotone in rank: restricted is shown to a granted break-glass caller, confidential never.
        (
            relabel("outputs.ssn", "restricted"),
            "catalog label replaced: customer-profile outputs.ssn confidential -> restricted",
        ),
        (
            relabel("outputs.account_secret", "internal", "confidential"),
            "catalog label lowered: customer-profile outputs.account_secret "
            "restricted -> internal+confidential",
        ),
    ],
)
def test_a_catalog_taking_a_watched_label_from_a_field_holds(tmp_path: Path, edit: Edit, reason: str) -> None:
    assert verdict(tmp_path, edit) == [reason]


def test_a_catalog_removed_from_the_bundle_holds(tmp_path: Path) -> None:
    current, candidate = folders(tmp_path)
    (candidate / CATALOG).unlink()
    report = {"distinct": 1, "changes": [], "errors": [], "catalog": catalog_changes(current, candidate)}
    (reason,) = hold_reasons(report, HoldRule())
    assert reason.startswith("catalog field removed: ") and "outputs.ssn confidential -> (none)" in reason


@pytest.mark.parametrize(
    "edit",
    [
        relabel("outputs.ssn", "confidential", "restricted"),  # a label added: the policy sees both
        add("outputs.phone", "internal"),
        add("outputs.tax_id", "confidential"),  # takes the default (internal), which is not watched
        relabel("outputs.name", "public"),  # internal: not watched by the default rule
        default_label("confidential"),
    ],
)
def test_a_catalog_change_taking_no_watched_label_is_published(tmp_path: Path, edit: Edit) -> None:
    assert verdict(tmp_path, edit) == []


def test_the_rule_watches_the_labels_it_names(tmp_path: Path) -> None:
    rule = HoldRule(unmasked_labels=["internal"])
    assert verdict(tmp_path, relabel("outputs.name", "public"), rule=rule) == [
        "catalog label lowered: customer-profile outputs.name internal -> public"
    ]
    assert verdict(tmp_path / "b", add("outputs.*", "public"), rule=rule) == [
        "catalog field added without the default label: customer-profile outputs.* internal -> public"
    ]
    assert verdict(tmp_path / "c", default_label("confidential"), rule=rule) == [
        "catalog label replaced: (default label) internal -> confidential"
    ]


def test_an_unchanged_catalog_is_no_change(tmp_path: Path) -> None:
    current, candidate = folders(tmp_path)
    (candidate / CATALOG).write_text(json.dumps(json.loads((current / CATALOG).read_text()), indent=4))
    assert catalog_changes(current, candidate) == []


class PassingValidator(OpaValidator):
    def __init__(self) -> None:
        pass

    def validate(self, snapshot: SourceSnapshot, bundle: Bundle) -> None:
        pass


class NoApprovals:
    """Nothing is asked here: a held revision only waits."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def request(self, **_: Any) -> ApprovalTicket:
        raise AssertionError("no approval is asked")

    async def state(self, approval_id: str) -> ApprovalState:
        raise AssertionError("no approval is asked")


async def test_the_publisher_keeps_serving_the_revision_before_the_downgrade(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(REGO, source, ignore=shutil.ignore_patterns("*_test.rego"))

    def analyze(current: Path, candidate: Path) -> dict[str, Any]:
        return replay_report(current, candidate, STORED, engine="embedded").to_json()

    publisher = Publisher(
        source,
        PassingValidator(),
        gate=PublishGate(analyze, HoldRule(), NoApprovals()),
        revisions=RevisionStore(tmp_path / "revisions.sqlite3"),
        catalog_check=check_catalog,
        poll_interval=3600,
    )
    await publisher.start()
    try:
        served = publisher.status()["revision"]
        catalog = json.loads((source / CATALOG).read_text())
        relabel("outputs.ssn", "public")(catalog)
        write_atomically(source / CATALOG, json.dumps(catalog))
        await publisher.refresh()
        status = publisher.status()
        assert status["revision"] == served
        assert status["held"]["reasons"] == [
            "catalog label lowered: customer-profile outputs.ssn confidential -> public"
        ]
    finally:
        await publisher.stop()
