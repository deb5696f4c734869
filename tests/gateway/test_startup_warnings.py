"""A gateway that keeps no durable audit record, or records no sessions, says so when it
starts (``audit_off``, ``recording_off``): both are optional, and found by review, a gateway
with neither (the image's default config) released data and said nothing. A gateway in this
process, built and stopped; the log of a running ``labelgate serve`` is checked in
``test_operations.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from tests.support.procs import REPO, free_port

DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
WARNINGS = ("audit_off", "recording_off")


def settings(**sections: Any) -> GatewaySettings:
    return GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": f"127.0.0.1:{free_port()}"},
        policy={"dir": str(REPO / "rego")},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "startup-warnings-hash-key-0123456789"},
        auth={"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
        **sections,
    )


async def warnings_of(
    built: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> dict[str, logging.LogRecord]:
    with caplog.at_level(logging.WARNING):
        gateway = Gateway(built)
    await gateway.stop(0)
    return {record.getMessage(): record for record in caplog.records if record.getMessage() in WARNINGS}


async def test_a_gateway_without_audit_or_recording_warns_of_each(caplog: pytest.LogCaptureFixture) -> None:
    found = await warnings_of(settings(), caplog)
    assert set(found) == set(WARNINGS)
    assert all(record.levelno == logging.WARNING for record in found.values())
    assert "structured logs only" in found["audit_off"].note  # type: ignore[attr-defined]
    assert "sessions are not recorded" in found["recording_off"].note  # type: ignore[attr-defined]


async def test_a_gateway_with_audit_and_recording_warns_of_neither(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    built = settings(audit={"socket": str(tmp_path / "audit.sock")}, recording={"dir": str(tmp_path / "s")})
    assert await warnings_of(built, caplog) == {}
