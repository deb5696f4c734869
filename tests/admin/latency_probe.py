"""Time ModelInfer calls with the real ``tritonclient.grpc``, in a child process (its protos
clash with labelgate's in the pytest process; see tests/support/triton.py).

stdin: ``{"url", "token", "count", "warmup", "customer_ids"}``. stdout: a JSON list with the
latency of each timed call in milliseconds (every call must succeed). Imports nothing from
labelgate.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    spec = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(spec["url"])
    ids = np.array(spec.get("customer_ids", [1, 2]), dtype=np.int64)
    headers = {"authorization": f"Bearer {spec['token']}"}
    latencies = []
    for number in range(spec["warmup"] + spec["count"]):
        tensor = grpcclient.InferInput("customer_ids", [len(ids)], "INT64")
        tensor.set_data_from_numpy(ids)
        started = time.perf_counter()
        client.infer("customer-profile", [tensor], headers=headers, client_timeout=30)
        if number >= spec["warmup"]:
            latencies.append((time.perf_counter() - started) * 1000)
    client.close()
    json.dump(latencies, sys.stdout)


if __name__ == "__main__":
    main()
