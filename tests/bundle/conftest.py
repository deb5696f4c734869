"""Fixtures for the bundle server tests; the helpers behind them live in ``helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundle.helpers import KeyPair, copy_source, make_key_pair


@pytest.fixture
def policy_source(tmp_path: Path) -> Path:
    """A private copy of the project's policy source (see ``copy_source``)."""
    return copy_source(tmp_path / "source")


@pytest.fixture(scope="session")
def rsa_keys() -> KeyPair:
    return make_key_pair("RS256")


@pytest.fixture(scope="session")
def ec_keys() -> KeyPair:
    return make_key_pair("ES256")
