"""The gateway's own output is structured JSON lines and never holds a data value or a credential,
whatever went through it: masked calls, refusals, streams, forged tokens.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from labelgate.demo.data import customer
from tests.gateway.aio import infer, refused
from tests.gateway.expected import (
    column,
    confidential_and_restricted,
    customer_request,
)
from tests.gateway.harness import (
    Gateway,
    TokenIssuer,
    bearer,
    gateway_config,
    http_get,
    start_gateway,
)
from tests.support.pki import forge_alg_none
from tests.support.procs import free_port, wait_until
from tests.support.triton import run_probe

IDS = list(range(12))


async def test_logs_are_json_lines_without_values_or_credentials(
    gateway: Gateway, token_issuer: TokenIssuer
) -> None:
    marker = f"log-check-{uuid.uuid4().hex[:8]}"
    tokens = {
        "analyst": token_issuer.token(marker, ["analysts"]),
        "no-group": token_issuer.token(marker, []),
        "steward": token_issuer.token(marker, ["data-stewards"]),
    }
    forged = forge_alg_none({"sub": marker, "groups": ["break-glass"]}, kid=token_issuer.key.kid)
    await infer(gateway.address, customer_request(IDS), bearer(tokens["analyst"]))
    await infer(
        gateway.address, customer_request(IDS, ["notes", "email"], raw=False), bearer(tokens["no-group"])
    )
    await refused(gateway.address, customer_request(IDS), bearer(tokens["steward"]))
    await refused(gateway.address, customer_request(IDS, ["account_secret"]), bearer(tokens["analyst"]))
    await refused(gateway.address, customer_request(IDS), bearer(forged))
    stream = {"model": "customer-profile", "customer_ids": IDS}
    run_probe(
        [{"op": "stream_infer", "headers": bearer(tokens["analyst"]), "requests": [stream, stream]}],
        url=gateway.address,
    )

    # The record of each call is written after the response; wait for ours to be there.
    wait_until(lambda: gateway.output().count(marker) >= 6, 10, "the gateway's records of these calls")
    output = gateway.output()

    lines = [line for line in output.splitlines() if line.strip()]
    for line in lines:
        entry = json.loads(line)  # every line: one JSON object
        assert isinstance(entry, dict) and "event" in entry and "level" in entry, line

    sensitive = confidential_and_restricted(IDS) + column("name", IDS) + column("email", IDS)
    sensitive += [customer(i).notes for i in IDS]
    leaked = [value for value in sensitive if value in output]
    assert not leaked, f"{len(leaked)} data values in the gateway's output"
    for name, token in [*tokens.items(), ("forged", forged)]:
        signature = token.rsplit(".", 1)[1]
        assert token not in output, f"the {name} token is in the gateway's output"
        assert not signature or signature not in output, f"the {name} token's signature is in the output"


ANSI_MARKERS = ("\x1b", "\\u001b", "\\x1b", "[0m", "[1m")


async def test_every_line_is_json_without_ansi_escapes_from_start_to_stop(
    backend: str, token_issuer: TokenIssuer, tmp_path: Path
) -> None:
    """A gateway with the admin and REST listeners (both uvicorn, whose start-up lines carry an
    ANSI-coloured ``color_message``): every line it writes, start to stop, is one JSON object
    with no terminal escapes anywhere."""
    rest_port = free_port()
    config = gateway_config(
        upstream=backend, engine="embedded", issuer=token_issuer, rest_listen=f"127.0.0.1:{rest_port}"
    )
    with start_gateway(config, tmp_path, "plain") as gateway:
        await infer(gateway.address, customer_request([1, 2]), token_issuer.headers("analyst"))
        await refused(gateway.address, customer_request([1]))
        status, _ = http_get(f"http://127.0.0.1:{rest_port}/v2/health/ready")
        assert status == 401  # the REST listener answers (and wants a token)
        assert gateway.get("/metrics")[0] == 200
        wait_until(lambda: '"event":"call"' in gateway.output(), 10, "the call records")
        process = gateway.process
    process.stop()  # already stopped by start_gateway; the log now holds the shutdown too
    output = process.output()
    lines = [line for line in output.splitlines() if line.strip()]
    assert any("uvicorn" in line for line in lines), output  # the listeners' own lines are in
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict) and "event" in entry and "level" in entry, line
        assert "color_message" not in entry, line
        assert not any(marker in line for marker in ANSI_MARKERS), line
