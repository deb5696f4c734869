"""A gateway that keeps no durable audit record, or records no sessions, says so when it
starts (``audit_off``, ``recording_off``): both are optional, and found by review, a gateway
with neither (the image's default config) released data and said nothing. A gateway in this
process, started and stopped; the log of a running ``labelgate serve`` is checked in
``test_operations.py``, and ``serve --check-config``'s lines in ``tests/test_cli.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from labelgate.config import GatewaySettings, startup_notes
from labelgate.gateway.server import Gateway, warn_what_is_not_kept
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


def warned(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {record.getMessage(): record for record in caplog.records if record.getMessage() in WARNINGS}


async def warnings_of(
    built: GatewaySettings, caplog: pytest.LogCaptureFixture
) -> dict[str, logging.LogRecord]:
    """What a gateway warns once it has started (a gateway that fails to start says why alone)."""
    gateway = Gateway(built)
    with caplog.at_level(logging.WARNING):
        assert warned(caplog) == {}  # not while it is being built
        await gateway.start()
    await gateway.stop(0)
    return warned(caplog)


async def test_a_gateway_without_audit_or_recording_warns_of_each(caplog: pytest.LogCaptureFixture) -> None:
    found = await warnings_of(settings(), caplog)
    assert set(found) == set(WARNINGS)
    assert all(record.levelno == logging.WARNING for record in found.values())
    assert "structured logs only" in found["audit_off"].note  # type: ignore[attr-defined]
    assert "sessions are not recorded" in found["recording_off"].note  # type: ignore[attr-defined]


async def test_a_gateway_with_audit_and_recording_warns_of_neither(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The function the gateway calls once started (starting it would need an audit writer).
    built = settings(audit={"socket": str(tmp_path / "audit.sock")}, recording={"dir": str(tmp_path / "s")})
    with caplog.at_level(logging.WARNING):
        warn_what_is_not_kept(built)
    assert warned(caplog) == {}
    assert startup_notes(built) == []


def test_the_notes_come_from_the_settings_alone() -> None:
    """What the gateway logs once started is what ``serve --check-config`` prints, found in
    the config package (the check loads none of the gateway)."""
    notes = dict(startup_notes(settings()))
    assert list(notes) == list(WARNINGS)
    assert "structured logs only" in notes["audit_off"]
    assert "sessions are not recorded" in notes["recording_off"]
