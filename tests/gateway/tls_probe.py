"""``tests/support/triton_probe.py`` over TLS: the real tritonclient with a client certificate.

Same stdin/stdout format as ``triton_probe.py``; a call may also carry ``tls``:
``{"root_certificates", "private_key", "certificate_chain"}`` (file paths, as
``tritonclient.grpc.InferenceServerClient`` takes them). Runs in a child process for the
same reason as the probe (tritonclient's protos clash with labelgate's), and imports
nothing from labelgate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

import triton_probe


class _ClientModuleWithTls:
    """Stands in for ``tritonclient.grpc`` inside triton_probe: clients it builds use TLS."""

    def __init__(self, module: Any, tls: dict[str, str]) -> None:
        self._module = module
        self._tls = tls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def InferenceServerClient(self, url: str, **kwargs: Any) -> Any:
        return self._module.InferenceServerClient(url, ssl=True, **self._tls, **kwargs)


def main() -> None:
    plain = triton_probe.grpcclient
    results = []
    for call in json.load(sys.stdin):
        tls = call.pop("tls", None)
        triton_probe.grpcclient = _ClientModuleWithTls(plain, tls) if tls else plain
        results.append(triton_probe.run_call(call))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
