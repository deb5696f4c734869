"""Session-wide real parts for the gateway acceptance tests.

One demo backend, one OPA server, and one gateway per (engine, authentication) pair, started
on first use, serve every test that does not break them; tests that kill or stop a part
start their own (``test_faults.py``). Starting a gateway costs a few seconds on this
machine (mostly imports), hence session scope.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.gateway.harness import (
    ENGINES,
    Gateway,
    GatewayPool,
    MtlsFiles,
    TokenIssuer,
    make_mtls_files,
    make_token_issuer,
    run_backend,
)
from tests.support.pki import rsa_signing_key


@pytest.fixture(scope="session")
def token_issuer(tmp_path_factory: pytest.TempPathFactory) -> TokenIssuer:
    return make_token_issuer(tmp_path_factory.mktemp("idp"), rsa_signing_key("idp-1"))


@pytest.fixture(scope="session")
def mtls_files(tmp_path_factory: pytest.TempPathFactory) -> MtlsFiles:
    return make_mtls_files(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shared demo backend (HOST:PORT). Tests must not stop it."""
    with run_backend(tmp_path_factory.mktemp("backend")) as (address, _process):
        yield address


@pytest.fixture(scope="session")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, backend: str, token_issuer: TokenIssuer, mtls_files: MtlsFiles
) -> Iterator[GatewayPool]:
    with contextlib.ExitStack() as stack:
        pool = GatewayPool(stack, tmp_path_factory.mktemp("gateways"), backend, token_issuer, mtls_files)
        yield pool
        pool.terminate_all()


@pytest.fixture(params=ENGINES)
def gateway(request: pytest.FixtureRequest, gateways: GatewayPool) -> Gateway:
    """The JWT gateway of each engine."""
    return gateways.get(request.param, "jwt")


@pytest.fixture(params=ENGINES)
def mtls_gateway(request: pytest.FixtureRequest, gateways: GatewayPool) -> Gateway:
    """The mTLS gateway of each engine (identity from the client certificate's CN)."""
    return gateways.get(request.param, "mtls")
