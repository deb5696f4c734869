"""The publisher refuses a revision the gateways following it would refuse (review s14).

OPA's check and tests pass a catalog with a misspelled label; every gateway taking its catalog
from the bundle then refused the revision whole and kept the old one, while the bundle server
reported itself healthy. The OPA validator is stubbed: what is judged here is the catalog.
"""

from __future__ import annotations

import json
from pathlib import Path

from labelgate.bundle.build import Bundle
from labelgate.bundle.cli import check_catalog
from labelgate.bundle.publisher import Publisher
from labelgate.bundle.source import OpaValidator, SourceSnapshot
from tests.bundle.helpers import write_atomically

CATALOG = "labelgate/catalog/data.json"


class PassingValidator(OpaValidator):
    """OPA's verdict on everything here: it passes (``opa check`` does not read the catalog)."""

    def __init__(self) -> None:
        self.validated: list[str] = []

    def validate(self, snapshot: SourceSnapshot, bundle: Bundle) -> None:
        self.validated.append(bundle.revision)


async def test_a_catalog_the_gateways_would_refuse_is_not_published(policy_source: Path) -> None:
    validator = PassingValidator()
    publisher = Publisher(policy_source, validator, poll_interval=3600, catalog_check=check_catalog)
    await publisher.start()
    try:
        served = publisher.status()["revision"]
        assert served is not None and publisher.status()["healthy"]

        catalog = json.loads((policy_source / CATALOG).read_text())
        catalog["entries"].append(
            {"model": "customer-profile", "path": "outputs.phone", "labels": ["Confidential"]}
        )
        write_atomically(policy_source / CATALOG, json.dumps(catalog, indent=2))
        await publisher.refresh()

        status = publisher.status()
        assert status["revision"] == served  # the previous revision stays served
        assert status["healthy"] is False
        assert status["error"]["reason"] == "CATALOG_INVALID"
        assert "unknown labels ['Confidential']" in status["error"]["message"]
        assert len(validator.validated) == 1  # refused before OPA ran
    finally:
        await publisher.stop()


async def test_a_bundle_without_a_catalog_is_published(policy_source: Path) -> None:
    """Gateways reading their catalog from a file follow such a bundle: not the server's call."""
    (policy_source / CATALOG).unlink()
    publisher = Publisher(policy_source, PassingValidator(), poll_interval=3600, catalog_check=check_catalog)
    await publisher.start()
    try:
        status = publisher.status()
        assert status["healthy"] and status["revision"] is not None
        assert CATALOG not in status["files"]
    finally:
        await publisher.stop()
