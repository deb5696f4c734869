"""Startup's heap is taken out of the cyclic collector's sight, and a large reply's memory
stays mapped between calls (``labelgate.gateway.heap``).

Each check runs in a fresh interpreter: freezing the heap and tuning the allocators are
process-wide, and the test process must not carry them into other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any


def _run(code: str) -> Any:
    """The JSON a fresh interpreter prints after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_garbage_is_collected_then_what_lives_is_frozen() -> None:
    collected, frozen = _run(
        """
        import gc, json, weakref
        from labelgate.gateway.heap import freeze_startup_heap

        class Cycle:
            def __init__(self):
                self.me = self

        garbage = weakref.ref(Cycle())  # unreachable, but only the collector can free a cycle
        assert garbage() is not None
        freeze_startup_heap()
        print(json.dumps([garbage() is None, gc.get_freeze_count()]))
        """
    )
    assert collected is True  # collected, not frozen for the life of the process
    assert frozen > 0


def test_the_collector_runs_less_often_but_still_collects_cycles() -> None:
    threshold, collected = _run(
        """
        import gc, json, weakref
        from labelgate.gateway.heap import prepare_heap

        class Cycle:
            def __init__(self):
                self.me = self

        prepare_heap()
        garbage = weakref.ref(Cycle())
        # Containers that stay alive (the count is of allocations not yet freed); no explicit collect.
        kept = [[None] for _ in range(gc.get_threshold()[0] * 2)]
        print(json.dumps([gc.get_threshold()[0], garbage() is None]))
        """
    )
    assert threshold == 50_000
    assert collected is True  # the collector still runs on its own


_LARGE_REPLY = """
    import json, resource
    from labelgate.gateway import heap

    def large_reply():
        # What a large reply allocates and frees: one small bytes per element (pymalloc) and
        # buffers of a megabyte (glibc malloc), about 1,000 pages in all.
        elements = [index.to_bytes(8, "little") * 4 for index in range(50_000)]
        buffers = [b"x" * (1 << 20) for _ in range(3)]
        return len(elements) + len(buffers)

    def page_faults():
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        large_reply()
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    if KEEP:
        heap.keep_reply_memory()
    large_reply()  # the first call may still map memory the reserve does not cover
    print(json.dumps([page_faults() for _ in range(3)]))
"""


def test_a_large_reply_s_memory_is_reused_not_faulted_in_again() -> None:
    # Without keep_reply_memory both allocators hand the memory back at the end of each call
    # and every later call faults about 1,000 pages in again. Counts, not times.
    kept = _run("KEEP = True\n" + textwrap.dedent(_LARGE_REPLY))
    default = _run("KEEP = False\n" + textwrap.dedent(_LARGE_REPLY))
    assert max(kept) < 50, kept
    assert min(default) > 500, default  # what the test would otherwise miss
