"""The embedded engine's decisions return their memory in a process shaped like the gateway's.

rego-cpp's library (regopy) brings its own allocator (snmalloc) and exports the global
``operator new`` / ``delete``; libstdc++ binds its own calls to them once, when it is first
loaded. When grpc loaded libstdc++ first (as the gateway always did), strings libstdc++ built
with ``malloc`` inside an evaluation were handed to snmalloc's ``delete`` and never freed:
~90 KB per decision, the soak's RSS growth. ``labelgate/__init__.py`` now loads rego-cpp
first. Both checks run in a fresh interpreter, importing what the gateway imports in its order
(pytest's own process has loaded grpc long before).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.procs import REPO

pytest.importorskip("regopy")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc dynamic linker")

# The gateway's process: the CLI module first (it imports grpc), the engine later.
_GATEWAY_IMPORTS = "import labelgate.cli, grpc, labelgate.gateway.server\n"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_libstdcxx_allocates_with_the_allocator_rego_cpp_frees_with() -> None:
    """Deterministic: where the dynamic linker bound libstdc++'s ``operator new`` / ``delete``."""
    done = _run(_GATEWAY_IMPORTS + "import labelgate.policy.embedded", LD_DEBUG="bindings")
    assert done.returncode == 0, done.stderr[-2000:]
    bound = {}
    for line in done.stderr.splitlines():
        if "binding file" in line and "libstdc++.so.6 [0] to " in line.split("binding file", 1)[1]:
            for symbol in ("_Znwm", "_ZdlPv", "_ZdlPvm"):
                if line.rstrip().split("normal symbol `", 1)[-1].startswith(symbol + "'"):
                    bound[symbol] = line.split(" to ", 1)[1].split(" [", 1)[0]
    assert set(bound) == {"_Znwm", "_ZdlPv", "_ZdlPvm"}, done.stderr[-2000:]
    assert all(target.endswith("regopy/librego_shared.so") for target in bound.values()), bound


_EVALUATIONS = textwrap.dedent(
    """
    import copy, ctypes, json
    from pathlib import Path
    from labelgate.policy.embedded import _Compiled
    from labelgate.policy.engine import DECISION_PATH
    from labelgate.policy.source import PolicySource

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2

    def in_use():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    held = json.loads(Path("proxy/labelgate/schema/examples/steward-request-held.json").read_text())
    compiled = _Compiled.build(PolicySource.from_dir(Path("rego")), DECISION_PATH.strip("/"))

    def decide(n):
        doc = copy.deepcopy(held)
        doc["subject"]["id"] = f"CN=steward-{n},O=Example"
        doc["request"]["request_id"] = f"req-{n:08d}"
        doc["context"]["time_ns"] += n
        assert compiled.evaluate(doc)["require_approval"]

    for n in range(50):
        decide(n)
    before = in_use()
    for n in range(50, 350):
        decide(n)
    print(in_use() - before)
    """
)


def test_decisions_return_their_native_memory_in_the_gateways_process() -> None:
    """300 decisions, each on new values, after grpc is loaded: glibc's heap does not grow.

    Counted in bytes allocated (``mallinfo2``, one thread, the same inputs every run), not
    RSS: before the fix it grew ~27 MB (90 KB a decision); a few hundred KB is noise.
    """
    done = _run(_GATEWAY_IMPORTS + _EVALUATIONS)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.strip().splitlines()[-1])
    assert grown < 3_000_000, f"300 decisions kept {grown / 1e6:.1f} MB of native memory"
