"""The gateway's heap, set up once at the end of start-up (``prepare_heap``): startup's
objects out of the cyclic collector's sight, and a large reply's memory kept mapped
between calls. Both are process-wide; measured on 10,000-row replies (issue 12)."""

from __future__ import annotations

import ctypes
import gc
import platform


def prepare_heap() -> None:
    """``freeze_startup_heap``, ``collect_less_often`` and ``keep_reply_memory``: what a worker
    does once started."""
    freeze_startup_heap()
    collect_less_often()
    keep_reply_memory()


def freeze_startup_heap() -> None:
    """Move what startup built (modules, protobuf descriptors, catalogs, policy) out of the
    cyclic collector's sight. A large reply allocates enough containers to set off full
    collections, and each one walked this whole heap again: measured on a 10,000-row call,
    a third of the gateway's CPU per row. Nearly all of it lives as long as the process, so
    the collector has nothing to find in it; reference counting still frees what is dropped.
    The exception is the first catalog and policy, which a reload replaces: any reference
    cycles in them stay until exit (once, bounded)."""
    gc.collect()
    gc.freeze()


# The collector's youngest generation runs every 700 container allocations by default. A
# large reply allocates tens of thousands (a tuple or list per detection and JSON leaf) that
# live until the reply is built, so young collections walked them, promoted them and older
# ones walked them again: in process, a 10,000-row call cost 0.77x with a threshold of
# 50,000 (1,000 and 100 rows: 0.98x and 0.99x, within noise). Reference counting still frees
# all of it when the call ends; the collector only ever finds cycles (mostly exceptions and
# their tracebacks), which now wait for a later collection.
_YOUNG_GENERATION_THRESHOLD = 50_000


def collect_less_often() -> None:
    """Run the cyclic collector's youngest generation less often (see above)."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_GENERATION_THRESHOLD, middle, oldest)


# A reply's memory is freed when its call ends, and by default both allocators hand it back
# to the kernel at once, so the next large call faults every page in again: measured on a
# 10,000-row reply, 1,100 to 1,600 page faults per call in decode and encode, which made those
# stages cost 18x and 26x what 1,000 rows cost (page faults show up as CPU time, not as a
# GC or numpy cost). Keeping the memory mapped trades resident memory (about the peak of a
# large call, once per worker) for that CPU.
#
# pymalloc (objects up to 512 bytes: one ``bytes`` per BYTES element) returns an arena of
# 1 MiB to the kernel as soon as none of its objects lives, keeping one empty arena at
# most. An arena holding one live object is never returned, and its free pools serve any
# size of object: so a reserve of arenas, each pinned by a few objects, is reused by every
# call instead of being mapped anew. 16 MiB: a 10,000-row reply's elements and values take
# about 4 MiB, and they live from decode to encode while other calls run.
_ARENA_RESERVE_BYTES = 16 << 20
_RESERVE_OBJECT = 80  # bytes per pinning object (a bytes object's header and NUL take 33)
# One object pinned every 160 KiB: every 1 MiB arena keeps 6 or 7 of its 64 pools pinned
# and lends out the rest.
_RESERVE_STRIDE = 2048
_arena_reserve: list[bytes] = []

# glibc malloc (larger objects, lists, protobuf and tensor buffers) unmaps blocks above its
# mmap threshold when freed, and trims free memory above its trim threshold off the top of
# the heap. Both start at 128 KiB and are raised by glibc itself only as far as the
# largest block it has seen freed. Fixed here at glibc's own ceiling for the mmap threshold
# (32 MiB on 64-bit) and twice that for trimming, as its heuristic would set them: blocks
# and heap up to that size are reused, larger ones still go back to the kernel.
_M_TRIM_THRESHOLD = -1  # mallopt parameters, from <malloc.h>
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20
_TRIM_THRESHOLD_BYTES = 64 << 20


def keep_reply_memory() -> None:
    """Keep the memory of large replies mapped between calls (see above); once per process."""
    if not _arena_reserve:
        objects = [bytes(_RESERVE_OBJECT - 33) for _ in range(_ARENA_RESERVE_BYTES // _RESERVE_OBJECT)]
        _arena_reserve.extend(objects[::_RESERVE_STRIDE])
    _tune_glibc_malloc()


def _tune_glibc_malloc() -> bool:
    """Set glibc's thresholds (above); False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Each returns 1 on success; a refused value leaves glibc's default, which is only slower.
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) & mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
