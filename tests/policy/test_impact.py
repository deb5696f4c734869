"""Policy impact (issue 18): decision inputs kept by hash, replayed on a candidate policy.

A recorded workload of every persona goes through a real gateway (``labelgate serve``, the
demo backend, a durable audit writer) with the input store on; a candidate copy of
``rego/`` that unmasks ``confidential`` for ``analysts`` must report exactly those changes,
with counts that match the audit log, on the embedded and the wasm engines; an unchanged
candidate reports nothing and exits 0. The documented CI command (docs/policy-ci.md) runs
against a deliberate edit of this repository's ``rego/``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import shlex
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.calls import Call, CallRecord, Outcome
from labelgate.classify.labels import most_sensitive
from labelgate.cli import app
from labelgate.gateway.record import InputStore, InputStoreRecorder, audit_event, replayable_input
from labelgate.policy.cache import cache_key
from labelgate.policy.cli import replay_report
from labelgate.policy.contract import ApprovalRequirement, DecidedMask, Decision, build_input
from labelgate.policy.impact import (
    ALLOW_TO_DENY,
    APPROVAL_CHANGED,
    CALL,
    MASK_ADDED,
    MASK_CHANGED,
    MASK_REMOVED,
    NEWLY_HELD,
    Replayed,
    compare,
    summarize,
    to_markdown,
)
from tests.bundle.helpers import READER_TOKEN, bundle_server, copy_source, opa_config, opa_with_config
from tests.gateway.expected import CUSTOMER_OUTPUTS, customer_request
from tests.gateway.harness import (
    PERSONAS,
    TokenIssuer,
    audit_records,
    capture_unary,
    gateway_config,
    make_token_issuer,
    run_audit_writer,
    run_backend,
    run_planted_upstream,
    start_gateway,
)
from tests.gateway.planted_upstream import plant_request, unknown
from tests.support.pki import rsa_signing_key
from tests.support.procs import VENV_BIN, wait_until

REPO = Path(__file__).resolve().parents[2]
REGO = REPO / "rego"
DOC = REPO / "docs" / "policy-ci.md"
TYPED = [name for name in CUSTOMER_OUTPUTS if name != "account_secret"]
PARTIAL4 = "partial(keep_last=4) -> (none)"
INFER = "/inference.GRPCInferenceService/ModelInfer"


# --- pure comparison ----------------------------------------------------------------------


def allow(*masks: DecidedMask) -> Decision:
    return Decision(allow=True, reason="ok", masks=masks)


def held(groups: tuple[str, ...] = ("data-owners",), n: int = 1) -> Decision:
    return Decision(allow=False, reason="approval", require_approval=ApprovalRequirement(groups, n, 900, "r"))


def test_compare_names_each_kind_of_change() -> None:
    partial = DecidedMask("outputs.ssn", "partial", {"keep_last": 4})
    assert compare(allow(partial), allow(partial)) == []
    assert [(c.kind, c.field, c.detail) for c in compare(allow(partial), allow())] == [
        (MASK_REMOVED, "outputs.ssn", PARTIAL4)
    ]
    assert [c.kind for c in compare(allow(), allow(partial))] == [MASK_ADDED]
    redact = DecidedMask("outputs.ssn", "redact")
    assert [(c.kind, c.detail) for c in compare(allow(partial), allow(redact))] == [
        (MASK_CHANGED, "partial(keep_last=4) -> redact")
    ]
    assert [(c.kind, c.field) for c in compare(allow(partial), Decision(False, "no"))] == [
        (ALLOW_TO_DENY, CALL)
    ]
    assert [c.kind for c in compare(allow(), held())] == [NEWLY_HELD]
    assert [c.kind for c in compare(held(), held(("security",), 2))] == [APPROVAL_CHANGED]


def test_summarize_groups_by_group_model_and_field_with_counts() -> None:
    def doc(groups: list[str], model: str) -> dict[str, Any]:
        return {"subject": {"id": "x", "groups": groups}, "request": {"model": model}}

    partial = DecidedMask("outputs.ssn", "partial", {"keep_last": 4})
    report = summarize(
        [
            Replayed("b" * 64, 5, doc(["analysts"], "m"), allow(partial), allow()),
            Replayed("a" * 64, 2, doc(["analysts"], "m"), allow(partial), allow()),
            Replayed("c" * 64, 7, doc([], "m"), allow(partial), allow(partial)),
            Replayed("d" * 64, 1, doc([], "m"), Decision.deny("POLICY_RESULT_INVALID"), allow()),
        ]
    )
    assert (report.inputs, report.distinct, report.changed) == (15, 4, 2)
    assert [g.to_json() for g in report.groups] == [
        {
            "kind": MASK_REMOVED,
            "group": "analysts",
            "model": "m",
            "field": "outputs.ssn",
            "detail": PARTIAL4,
            "inputs": 2,
            "calls": 7,
            "example": "a" * 64,
            "labels": [],
        }
    ]
    assert report.errors == [{"hash": "d" * 64, "side": "current", "reason": "POLICY_RESULT_INVALID"}]
    assert "| mask removed | analysts | m | outputs.ssn |" in to_markdown(report)


# --- the store and its recorder -------------------------------------------------------------


def record_with(inputs: list[tuple[str, dict[str, Any]]]) -> CallRecord:
    outcome = Outcome(subject=Subject("ana", ("analysts",)), model="m")
    for phase, doc in inputs:
        outcome.decision_inputs.append((phase, cache_key(doc).hex(), doc))  # type: ignore[union-attr]
    return CallRecord.of(Call("/s/M", "ipv4:1.2.3.4", (), {}, "s1", "r1"), outcome, None)


def analyst_input(request_id: str, model: str = "customer-profile") -> dict[str, Any]:
    return build_input(
        phase="response",
        subject={"id": "jwt:x#ana", "groups": ["analysts"], "auth": "jwt", "attributes": {}},
        request={
            "service": "inference.GRPCInferenceService",
            "method": "/inference.GRPCInferenceService/ModelInfer",
            "model": model,
            "requested_outputs": [],
            "request_id": request_id,
            "session_id": "s",
            "peer": "ipv4:10.0.0.1",
            "digest": "f" * 64,
            "opaque": False,
        },
        fields=[
            {"path": "outputs.ssn", "labels": ["confidential"], "sources": {"confidential": ["catalog"]}}
        ],
        approval=None,
        time_ns=123,
    )


def test_the_store_keeps_each_input_once_by_hash_and_counts_repeats(tmp_path: Path) -> None:
    store = InputStore(tmp_path / "inputs.db", retention_days=1)
    recorder = InputStoreRecorder(store, flush_seconds=0.01)
    first, again, other = analyst_input("r1"), analyst_input("r2"), analyst_input("r3", "other")
    assert cache_key(first) == cache_key(again)

    async def run() -> None:
        for doc in (first, again, again, other):
            await recorder.record(record_with([("response", doc)]))

    asyncio.run(run())
    recorder.close()
    reader = InputStore.open_readonly(tmp_path / "inputs.db")
    rows = list(reader.read())
    reader.close()
    assert sorted(seen for _, seen, _ in rows) == [1, 3]
    for digest, _, stored in rows:
        assert cache_key(stored).hex() == digest  # type: ignore[union-attr]
        assert stored == replayable_input(stored)
        for volatile in ("request_id", "session_id", "digest"):
            assert volatile not in stored["request"]
        assert stored["request"]["peer"] == "ipv4:10.0.0.1"  # a policy may decide on it: kept
        assert "time_ns" not in stored["context"]
    # The audit event carries the hashes, and only them.
    event = audit_event(record_with([("response", first)]))
    assert event["decision_inputs"] == [{"phase": "response", "hash": cache_key(first).hex()}]  # type: ignore[union-attr]
    # Retention: an input not seen within the window is deleted.
    store = InputStore(tmp_path / "inputs.db", retention_days=1)
    assert store.expire(now=__import__("time").time() + 2 * 86400) == 2
    store.close()


def test_the_store_keeps_no_token_claims_and_is_not_world_readable(tmp_path: Path) -> None:
    """Review (thirteenth round): each stored input kept its token's ``jti``, ``iat``, ``exp``
    and ``nbf`` (``replayable_input`` said it kept what ``cache_key`` hashes, which leaves them
    out), in a file created 0644 where recordings are 0640."""
    store = InputStore(tmp_path / "inputs.db")
    recorder = InputStoreRecorder(store, flush_seconds=0.01)
    doc = analyst_input("r1")
    claims = {"jti": "token-id-1", "iat": 1, "exp": 2_000_000_000, "nbf": 1, "department": "risk"}
    doc["subject"]["attributes"] = claims

    async def run() -> None:
        await recorder.record(record_with([("response", doc)]))

    asyncio.run(run())
    recorder.close()
    reader = InputStore.open_readonly(tmp_path / "inputs.db")
    ((_, _, stored),) = list(reader.read())
    reader.close()
    assert stored["subject"]["attributes"] == {"department": "risk"}, "token claims out, the rest kept"
    assert stored == replayable_input(doc)
    assert (tmp_path / "inputs.db").stat().st_mode & 0o777 == 0o640


def test_a_full_queue_drops_inputs_without_failing_the_call(tmp_path: Path) -> None:
    store = InputStore(tmp_path / "inputs.db")
    recorder = InputStoreRecorder(store, queue_size=1, flush_seconds=60)

    async def run() -> None:
        for n in range(5):
            await recorder.record(record_with([("response", analyst_input("r", f"model-{n}"))]))

    asyncio.run(run())
    assert recorder.dropped >= 3
    recorder.close()


# --- a recorded workload through a real gateway ------------------------------------------------


def persona_requests() -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []
    for persona in PERSONAS:
        calls.append((persona, customer_request(list(range(12)))))
        calls.append((persona, customer_request(list(range(6)), TYPED, raw=False)))
        calls.append((persona, customer_request([1, 2], ["customer_id", "account_secret"])))
        calls.append((persona, plant_request(None, model="sentiment", text="great and friendly")))
        calls.append((persona, customer_request(list(range(12)))))  # the same call again: stored once
    return calls


class Workload:
    def __init__(self, directory: Path, store: Path, records: list[dict[str, Any]]) -> None:
        self.directory, self.store, self.records = directory, store, records

    def rows(self) -> list[tuple[str, int, dict[str, Any]]]:
        reader = InputStore.open_readonly(self.store)
        try:
            return list(reader.read())
        finally:
            reader.close()


def audit_hash_counts(records: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(entry["hash"] for r in records for entry in r.get("decision_inputs") or ())


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    directory = tmp_path_factory.mktemp("impact")
    issuer: TokenIssuer = make_token_issuer(directory, rsa_signing_key("idp-impact"))
    store = directory / "inputs" / "decision-inputs.db"
    with (
        run_backend(directory / "backend") as (backend, _),
        run_audit_writer(directory / "audit") as audit,
    ):
        config = gateway_config(
            upstream=backend,
            engine="embedded",
            issuer=issuer,
            audit={"socket": str(audit.socket), "timeout_seconds": 5, "inputs_file": str(store)},
        )
        with start_gateway(config, directory / "gateway") as gateway:
            # One token per persona: its jti and exp are subject attributes, part of the hash.
            headers = {persona: issuer.headers(persona) for persona in PERSONAS}

            async def run() -> None:
                for persona, request in persona_requests():
                    await capture_unary(gateway.address, request, headers[persona])

            asyncio.run(run())
            records = audit_records(audit.log_dir)
            expected = audit_hash_counts(records)

            def stored() -> bool:
                with contextlib.suppress(sqlite3.Error):
                    rows = Workload(directory, store, records).rows()
                    return {h: seen for h, seen, _ in rows} == dict(expected)
                return False

            wait_until(stored, 20, "every decision input in the store")
        yield Workload(directory, store, records)


def test_every_decision_is_recorded_by_hash_and_replayable(workload: Workload) -> None:
    rows = workload.rows()
    counts = audit_hash_counts(workload.records)
    assert sum(counts.values()) > len(rows) > 0  # repeats were stored once
    assert {h: seen for h, seen, _ in rows} == dict(counts)
    for digest, _, stored in rows:
        assert cache_key(stored).hex() == digest  # type: ignore[union-attr]
    assert {g for _, _, s in rows for g in s["subject"]["groups"]} == {
        "analysts",
        "data-stewards",
        "break-glass",
    }
    assert {s["request"]["model"] for _, _, s in rows} == {"customer-profile", "sentiment"}


def candidate_unmasking_confidential_for_analysts(directory: Path) -> Path:
    candidate = directory / "candidate-rego"
    shutil.rmtree(candidate, ignore_errors=True)
    shutil.copytree(REGO, candidate)
    tables = candidate / "labelgate" / "tables" / "data.json"
    data = json.loads(tables.read_text())
    data["labels"]["confidential"]["groups"]["analysts"] = {"see": True}
    tables.write_text(json.dumps(data, indent=2))
    return candidate


def unchanged_candidate(directory: Path) -> Path:
    candidate = directory / "same-rego"
    shutil.rmtree(candidate, ignore_errors=True)
    shutil.copytree(REGO, candidate)
    return candidate


def run_impact(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["policy", "impact", *args])
    return result.exit_code, result.stdout


def asks_for_restricted(doc: dict[str, Any]) -> bool:
    requested = set(doc["request"]["requested_outputs"])
    return any(
        most_sensitive(f["labels"]) == "restricted" and re.split(r"[.\[{]", f["path"])[1] in requested
        for f in doc["fields"]
    )


def expected_changes(workload: Workload) -> dict[tuple[str, str, str], tuple[int, int]]:
    """From the stored inputs and the tables alone: every confidential field an analyst's
    allowed call decides on loses its partial mask. (group, model, field) -> (inputs, calls)."""
    found: dict[tuple[str, str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for _, seen, doc in workload.rows():
        if doc["subject"]["groups"] != ["analysts"] or asks_for_restricted(doc):
            continue  # refused outright (tables: restricted deny_when_requested): no field released
        for field in doc["fields"]:
            if most_sensitive(field["labels"]) == "confidential":
                entry = found["analysts", doc["request"]["model"], field["path"]]
                entry[0] += 1
                entry[1] += seen
    return {key: (n, calls) for key, (n, calls) in found.items()}


@pytest.mark.parametrize("engine", ["embedded", "wasm", "opa"])
def test_unmasking_confidential_for_analysts_reports_exactly_those_changes(
    workload: Workload, engine: str
) -> None:
    candidate = candidate_unmasking_confidential_for_analysts(workload.directory / engine)
    code, out = run_impact(
        "--current", str(REGO), "--candidate", str(candidate), "--inputs", str(workload.store),
        "--engine", engine, "--since", "24h", "--json",
    )  # fmt: skip
    assert code == 3, out
    report = json.loads(out)
    rows = workload.rows()
    assert (report["distinct"], report["inputs"]) == (len(rows), sum(seen for _, seen, _ in rows))
    assert report["errors"] == []
    assert {c["kind"] for c in report["changes"]} == {MASK_REMOVED}
    assert {c["detail"] for c in report["changes"]} == {PARTIAL4}
    got = {(c["group"], c["model"], c["field"]): (c["inputs"], c["calls"]) for c in report["changes"]}
    expected = expected_changes(workload)
    assert got == expected
    assert ("analysts", "customer-profile", "outputs.ssn") in got
    hashes = {h for h, _, _ in rows}
    assert all(c["example"] in hashes for c in report["changes"])
    # A detected JSON leaf keeps its default label (internal, which analysts see) beside it.
    assert all(
        "confidential" in c["labels"] and set(c["labels"]) <= {"confidential", "internal"}
        for c in report["changes"]
    )


@pytest.mark.parametrize("engine", ["embedded", "wasm", "opa"])
def test_an_unchanged_candidate_reports_nothing_and_exits_0(workload: Workload, engine: str) -> None:
    candidate = unchanged_candidate(workload.directory / f"same-{engine}")
    code, out = run_impact(
        "--current",
        str(REGO),
        "--candidate",
        str(candidate),
        "--inputs",
        str(workload.store),
        "--engine",
        engine,
    )
    assert code == 0, out
    assert "no changes" in out


def test_errors_exit_2(workload: Workload, tmp_path: Path) -> None:
    broken = unchanged_candidate(tmp_path)
    (broken / "labelgate" / "decision" / "broken.rego").write_text(
        "package labelgate.decision\n\nresult := {"
    )
    code, _ = run_impact("--candidate", str(broken), "--current", str(REGO), "--inputs", str(workload.store))
    assert code == 2
    code, _ = run_impact("--candidate", str(REGO), "--inputs", str(tmp_path / "missing.db"))
    assert code == 2


def test_the_opa_engine_replays_hundreds_of_inputs_without_failing_closed() -> None:
    """Each policy's ``opa run --server`` answers every request of a long replay (its log
    once filled an unread pipe after about a hundred requests, and then every decision
    timed out)."""
    stored = []
    for n in range(400):
        doc = replayable_input(analyst_input("r", f"model-{n}"))
        stored.append((cache_key(doc).hex(), 1, doc))  # type: ignore[union-attr]
    report = replay_report(REGO, REGO, stored, engine="opa")
    assert (report.distinct, report.changed, report.errors) == (400, 0, [])


# --- the bundle server's decision-log store ---------------------------------------------------------


def test_from_the_bundle_servers_decision_logs_reports_the_same_changes(
    workload: Workload, tmp_path: Path
) -> None:
    """A real OPA follows a bundle server and posts its decision logs there; the recorded
    workload's inputs are asked of OPA as often as the gateway saw them. ``--from`` the
    server's URL (reader token) and ``--from`` its fleet.sqlite3 report what ``--inputs`` does."""
    rows = workload.rows()
    candidate = candidate_unmasking_confidential_for_analysts(tmp_path)
    source = copy_source(tmp_path / "source")
    with bundle_server(tmp_path, source) as server:
        wait_until(lambda: server.status()["revision"] is not None, 60, "the first revision")
        with opa_with_config(tmp_path, opa_config(f"{server.url}/", f"{server.url}/")) as opa:
            wait_until(opa.healthy, 60, "OPA to activate the bundle")
            for _, seen, doc in rows:
                for n in range(seen):  # as the gateway sends them: per-call values included
                    logged = {**doc, "context": {**doc["context"], "time_ns": n + 1}}
                    logged["request"] = {**doc["request"], "request_id": f"r{n}"}
                    opa.decide(logged)
            opa.decide({"not": "a labelgate input"})  # logged too, and never replayed

            def all_logged() -> bool:
                with server.client(READER_TOKEN) as client:
                    inputs = client.get("/decisions/inputs").raise_for_status().json()["inputs"]
                return sum(item["seen"] for item in inputs) == sum(seen for _, seen, _ in rows) + 1

            wait_until(all_logged, 60, "every decision log at the bundle server")
            state = next(tmp_path.glob("state-*/fleet.sqlite3"))
            reports = []
            for origin in ([server.url, "--token", READER_TOKEN], [str(state)]):
                code, out = run_impact(
                    "--current", str(REGO), "--candidate", str(candidate), "--from", *origin, "--json",
                )  # fmt: skip
                assert code == 3, out
                reports.append(json.loads(out))
            code, _ = run_impact(
                "--candidate", str(candidate), "--from", server.url, "--token", "wrong-token"
            )
            assert code == 2
    for report in reports:
        assert (report["distinct"], report["inputs"]) == (len(rows), sum(seen for _, seen, _ in rows))
        got = {(c["group"], c["model"], c["field"]): (c["inputs"], c["calls"]) for c in report["changes"]}
        assert got == expected_changes(workload)


def test_inputs_and_from_are_exclusive(workload: Workload) -> None:
    code, _ = run_impact("--candidate", str(REGO), "--inputs", str(workload.store), "--from", "http://x")
    assert code == 2
    code, _ = run_impact("--candidate", str(REGO))
    assert code == 2


# --- no data values at rest ----------------------------------------------------------------------

PLANTED = ("PlantedKeyQx7", "PlantedValueZk3", "PlantedParamWv9", "PlantedUnknownJm2", "PlantedLabelTy5")


def test_the_store_holds_no_planted_value(tmp_path: Path) -> None:
    """Values planted in every place a reply carries bytes never reach the input store."""
    issuer = make_token_issuer(tmp_path, rsa_signing_key("idp-plant"))
    store = tmp_path / "inputs.db"
    key, value, param, unknown_value, label = PLANTED
    reply = {
        "parameters": {param: param, "triton_final_response": True},
        "outputs": [
            {"name": "text", "datatype": "BYTES", "values": [json.dumps({key: value, "note": value})]},
            {"name": "doc", "datatype": "BYTES", "values": [f"{value} 536-22-8726 ok"]},
        ],
        "unknown": [unknown(99, unknown_value)],
    }
    with run_planted_upstream(tmp_path / "upstream") as (upstream, _):
        config = gateway_config(
            upstream=upstream, engine="embedded", issuer=issuer, audit={"inputs_file": str(store)}
        )
        with start_gateway(config, tmp_path / "gateway") as gateway:

            async def run() -> None:
                for persona in PERSONAS:
                    request = plant_request({"reply": reply}, model="fuzz-uncatalogued", text=label)
                    await capture_unary(gateway.address, request, issuer.headers(persona))

            asyncio.run(run())

            def written() -> bool:
                with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(store)) as db:
                    count = db.execute("SELECT count(*) FROM decision_inputs").fetchone()[0]
                    return count >= 2 * len(PERSONAS)
                return False

            wait_until(written, 20, "decision inputs in the store")
    with contextlib.closing(sqlite3.connect(store)) as db:
        stored = "\n".join(text for (text,) in db.execute("SELECT input FROM decision_inputs"))
    assert '"outputs.text' in stored and "us_ssn" in stored  # the reply's fields were decided on
    at_rest = b"".join(p.read_bytes() for p in tmp_path.glob("inputs.db*")) + stored.encode()
    for planted in PLANTED:
        assert planted.encode() not in at_rest, planted
    assert b"536-22-8726" not in at_rest


# --- the documented CI command --------------------------------------------------------------------


def documented_impact_command() -> list[str]:
    text = DOC.read_text()
    match = re.search(r"<!-- impact-command -->\s*```sh\n(.*?)\n```", text, re.S)
    assert match, "docs/policy-ci.md lost its marked impact command"
    return shlex.split(match.group(1).replace("\\\n", " "))


def test_the_documented_ci_command_reports_a_deliberate_edit(workload: Workload, tmp_path: Path) -> None:
    """The doc's command, run from a checkout-like folder: rego/ as published, candidate-rego/
    the deliberate edit, and a JSON Lines sample of recorded inputs."""
    shutil.copytree(REGO, tmp_path / "rego")
    candidate_unmasking_confidential_for_analysts(tmp_path)
    with (tmp_path / "decision-inputs.jsonl").open("w") as sample:
        for _, seen, doc in workload.rows():
            sample.write(json.dumps({"input": doc, "seen": seen}) + "\n")
    command = documented_impact_command()
    assert command[:3] == [".venv/bin/labelgate", "policy", "impact"]
    command[0] = str(VENV_BIN / "labelgate")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 3, result.stderr
    assert "| mask removed | analysts | customer-profile | outputs.ssn |" in result.stdout
    assert "| allow -> deny" not in result.stdout
    # The unchanged policy against itself: exit 0.
    same = [arg if arg != "candidate-rego" else "rego" for arg in command]
    assert subprocess.run(same, cwd=tmp_path, capture_output=True, timeout=300, check=False).returncode == 0


# --- approved calls -------------------------------------------------------------------------


class GrantAtOnce:
    """An approver who grants at once: the pipeline decides again under the grant."""

    async def hold(
        self, call: Any, subject: Any, policy_input: Any, decision: Decision, again: Any
    ) -> Decision:
        return await again(
            {"state": "granted", "grant_id": "grant-1", "approved_by": ["jwt:labelgate-dev#olga"]}
        )


async def approved_steward_call() -> CallRecord:
    from labelgate.auth import mint_dev_token
    from labelgate.config import load_settings
    from labelgate.gateway.server import build_engine, build_pipeline
    from labelgate.oip.tensor import Tensor
    from labelgate.oip.tensors import encode_outputs
    from tests.gateway.test_pipeline import ListRecorder, request

    keys = REPO / "deploy" / "quickstart" / "dev-keys"
    settings = load_settings(
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(keys)}},
        policy={"dir": str(REGO)},
        classification={"catalog_file": str(REGO / "labelgate" / "catalog" / "data.json")},
        masking={"hash_key": "impact-test-hash-key-0123456789"},
    )
    engine = build_engine(settings)
    await engine.start()
    pipeline = build_pipeline(settings, engine, GrantAtOnce())  # type: ignore[arg-type]
    recorder = pipeline.recorder = ListRecorder([])  # type: ignore[arg-type]
    token = mint_dev_token("sam", ["data-stewards"], 300, keys)
    call = Call(INFER, "ipv4:127.0.0.1:1", (("authorization", f"Bearer {token}"),), {}, "s", "r")

    async def upstream(sent: Any) -> Any:
        reply = pb.ModelInferResponse(model_name="customer-profile")
        secret = Tensor("account_secret", "BYTES", [1], [b"sk_live_topsecret"])
        encode_outputs(reply, [Tensor("customer_id", "INT64", [1], [7]), secret], raw=True)
        return reply

    try:
        await pipeline.infer(call, request(), upstream)
    finally:
        await engine.close()
    (record,) = recorder.records
    return record


def test_impact_replays_what_approved_callers_were_released_under(tmp_path: Path) -> None:
    # An approved call kept only its held inputs (approval: none), so a candidate changing
    # what a grant releases was reported as affecting nobody approved (found by review).
    record = asyncio.run(approved_steward_call())
    assert [doc["approval"]["state"] for _, _, doc in record.decision_inputs].count("granted") >= 1
    candidate = tmp_path / "candidate-rego"
    shutil.copytree(REGO, candidate)
    tables = candidate / "labelgate" / "tables" / "data.json"
    data = json.loads(tables.read_text())
    data["labels"]["restricted"]["default"]["mask"] = {"strategy": "redact", "params": {}}
    tables.write_text(json.dumps(data, indent=2))
    stored = [(digest, 1, replayable_input(doc)) for _, digest, doc in record.decision_inputs]
    report = replay_report(REGO, candidate, stored, engine="embedded")
    changed = {(group.kind, group.group, group.field) for group in report.groups}
    assert (MASK_CHANGED, "data-stewards", "outputs.account_secret") in changed
