"""`labelgate infer` (``labelgate/client.py``) as a person runs it: a real process against a
real gateway (gRPC and REST) in front of the demo backend, with approvals on."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from labelgate.client import Spec, describe, typed_inputs
from labelgate.errors import InvalidInput
from tests.approvals.conftest import Api, gateway_config, person, running_gateway, token
from tests.support.procs import REPO, free_port, labelgate_command, running, wait_until

SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")


@dataclass
class Gateway:
    grpc: str
    rest: str
    api: Api
    folder: Path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("infer")
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    approvals = {"sqlite_file": str(folder / "approvals.db"), "hold_timeout_seconds": 60}
    config, address, admin = gateway_config(folder, backend, approvals)
    settings = yaml.safe_load(config.read_text())
    rest = f"127.0.0.1:{free_port()}"
    settings["rest_listen"] = rest
    config.write_text(yaml.safe_dump(settings))
    with (
        running(
            labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
        ),
        running_gateway(config, address, folder / "gateway.log"),
    ):
        yield Gateway(address, f"http://{rest}", Api(admin), folder)


def infer(gateway: Gateway, *args: str, bearer: str, rest: bool = False) -> subprocess.CompletedProcess:
    where = ["--rest", gateway.rest] if rest else ["--target", gateway.grpc]
    return subprocess.run(
        labelgate_command("infer", *where, "--token", bearer, *args),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_any_demo_model_with_inputs_typed_by_its_metadata(gateway: Gateway, rest: bool) -> None:
    analyst = token(person("ann"), "analysts")
    profile = infer(
        gateway,
        "--model",
        "customer-profile",
        "--input",
        "customer_ids=[1,2]",
        "--json",
        bearer=analyst,
        rest=rest,
    )
    assert profile.returncode == 0, profile.stderr
    delivered = json.loads(profile.stdout)
    assert set(delivered) == {"model_name", "model_version", "outputs"}
    outputs = {o["name"]: o for o in delivered["outputs"]}
    assert outputs["customer_id"] == {
        "name": "customer_id",
        "datatype": "INT64",
        "shape": [2],
        "data": [1, 2],
    }
    assert all(ssn.startswith("*******") for ssn in outputs["ssn"]["data"])  # the analysts' mask

    sentiment = infer(
        gateway, "--model", "sentiment", "--input", "text=great service", "--json", bearer=analyst, rest=rest
    )
    assert sentiment.returncode == 0, sentiment.stderr
    labels = {o["name"]: o for o in json.loads(sentiment.stdout)["outputs"]}
    assert labels["label"]["datatype"] == "BYTES" and labels["label"]["shape"] == [1]


def test_the_inputs_file_and_the_table(gateway: Gateway, tmp_path: Path) -> None:
    request = tmp_path / "inputs.json"
    request.write_text(json.dumps({"inputs": [{"name": "customer_ids", "data": [3]}]}))
    shown = infer(gateway, "--inputs-file", str(request), bearer=token(person("ann"), "analysts"))
    assert shown.returncode == 0, shown.stderr
    assert "customer-profile through" in shown.stdout and "ssn" in shown.stdout


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--input", "nope=1"], "INPUT_UNKNOWN"),
        (["--input", 'customer_ids=["one"]'], "INPUT_TYPE_MISMATCH"),
        (["--input", "customer_ids"], "INPUT_INVALID"),
        (["--input", "customer_ids=[[1],[2,3]]"], "INPUT_SHAPE_MISMATCH"),
        (["--inputs-file", "/nonexistent/inputs.json"], "INPUTS_FILE_UNREADABLE"),
        (["--rest", "ftp://example"], "REST_URL_INVALID"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(gateway: Gateway, args: list[str], reason: str) -> None:
    done = infer(gateway, *args, bearer=token(person("ann"), "analysts"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and f"({reason})" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_refusal_names_the_gateway_reason(gateway: Gateway) -> None:
    done = infer(
        gateway, "--outputs", "account_secret", "--input", "customer_ids=[1]", bearer=token(person("al"))
    )
    assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr and "Traceback" not in done.stderr


def test_a_held_call_shows_its_approval_and_completes_once_granted(gateway: Gateway, tmp_path: Path) -> None:
    steward = person("sam")
    log = tmp_path / "infer.log"
    command = labelgate_command(
        "infer", "--target", gateway.grpc, "--token", token(steward, "data-stewards"),
        "--input", "customer_ids=[1]", "--wait", "60", "--json",
    )  # fmt: skip
    out = tmp_path / "out.json"
    with open(out, "w") as stdout:
        held = subprocess.Popen(command, stdout=stdout, stderr=open(log, "w"), cwd=REPO, text=True)  # noqa: SIM115
        try:
            owner = token(person("olivia"), "data-owners")
            request = gateway.api.pending_of(steward, owner)
            wait_until(lambda: request["id"] in log.read_text(), 20, "the approval id on the terminal")
            shown = log.read_text()
            assert "data-owners" in shown and "request expires in" in shown and "(--wait)" in shown, shown
            assert gateway.api.approve(request["id"], owner, "ticket 7").status_code == 200
            assert held.wait(timeout=60) == 0, log.read_text()
        finally:
            if held.poll() is None:
                held.kill()
                held.wait()
    outputs = {o["name"]: o["data"] for o in json.loads(out.read_text())["outputs"]}
    assert SSN.match(outputs["ssn"][0])
    assert f"approval {request['id']} granted" in log.read_text()


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_without_waiting_the_approval_id_is_printed(gateway: Gateway, rest: bool) -> None:
    """Review (docs): `--wait 0` printed the gateway's own words (`call again with
    x-labelgate-approval-id: apr-...`), a header no `infer` user sets. It is one line naming
    the id and the flag to present it with, exit 1 (APPROVAL_PENDING), as docs/APPROVALS.md says."""
    steward = token(person("sam"), "data-stewards")
    done = infer(gateway, "--input", "customer_ids=[2]", "--wait", "0", bearer=steward, rest=rest)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    found = re.search(r"apr-[0-9a-f]{16}", line)
    assert found is not None, line
    assert line.startswith(f"error: held for approval {found.group(0)}") and line.endswith(
        "(APPROVAL_PENDING)"
    )
    assert f"--approval-id {found.group(0)}" in line and "x-labelgate-approval-id" not in line, line


def test_the_countdown_shows_when_the_request_expires_and_how_long_infer_waits() -> None:
    """Review (docs): the spinner showed the request's expiry ("14 min 59 s left") while infer
    gave up after --wait (300 s): both are shown, each said for what it is."""
    expires = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()
    shown = {"approvals": 0, "min_approvals": 1, "approver_groups": ["data-owners"], "expires_at": expires}
    line = describe("apr-0123456789abcdef", shown, 300)
    assert line.startswith("held for approval apr-0123456789abcdef: 0 of 1 approval(s) from data-owners; "), (
        line
    )
    assert re.search(r"the request expires in 1[45] min \d\d s", line), line
    assert line.endswith("waiting up to 5 min 00 s more (--wait)"), line
    assert describe("apr-0123456789abcdef", None, 42.5) == (
        "held for approval apr-0123456789abcdef (waiting up to 42 s more (--wait))"
    )


def test_shapes_follow_the_metadata() -> None:
    [tensor] = typed_inputs({"x": [1, 2, 3, 4]}, [Spec("x", "FP32", (-1, 2))])
    assert tensor.shape == [2, 2] and tensor.values == [1.0, 2.0, 3.0, 4.0]
    [scalar] = typed_inputs({"t": "hi"}, [Spec("t", "BYTES", (-1,))])
    assert scalar.shape == [1] and scalar.values == [b"hi"]
    with pytest.raises(InvalidInput, match="do not fit"):
        typed_inputs({"x": [1, 2, 3]}, [Spec("x", "FP32", (-1, 2))])
    with pytest.raises(InvalidInput, match="also needs"):
        typed_inputs({}, [Spec("x", "FP32", (-1,))])


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("INT64", 2**63),
        ("INT64", -(2**63) - 1),
        ("INT8", 128),
        ("UINT8", -1),
        ("UINT64", 2**64),
        ("INT32", 2**31),
    ],
)
def test_an_integer_outside_its_datatype_is_refused_before_sending(datatype: str, value: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        typed_inputs({"x": [value]}, [Spec("x", datatype, (1,))])
    assert refused.value.reason == "INPUT_TYPE_MISMATCH" and "is outside" in refused.value.message


def test_integers_at_the_edges_of_their_datatype_are_kept() -> None:
    tensors = typed_inputs(
        {"a": [2**63 - 1], "b": [0, 255]}, [Spec("a", "INT64", (1,)), Spec("b", "UINT8", (2,))]
    )
    assert tensors[0].values == [2**63 - 1] and tensors[1].values == [0, 255]


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:83537", "127.0.0.1:0", "127.0.0.1", "127.0.0.1:", ":8443", "host:port", "host:\u00b2"],
)
def test_a_target_that_is_not_host_port_is_refused(target: str) -> None:
    from labelgate.client import target_host_port

    with pytest.raises(InvalidInput, match="--target takes HOST:PORT"):
        target_host_port(target)


@pytest.mark.parametrize(
    "target", ["127.0.0.1:8443", "[::1]:8443", "gateway.internal:443", "unix:/run/lg.sock"]
)
def test_a_host_port_target_is_kept(target: str) -> None:
    from labelgate.client import target_host_port

    assert target_host_port(target) == target


def test_an_output_the_model_has_not_is_named_and_exit_2(gateway: Gateway) -> None:
    """Checked against the model's metadata like ``--input``: the upstream's refusal would
    only say INVALID_ARGUMENT (its text is never repeated)."""
    done = infer(
        gateway, "--outputs", "nope", "--input", "customer_ids=[1]", bearer=token(person("ann"), "analysts")
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "(OPTION_INVALID)" in done.stderr, done.stderr
    assert "the model has no output nope (its outputs: " in done.stderr and "customer_id" in done.stderr
