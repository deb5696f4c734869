"""The default Rego policy pack against the labelgate.v1 contract, with both real engines.

Each example input in proto/labelgate/v1/schema/examples/ is evaluated by the pinned `opa`
binary; the result must validate against result.json and equal the example's
`*.expected.json`. The same inputs (and a generated sweep over personas, labels, phases and
approval states) must give the same JSON from regopy (rego-cpp), the in-process engine:
same keys, values, number types and mask order.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from regopy import Bundle, Interpreter

from tests.support.procs import opa_binary

REPO = Path(__file__).resolve().parents[2]
REGO = REPO / "rego"
SCHEMA = REPO / "proto" / "labelgate" / "v1" / "schema"
EXAMPLES = SCHEMA / "examples"
README = SCHEMA / "README.md"
QUERY = "data.labelgate.decision.result"

EXAMPLE_INPUTS = sorted(p for p in EXAMPLES.glob("*.json") if not p.name.endswith(".expected.json"))
WELL_FORMED = [p for p in EXAMPLE_INPUTS if not p.name.startswith("malformed-")]
MALFORMED = [p for p in EXAMPLE_INPUTS if p.name.startswith("malformed-")]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


INPUT_SCHEMA = _validator("input.json")
RESULT_SCHEMA = _validator("result.json")


def canonical(value: Any) -> str:
    """One spelling per JSON value, so 60 and 60.0 or reordered keys cannot hide a difference."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def opa_eval(input_path: Path) -> Any:
    completed = subprocess.run(
        [opa_binary(), "eval", "--format", "json", "-d", str(REGO), "-i", str(input_path), QUERY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    (result,) = json.loads(completed.stdout)["result"]
    return result["expressions"][0]["value"]


def opa_eval_many(inputs: list[Any], tmp_path: Path) -> list[Any]:
    """Evaluate many inputs in one `opa eval` process (one process per input is slow)."""
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"cases": inputs}))
    query = f"[r | some c in input.cases; r := {QUERY} with input as c]"
    completed = subprocess.run(
        [opa_binary(), "eval", "--format", "json", "-d", str(REGO), "-i", str(batch), query],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    (result,) = json.loads(completed.stdout)["result"]
    return result["expressions"][0]["value"]


def policy_data() -> dict[str, Any]:
    """Every JSON file under rego/ at its directory path, as `opa run rego/` loads it.

    regopy's add_data does not deep-merge separate documents, so they are merged here first.
    """
    merged: dict[str, Any] = {}
    for path in sorted(REGO.rglob("*.json")):
        *parents, leaf = path.relative_to(REGO).parent.parts
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        assert leaf not in node, f"two JSON documents for one data path: {path}"
        node[leaf] = json.loads(path.read_text())
    return merged


@functools.cache
def regopy_engine() -> tuple[Interpreter, Bundle]:
    """One interpreter with the policy pack loaded and compiled once (build + query_bundle)."""
    rego = Interpreter()
    for path in sorted(REGO.rglob("*.rego")):
        if not path.name.endswith("_test.rego"):
            rego.add_module(str(path.relative_to(REGO)), path.read_text())
    rego.add_data_json(json.dumps(policy_data()))
    return rego, rego.build(QUERY)


def regopy_eval(policy_input: Any, compiled: bool = True) -> Any:
    rego, bundle = regopy_engine()
    # set_input_term with JSON text: regopy 1.5.2's set_input(dict) does not escape quotes
    # inside strings, which corrupts the output JSON.
    rego.set_input_term(json.dumps(policy_input))
    output = str(rego.query_bundle(bundle) if compiled else rego.query(QUERY))
    assert output != "undefined", "regopy left the result undefined"
    return json.loads(output)["expressions"][0]


def test_examples_exist_with_expectations() -> None:
    assert len(WELL_FORMED) >= 10
    assert len(MALFORMED) >= 2
    for path in EXAMPLE_INPUTS:
        assert path.with_suffix(".expected.json").exists(), f"{path.name} has no .expected.json"


@pytest.mark.parametrize("input_path", WELL_FORMED, ids=lambda p: p.stem)
def test_example_input_matches_input_schema(input_path: Path) -> None:
    errors = list(INPUT_SCHEMA.iter_errors(json.loads(input_path.read_text())))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("input_path", MALFORMED, ids=lambda p: p.stem)
def test_malformed_example_is_denied_as_malformed(input_path: Path) -> None:
    # input.json allows a null subject (hand-written inputs), so "malformed" is the policy's
    # verdict, not necessarily the schema's.
    result = opa_eval(input_path)
    assert result["allow"] is False
    assert result["require_approval"] is None
    assert result["reason"].startswith("denied: malformed policy input: ")


@pytest.mark.parametrize("input_path", EXAMPLE_INPUTS, ids=lambda p: p.stem)
def test_opa_result_is_valid_and_expected(input_path: Path) -> None:
    result = opa_eval(input_path)
    RESULT_SCHEMA.validate(result)
    expected = json.loads(input_path.with_suffix(".expected.json").read_text())
    RESULT_SCHEMA.validate(expected)
    assert result == expected


@pytest.mark.parametrize("input_path", EXAMPLE_INPUTS, ids=lambda p: p.stem)
def test_regopy_gives_identical_json(input_path: Path) -> None:
    policy_input = json.loads(input_path.read_text())
    expected = canonical(opa_eval(input_path))
    assert canonical(regopy_eval(policy_input, compiled=True)) == expected
    assert canonical(regopy_eval(policy_input, compiled=False)) == expected


def _field(path: str, labels: list[str]) -> dict[str, Any]:
    return {"path": path, "labels": labels, "sources": {label: ["catalog"] for label in labels}}


def sweep_inputs() -> list[Any]:
    """Personas x label sets x phases x approvals x by-name requests, plus malformed inputs."""
    base = json.loads((EXAMPLES / "analyst-response.json").read_text())
    group_sets = [[], ["analysts"], ["data-stewards"], ["break-glass"], ["analysts", "data-stewards"]]
    group_sets.append(["data-stewards", "break-glass"])
    label_sets = [["public"], ["internal"], ["confidential"], ["restricted"], ["internal", "confidential"]]
    label_sets.append(["top-secret"])
    approvals = [
        {"state": "none"},
        {"state": "granted"},
        {"state": "granted", "approved_by": ["approver-1"]},
        {"state": "granted", "approved_by": ["approver-1", "approver-2"]},
    ]
    cases = []
    # The rules are the same in both phases, so phases alternate instead of doubling the sweep.
    combinations = itertools.product(group_sets, label_sets, approvals, [[], ["x"]])
    for index, (groups, labels, approval, requested) in enumerate(combinations):
        phase = ("request", "response")[index % 2]
        fields = [
            _field("outputs.x", labels),
            _field("outputs.y", ["public"]),
            _field("outputs.z{d}", labels),
        ]
        cases.append(
            {
                **base,
                "phase": phase,
                "subject": {**base["subject"], "groups": groups},
                "request": {**base["request"], "requested_outputs": requested},
                "fields": fields,
                "approval": approval,
            }
        )
    # Strings that need escaping in JSON, in paths and in an output name requested by name.
    odd = 'say "hi" \\ caf\u00e9'
    odd_fields = [_field(f"outputs.{odd}", ["restricted"]), _field(f"outputs.n[].{odd}", ["confidential"])]
    cases += [
        {**base, "fields": odd_fields},
        {**base, "fields": odd_fields, "request": {**base["request"], "requested_outputs": [odd]}},
        {**base, "request": {**base["request"], "opaque": True}},
        {**base, "subject": None},
        {**base, "fields": "outputs.x"},
        {**base, "fields": [{"path": "", "labels": []}, {}]},
        {**base, "approval": {"state": "maybe"}},
        {k: v for k, v in base.items() if k != "phase"},
        "not an object",
    ]
    return cases


def test_both_engines_agree_on_a_sweep(tmp_path: Path) -> None:
    cases = sweep_inputs()
    opa_results = opa_eval_many(cases, tmp_path)
    assert len(opa_results) == len(cases)
    mismatches = []
    for case, opa_result in zip(cases, opa_results, strict=True):
        RESULT_SCHEMA.validate(opa_result)
        regopy_result = regopy_eval(case)
        if canonical(regopy_result) != canonical(opa_result):
            mismatches.append({"input": case, "opa": opa_result, "regopy": regopy_result})
    assert not mismatches, json.dumps(mismatches[:3], indent=2)
    # The sweep exercises every kind of decision, not just one.
    kinds = {(r["allow"], r["require_approval"] is not None, bool(r["mask"])) for r in opa_results}
    assert kinds == {(True, False, False), (True, False, True), (False, True, False), (False, False, False)}


def readme_examples() -> dict[str, tuple[Any, Any]]:
    """`<!-- example: NAME -->` followed by two json blocks (input, result) in README.md."""
    text = README.read_text()
    pattern = re.compile(r"<!-- example: (\S+) -->.*?```json\n(.*?)```.*?```json\n(.*?)```", re.S)
    return {m[1]: (json.loads(m[2]), json.loads(m[3])) for m in pattern.finditer(text)}


def test_readme_shows_every_example_as_it_is() -> None:
    shown = readme_examples()
    assert sorted(shown) == sorted(p.stem for p in EXAMPLE_INPUTS)
    for path in EXAMPLE_INPUTS:
        shown_input, shown_result = shown[path.stem]
        assert shown_input == json.loads(path.read_text()), path.name
        assert shown_result == json.loads(path.with_suffix(".expected.json").read_text()), path.name
