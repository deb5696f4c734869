"""bench.ceilings: the response-free arm runs the real response path once per reply shape,
then reuses its reply and still takes the response phase's decision on every call."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.ab import arms_from
from bench.ceilings import RESPONSE_FREE, ceiling_command, install, launcher
from bench.profile_pipeline import InProcessCalls
from bench.stack import DEV_KEYS, FULL_VARIANTS, RESPONSE_FREE_CEILING, SCALING_VARIANT
from bench.targets import TARGETS
from labelgate.auth import mint_dev_token
from labelgate.classify.classifier import Classifier
from labelgate.demo.data import customer
from labelgate.gateway.pipeline import Pipeline
from labelgate.oip import tensors as oip

ROOT = Path(__file__).resolve().parents[2]


def ssns(reply: Any) -> list[bytes]:
    return next(tensor for tensor in oip.decode_outputs(reply) if tensor.name == "ssn").values


async def test_the_reply_is_made_once_and_every_call_is_still_decided(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    classified: list[str] = []
    phases: list[tuple[str, int]] = []
    classify, decide = Classifier.classify_response, Pipeline.decide

    def counting_classify(self: Classifier, model: str, *args: Any, **kwargs: Any) -> Any:
        classified.append(model)
        return classify(self, model, *args, **kwargs)

    async def counting_decide(
        self: Pipeline, call: Any, subject: Any, target: Any, phase: str, fields: Any, outcome: Any
    ) -> Any:
        phases.append((phase, len(fields)))
        return await decide(self, call, subject, target, phase, fields, outcome)

    monkeypatch.setattr(Classifier, "classify_response", counting_classify)
    monkeypatch.setattr(Pipeline, "decide", counting_decide)
    patched = Pipeline.release_inference
    undo = install(RESPONSE_FREE)
    try:
        calls = InProcessCalls(SCALING_VARIANT)
        await calls.start()
        try:
            first = await calls.one()
            second = await calls.one()
            token = mint_dev_token("another-analyst", ["analysts"], 300, DEV_KEYS)
            calls.metadata = (("authorization", f"Bearer {token}"),)
            third = await calls.one()
        finally:
            await calls.close()
    finally:
        undo()
    assert len(classified) == 2, "the second call reuses the first one's reply, another caller does not"
    assert second is first and third is not first
    response_phases = [count for phase, count in phases if phase == "response"]
    assert len(response_phases) == 3 and response_phases[0] == response_phases[1] > 0
    real = [customer(i).ssn.encode() for i in range(100)]
    assert not set(ssns(second)) & set(real), "the reused reply is the masked one"
    assert Pipeline.decide is counting_decide, "undo puts back what was there"
    assert Pipeline.release_inference is patched


def test_an_unknown_ceiling_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ceiling"):
        launcher("classify-free")
    with pytest.raises(ValueError, match="unknown ceiling"):
        install("classify-free")


def test_the_ceiling_arm_runs_the_current_tree_with_the_patch() -> None:
    args = argparse.Namespace(
        baseline_src=None, current_src="/tmp/new/proxy", uvloop=False, workers=1, ceiling=[RESPONSE_FREE]
    )
    arms = arms_from(args)
    assert [arm.name for arm in arms] == ["current", RESPONSE_FREE]
    ceiling = arms[1]
    assert ceiling.command_prefix == [sys.executable, "-c", launcher(RESPONSE_FREE)]
    assert ceiling.env["PYTHONPATH"].split(os.pathsep) == ["/tmp/new/proxy", str(ROOT)]


def test_the_launcher_installs_the_patch_and_runs_the_command() -> None:
    # Before the command runs: print what the patched method wraps.
    wrapped = "p.Pipeline.release_inference.__wrapped__.__qualname__"
    shown = f"import labelgate.gateway.pipeline as p; print({wrapped})"
    code = launcher(RESPONSE_FREE).replace("app()", f"{shown}; app()")
    done = subprocess.run(
        [sys.executable, "-c", code, "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Pipeline.release_inference\n")
    assert "serve" in done.stdout


def test_no_target_is_read_from_a_ceiling() -> None:
    read = {figure_id for target in TARGETS for figure_id in target.figure_ids}
    assert read, "the targets read figures"
    assert not {figure_id for figure_id in read if RESPONSE_FREE_CEILING.name in figure_id}
    assert RESPONSE_FREE_CEILING not in FULL_VARIANTS and RESPONSE_FREE_CEILING.ceiling == RESPONSE_FREE


def test_the_stack_starts_a_ceiling_variant_with_the_patch() -> None:
    args, env = ceiling_command(RESPONSE_FREE, "serve", "--config", "x.yaml")
    assert args == [sys.executable, "-c", launcher(RESPONSE_FREE), "serve", "--config", "x.yaml"]
    assert env["PYTHONPATH"].split(os.pathsep)[-1] == str(ROOT)
