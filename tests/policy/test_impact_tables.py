"""``labelgate policy impact`` reports what the candidate's tables show more readily, and exits
3 (changed) for it, whatever the replayed inputs hold (review: a new group given ``see`` on
``confidential`` replayed as no change, exit 0, when none of its members had called)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labelgate.policy.cli import IMPACT_CHANGED, IMPACT_UNCHANGED, impact
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
