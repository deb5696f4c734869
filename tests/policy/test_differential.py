"""The differential test: OPA and the in-process engines (rego-cpp, OPA's Wasm target) must
decide identically.

Over 500 inputs, generated deterministically (seeded): every group combination, both
phases, approvals none/granted (with and without approvers, self-approval), requested
outputs empty / naming outputs / naming restricted or unknown outputs, multi-label fields,
detector span fields (``outputs.notes{us_ssn}``), nested JSON paths, generic-message
fields, random extra attributes and paths, and malformed inputs. Each goes to a real
``opa run --server`` with rego/ loaded, to EmbeddedEngine(rego/) and to WasmEngine(rego/);
the validated results must be the same JSON, byte for byte (canonical form: sorted keys).
A planted divergence (a Wasm result off by one character) must make the comparison fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelgate.errors import InvalidInput
from labelgate.policy.contract import Decision, build_input, validate_input
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.opa import OpaEngine
from labelgate.policy.wasm import WasmEngine
from tests.policy.conftest import REGO, opa
from tests.support.procs import opa_binary

# LABELGATE_DIFF_REGO=<folder> compares the engines on another policy folder (e.g. a draft).
POLICY_DIR = Path(os.environ.get("LABELGATE_DIFF_REGO") or REGO)
SEED = 20_260_706
LABELS = ["public", "internal", "confidential", "restricted"]
GROUPS = ["analysts", "data-stewards", "break-glass", "security", "data-owners"]
# Every combination of the known groups (32), plus a group no table mentions.
GROUP_SETS = [list(c) for n in range(len(GROUPS) + 1) for c in itertools.combinations(GROUPS, n)] + [
    ["interns"],
    ["interns", "analysts"],
]
CUSTOMER_OUTPUTS = {
    "customer_id": ["public"],
    "segment": ["public"],
    "name": ["internal"],
    "email": ["internal"],
    "risk_score": ["internal"],
    "notes": ["internal"],
    "ssn": ["confidential"],
    "card_number": ["confidential"],
    "account_secret": ["restricted"],
}
DETECTORS = ["us_ssn", "credit_card", "email", "iban", "ip_address"]
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _field(path: str, labels: list[str], rng: random.Random) -> dict[str, Any]:
    sources = {
        label: [rng.choice(["catalog", "backend", "default", f"detector:{rng.choice(DETECTORS)}"])]
        for label in labels
    }
    return {"path": path, "labels": labels, "sources": sources}


def _random_labels(rng: random.Random) -> list[str]:
    return sorted(rng.sample(LABELS, rng.choice([1, 1, 1, 2, 3])), key=LABELS.index)


def _fields(rng: random.Random, model: str) -> list[dict[str, Any]]:
    if model == "":
        # A generic gRPC message: dotted field paths.
        names = ["customer.notes", "customer.email", "customer.address.street", "account.secret", "id"]
        return [_field(p, _random_labels(rng), rng) for p in rng.sample(names, rng.randint(0, len(names)))]
    if model == "sentiment":
        return [_field(f"outputs.{n}", ["public"], rng) for n in ("label", "score")[: rng.randint(0, 2)]]
    chosen = rng.sample(sorted(CUSTOMER_OUTPUTS), rng.randint(0, len(CUSTOMER_OUTPUTS)))
    fields = [_field(f"outputs.{name}", list(CUSTOMER_OUTPUTS[name]), rng) for name in chosen]
    extras = [
        lambda: _field(f"outputs.notes{{{rng.choice(DETECTORS)}}}", [rng.choice(LABELS[1:])], rng),
        lambda: _field("outputs.profile[].address.street", _random_labels(rng), rng),
        lambda: _field("outputs.profile[].contact.phone.mobile", ["confidential"], rng),
        lambda: _field(f"outputs.extra_{rng.randint(0, 99)}", _random_labels(rng), rng),
        lambda: _field("outputs.name", ["internal", "confidential"], rng),  # a path listed twice
    ]
    for make in rng.sample(extras, rng.randint(0, len(extras))):
        fields.append(make())
    rng.shuffle(fields)
    return fields


def _requested(rng: random.Random, mode: str, fields: list[dict[str, Any]]) -> list[str]:
    if mode == "all":
        return []
    names = sorted({f["path"].split(".")[1].split("{")[0].split("[")[0] for f in fields if "." in f["path"]})
    if mode == "restricted":
        return sorted({*rng.sample(names, min(len(names), 2)), "account_secret"})
    if mode == "unknown":
        return ["no_such_output", *rng.sample(names, min(len(names), 1))]
    return rng.sample(names, rng.randint(1, len(names))) if names else ["customer_id"]


def _approval(rng: random.Random, kind: str, subject_id: str) -> dict[str, Any] | None:
    if kind == "none":
        return None
    approval: dict[str, Any] = {"state": "granted", "grant_id": f"g-{rng.randint(0, 9999)}"}
    approvers = {
        "granted": None,
        "one": ["olivia"],
        "two": ["olivia", "sam"],
        "self": [subject_id],
        "self-and-one": [subject_id, "olivia"],
    }[kind]
    if approvers is not None:
        approval["approved_by"] = approvers
    return approval


def well_formed(rng: random.Random, groups: list[str], phase: str, approval: str, requested: str) -> dict:
    model = rng.choices(["customer-profile", "sentiment", ""], weights=[8, 1, 1])[0]
    fields = _fields(rng, model)
    subject_id = rng.choice(["alice", "CN=steve,O=Example", "spiffe://example.org/bot", "bob@example.com"])
    subject: dict[str, Any] = {
        "id": subject_id,
        "groups": groups,
        "auth": rng.choice(["mtls", "jwt", "api_key"]),
    }
    if rng.random() < 0.3:
        subject["attributes"] = {"team": rng.choice(["risk", "fraud"]), "level": rng.randint(0, 5)}
        if rng.random() < 0.5:  # a user token on a workload certificate: the approver "olivia"
            subject["attributes"]["also_verified"] = {"jwt": "olivia"}
    request: dict[str, Any] = {
        "service": "inference.GRPCInferenceService" if model else "labelgate.v1.demo.CustomerService",
        "method": INFER_METHOD if model else "/labelgate.v1.demo.CustomerService/Get",
        "model": model,
        "requested_outputs": _requested(rng, requested, fields) if model else [],
        "request_id": f"req-{rng.randint(0, 10**6)}",
    }
    if rng.random() < 0.3:
        request["model_version"] = str(rng.randint(1, 3))
    if rng.random() < 0.1:
        request["opaque"] = rng.random() < 0.5
    return build_input(
        phase=phase,
        subject=subject,
        request=request,
        fields=fields,
        approval=_approval(rng, approval, subject_id),
        time_ns=rng.randint(0, 2**62),
    )


MALFORMATIONS = [
    lambda d: d.update(subject=None),
    lambda d: d.pop("subject"),
    lambda d: d.update(version="labelgate.v0"),
    lambda d: d.pop("version"),
    lambda d: d.update(phase="reply"),
    lambda d: d.update(fields="not-a-list"),
    lambda d: d.update(fields=[{"path": "", "labels": ["internal"], "sources": {}}]),
    lambda d: d.update(fields=[{"path": "outputs.x", "labels": [], "sources": {}}]),
    lambda d: d.update(fields=[{"path": "outputs.x", "labels": ["top-secret"], "sources": {}}]),
    lambda d: d.update(labels="internal"),
    lambda d: d["subject"].update(groups="analysts") if d["subject"] else None,
    lambda d: d["subject"].update(id="") if d["subject"] else None,
    lambda d: d.update(approval={"state": "maybe"}),
    lambda d: d["approval"].update(approved_by="olivia"),
    lambda d: d["request"].update(requested_outputs="ssn"),
    lambda d: d.pop("context"),
    lambda d: d.clear(),
]


def generate_inputs(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    inputs = []
    # Systematic: every group set x phase x approval, each with a requested-outputs mode.
    for groups, phase, approval in itertools.product(
        GROUP_SETS, ["request", "response"], ["none", "granted"]
    ):
        mode = rng.choice(["all", "named", "restricted", "unknown"])
        inputs.append(well_formed(rng, groups, phase, approval, mode))
    # Random: approvers, modes and group mixes in any combination.
    for _ in range(360):
        inputs.append(
            well_formed(
                rng,
                rng.choice(GROUP_SETS),
                rng.choice(["request", "response"]),
                rng.choice(["none", "granted", "one", "two", "self", "self-and-one"]),
                rng.choice(["all", "named", "restricted", "unknown"]),
            )
        )
    # Malformed: each defect at least twice, on different well-formed bases.
    for malform in MALFORMATIONS * 2:
        doc = well_formed(rng, rng.choice(GROUP_SETS), "response", "none", "all")
        malform(doc)
        inputs.append(doc)
    return inputs


def _schema_valid(doc: dict[str, Any]) -> bool:
    try:
        validate_input(doc)
    except InvalidInput:
        return False
    return True


def canonical(decision: Decision) -> str:
    """What must match: the result object, and for a fail-closed deny the failure class."""
    reason = decision.fail_reason
    if reason is not None and reason.startswith("POLICY_ERROR"):
        reason = "POLICY_ERROR"  # OPA says POLICY_ERROR_500 where rego-cpp says POLICY_ERROR
    return json.dumps({"fail": reason, "result": decision.to_result()}, sort_keys=True)


@pytest.fixture(scope="module")
def plain_opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """OPA with rego/ and no decision logging (it would log every input)."""
    with opa(tmp_path_factory.mktemp("differential"), POLICY_DIR) as (url, _process):
        yield url


def test_the_generator_is_deterministic_and_covers_the_space() -> None:
    inputs = generate_inputs()
    assert len(inputs) >= 500
    assert json.dumps(inputs) == json.dumps(generate_inputs())
    well = [d for d in inputs if _schema_valid(d) and d["subject"] is not None]
    assert 450 <= len(well) < len(inputs)  # mostly well-formed, some malformed
    assert {tuple(d["subject"]["groups"]) for d in well} >= {tuple(g) for g in GROUP_SETS}
    assert {d["phase"] for d in well} == {"request", "response"}
    assert {d["approval"]["state"] for d in well} == {"none", "granted"}
    paths = [f["path"] for d in well if isinstance(d["fields"], list) for f in d["fields"]]
    assert any("{us_ssn}" in p for p in paths) and any("[]." in p for p in paths)
    assert any(len(f["labels"]) > 1 for d in well for f in d["fields"])
    assert any("account_secret" in d["request"]["requested_outputs"] for d in well)
    assert any(
        "olivia" in d["approval"].get("approved_by", [])
        for d in well
        if d["subject"].get("attributes", {}).get("also_verified")
    )


async def _ask_opa(url: str, inputs: list[dict[str, Any]]) -> list[Decision]:
    opa_engine = OpaEngine(url, timeout=30.0, pool_size=16)
    limit = asyncio.Semaphore(16)

    async def ask(doc: dict[str, Any]) -> Decision:
        async with limit:
            return await opa_engine.decide(doc)

    try:
        return list(await asyncio.gather(*(ask(doc) for doc in inputs)))
    finally:
        await opa_engine.close()


@pytest.fixture(scope="module")
def from_opa(plain_opa: str) -> list[Decision]:
    """OPA's decisions on the generated inputs, asked once for every engine compared with it."""
    inputs = generate_inputs()
    decisions = asyncio.run(_ask_opa(plain_opa, inputs))
    # The policy always decides (malformed inputs included): a test where both engines
    # failed the same way would prove nothing.
    undecided = [(doc, d.fail_reason) for doc, d in zip(inputs, decisions, strict=True) if d.failed_closed]
    assert not undecided, f"OPA failed closed on {len(undecided)} inputs, first: {undecided[0]}"
    # Both kinds of outcome were exercised.
    assert {d.allow for d in decisions} == {True, False}
    assert any(d.require_approval for d in decisions) and any(d.masks for d in decisions)
    return decisions


async def _decide_all(engine: EmbeddedEngine, inputs: list[dict[str, Any]]) -> list[Decision]:
    # One engine at a time: on 2 cores they would only slow each other down.
    await engine.start()
    try:
        return list(await asyncio.gather(*(engine.decide(doc) for doc in inputs)))
    finally:
        await engine.close()


def mismatches(
    inputs: list[dict[str, Any]], expected: list[Decision], got: list[Decision]
) -> list[tuple[dict[str, Any], str, str]]:
    return [
        (doc, canonical(a), canonical(b))
        for doc, a, b in zip(inputs, expected, got, strict=True)
        if canonical(a) != canonical(b)
    ]


def _assert_identical(
    inputs: list[dict[str, Any]], expected: list[Decision], got: list[Decision], name: str
) -> None:
    found = mismatches(inputs, expected, got)
    if found:
        report = "\n\n".join(
            f"input: {json.dumps(doc, sort_keys=True)}\nopa:      {a}\n{name}: {b}" for doc, a, b in found[:5]
        )
        pytest.fail(f"{len(found)} of {len(inputs)} inputs decided differently; first 5:\n\n{report}")


async def test_opa_and_embedded_decide_identically(from_opa: list[Decision]) -> None:
    inputs = generate_inputs()
    from_embedded = await _decide_all(EmbeddedEngine(POLICY_DIR, watch_interval=None), inputs)
    _assert_identical(inputs, from_opa, from_embedded, "embedded")


@pytest.fixture
def _opa_for_wasm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())


@pytest.mark.usefixtures("_opa_for_wasm")
async def test_opa_and_wasm_decide_identically(from_opa: list[Decision]) -> None:
    inputs = generate_inputs()
    from_wasm = await _decide_all(WasmEngine(POLICY_DIR, watch_interval=None), inputs)
    assert {d.engine for d in from_wasm} == {"wasm"}
    _assert_identical(inputs, from_opa, from_wasm, "wasm")


@pytest.mark.usefixtures("_opa_for_wasm")
async def test_a_planted_divergence_fails_the_comparison(
    from_opa: list[Decision], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Wasm result off by one character: the comparison must see it, with the input that shows it."""
    import labelgate.policy.wasm_host as host

    real = host.WasmInstance.evaluate
    monkeypatch.setattr(
        host.WasmInstance, "evaluate", lambda self, text: real(self, text).replace(b"(s)", b"s")
    )
    inputs = generate_inputs()
    planted = await _decide_all(WasmEngine(POLICY_DIR, watch_interval=None), inputs)
    found = mismatches(inputs, from_opa, planted)
    masked = [d for d in from_opa if d.allow and d.masks]  # reason "allowed; N field(s) masked"
    assert len(found) >= len(masked) > 0
    assert all("(s)" in a and a != b for _, a, b in found)
    with pytest.raises(
        pytest.fail.Exception, match=f"{len(found)} of {len(inputs)} inputs decided differently"
    ):
        _assert_identical(inputs, from_opa, planted, "wasm")


def dump_inputs(path: Path) -> None:
    """For debugging a mismatch by hand: write the generated inputs as JSON lines."""
    path.write_text("\n".join(json.dumps(doc, sort_keys=True) for doc in generate_inputs()))
