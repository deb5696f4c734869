"""The processes under test, started for real on loopback: demo backend, gateway, OPA.

A gateway ``Variant`` is one configuration of the gateway; ``Stack`` starts the processes
from the ``labelgate`` command line (``demo-backend``, ``serve --config <generated yaml>``)
and ``opa run --server``. Before a variant is measured, ``verify`` makes one call direct
and one through it and checks the answer is what the variant should produce (identical
for the allow-all proxy, masked for the full path), so a benchmark can never measure a
stream of refusals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from bench.ceilings import RESPONSE_FREE, ceiling_command
from bench.procs import BenchError
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify.detectors import BUILTIN_LABELS
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs
from tests.support.procs import REPO, Process, free_port, labelgate_command, running

DEFAULT_POLICY = REPO / "rego"
DEFAULT_CATALOG = DEFAULT_POLICY / "labelgate" / "catalog" / "data.json"
ALLOW_ALL_POLICY = Path(__file__).resolve().parent / "policy"
ALLOW_ALL_CATALOG = ALLOW_ALL_POLICY / "labelgate" / "catalog" / "data.json"
MODEL = "customer-profile"
# The persona of the full path: analysts see internal fields, get confidential ones
# partially masked (last 4 kept) and restricted ones nulled.
PERSONA_SUBJECT = "bench-analyst"
PERSONA_GROUPS = ("analysts",)
# Development-only key material: the quickstart's INSECURE dev key signs the callers' tokens,
# and the hash strategy needs a key of at least 16 bytes.
DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"
HASH_KEY = "bench-insecure-hash-key-not-secret"
POLICY_TIMEOUT_MS = 5000
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


@dataclass(frozen=True)
class Variant:
    """One gateway configuration to measure."""

    name: str
    title: str
    engine: str
    cache: bool
    policy_dir: Path
    catalog_file: Path
    detectors: bool
    masks: bool  # the full path masks; the allow-all proxy returns the backend's bytes unchanged
    # A durable audit record per call, written by a real audit-writer (its CPU counts as the
    # gateway's): the configuration issue 12's latency target is stated for.
    audit: bool = False
    # A stage made free (``bench.ceilings``): no configuration anyone runs, but the best that
    # work on that stage alone could reach. Never one of the targets' variants.
    ceiling: str | None = None


PROXY = Variant(
    "proxy_allow_all",
    "gateway, allow-all policy, no labels",
    engine="embedded",
    cache=True,
    policy_dir=ALLOW_ALL_POLICY,
    catalog_file=ALLOW_ALL_CATALOG,
    detectors=False,
    masks=False,
)


def full_path(engine: str, cache: bool, audit: bool = False) -> Variant:
    return Variant(
        f"full_{engine}_{'cache' if cache else 'nocache'}{'_audit' if audit else ''}",
        f"full path, {engine}, {'cache' if cache else 'no cache'}{', durable audit' if audit else ''}",
        engine=engine,
        cache=cache,
        policy_dir=DEFAULT_POLICY,
        catalog_file=DEFAULT_CATALOG,
        detectors=True,
        masks=True,
        audit=audit,
    )


FULL_VARIANTS = (
    full_path("opa", True),
    full_path("opa", False),
    full_path("embedded", True),
    full_path("embedded", False),
    # OPA's Wasm target in process: the engine that meets the uncached decisions/s target.
    full_path("wasm", False),
    # What `make run` ships with a durable audit record per call (the latency target's path).
    full_path("embedded", True, audit=True),
)
# The configuration `make run` ships (embedded engine, cache on): the scaling scenario's subject.
SCALING_VARIANT = full_path("embedded", True)
# That configuration with everything after the upstream's reply but the decision made free.
RESPONSE_FREE_CEILING = dataclasses.replace(
    SCALING_VARIANT,
    name="ceiling_response_free",
    title="ceiling: full path, embedded, cache, response stage free",
    ceiling=RESPONSE_FREE,
)


def gateway_config(variant: Variant, *, listen: str, upstream: str, opa_url: str | None) -> dict:
    # At c=32 a saturated event loop reads OPA's answer late, and the default 250 ms timeout
    # then fails the call closed: the bench measures that queueing as latency instead.
    policy: dict = {"dir": str(variant.policy_dir), "cache": variant.cache, "timeout_ms": POLICY_TIMEOUT_MS}
    if variant.engine == "opa":
        if opa_url is None:
            raise BenchError("BENCH_CONFIG", f"variant {variant.name} needs an OPA server")
        policy["opa_url"] = opa_url
    detectors = {} if variant.detectors else {"disabled": sorted(BUILTIN_LABELS)}
    return {
        "listen": listen,
        "admin_listen": None,
        "workers": 1,
        "upstream": {"address": upstream},
        "engine": variant.engine,
        "policy": policy,
        "classification": {"catalog_file": str(variant.catalog_file), "detectors": detectors},
        "masking": {"hash_key": HASH_KEY},
        "auth": {"jwt": {"trust_dev_key": True, "dev_keys_dir": str(DEV_KEYS)}},
    }


def request_bytes(rows: int) -> bytes:
    """A ModelInfer request for ``rows`` customers (raw input, all outputs), as tritonclient sends."""
    ids = list(range(rows))
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="customer_ids", datatype="INT64", shape=[rows])
    encode_inputs(request, [Tensor("customer_ids", "INT64", [rows], ids)], raw=True)
    return request.SerializeToString()


def bearer_token() -> str:
    from labelgate.auth.devkeys import mint_dev_token

    return mint_dev_token(PERSONA_SUBJECT, list(PERSONA_GROUPS), 6 * 3600, DEV_KEYS)


def infer_once(target: str, request: bytes, metadata: dict[str, str]) -> pb.ModelInferResponse:
    with grpc.insecure_channel(target, options=_CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            return call(request, metadata=tuple(metadata.items()), timeout=60)
        except grpc.RpcError as error:
            raise BenchError(
                "BENCH_CALL_FAILED", f"ModelInfer on {target} failed: {error.code().name}: {error.details()}"
            ) from None


def verify(variant: Variant, direct: str, gateway: str, request: bytes, metadata: dict[str, str]) -> None:
    """One call each way; the gateway's answer must be the variant's (see the module docstring)."""
    expected = {t.name: t.values for t in decode_outputs(infer_once(direct, request, metadata))}
    got = {t.name: t.values for t in decode_outputs(infer_once(gateway, request, metadata))}
    if set(got) != set(expected):
        raise BenchError("BENCH_VERIFY", f"{variant.name}: outputs {sorted(got)} != {sorted(expected)}")
    if variant.masks:
        if got["ssn"] == expected["ssn"] or got["customer_id"] != expected["customer_id"]:
            raise BenchError("BENCH_VERIFY", f"{variant.name}: ssn not masked or customer_id changed")
    elif got != expected:
        raise BenchError("BENCH_VERIFY", f"{variant.name}: the allow-all proxy changed the response")


class Stack:
    """Starts processes for one benchmark run; logs and configs go to ``work_dir``."""

    def __init__(self, work_dir: Path, opa_binary: str) -> None:
        self.work_dir = work_dir
        self.opa_binary = opa_binary

    @contextlib.contextmanager
    def backend(self) -> Iterator[tuple[str, Process]]:
        port = free_port()
        address = f"127.0.0.1:{port}"
        args = labelgate_command("demo-backend", "--listen", address)
        with running(args, self.work_dir / "backend.log", port, **_named("demo backend")) as child:
            yield address, child

    @contextlib.contextmanager
    def bare_proxy(self, upstream: str, typed: bool = False) -> Iterator[tuple[str, Process]]:
        """The floor: a bare grpc.aio pass-through proxy (``bench/bare_proxy.py``); ``typed``:
        the one that parses and re-serializes ModelInfer messages and does nothing else."""
        port = free_port()
        address = f"127.0.0.1:{port}"
        args = [sys.executable, "-m", "bench.bare_proxy", "--listen", address, "--upstream", upstream]
        name = "typed-proxy" if typed else "bare-proxy"
        with running(
            [*args, "--typed"] if typed else args, self.work_dir / f"{name}.log", port, **_named(name)
        ) as child:
            yield address, child

    @contextlib.contextmanager
    def opa(self, policy_dir: Path) -> Iterator[tuple[str, Process]]:
        port = free_port()
        args = [
            self.opa_binary,
            "run",
            "--server",
            f"--addr=127.0.0.1:{port}",
            # Access logs at info cost OPA time on every decision; a tuned deployment turns them off.
            "--log-level=error",
            "--skip-version-check",
            str(policy_dir),
        ]
        with running(args, self.work_dir / "opa.log", port, **_named("opa")) as child:
            yield f"http://127.0.0.1:{port}", child

    @contextlib.contextmanager
    def gateway(
        self,
        variant: Variant,
        upstream: str,
        opa_url: str | None,
        *,
        extra: dict | None = None,
        name: str | None = None,
    ) -> Iterator[tuple[str, Process]]:
        """``extra`` replaces top-level config sections (``audit``, ``approvals``, ...); ``name``
        (default: the variant's) names the config and log files."""
        port = free_port()
        address = f"127.0.0.1:{port}"
        config = gateway_config(variant, listen=address, upstream=upstream, opa_url=opa_url) | (extra or {})
        name = name or variant.name
        config_file = self.work_dir / f"gateway-{name}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        serve = ("serve", "--config", str(config_file))
        args, env = (
            ceiling_command(variant.ceiling, *serve) if variant.ceiling else (labelgate_command(*serve), {})
        )
        log = self.work_dir / f"gateway-{name}.log"
        with running(args, log, port, env=env, **_named(f"gateway ({name})")) as child:
            yield address, child


def _named(name: str) -> dict:
    """How the harness starts every process: named in errors, 30 s to listen."""
    return {"name": name, "timeout": 30.0}


def describe(variant: Variant) -> dict:
    """What a variant is, for the report (paths relative to the repository)."""

    def rel(path: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(REPO))
        return str(path)

    return {
        "title": variant.title,
        "engine": variant.engine,
        "cache": variant.cache,
        "policy": rel(variant.policy_dir),
        "catalog": rel(variant.catalog_file),
        "detectors": "built-ins" if variant.detectors else "all disabled",
        "policy_timeout_ms": POLICY_TIMEOUT_MS,
        "workers": 1,
    } | ({"ceiling": f"{variant.ceiling} (bench.ceilings: not a configuration)"} if variant.ceiling else {})
