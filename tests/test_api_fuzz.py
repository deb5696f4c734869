"""Schemathesis against the approvals API and the bundle server, as real processes on loopback.

Bounded and reproducible: a fixed number of examples per operation and generation mode
(valid and invalid data), derandomized, no example database. Over every response:

- no 5xx;
- every error is ``application/problem+json``;
- status codes, content types and bodies conform to the published OpenAPI;
- without a valid token nothing changes: every answer is a 401 problem, a pending approval stays
  pending with no vote, and the bundle server's fleet stays empty.

The approvals API's schema is the one the admin listener publishes (/api/v1/openapi.json); the
bundle server publishes none, so its schema is taken from the same app, built in process.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labelgate.auth.devkeys import mint_dev_token
from labelgate.bundle.server import ServerSettings, create_app
from tests.approvals.conftest import gateway_config, grpc_infer, running_gateway
from tests.bundle.helpers import READER_TOKEN, TOKEN, bundle_server, copy_source
from tests.support.procs import free_port, labelgate_command, opa_binary, running

EXAMPLES = 25  # per operation and generation mode
PROBLEM = "application/problem+json"
# Tokens that prove nothing: none, not a JWT, a JWT signed by nobody the gateway trusts.
FORGED_JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"
NOT_TOKENS: tuple[dict[str, str], ...] = (
    {},
    {"authorization": "Bearer not-a-jwt"},
    {"authorization": f"Bearer {FORGED_JWT}"},
    {"authorization": "Basic b2xpdmlhOnB3"},
)


class NotAProblem(AssertionError):
    pass


def errors_are_problems(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx answer is an RFC 7807 problem."""
    if response.status_code >= 400:
        declared = ";".join(response.headers.get("content-type", [""])).split(";")[0].strip()
        if declared != PROBLEM:
            raise NotAProblem(f"{case.method} {case.formatted_path}: {response.status_code} is {declared!r}")
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    errors_are_problems,
]


def fuzz(
    schema: Any,
    base_url: str,
    headers: dict[str, str],
    *,
    path_parameters: dict[str, str] | None = None,
    checks: list[Callable[..., bool | None]] = CHECKS,
    seen: list[tuple[str, int]] | None = None,
) -> list[str]:
    """Every operation of ``schema``, valid and invalid data, ``EXAMPLES`` each, sent with ``headers``;
    returns the operations that have no invalid input to generate."""
    skipped_negative: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        pinned = {k: v for k, v in (path_parameters or {}).items() if "{" + k + "}" in operation.path}
        free = any(p.name not in pinned for p in operation.iter_parameters()) or bool(list(operation.body))
        # Invalid data needs something to make invalid: an operation without free inputs gets valid data only.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if free else (GenerationMode.POSITIVE,)
        for mode in modes:
            strategy = operation.as_strategy(mode, path_parameters=pinned or None)
            where = f"{operation.method.upper()} {operation.path}"

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                # The caller's credentials replace whatever the generator put there.
                for name in [n for n in (case.headers or {}) if n.lower() == "authorization"]:
                    del case.headers[name]
                response = case.call_and_validate(base_url=base_url, headers=headers, checks=checks)
                if seen is not None:
                    seen.append((where, response.status_code))  # noqa: B023 - run() is called in this iteration

            try:
                run()
            except Unsatisfiable:
                # Parameters that take any string (``/bundles/{name}``) have no invalid values:
                # schemathesis finds nothing to send in negative mode. Valid data still ran.
                if mode is not GenerationMode.NEGATIVE:
                    raise
                skipped_negative.append(where)
    return skipped_negative


def only_unauthenticated(seen: list[tuple[str, int]], open_paths: frozenset[str] = frozenset()) -> None:
    wrong = {(where, code) for where, code in seen if code != 401 and where.split()[1] not in open_paths}
    assert not wrong, f"answered without a valid token: {sorted(wrong)[:10]}"


# --- the approvals API -----------------------------------------------------------------------------


@dataclass
class ApprovalsStack:
    base: str
    grpc: str
    pending_id: str

    def state(self) -> dict[str, Any]:
        owner = mint_dev_token("olivia", ["data-owners"], 900)
        answer = httpx.get(
            f"{self.base}/api/v1/approvals/{self.pending_id}",
            headers={"authorization": f"Bearer {owner}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def approvals_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApprovalsStack]:
    folder = tmp_path_factory.mktemp("fuzz-approvals")
    port = free_port()
    backend = f"127.0.0.1:{port}"
    with running(labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=port):
        approvals = {"sqlite_file": str(folder / "approvals.db"), "hold_timeout_seconds": 600}
        config, address, admin = gateway_config(folder, backend, approvals)
        with running_gateway(config, address, folder / "gateway.log"):
            steward = mint_dev_token("fuzz-steward", ["data-stewards"], 900)
            held = grpc_infer(address, steward, **{"x-labelgate-approval": "async"})
            assert held.reason == "APPROVAL_PENDING", held
            yield ApprovalsStack(admin, address, held.metadata["approval_id"])


def approvals_schema(stack: ApprovalsStack) -> Any:
    return schemathesis.openapi.from_url(f"{stack.base}/api/v1/openapi.json")


def test_approvals_api_schema_names_every_operation_and_its_problems(approvals_stack: ApprovalsStack) -> None:
    raw = httpx.get(f"{approvals_stack.base}/api/v1/openapi.json", timeout=10).json()
    operations = {
        (method, path): spec for path, methods in raw["paths"].items() for method, spec in methods.items()
    }
    assert {spec["operationId"] for spec in operations.values()} == {
        "listApprovals",
        "getApproval",
        "approveApproval",
        "denyApproval",
    }
    for spec in operations.values():
        assert "422" not in spec["responses"], "validation errors are 400 problems, not 422"
        for code in ("400", "401", "default"):
            assert PROBLEM in spec["responses"][code]["content"]


def test_approvals_api_without_a_valid_token_answers_401_and_changes_nothing(
    approvals_stack: ApprovalsStack,
) -> None:
    before = approvals_stack.state()
    assert before["state"] == "pending" and before["votes"] == []
    schema = approvals_schema(approvals_stack)
    for headers in NOT_TOKENS:
        seen: list[tuple[str, int]] = []
        fuzz(
            schema,
            approvals_stack.base,
            headers,
            path_parameters={"approval_id": approvals_stack.pending_id},
            seen=seen,
        )
        assert seen
        only_unauthenticated(seen)
    after = approvals_stack.state()
    assert after["state"] == "pending" and after["votes"] == [] and after["approvals"] == 0


@pytest.mark.parametrize("who", ["data-owner", "analyst"])
def test_approvals_api_with_valid_tokens_never_fails_and_answers_problems(
    approvals_stack: ApprovalsStack, who: str
) -> None:
    groups = {"data-owner": ["data-owners"], "analyst": ["analysts"]}[who]
    token = mint_dev_token(f"fuzz-{who}", groups, 900)
    seen: list[tuple[str, int]] = []
    fuzz(
        approvals_schema(approvals_stack),
        approvals_stack.base,
        {"authorization": f"Bearer {token}"},
        seen=seen,
    )
    codes = {code for _, code in seen}
    assert 200 in codes and 400 in codes, codes  # valid and invalid data both reached the API
    # Random ids never name the pending request: it is untouched.
    assert approvals_stack.state()["state"] == "pending"


# --- the bundle server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_schema_and_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    folder = tmp_path_factory.mktemp("fuzz-bundle")
    source = copy_source(folder / "source")
    with tempfile.TemporaryDirectory() as state:
        app = create_app(
            ServerSettings(source=source, state_dir=Path(state), insecure_no_auth=True, opa=opa_binary())
        )
        document = app.openapi()
    with bundle_server(folder, source) as server:
        yield schemathesis.openapi.from_dict(document), server.url


def fleet(url: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/fleet", headers={"authorization": f"Bearer {READER_TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_bundle_server_schema_names_every_operation_and_its_problems(
    bundle_schema_and_url: tuple[Any, str],
) -> None:
    schema, _ = bundle_schema_and_url
    operations = [result.ok() for result in schema.get_all_operations()]
    ids = [operation.definition.raw.get("operationId") for operation in operations]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for operation in operations:
        responses = operation.definition.raw["responses"]
        assert "422" not in responses, operation.path
        if operation.path not in ("/healthz", "/metrics"):
            assert {"401", "default"} <= set(responses) and PROBLEM in responses["401"]["content"]


def test_bundle_server_without_a_valid_token_answers_401_and_stores_nothing(
    bundle_schema_and_url: tuple[Any, str],
) -> None:
    schema, url = bundle_schema_and_url
    assert fleet(url)["instances"] == []
    for headers in NOT_TOKENS:
        seen: list[tuple[str, int]] = []
        fuzz(schema, url, headers, seen=seen)
        only_unauthenticated(seen, open_paths=frozenset({"/healthz", "/metrics"}))
    assert fleet(url)["instances"] == []


@pytest.mark.parametrize("token", [TOKEN, READER_TOKEN], ids=["instance", "reader"])
def test_bundle_server_with_valid_tokens_never_fails_and_answers_problems(
    bundle_schema_and_url: tuple[Any, str], token: str
) -> None:
    schema, url = bundle_schema_and_url
    seen: list[tuple[str, int]] = []
    fuzz(schema, url, {"authorization": f"Bearer {token}"}, seen=seen)
    assert any(code == 200 for _, code in seen)
    assert all(code < 500 for _, code in seen)
