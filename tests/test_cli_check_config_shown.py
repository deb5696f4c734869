"""``serve --check-config`` quotes paths it did not choose (the config's own, the files the
config names) as a terminal can show them: a control character or a bidi override in a path
is printed as its escape, and a newline in one does not start a line of its own."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labelgate.cli import app

REPO = Path(__file__).resolve().parents[1]
DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
runner = CliRunner()
# A folder name that sets a terminal's title, holds a newline (what follows it would read as
# a line of labelgate's own) and reverses the text after it.
HOSTILE_FOLDER = "dir\x1b]0;TITLE\x07\nOK\u202e"
SHOWN_FOLDER = "dir\\x1b]0;TITLE\\x07\\nOK\\u202e"


def check(config: Path) -> str:
    result = runner.invoke(app, ["serve", "--config", str(config), "--check-config"])
    assert result.exit_code == 2, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output, repr(result.output)
    assert "\u202e" not in result.output, repr(result.output)
    return result.output


def test_problems_and_warnings_quote_paths_escaped(tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE_FOLDER
    folder.mkdir()
    config = folder / "c.yaml"
    # JSON is YAML: its string escapes carry the control characters into the settings.
    config.write_text(
        json.dumps(
            {
                "policy": {"dir": str(REPO / "rego")},
                "classification": {"catalog_file": str(folder / "catalog.json")},
                "masking": {"hash_key": "test-insecure-hash-key-0123456789"},
                "auth": {
                    "jwt": {"trust_dev_key": True, "dev_keys_dir": str(REPO / "deploy/quickstart/dev-keys")}
                },
            }
        )
    )
    output = check(config)
    where = f"{tmp_path}/{SHOWN_FOLDER}/c.yaml"
    lines = output.splitlines()
    assert f"{where}: 1 problem at start-up:" in lines, output
    assert any(line.startswith(f"{where}: warning: dev_key_trusted: INSECURE") for line in lines), output
    problem = (
        f"  - classification.catalog_file: cannot read catalog file {tmp_path}/{SHOWN_FOLDER}/catalog.json"
    )
    assert any(line.startswith(problem) for line in lines), output
    assert all(line.startswith((where, "  - ")) for line in lines), output


def test_a_config_that_does_not_load_quotes_its_path_escaped(tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE_FOLDER
    folder.mkdir()
    config = folder / "c.yaml"
    config.write_text("[1, 2]\n")
    output = check(config)
    where = f"{tmp_path}/{SHOWN_FOLDER}/c.yaml"
    assert output.startswith(f"{where}: "), output
    assert "must hold a mapping at the top level (CONFIG_INVALID)" in output, output
