"""A decision goes onto the event loop only for an input no larger than one already decided
within the inline budget (review finding 5).

Warmed up on small inputs, a revision's running average was under the 100 µs budget, so the
next input went inline whatever its size: one of 512 fields took 0.94 s on the loop, and every
other call waited. No assertion here depends on the machine's speed: the engines run with a
budget every decision meets (10 s), or none does (0), and what is asserted is which thread a
decision ran on; the gate's rule is tested with the times it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.inline import UNBOUNDED, InlineGate, input_size, known_size
from labelgate.policy.wasm import WasmEngine
from tests.policy.conftest import VALID_RESULT, result_rule, write_policy
from tests.support.procs import opa_binary

POLICY = "n := count(input.fields)\n\n" + result_rule(VALID_RESULT, "n >= 0")
SMALL = {"fields": ["a"]}
LARGE = {"fields": [f"a{i}" for i in range(512)]}


def _record_threads(compiled: Any, method: str) -> list[int]:
    """Wrap the revision's evaluation so that each call notes the thread it ran on."""
    threads: list[int] = []
    original: Callable[..., Any] = getattr(compiled, method)

    def noted(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args)

    setattr(compiled, method, noted)
    return threads


@pytest.mark.parametrize("engine_class", [EmbeddedEngine, WasmEngine])
async def test_a_larger_input_than_any_decided_fast_goes_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_class: Any
) -> None:
    monkeypatch.setenv("LABELGATE_OPA", opa_binary())
    engine = engine_class(write_policy(tmp_path, POLICY), watch_interval=None, inline_budget=10.0)
    await engine.start()
    try:
        compiled = engine._compiled
        threads = _record_threads(compiled, "evaluate" if engine_class is EmbeddedEngine else "evaluate_text")
        loop_thread = threading.get_ident()
        for _ in range(5):
            assert (await engine.decide(SMALL)).allow
        assert threads[0] != loop_thread, "nothing measured yet: the pool"
        assert threads[1:] == [loop_thread] * 4, "small inputs, decided within the budget: inline"
        assert (await engine.decide(LARGE)).allow
        assert threads[-1] != loop_thread, "larger than any input decided within the budget: the pool"
        assert (compiled.inline.inline, compiled.inline.pooled) == (4, 2)
        # Decided within the budget there, the larger size may now go inline.
        assert (await engine.decide(LARGE)).allow and threads[-1] == loop_thread
    finally:
        await engine.close()


async def test_with_no_budget_nothing_goes_inline(tmp_path: Path) -> None:
    engine = EmbeddedEngine(write_policy(tmp_path, POLICY), watch_interval=None, inline_budget=0.0)
    await engine.start()
    try:
        threads = _record_threads(engine._compiled, "evaluate")
        for _ in range(5):
            await engine.decide(SMALL)
        assert threading.get_ident() not in threads
    finally:
        await engine.close()


def _route(gate: InlineGate, size: int) -> bool:
    return gate.inline_size(known_size(size)) is not None


def test_the_gate_admits_sizes_decided_within_the_budget() -> None:
    gate = InlineGate(budget=0.0001)
    assert not _route(gate, 1), "nothing measured"
    gate.record(0.00001, known_size(10))
    assert _route(gate, 10) and _route(gate, 3) and not _route(gate, 11)
    gate.record(0.00001, known_size(40))
    assert _route(gate, 40) and not _route(gate, 41)
    # A decision over the budget lowers the size below its own input's.
    gate.record(0.0002, known_size(20))  # over the budget; the average stays under it
    assert gate.average_seconds is not None and gate.average_seconds <= gate.budget
    assert _route(gate, 19) and not _route(gate, 20)
    gate.record(0.5, known_size(100))  # larger than the limit: the limit stays, the average does not
    assert gate.largest_fast == 19 and not _route(gate, 1)


def test_the_gate_measures_a_slow_input_only_up_to_its_limit() -> None:
    gate = InlineGate(budget=0.0001)
    gate.record(0.00001, known_size(10))
    limits: list[int] = []

    def measure(limit: int) -> int:
        limits.append(limit)
        return limit + 1

    gate.record(1.0, measure)
    assert limits == [10] and gate.largest_fast == 10
    gate.record(0.00001, measure)  # within the budget: measured whole
    assert limits[-1] == UNBOUNDED


def test_input_size_counts_values_and_stops_past_its_limit() -> None:
    assert input_size({"a": [1, "x" * 130, None]}) == 1 + 1 + 1 + 3 + 2
    huge = {"fields": list(range(10**6))}
    assert input_size(huge, limit=100) > 100
    assert input_size(huge) == 1 + 1 + 1 + 10**6
