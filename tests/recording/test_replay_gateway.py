"""Recordings go through policy, end to end: a real ``labelgate serve`` (embedded engine) in
front of the real demo backend delivers clear SSNs to a cleared caller and records them; an
auditor then reads the recording on the gateway's own session page (HTTP) and with
``labelgate sessions show``, and sees the policy's masks, never the delivered values. A viewer
the policy denies sees none of the values, and an engine that cannot be reached fails closed.

The gateway's policy pack is the repository's with one table edit: data stewards see
confidential data in clear without an approval, so a steward's call delivers real SSNs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.approvals.web import issue_session
from labelgate.auth import Subject, mint_dev_token
from labelgate.demo.data import customer
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs
from labelgate.recording.cli import sessions_app
from labelgate.recording.entries import decode_message, recording_key
from tests.support.procs import REPO, free_port, labelgate_command, running, wait_until

IDS = [1, 2]
SESSION_KEY = "replay-gateway-session-key-0123456789abcdef"


@dataclass
class Served:
    grpc: str
    admin: str
    config: Path
    sessions: Path


def clear_for_stewards(folder: Path) -> Path:
    """The repository's pack, with confidential in clear for data stewards (no approval)."""
    pack = folder / "rego"
    shutil.copytree(REPO / "rego", pack, ignore=shutil.ignore_patterns("*_test.rego"))
    tables_file = pack / "labelgate/tables/data.json"
    tables = json.loads(tables_file.read_text())
    tables["labels"]["confidential"]["groups"]["data-stewards"] = {"see": True}
    tables_file.write_text(json.dumps(tables))
    return pack


def write_config(folder: Path, backend: str, **overrides: Any) -> tuple[Path, int, int]:
    port, admin_port = free_port(), free_port()
    pack = folder / "rego"
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin_port}",
        "upstream": {"address": backend},
        "engine": "embedded",
        "policy": {"dir": str(pack)},
        "classification": {"catalog_file": str(pack / "labelgate/catalog/data.json")},
        "masking": {"hash_key": "replay-gateway-hash-key-0123"},
        "auth": {"jwt": {"trust_dev_key": True}},
        "approvals": {"sqlite_file": str(folder / "approvals.db"), "viewer_groups": ["auditors", "ops"]},
        "admin": {"session_key": SESSION_KEY},
        "recording": {"dir": str(folder / "sessions")},
        **overrides,
    }
    path = folder / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port, admin_port


@pytest.fixture
def served(tmp_path: Path, demo_backend: str) -> Iterator[Served]:
    clear_for_stewards(tmp_path)
    (tmp_path / "sessions").mkdir()
    config, port, admin_port = write_config(tmp_path, demo_backend)
    admin = f"http://127.0.0.1:{admin_port}"
    with running(labelgate_command("serve", "--config", str(config)), tmp_path / "gateway.log", port=port):
        wait_until(lambda: _healthy(admin), 30, "the admin listener")
        yield Served(f"127.0.0.1:{port}", admin, config, tmp_path / "sessions")


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def steward_call(address: str, session: str) -> pb.ModelInferResponse:
    request = pb.ModelInferRequest(model_name="customer-profile")
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[len(IDS)])
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(IDS)], IDS)], raw=True)
    metadata = (
        ("authorization", f"Bearer {mint_dev_token('stella', ['data-stewards'], 300)}"),
        ("x-labelgate-session", session),
    )
    with grpc.insecure_channel(address) as channel:
        response: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=metadata, timeout=15
        )
    return response


def recordings(folder: Path) -> str:
    return "".join(path.read_text() for path in folder.glob("*.jsonl"))


def page(served: Served, session_key: str, *groups: str) -> httpx.Response:
    person = Subject.proven("jwt", "ada", issuer="labelgate-dev", groups=groups)
    cookie = issue_session(SimpleNamespace(session_key=SESSION_KEY.encode()), person, time.time() + 600)
    return httpx.get(
        f"{served.admin}/inbox/sessions/{quote(session_key, safe='')}",
        headers={"cookie": f"labelgate_session={cookie}"},
        timeout=30,
    )


def show(config: Path, session_key: str, *groups: str) -> Result:
    token = mint_dev_token("ada", list(groups), 300)
    args = ["show", session_key, "--config", str(config), "--token", token, "--json"]
    return CliRunner().invoke(sessions_app, args, env={"COLUMNS": "200"})


def shown_values(result: Result) -> dict[str, list[Any]]:
    assert result.exit_code == 0, result.output
    (entry,) = [json.loads(line) for line in result.stdout.splitlines()]
    message = decode_message(entry["response"])
    assert message is not None, entry["replay"]
    return {t.name: t.values for t in decode_outputs(message)}  # type: ignore[arg-type]


def test_an_auditor_sees_the_policy_masks_of_a_clear_call(served: Served) -> None:
    delivered = {t.name: t.values for t in decode_outputs(steward_call(served.grpc, "s-clear"))}
    ssns = [customer(i).ssn for i in IDS]
    assert delivered["ssn"] == [ssn.encode() for ssn in ssns]  # the caller got them in clear
    key = recording_key(Subject.proven("jwt", "stella", issuer="labelgate-dev"), "", "s-clear")
    wait_until(lambda: '"kind":"call"' in recordings(served.sessions), 15, "the recorded call")

    # The session page of the gateway's admin listener: masks for an auditor, not the values.
    html = page(served, key, "auditors")
    assert html.status_code == 200, html.text
    assert "[REDACTED]" in html.text and "Shown to you" in html.text
    assert not [ssn for ssn in ssns if ssn in html.text]
    assert customer(1).name not in html.text  # internal: redacted for an auditor

    # The decision is the viewer's: one the pack clears for confidential data sees the SSNs.
    cleared = page(served, key, "auditors", "data-stewards")
    assert cleared.status_code == 200 and all(ssn in cleared.text for ssn in ssns)

    # A viewer group the policy does not let replay: the page, but none of the values.
    ops = page(served, key, "ops")
    assert ops.status_code == 200 and 'data-testid="withheld"' in ops.text and "<td>" not in ops.text
    assert not [ssn for ssn in ssns if ssn in ops.text] and customer(1).name not in ops.text

    # The CLI, on the same config and store: the same decision.
    values = shown_values(show(served.config, key, "auditors"))
    assert values["ssn"] == [b"[REDACTED]", b"[REDACTED]"]
    denied = show(served.config, key, "ops")
    assert denied.exit_code == 0 and not [ssn for ssn in ssns if ssn in denied.output]
    assert json.loads(denied.stdout)["replay"]["outcome"] == "denied"

    # An engine that cannot be reached (OPA at a port nobody serves): nothing of the values.
    settings = yaml.safe_load(served.config.read_text())
    settings.update(engine="opa", policy={"opa_url": f"http://127.0.0.1:{free_port()}", "timeout_ms": 200})
    dead = served.config.with_name("dead-opa.yaml")
    dead.write_text(yaml.safe_dump(settings))
    failed = show(dead, key, "auditors")
    assert failed.exit_code == 0, failed.output
    entry = json.loads(failed.stdout)
    assert entry["response"] is None and entry["replay"]["outcome"] == "error"
    assert not [ssn for ssn in ssns if ssn in failed.output]
