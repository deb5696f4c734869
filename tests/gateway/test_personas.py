"""The personas of the default policy calling ``customer-profile`` through the gateway with the
real Triton client, on both engines, authenticated by JWT and by mTLS.

Each check names exactly which values arrive in clear, which are masked and how, and which
calls are refused. Expected values come from a direct call to the backend and from the demo
data (``labelgate.demo.data``), never from the gateway itself.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from labelgate.demo.data import note_kind
from labelgate.demo.models import sentiment_of
from tests.gateway.aio import refused
from tests.gateway.expected import (
    CUSTOMER_OUTPUTS,
    analyst_notes,
    column,
    customer_request,
    partial,
)
from tests.gateway.harness import (
    PERSONAS,
    Gateway,
    GatewayPool,
    MtlsFiles,
    TokenIssuer,
    run_tls_probe,
)
from tests.support.triton import run_probe

IDS = list(range(12))  # every notes variant (id % 6) twice
TEXTS = ["I love this, great and friendly service", "terrible, slow and rude", "no opinion"]
CONFIDENTIAL = ("ssn", "card_number")
PUBLIC = ("customer_id", "segment")
INTERNAL = ("name", "email", "risk_score")
# Naming account_secret would be refused (restricted, asked for by name): typed calls name the rest.
TYPED_OUTPUTS = [name for name in CUSTOMER_OUTPUTS if name != "account_secret"]


def persona_calls() -> dict[str, dict[str, Any]]:
    """Every call the persona checks need, by name, without credentials (added per gateway)."""
    calls: dict[str, dict[str, Any]] = {}
    for persona in PERSONAS:
        calls[persona] = {"persona": persona, "op": "infer", "model": "customer-profile", "customer_ids": IDS}
        calls[f"{persona}/typed"] = {
            **calls[persona],
            "outputs": TYPED_OUTPUTS,
            "binary": False,
        }
        calls[f"{persona}/secret-by-name"] = {
            **calls[persona],
            "outputs": ["customer_id", "account_secret"],
        }
        calls[f"{persona}/sentiment"] = {
            "persona": persona,
            "op": "infer",
            "model": "sentiment",
            "text": TEXTS,
        }
    calls["break-glass/no-restricted"] = {
        **calls["break-glass"],
        "outputs": ["customer_id", "segment", "name", "risk_score"],
    }
    return calls


def run_as_personas(
    address: str, credentials: dict[str, dict[str, Any]], tls: bool
) -> dict[str, dict[str, Any]]:
    """One probe run for every persona call; ``credentials`` maps persona -> call additions."""
    names, calls = [], []
    for name, call in persona_calls().items():
        call = dict(call)
        persona = call.pop("persona")
        names.append(name)
        calls.append({**call, **credentials[persona]})
    results = run_tls_probe(calls, url=address) if tls else run_probe(calls, url=address)
    return dict(zip(names, results, strict=True))


@pytest.fixture(scope="module")
def direct(backend: str) -> dict[str, dict[str, Any]]:
    """What the backend itself returns, raw and typed: the ground truth."""
    raw, typed, sentiment = run_probe(
        [
            {"op": "infer", "model": "customer-profile", "customer_ids": IDS},
            {
                "op": "infer",
                "model": "customer-profile",
                "customer_ids": IDS,
                "outputs": TYPED_OUTPUTS,
                "binary": False,
            },
            {"op": "infer", "model": "sentiment", "text": TEXTS},
        ],
        url=backend,
    )
    for name in CUSTOMER_OUTPUTS:
        assert raw["outputs"][name]["values"] == column(name, IDS), f"the backend changed: {name}"
    assert raw["raw"] and not typed["raw"]
    return {"raw": raw, "typed": typed, "sentiment": sentiment}


@pytest.fixture(
    scope="module",
    params=[("embedded", "jwt"), ("opa", "jwt"), ("embedded", "mtls"), ("opa", "mtls")],
    ids=lambda param: "-".join(param),
)
def results(
    request: pytest.FixtureRequest, gateways: GatewayPool, token_issuer: TokenIssuer, mtls_files: MtlsFiles
) -> dict[str, dict[str, Any]]:
    """Every persona call through one gateway (per engine, per authentication method)."""
    engine, auth = request.param
    gateway = gateways.get(engine, auth)
    if auth == "jwt":
        credentials = {persona: {"headers": token_issuer.headers(persona)} for persona in PERSONAS}
        return run_as_personas(gateway.address, credentials, tls=False)
    credentials = {persona: {"tls": mtls_files.probe_tls(persona)} for persona in PERSONAS}
    return run_as_personas(gateway.address, credentials, tls=True)


def values(result: dict[str, Any], name: str) -> list[Any]:
    assert "error" not in result, result
    return result["outputs"][name]["values"]


def assert_same_tensor_types(result: dict[str, Any], direct_result: dict[str, Any]) -> None:
    """Masking keeps every output's datatype and shape, and the representation (raw or typed)."""
    assert "error" not in result, result
    assert result["raw"] == direct_result["raw"]
    assert list(result["outputs"]) == list(direct_result["outputs"])
    for name, output in result["outputs"].items():
        assert output["datatype"] == direct_result["outputs"][name]["datatype"], name
        assert output["shape"] == direct_result["outputs"][name]["shape"], name


def assert_no_group_view(result: dict[str, Any], direct_result: dict[str, Any]) -> None:
    assert_same_tensor_types(result, direct_result)
    for name in PUBLIC:
        assert values(result, name) == values(direct_result, name), name
    for name in ("name", "email", "ssn", "card_number", "notes"):
        assert values(result, name) == ["[REDACTED]"] * len(IDS), name
    # redact cannot apply to a number: FP32 becomes its zero value.
    assert values(result, "risk_score") == [0.0] * len(IDS)
    if "account_secret" in direct_result["outputs"]:
        assert values(result, "account_secret") == [""] * len(IDS)


def assert_analyst_view(result: dict[str, Any], direct_result: dict[str, Any]) -> None:
    assert_same_tensor_types(result, direct_result)
    for name in PUBLIC + INTERNAL:
        assert values(result, name) == values(direct_result, name), name
    for name in CONFIDENTIAL:
        assert values(result, name) == [partial(v) for v in values(direct_result, name)], name
        assert all(v.startswith("*") for v in values(result, name)), name
    if "account_secret" in direct_result["outputs"]:
        assert values(result, "account_secret") == [""] * len(IDS)
    for customer_id, notes in zip(IDS, values(result, "notes"), strict=True):
        expected = analyst_notes(customer_id)
        if isinstance(expected, dict):
            assert json.loads(notes) == expected, f"JSON notes of customer {customer_id}"
        else:
            assert notes == expected, f"notes of customer {customer_id} ({note_kind(customer_id)})"


# --- the personas -------------------------------------------------------------------------


def test_no_group_sees_public_only(results: dict, direct: dict) -> None:
    assert_no_group_view(results["no-group"], direct["raw"])


def test_analyst_sees_internal_clear_confidential_partial_restricted_emptied(
    results: dict, direct: dict
) -> None:
    assert_analyst_view(results["analyst"], direct["raw"])


def test_analyst_notes_hide_only_the_sensitive_spans(results: dict, direct: dict) -> None:
    notes = dict(zip(IDS, values(results["analyst"], "notes"), strict=True))
    clear = dict(zip(IDS, values(direct["raw"], "notes"), strict=True))
    by_kind = {note_kind(i): i for i in IDS}
    assert notes[by_kind["plain"]] == clear[by_kind["plain"]]
    assert notes[by_kind["email"]] == clear[by_kind["email"]], "e-mail addresses are internal: clear"
    for kind in ("ssn", "card", "iban"):
        customer_id = by_kind[kind]
        assert notes[customer_id] != clear[customer_id], kind
        assert "*" * 6 in notes[customer_id], kind
    document = json.loads(notes[by_kind["json"]])
    original = json.loads(clear[by_kind["json"]])
    assert document["contact"]["email"] == original["contact"]["email"]
    assert document["preferences"] == original["preferences"]
    assert document["contact"]["ssn"] == partial(original["contact"]["ssn"])
    assert document["billing"]["card_number"] == partial(original["billing"]["card_number"])
    assert document["billing"]["iban"] == partial(original["billing"]["iban"])


def test_typed_outputs_are_masked_like_raw_ones(results: dict, direct: dict) -> None:
    assert not results["analyst/typed"]["raw"], "typed (contents) outputs must stay typed"
    assert_analyst_view(results["analyst/typed"], direct["typed"])
    assert_no_group_view(results["no-group/typed"], direct["typed"])


def test_stewards_without_approval_are_refused(results: dict) -> None:
    for name in ("steward", "steward/typed"):
        error = results[name]["error"]
        assert error["code"] == "PERMISSION_DENIED", name
        assert "approval" in error["message"], name


def test_break_glass_needs_two_approvals_for_restricted_data(results: dict) -> None:
    for name in ("break-glass", "break-glass/secret-by-name"):
        error = results[name]["error"]
        assert error["code"] == "PERMISSION_DENIED", name
        assert "approval" in error["message"] and "security" in error["message"], error


def test_break_glass_alone_sees_internal_redacted(results: dict, direct: dict) -> None:
    result = results["break-glass/no-restricted"]
    assert values(result, "customer_id") == values(direct["raw"], "customer_id")
    assert values(result, "segment") == values(direct["raw"], "segment")
    assert values(result, "name") == ["[REDACTED]"] * len(IDS)
    assert values(result, "risk_score") == [0.0] * len(IDS)


def test_asking_for_account_secret_by_name_is_denied(results: dict) -> None:
    """Denied outright, no approval offered, to everyone but break-glass (held, above)."""
    for persona in ("no-group", "analyst", "steward"):
        error = results[f"{persona}/secret-by-name"]["error"]
        assert error["code"] == "PERMISSION_DENIED", persona
        assert "account_secret" in error["message"], error


def test_sentiment_is_public_for_everyone(results: dict, direct: dict) -> None:
    expected = [sentiment_of(text) for text in TEXTS]
    assert [label for label, _ in expected] == values(direct["sentiment"], "label")
    for persona in PERSONAS:
        result = results[f"{persona}/sentiment"]
        assert values(result, "label") == values(direct["sentiment"], "label"), persona
        assert values(result, "score") == values(direct["sentiment"], "score"), persona


# --- the refusals' machine-readable details (grpc.aio, same gateways) ---------------------


async def test_refusals_carry_error_info(gateway: Gateway, token_issuer: TokenIssuer) -> None:
    steward = await refused(gateway.address, customer_request(IDS), token_issuer.headers("steward"))
    assert steward.code == grpc.StatusCode.PERMISSION_DENIED
    assert steward.reason == "APPROVAL_REQUIRED"
    assert steward.info is not None and steward.info.domain == "labelgate"
    assert "data-owners" in steward.message

    break_glass = await refused(gateway.address, customer_request(IDS), token_issuer.headers("break-glass"))
    assert (break_glass.code, break_glass.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED")

    secret = await refused(
        gateway.address,
        customer_request(IDS, ["customer_id", "account_secret"]),
        token_issuer.headers("analyst"),
    )
    assert (secret.code, secret.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    assert "account_secret" in secret.message


async def test_mtls_refusals_carry_error_info(mtls_gateway: Gateway, mtls_files: MtlsFiles) -> None:
    steward = await refused(
        mtls_gateway.address, customer_request(IDS), credentials=mtls_files.channel_credentials("steward")
    )
    assert (steward.code, steward.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED")
    secret = await refused(
        mtls_gateway.address,
        customer_request(IDS, ["account_secret"]),
        credentials=mtls_files.channel_credentials("analyst"),
    )
    assert (secret.code, secret.reason) == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
