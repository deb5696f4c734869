"""Startup's heap is taken out of the cyclic collector's sight (``freeze_startup_heap``)."""

from __future__ import annotations

import gc
import weakref

from labelgate.gateway.server import freeze_startup_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_garbage_is_collected_then_what_lives_is_frozen() -> None:
    garbage = weakref.ref(_Cycle())  # unreachable, but only the collector can free a cycle
    assert garbage() is not None
    try:
        freeze_startup_heap()
        assert garbage() is None  # collected, not frozen for the life of the process
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
