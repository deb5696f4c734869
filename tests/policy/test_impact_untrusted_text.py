"""The impact report shows the model names callers chose (the stored inputs keep refused
calls' too) as text: never obeyed as terminal escapes or rich markup, in the table or in the
markdown a CI job posts. Review (tenth round): a model named ``m2[/]`` made the report exit 1
with an internal MarkupError (no report at all), and ``m\\x1b[2J...`` cleared the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelgate.policy.cli import _print_table
from labelgate.policy.impact import ChangeGroup, ImpactReport, to_markdown

HOSTILE = ["m2[/]", "m\x1b[2J\x1b]0;pwned\x07\x1b[31mRED", "m2[bold]x", "a|b\nc"]


def report_naming(model: str) -> ImpactReport:
    group = ChangeGroup("mask added", "analysts", model, "outputs.*", "redact", 1, 2, "ab" * 16)
    return ImpactReport(inputs=2, distinct=1, changed=1, groups=[group], errors=[
        {"hash": "cd" * 16, "side": "candidate", "reason": f"engine said {model}"},
    ])  # fmt: skip


@pytest.mark.parametrize("model", HOSTILE, ids=["closing-tag", "escapes", "markup", "table-cell"])
def test_the_table_shows_a_hostile_model_name_as_text(model: str, capsys: pytest.CaptureFixture[str]) -> None:
    _print_table(report_naming(model), engine="opa", current=Path("rego"), candidate=Path("cand"))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    if model.isprintable():
        assert model in out  # the brackets shown, not read as markup


@pytest.mark.parametrize("model", HOSTILE, ids=["closing-tag", "escapes", "markup", "table-cell"])
def test_the_markdown_shows_a_hostile_model_name_as_text(model: str) -> None:
    text = to_markdown(report_naming(model))
    assert "\x1b" not in text and "\x07" not in text
    row = next(line for line in text.splitlines() if line.startswith("| mask added"))
    assert row.count(" | ") == 7  # one cell a column: a | in a name is escaped
