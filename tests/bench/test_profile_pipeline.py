"""The in-process pipeline benchmark runs the real pipeline: the policy's masks are applied to
the demo backend's reply. Only the shape of the result is checked; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys

from bench.profile_pipeline import ROUNDS, InProcessCalls, run
from bench.stack import PROXY, SCALING_VARIANT
from labelgate.demo.data import customer
from labelgate.oip import tensors as oip
from tests.support.procs import REPO


async def released_ssns(calls: InProcessCalls) -> list[bytes]:
    await calls.start()
    try:
        reply = await calls.one()
    finally:
        await calls.close()
    return next(tensor for tensor in oip.decode_outputs(reply) if tensor.name == "ssn").values


async def test_the_full_variant_masks_what_the_policy_says_and_allow_all_masks_nothing() -> None:
    real = [customer(i).ssn.encode() for i in range(100)]
    masked = await released_ssns(InProcessCalls(SCALING_VARIANT))
    assert len(masked) == 100 and not set(masked) & set(real), "an analyst sees no full SSN"
    assert [value[-4:] for value in masked] == [value[-4:] for value in real]  # partial: last four kept
    assert await released_ssns(InProcessCalls(PROXY)) == real


async def test_measure_reports_cpu_per_call() -> None:
    result = await run(SCALING_VARIANT, ROUNDS, profile=False, heap=False)
    assert result is not None
    assert 0 < result["min_us"] <= result["cpu_us_per_call"]


def test_the_ceiling_flag_measures_the_pipeline_with_the_response_stage_free() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.profile_pipeline", "--calls", "10", "--ceiling", "response-free"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("full_embedded_cache, response-free: "), done.stdout
