"""``labelgate policy impact`` reports what the candidate's catalog takes from fields, and exits
3 (changed) for it: replaying stored inputs cannot show it, since they carry the labels the
current catalog gave (review: a catalog-only downgrade to ``public`` exited 0, "no changes")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labelgate.policy.cli import IMPACT_CHANGED, impact
from tests.policy.conftest import REGO
from tests.policy.test_cli import valid_input

CATALOG = "labelgate/catalog/data.json"


@pytest.mark.parametrize("output", ["json", "table", "markdown"])
def test_a_catalog_downgrade_is_a_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(REGO, candidate)
    catalog = json.loads((candidate / CATALOG).read_text())
    for entry in catalog["entries"]:
        if entry["path"] == "outputs.ssn":
            entry["labels"] = ["public"]
    (candidate / CATALOG).write_text(json.dumps(catalog))
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(json.dumps(valid_input()) + "\n")

    code = impact(
        candidate=candidate, current=REGO, inputs=inputs, since=None, engine="embedded", output=output
    )
    out, _ = capsys.readouterr()
    assert code == IMPACT_CHANGED
    if output != "json":
        shown = " ".join(out.split())  # the table wraps its lines
        assert "catalog label lowered: customer-profile outputs.ssn confidential -> public" in shown, out
        assert "no changes" not in shown, out
    else:
        assert json.loads(out)["catalog"] == [
            {
                "kind": "catalog label lowered",
                "model": "customer-profile",
                "message": None,
                "path": "outputs.ssn",
                "was": ["confidential"],
                "now": ["public"],
            }
        ]
