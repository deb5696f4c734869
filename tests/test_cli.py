"""The ``labelgate`` command line as operators meet it: --version, servers under their groups
(the old names still work, hidden), choices typer checks, help text without reST markup, and
``approvals list`` as a table or JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from labelgate import __version__
from labelgate.approvals import cli as approvals_cli
from labelgate.cli import app

runner = CliRunner()
ROOT: Any = get_command(app)  # typer's own (vendored) click group


def walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found += walk(sub, (*path, name))
    return found


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"labelgate {__version__}"


@pytest.mark.parametrize(
    ("new", "old"),
    [
        (("audit", "writer"), "audit-writer"),
        (("bundle", "serve"), "bundle-server"),
        (("approvals", "serve"), "approvals-server"),
        (("audit", "forwarder"), "audit-forwarder"),
    ],
)
def test_servers_live_under_their_groups_with_the_old_names_hidden(new: tuple[str, ...], old: str) -> None:
    group = ROOT.commands[new[0]]
    command = group.commands[new[1]]
    alias = ROOT.commands[old]
    assert alias.hidden and not command.hidden
    assert alias.help == command.help  # the same command under both names
    assert [p.name for p in alias.params] == [p.name for p in command.params]
    top_help = runner.invoke(app, ["--help"]).output
    assert old not in top_help
    assert new[1] in runner.invoke(app, [new[0], "--help"]).output
    for args in ([*new, "--help"], [old, "--help"]):
        assert runner.invoke(app, args).exit_code == 0, args


@pytest.mark.parametrize(
    ("args", "option", "choices"),
    [
        (["serve", "--engine", "rego"], "--engine", ["embedded", "wasm", "opa"]),
        (
            ["policy", "eval", "--input", "x.json", "--engine", "rego"],
            "--engine",
            ["embedded", "wasm", "opa"],
        ),
        (["policy", "impact", "--candidate", "c", "--inputs", "i", "--engine", "rego"], "--engine", ["opa"]),
        (["serve", "--log-level", "loud"], "--log-level", ["debug", "info", "warning", "error"]),
        (
            ["audit", "writer", "--socket", "s", "--log-dir", "d", "--log-level", "loud"],
            "--log-level",
            ["debug"],
        ),
        (["bundle", "serve", "--source", "rego", "--log-level", "loud"], "--log-level", ["debug"]),
        (
            ["audit", "forwarder", "--log-dir", "d", "--state-dir", "s", "--log-level", "x"],
            "--log-level",
            ["info"],
        ),
        (["approvals", "list", "--state", "open"], "--state", ["pending", "resolved", "all"]),
        (
            ["bundle", "build", "src", "-o", "b.tar.gz", "--signing-alg", "HS256"],
            "--signing-alg",
            ["RS256", "ES256"],
        ),
        (["bundle", "serve", "--source", "rego", "--signing-alg", "HS256"], "--signing-alg", ["RS256"]),
    ],
)
def test_choices_are_checked_by_the_command_line(args: list[str], option: str, choices: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split()).replace("│", "")
    assert f"Invalid value for '{option}'" in text, result.output
    for choice in choices:
        assert f"'{choice}'" in text, (choice, result.output)


def test_serve_takes_log_level_and_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def load_settings(config: Any, **overrides: Any) -> str:
        seen.update(overrides)
        return "settings"

    monkeypatch.setattr("labelgate.config.load_settings", load_settings)
    monkeypatch.setattr("labelgate.gateway.server.run", lambda settings: seen.update(ran=settings))
    result = runner.invoke(app, ["serve", "--log-level", "debug", "--engine", "wasm"])
    assert result.exit_code == 0, result.output
    assert seen["log_level"] == "debug" and type(seen["log_level"]) is str
    assert seen["engine"] == "wasm" and type(seen["engine"]) is str
    assert seen["ran"] == "settings"


def test_help_text_has_no_rest_markup() -> None:
    for path, command in walk(ROOT):
        texts = [command.help or "", command.short_help or ""]
        texts += [getattr(param, "help", None) or "" for param in command.params]
        for text in texts:
            assert "``" not in text, (" ".join(path), text)
        if path:
            output = runner.invoke(app, [*path, "--help"], terminal_width=200).output
            assert "``" not in output, " ".join(path)


ITEMS = [
    {
        "id": "6f1c2a3b-0000-4000-8000-000000000001",
        "state": "pending",
        "requester": "sam",
        "labels": ["confidential"],
        "model": "customer-profile",
        "method": "/inference.GRPCInferenceService/ModelInfer",
        "approvals": 0,
        "min_approvals": 1,
        "expires_at": "2999-01-01T00:00:00+00:00",
    },
    {
        "id": "6f1c2a3b-0000-4000-8000-000000000002",
        "state": "granted",
        "requester": "[bold]eve[/bold]",
        "labels": ["restricted", "confidential"],
        "model": "",
        "method": "/demo.CustomerDirectory/Get",
        "approvals": 2,
        "min_approvals": 2,
        "expires_at": "2000-01-01T00:00:00+00:00",
    },
]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []

    def call_api(url: str, token: str | None, path: str, body: Any = None) -> dict[str, Any]:
        asked.append(path)
        return {"items": [] if "state=resolved" in path else ITEMS}

    monkeypatch.setattr(approvals_cli, "call_api", call_api)
    return asked


def test_approvals_list_is_a_table(api: list[str]) -> None:
    result = runner.invoke(app, ["approvals", "list", "--token", "t", "--state", "all"])
    assert result.exit_code == 0, result.output
    assert api == ["/api/v1/approvals?state=all"]
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "REQUESTER", "LABELS", "MODEL", "VOTES", "STATE"]
    assert ITEMS[0]["id"] in lines[1] and "customer-profile" in lines[1] and "0/1" in lines[1]
    assert "left" in lines[1]
    assert ITEMS[1]["id"] in lines[2] and "[bold]eve[/bold]" in lines[2]  # text, not markup
    assert "restricted, confidential" in lines[2] and "/demo.CustomerDirectory/Get" in lines[2]


def test_approvals_list_json_and_empty(api: list[str]) -> None:
    result = runner.invoke(app, ["approvals", "list", "--token", "t", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == ITEMS
    assert api == ["/api/v1/approvals?state=pending"]
    empty = runner.invoke(app, ["approvals", "list", "--token", "t", "--state", "resolved"])
    assert empty.exit_code == 0 and "no resolved approval requests" in empty.output


def test_typer_app_is_the_entry_point() -> None:
    assert isinstance(app, typer.Typer)


def _exploding_app() -> typer.Typer:
    from labelgate.cli_backstop import GuardedTyper

    guarded = GuardedTyper(add_completion=False, pretty_exceptions_enable=False)

    @guarded.command()
    def boom() -> None:
        raise RuntimeError("an unexpected\nfailure")

    return guarded


def test_an_unexpected_exception_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABELGATE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped:
        _exploding_app()([], prog_name="labelgate")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err == "labelgate: internal error (RuntimeError): an unexpected failure\n"


def test_labelgate_debug_adds_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELGATE_DEBUG", "1")
    with pytest.raises(SystemExit) as stopped:
        _exploding_app()([], prog_name="labelgate")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith(
        "labelgate: internal error (RuntimeError): an unexpected failure\n"
    )


def test_every_entry_point_has_the_backstop() -> None:
    from labelgate.bundle.cli import command_line
    from labelgate.cli_backstop import GuardedTyper

    assert isinstance(app, GuardedTyper)  # the console script: labelgate.cli:app
    assert isinstance(command_line(), GuardedTyper)  # python -m labelgate.bundle.cli
    assert "LABELGATE_DEBUG" in runner.invoke(app, ["--help"]).output


def test_check_config_names_a_missing_file_plainly_and_explains_its_warnings(tmp_path: Any) -> None:
    """Found by a first-user review: Python's "[Errno 2] ...: '<path>'" text, and a bare
    ``dev_key_trusted`` line on stderr before it with nothing to say what it meant."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    dev_keys = repo / "deploy" / "quickstart" / "dev-keys"
    missing = tmp_path / "catalog.json"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"policy: {{dir: {repo / 'rego'}}}\nclassification: {{catalog_file: {missing}}}\n"
        "masking: {hash_key: test-insecure-hash-key-0123456789}\n"
        f"auth: {{jwt: {{trust_dev_key: true, dev_keys_dir: {dev_keys}}}}}\n"
    )
    result = runner.invoke(app, ["serve", "--config", str(config), "--check-config"])
    assert result.exit_code == 2, result.output
    assert f"cannot read catalog file {missing}: No such file or directory" in result.output
    assert "[Errno" not in result.output
    problem = next(line for line in result.output.splitlines() if "cannot read catalog file" in line)
    assert problem.endswith(")") and problem.rsplit("(", 1)[1].rstrip(")").isupper(), "no reason code"
    lines = result.output.splitlines()
    assert "dev_key_trusted" not in lines, result.output
    assert f"{config}: warning: dev_key_trusted: INSECURE: anyone with the repository can mint tokens" in (
        result.output
    )


AUDIT_OFF = (
    "warning: audit_off: audit.socket is not set: calls are released with structured logs only, "
    "no durable audit record"
)
RECORDING_OFF = (
    "warning: recording_off: no recording section (recording.dir or recording.postgres_dsn): "
    "sessions are not recorded"
)


def checkable_config(tmp_path: Any, extra: str = "") -> Any:
    """A config ``serve --check-config`` finds nothing wrong with, plus ``extra`` (YAML)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    jwks = repo / "deploy" / "quickstart" / "dev-keys" / "jwks.json"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"policy: {{dir: {repo / 'rego'}}}\n"
        f"classification: {{catalog_file: {repo / 'rego/labelgate/catalog/data.json'}}}\n"
        "masking: {hash_key: test-insecure-hash-key-0123456789}\n"
        f"auth: {{jwt: {{issuer: https://idp.test/, audience: labelgate, jwks_file: {jwks}}}}}\n" + extra
    )
    return config


def test_check_config_warns_when_calls_are_neither_audited_nor_recorded(tmp_path: Any) -> None:
    """Found by review: the image's default config (no audit writer, no recording) released
    data with no audit record, and ``--check-config`` said OK and nothing else. Still OK
    (exit 0): audit and recording are optional, the operator is told."""
    config = checkable_config(tmp_path)
    result = runner.invoke(app, ["serve", "--config", str(config), "--check-config"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"{config}: {AUDIT_OFF}" in lines, result.output
    assert f"{config}: {RECORDING_OFF}" in lines, result.output
    assert lines[-1] == f"{config}: OK"


def test_check_config_says_nothing_of_audit_or_recording_when_both_are_on(tmp_path: Any) -> None:
    extra = f"audit: {{socket: {tmp_path / 'audit.sock'}}}\nrecording: {{dir: {tmp_path / 'sessions'}}}\n"
    config = checkable_config(tmp_path, extra)
    result = runner.invoke(app, ["serve", "--config", str(config), "--check-config"])
    assert result.exit_code == 0, result.output
    assert "audit_off" not in result.output and "recording_off" not in result.output, result.output
    assert result.output.splitlines()[-1] == f"{config}: OK"


def test_check_config_loads_none_of_the_gateway(tmp_path: Any) -> None:
    """What ``--check-config`` prints it finds from the settings (``startup_problems``,
    ``startup_notes``): the gateway's server, and the gRPC and web stacks it brings (1.8 s,
    some 750 modules), are not loaded to say it."""
    import subprocess
    import sys

    config = checkable_config(tmp_path)
    script = (
        "import sys\n"
        "from labelgate.cli import app\n"
        "try:\n"
        f"    app(['serve', '--config', {str(config)!r}, '--check-config'])\n"
        "except SystemExit as stop:\n"
        "    assert not stop.code, stop.code\n"
        "print(sorted(name for name in sys.modules if name.startswith('labelgate.gateway')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"{config}: OK" in done.stdout.splitlines(), done.stdout
    assert done.stdout.splitlines()[-1] == "[]", done.stdout
    assert f"{config}: {AUDIT_OFF}" in done.stderr.splitlines(), done.stderr
