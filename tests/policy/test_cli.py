"""`labelgate policy eval` end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import ConfigError, InvalidInput, PolicyUnavailable
from labelgate.policy.cli import evaluate
from labelgate.policy.contract import build_input
from tests.policy.conftest import VALID_RESULT, opa, result_rule, write_policy
from tests.support.procs import REPO, free_port, labelgate_command

POLICY = result_rule(VALID_RESULT, 'input.subject.id == "alice"') + "\nsubject_known if input.subject.id\n"
# trace() feeds OPA's explain=notes; rego-cpp 1.5.2 has no trace builtin, so OPA only.
TRACING_POLICY = result_rule(VALID_RESULT, 'input.subject.id == "alice"\n\ttrace("subject is alice")')


def valid_input(subject_id: str = "alice") -> dict[str, Any]:
    return build_input(
        phase="request",
        subject={"id": subject_id, "groups": ["analysts"], "auth": "jwt"},
        request={"service": "s", "method": "/s/M", "model": "customer-profile", "requested_outputs": []},
        fields=[{"path": "outputs.name", "labels": ["internal"], "sources": {"internal": ["catalog"]}}],
        approval=None,
        time_ns=5,
    )


def run(tmp_path: Path, doc: Any, *args: str, raw: str | None = None) -> subprocess.CompletedProcess[str]:
    input_file = tmp_path / "input.json"
    input_file.write_text(raw if raw is not None else json.dumps(doc))
    return subprocess.run(
        labelgate_command("policy", "eval", "--input", str(input_file), *args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policy", POLICY)


def test_embedded_prints_the_validated_decision(tmp_path: Path, policy: Path) -> None:
    done = run(tmp_path, valid_input(), "--policy-dir", str(policy), "--explain")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["result"] == VALID_RESULT
    assert output["provenance"]["engine"] == "embedded"
    assert len(output["provenance"]["revision"]) == 64
    assert output["provenance"]["fail_reason"] is None
    assert output["explanation"]["matched"]["subject_known"] is True
    assert "result" in output["explanation"]["matched"]


def test_embedded_with_the_real_policy_pack(tmp_path: Path) -> None:
    done = run(tmp_path, valid_input())  # default --policy-dir rego, run from the repository
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["allow"] is True and result["mask"] == []  # analysts see internal data


def test_opa_with_explanation(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "tracing", TRACING_POLICY)
    with opa(tmp_path, policy, args=("--set", "decision_logs.console=true")) as (url, _):
        done = run(tmp_path, valid_input(), "--engine", "opa", "--opa-url", url, "--explain")
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["result"] == VALID_RESULT
    assert output["provenance"]["engine"] == "opa" and output["provenance"]["decision_id"]
    assert any("data.labelgate.decision.result" in line for line in output["explanation"]["full"])
    assert any("subject is alice" in line for line in output["explanation"]["notes"])


def test_opa_down_is_a_printed_deny_and_exit_1(tmp_path: Path) -> None:
    done = run(tmp_path, valid_input(), "--engine", "opa", "--opa-url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    output = json.loads(done.stdout)
    assert output["result"]["allow"] is False
    assert output["provenance"]["fail_reason"] == "POLICY_UNAVAILABLE"


def test_invalid_json_exits_2_with_a_clear_message(tmp_path: Path, policy: Path) -> None:
    done = run(tmp_path, None, "--policy-dir", str(policy), raw='{"version": "labelgate.v1",')
    assert done.returncode == 2
    assert done.stdout == ""
    assert "is not valid JSON" in done.stderr and "line 1" in done.stderr and "INPUT_INVALID" in done.stderr


def test_schema_violation_exits_2_naming_the_path(tmp_path: Path, policy: Path) -> None:
    doc = valid_input()
    doc["fields"][0]["labels"] = ["top-secret"]
    done = run(tmp_path, doc, "--policy-dir", str(policy))
    assert done.returncode == 2
    assert "input.fields[0].labels[0]" in done.stderr and "INPUT_INVALID" in done.stderr


# In process from here on: the same function the command calls, without a process start.


def test_an_undecided_input_prints_the_deny_and_raises(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps(valid_input("bob")))
    with pytest.raises(PolicyUnavailable) as caught:
        evaluate(input_file, engine="embedded", opa_url="", policy_dir=policy, explain=False)
    assert caught.value.reason == "POLICY_UNDEFINED" and caught.value.exit_code == 1
    assert json.loads(capsys.readouterr().out)["result"]["allow"] is False


def test_missing_input_file_is_invalid_input(tmp_path: Path, policy: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        evaluate(tmp_path / "nope.json", engine="embedded", opa_url="", policy_dir=policy, explain=False)


def test_unknown_engine_is_a_config_error(tmp_path: Path, policy: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        evaluate(tmp_path / "input.json", engine="regorus", opa_url="", policy_dir=policy, explain=False)
    assert caught.value.reason == "ENGINE_UNKNOWN" and caught.value.exit_code == 2


# -- labelgate policy impact: the window and the input sample ------------------------------
@pytest.mark.parametrize("text", ["nan", "NaNh", "-nan", "inf", "infd", "1e400", "1e308w", "0", "-1h"])
def test_since_is_only_a_finite_positive_duration(text: str) -> None:
    """``nan`` once bound ``last_seen >= NaN`` (NULL to SQLite): nothing replayed, "no changes"."""
    from labelgate.policy.cli import parse_since

    with pytest.raises(ConfigError, match="--since"):
        parse_since(text)


def test_since_takes_the_usual_durations() -> None:
    from labelgate.policy.cli import parse_since

    assert [parse_since(t) for t in ("24h", "30m", "7d", "2w", "3600s", "90", "all", None)] == [
        86400, 1800, 604800, 1209600, 3600, 90, None, None
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("5", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ("[]", "not a JSON object"),
        ('{"input": {}, "seen": "x"}', "seen"),
        ('{"input": {}, "seen": -1000}', "seen"),
        ('{"input": {}, "seen": 0}', "seen"),
        ('{"input": {}, "seen": true}', "seen"),
        ('{"input": {}, "seen": 1.5}', "seen"),
        ('{"input": 5}', "not a JSON input"),
    ],
)
def test_an_inputs_line_that_is_not_an_input_is_named(tmp_path: Path, line: str, says: str) -> None:
    from labelgate.policy.cli import load_inputs

    sample = tmp_path / "inputs.jsonl"
    sample.write_text(json.dumps(valid_input()) + "\n" + line + "\n")
    with pytest.raises(InvalidInput, match=f"inputs.jsonl:2: .*{says}") as raised:
        load_inputs(sample, None)
    assert raised.value.reason == "INPUT_INVALID"


def test_a_replay_of_no_input_says_so_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labelgate.policy.cli import impact

    empty = tmp_path / "inputs.jsonl"
    empty.write_text("")
    rego = REPO / "rego"
    for output in ("table", "markdown", "json"):
        code = impact(
            candidate=rego, current=rego, inputs=empty, since=None, engine="embedded", output=output
        )
        out, err = capsys.readouterr()
        assert code == 0
        assert "no decision inputs were replayed" in err, (output, err)
        assert "no changes" not in out.lower(), (output, out)
        if output == "json":
            assert json.loads(out)["warnings"], out
