"""Text an upstream puts in the mantissa bytes of float outputs does not reach the caller
(``classify.mantissas``: a double's low 6 bytes, a NaN's payload, and all but its top byte; a
float's low 2 and 3).

One real audited gateway in front of the planted gRPC upstream and the planted REST upstream
(``protocol: rest``), on models whose outputs are catalogued public, so only what the scan
finds can mask them; a caller cleared for ``public`` only. Each reply's output is planted text
in the mantissas of FP64 or FP32 values (NaNs whose payloads are the text; finite values
whose top byte is ``0xc0``), which the raw bytes do not show as text; no planted value may be
in the low bytes of the values the caller gets, at any alignment of what it receives. An
embedding's random doubles come back as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tests.gateway.harness import TokenIssuer, run_audited_gateway, run_planted_upstream
from tests.gateway.test_packed_number_leaks import Stack, grpc_call, rest_call
from tests.gateway.test_rest_leak_fuzzer import run_planted_rest_upstream
from tests.support.procs import free_port

GRPC_PUBLIC = "packed-public"  # as ``test_packed_number_leaks``' calls name them
REST_PUBLIC = "rest-packed-public"
SSN, CARD = "123-45-6789", "4111111111111111"
TEXT = f"ssn {SSN} card {CARD} ".encode()
VALUES = {"ssn": SSN.encode(), "card": CARD.encode()}
EMBEDDING = np.random.default_rng(9).standard_normal(1024).astype("<f8").tobytes()


def under(text: bytes, top: bytes, size: int) -> bytes:
    """``text`` in each value's low bytes, ``top`` above them (``size`` bytes a value)."""
    low = size - len(top)
    return b"".join(text[at : at + low].ljust(low) + top for at in range(0, len(text), low))


# Output -> (datatype, its raw bytes).
PLANTED: dict[str, tuple[str, bytes]] = {
    "fp64-nan-payloads": ("FP64", under(TEXT, b"\xf8\x7f", 8)),
    "fp64-under-top-byte": ("FP64", under(TEXT, b"\xc0", 8)),
    "fp32-nan-payloads": ("FP32", under(TEXT, b"\xc0\x7f", 4)),
    "fp32-under-top-byte": ("FP32", under(TEXT, b"\xc0", 4)),
}


def low_bytes_readings(received: bytes) -> list[bytes]:
    """Every value's low bytes, joined, as a client reads them off doubles and floats, at every
    alignment of ``received``."""
    readings = []
    for size, counts in ((8, (6, 7)), (4, (2, 3))):
        for shift in range(size):
            data = received[shift:]
            values = np.frombuffer(data[: len(data) - len(data) % size], dtype=np.uint8).reshape(-1, size)
            readings += [values[:, :count].tobytes() for count in counts]
    return readings


def shown(received: bytes) -> list[str]:
    """The planted values a client reads in ``received``'s low bytes."""
    readings = low_bytes_readings(received)
    return [name for name, value in VALUES.items() if any(value in reading for reading in readings)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("mantissa-leaks")
    rest_listen = f"127.0.0.1:{free_port()}"
    with (
        run_planted_upstream(directory) as (grpc_address, _),
        run_planted_rest_upstream(directory) as rest_address,
        run_audited_gateway(
            directory,
            grpc_address,
            token_issuer,
            catalog_entries=[
                {"model": model, "path": "outputs.*", "labels": ["public"]}
                for model in (GRPC_PUBLIC, REST_PUBLIC)
            ],
            rest_listen=rest_listen,
            upstreams=[
                {"name": "planted-rest", "address": rest_address, "protocol": "rest", "models": ["rest-*"]}
            ],
        ) as audited,
    ):
        yield Stack(audited, f"http://{rest_listen}")


CALLS: dict[str, Callable[[Stack, str, bytes, TokenIssuer], bytes]] = {
    "grpc-raw": grpc_call,
    "rest-binary": rest_call,
}


@pytest.mark.parametrize("binding", sorted(CALLS))
@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_text_in_float_mantissas_does_not_reach_the_caller(
    stack: Stack, token_issuer: TokenIssuer, binding: str, planted: str
) -> None:
    datatype, data = PLANTED[planted]
    assert shown(data) == list(VALUES)  # what a client reads in the planted values' low bytes
    assert SSN.encode() not in data and CARD.encode() not in data  # and not in their raw bytes
    received = CALLS[binding](stack, datatype, data, token_issuer)
    assert shown(received) == []


@pytest.mark.parametrize("binding", sorted(CALLS))
def test_an_embeddings_random_doubles_come_back_as_they_were(
    stack: Stack, token_issuer: TokenIssuer, binding: str
) -> None:
    received = CALLS[binding](stack, "FP64", EMBEDDING, token_issuer)
    assert EMBEDDING in received
