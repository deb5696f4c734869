"""The embedded engine reading bundle tarballs and following a real bundle server.

``PolicySource.from_bundle`` against bundles the project's own builder writes (plain,
signed, tampered, signed with another key); then ``EmbeddedEngine(bundle=BundleClient(...))``
against ``labelgate bundle-server`` processes: same decisions as the folder, edits reach the
decisions without restart, bad bundles are refused while the previous revision keeps deciding,
and the catalog the classify stage uses travels with the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import statistics
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from labelgate.bundle.build import build_bundle, read_tarball, write_tarball
from labelgate.bundle.signing import Signer
from labelgate.bundle.source import read_snapshot
from labelgate.classify import Catalog
from labelgate.config import ClassificationSettings, load_settings
from labelgate.errors import ConfigError, InvalidInput
from labelgate.gateway.classify_stage import ClassifierStage, build_detectors, bundle_catalog
from labelgate.policy.bundle_client import BundleClient
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.policy.source import BundleKey, PolicySource
from tests.bundle.helpers import (
    TOKEN,
    BundleServer,
    KeyPair,
    bundle_server,
    copy_source,
    example_input,
    make_key_pair,
    set_plain_ttl,
    write_atomically,
)
from tests.policy.test_bundle_rollback import serving
from tests.support.procs import opa_binary, running

EXAMPLES = ("no-group-response", "analyst-response", "steward-request-held", "analyst-opaque-method-denied")
EDITS = 4
CATALOG = "labelgate/catalog/data.json"


@pytest.fixture(scope="module")
def rsa_keys() -> KeyPair:
    return make_key_pair("RS256")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return copy_source(tmp_path / "source")


@contextlib.contextmanager
def bundle_server_at(log_dir: Path, source: Path, port: int, *args: str) -> Iterator[BundleServer]:
    """A bundle server at a given port: the same address the engine already follows."""
    command = [sys.executable, "-m", "labelgate.bundle.cli", "bundle-server", "--source", str(source)]
    command += ["--listen", f"127.0.0.1:{port}", "--state-dir", str(log_dir / f"state-{port}-{len(args)}")]
    command += ["--opa", opa_binary(), *args]
    log_path = log_dir / f"bundle-server-{port}-{time.monotonic_ns()}.log"
    with running(command, log_path, port=port, env={"LABELGATE_BUNDLE_TOKEN": TOKEN}) as process:
        yield BundleServer(f"http://127.0.0.1:{port}", process)


def built(source: Path, signer: Signer | None = None) -> bytes:
    return build_bundle(read_snapshot(source).files, signer).tarball


def key_of(keys: KeyPair) -> BundleKey:
    return BundleKey(keys.public_pem, keys.algorithm)


def repacked(tarball: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """The same members in the same order, after ``change``: what an attacker in the middle sends."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        order = [info.name for info in tar if info.isfile()]
    files = read_tarball(tarball)
    change(files)
    added = [name for name in files if name not in order]
    return write_tarball([(name, files[name]) for name in [*order, *added] if name in files])


# ------------------------------------------------------------------------------------------
# Reading tarballs


def test_a_bundle_reads_as_the_folder_it_was_built_from(source: Path) -> None:
    from_bundle = PolicySource.from_bundle(built(source))
    from_dir = PolicySource.from_dir(source)
    assert from_bundle.revision == from_dir.revision  # same content hash, folder or bundle
    assert from_bundle.modules == from_dir.modules
    assert from_bundle.data == from_dir.data
    assert "bundle_probe_test.rego" not in json.dumps(from_bundle.modules)


def test_signed_bundles_verify_and_anything_else_is_refused(source: Path, rsa_keys: KeyPair) -> None:
    signer = Signer.from_pem(rsa_keys.private_pem, "RS256")
    signed = built(source, signer)
    assert (
        PolicySource.from_bundle(signed, verify=key_of(rsa_keys)).revision
        == PolicySource.from_dir(source).revision
    )

    with pytest.raises(InvalidInput) as unsigned:
        PolicySource.from_bundle(built(source), verify=key_of(rsa_keys))
    assert unsigned.value.reason == "BUNDLE_UNSIGNED"

    def loosen(files: dict[str, bytes]) -> None:
        tables = json.loads(files["labelgate/tables/data.json"])
        tables["cache_ttl_seconds"]["plain"] = 99999
        files["labelgate/tables/data.json"] = json.dumps(tables).encode()

    with pytest.raises(InvalidInput) as tampered:
        PolicySource.from_bundle(repacked(signed, loosen), verify=key_of(rsa_keys))
    assert tampered.value.reason == "BUNDLE_SIGNATURE_INVALID"

    def smuggle(files: dict[str, bytes]) -> None:
        files["labelgate/decision/extra.rego"] = b"package labelgate.decision\n\nextra := true\n"

    with pytest.raises(InvalidInput) as extra:
        PolicySource.from_bundle(repacked(signed, smuggle), verify=key_of(rsa_keys))
    assert extra.value.reason == "BUNDLE_SIGNATURE_INVALID"

    other = make_key_pair("RS256")
    with pytest.raises(InvalidInput) as wrong_key:
        PolicySource.from_bundle(signed, verify=key_of(other))
    assert wrong_key.value.reason == "BUNDLE_SIGNATURE_INVALID"

    # Without a key the signature file is ignored, as OPA does without verification config.
    assert PolicySource.from_bundle(signed).revision == PolicySource.from_dir(source).revision


def test_garbage_and_unsafe_members_are_refused(source: Path) -> None:
    with pytest.raises(InvalidInput) as garbage:
        PolicySource.from_bundle(b"not a tarball")
    assert garbage.value.reason == "BUNDLE_UNREADABLE"

    def escape(files: dict[str, bytes]) -> None:
        files["../labelgate/x.rego"] = b"package labelgate.x\n"

    with pytest.raises(InvalidInput) as unsafe:
        PolicySource.from_bundle(repacked(built(source), escape))
    assert unsafe.value.reason == "BUNDLE_FILE_INVALID"

    def bad_manifest(files: dict[str, bytes]) -> None:
        files[".manifest"] = b"{"

    with pytest.raises(InvalidInput) as manifest:
        PolicySource.from_bundle(repacked(built(source), bad_manifest))
    assert manifest.value.reason == "BUNDLE_MANIFEST_INVALID"


@pytest.mark.parametrize("with_wasm", [False, True])
def test_a_followed_bundle_is_read_once(
    source: Path, rsa_keys: KeyPair, monkeypatch: pytest.MonkeyPatch, with_wasm: bool
) -> None:
    """Reading a tarball is what a bomb costs, before the signature is checked: once, not twice."""
    import labelgate.bundle.build as build
    from labelgate.policy.bundle_client import read_bundle

    files = dict(build_bundle(read_snapshot(source).files).files)
    if with_wasm:
        files["policy.wasm"] = b"\0asm"  # read_bundle keeps it; nothing here runs it
    members = sorted(files.items())
    signer = Signer.from_pem(rsa_keys.private_pem, rsa_keys.algorithm)
    members.insert(1, (".signatures.json", signer.signatures_file(members)))
    tarball = write_tarball(members)
    reads: list[int] = []
    real = build.read_tarball

    def counted(tarball: bytes, *args: Any, **kwargs: Any) -> dict[str, bytes]:
        reads.append(len(tarball))
        return real(tarball, *args, **kwargs)

    monkeypatch.setattr(build, "read_tarball", counted)
    bundle = read_bundle(tarball, verify=key_of(rsa_keys), origin="test")
    assert reads == [len(tarball)]
    assert bundle.revision == PolicySource.from_dir(source).revision
    assert getattr(bundle, "wasm", None) == (b"\0asm" if with_wasm else None)


def test_a_bundle_with_policy_wasm_keeps_what_its_data_does_not_hold_exactly(source: Path) -> None:
    """The wasm engine refuses data numbers a float64 does not hold: a bundle carrying policy.wasm
    must keep them on its source as a plain bundle does."""
    from labelgate.policy.bundle_client import BundleSource, read_bundle

    files = dict(build_bundle(read_snapshot(source).files).files)
    files["labelgate/limits/data.json"] = b'{"threshold": 0.1000000000000000055511151231257827}'
    files["policy.wasm"] = b"\0asm"
    bundle = read_bundle(write_tarball(sorted(files.items())), verify=None, origin="test")
    assert isinstance(bundle, BundleSource)
    assert bundle.inexact_numbers == (("labelgate/limits/data.json", "0.1000000000000000055511151231257827"),)


def test_the_public_key_is_checked_at_start(tmp_path: Path) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello")
    with pytest.raises(ConfigError) as invalid:
        BundleKey.from_file(not_a_key)
    assert invalid.value.reason == "BUNDLE_KEY_INVALID"
    with pytest.raises(ConfigError) as missing:
        BundleKey.from_file(tmp_path / "absent.pem")
    assert missing.value.reason == "BUNDLE_KEY_UNREADABLE"
    with pytest.raises(ConfigError) as alg:
        BundleKey.from_file(not_a_key, "HS256")
    assert alg.value.reason == "SIGNING_ALG_UNSUPPORTED"


# ------------------------------------------------------------------------------------------
# Settings


def test_bundle_settings_that_cannot_take_effect_are_refused(tmp_path: Path) -> None:
    base = {"auth": {"api_keys": {}}}
    url = "http://127.0.0.1:1"
    good = load_settings(**base, policy={"bundle_url": url, "bundle_token": "t"})
    assert good.policy.bundle_url == url and good.policy.bundle_wait_seconds == 20
    cases = {
        "needs engine 'embedded'": {"engine": "opa", "policy": {"bundle_url": url}},
        "policy.dir and policy.bundle_url": {"policy": {"bundle_url": url, "dir": str(tmp_path)}},
        "set but policy.bundle_url is not": {"policy": {"bundle_token": "t"}},
        "the catalog comes from the bundle": {
            "policy": {"bundle_url": url},
            "classification": {"catalog_file": str(tmp_path / "c.json")},
        },
    }
    for expected, overrides in cases.items():
        with pytest.raises(ConfigError) as refused:
            load_settings(**{**base, **overrides})
        assert expected in refused.value.message, refused.value.message


def test_auth_settings_shape_used_above_is_valid() -> None:
    # Guards the test above: a failure there must be about the bundle settings, not auth.
    load_settings(auth={"api_keys": {}})


# ------------------------------------------------------------------------------------------
# Following a real bundle server


@pytest.fixture
async def follow() -> AsyncIterator[Callable[..., Any]]:
    started: list[EmbeddedEngine] = []

    async def start(url: str, *, hooks: tuple[Any, ...] = (), **kwargs: Any) -> EmbeddedEngine:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("wait_seconds", 10)
        kwargs.setdefault("start_timeout", 20)
        kwargs.setdefault("retry_max", 1.0)
        engine = EmbeddedEngine(bundle=BundleClient(url, **kwargs))
        for hook in hooks:
            engine.add_revision_hook(hook)
        started.append(engine)
        await engine.start()
        return engine

    yield start
    for engine in started:
        await engine.close()


async def results(engine: EmbeddedEngine) -> dict[str, Any]:
    return {name: (await engine.decide(example_input(name))).to_result() for name in EXAMPLES}


async def ttl_of(engine: EmbeddedEngine) -> int:
    return (await engine.decide(example_input())).cache_ttl_seconds


async def eventually(check: Callable[[], Any], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {within}s waiting for {what}")


async def test_the_engine_follows_the_bundle_server(
    source: Path, tmp_path: Path, follow: Any, record_property: Any
) -> None:
    stage = ClassifierStage.from_settings(ClassificationSettings(), from_bundle=True)
    with bundle_server(tmp_path, source) as server:
        engine = await follow(server.url, hooks=(stage.bundle_hook,))
        served = server.status()["revision"]
        assert engine.revision == served == PolicySource.from_dir(source).revision
        assert stage.revision == served

        # The same decisions as the same policy loaded from its folder.
        folder = EmbeddedEngine(source, watch_interval=None)
        await folder.start()
        try:
            expected = await results(folder)
        finally:
            await folder.close()
        assert await results(engine) == expected
        assert all(result is not None for result in expected.values())

        # Edits reach the decisions without a restart; time each from the write.
        latencies = []
        for n in range(EDITS):
            ttl = 200 + n
            started = time.monotonic()
            set_plain_ttl(source, ttl)

            async def changed(ttl: int = ttl) -> bool:
                return await ttl_of(engine) == ttl

            await eventually(changed, f"edit {n} to reach the engine")
            latencies.append(time.monotonic() - started)
        median = statistics.median(latencies)
        record_property("bundle_edit_to_decision_median_s", round(median, 3))
        print(f"\nedit -> changed embedded decision: median {median:.3f}s over {EDITS} edits {latencies}")
        assert engine.bundle is not None and engine.bundle.status.loaded == EDITS + 1

        # The catalog travels with the policy: an edit reaches the classify stage.
        assert stage.classifier.catalog.labels_for("customer-profile", "outputs.segment") == frozenset(
            {"public"}
        )
        catalog = json.loads((source / CATALOG).read_text())
        for entry in catalog["entries"]:
            if entry.get("path") == "outputs.segment":
                entry["labels"] = ["confidential"]
        write_atomically(source / CATALOG, json.dumps(catalog, indent=2))

        async def catalog_followed() -> bool:
            labels = stage.classifier.catalog.labels_for("customer-profile", "outputs.segment")
            return labels == frozenset({"confidential"})

        await eventually(catalog_followed, "the catalog edit to reach the classify stage")
        assert stage.revision == engine.revision


def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


async def test_a_bundle_without_a_valid_catalog_is_refused_whole_and_shown(source: Path, follow: Any) -> None:
    """The gateway refuses it (the bundle server no longer publishes one, ``tests/bundle/
    test_publisher.py``; this one is served as it is), and says so in its metrics (review s14:
    only a counter moved, nothing named the revision in force or why the new one was refused)."""
    stage = ClassifierStage.from_settings(ClassificationSettings(), from_bundle=True)
    good = build_bundle(read_snapshot(source).files)
    # Valid JSON, which `opa check` passes, but not a valid catalog.
    write_atomically(source / CATALOG, json.dumps({"default_label": "public", "entries": []}))
    bad = build_bundle(read_snapshot(source).files)
    async with serving() as served:
        served.serve(good)
        engine = await follow(served.url, hooks=(stage.bundle_hook,), retry_min=0.05, retry_max=0.1)
        revision, catalog = engine.revision, stage.classifier.catalog
        assert revision == good.revision
        assert sample("labelgate_policy_revision_info", {"revision": good.revision}) == 1
        assert sample("labelgate_policy_bundle_refusing") == 0
        assert engine.bundle is not None
        status = engine.bundle.status
        before = time.time()

        served.serve(bad)

        async def refused() -> bool:
            return status.refused > 0

        await eventually(refused, "the bundle with a bad catalog to be refused")
        assert status.last_error == "CATALOG_INVALID"
        assert engine.revision == revision and stage.classifier.catalog is catalog
        assert stage.revision == revision
        assert sample("labelgate_policy_bundle_refusing") == 1
        assert sample("labelgate_policy_bundle_last_refusal_info", {"reason": "CATALOG_INVALID"}) == 1
        assert (sample("labelgate_policy_bundle_last_refusal_timestamp_seconds") or 0) >= before
        assert sample("labelgate_policy_revision_info", {"revision": good.revision}) == 1  # still in force
        assert sample("labelgate_policy_revision_info", {"revision": bad.revision}) is None

        served.serve(good)  # reverted: the server answers with the revision in force (304)

        async def recovered() -> bool:
            return sample("labelgate_policy_bundle_refusing") == 0

        await eventually(recovered, "a 304 for the revision in force to end the refusal")
        assert sample("labelgate_policy_bundle_last_refusal_info", {"reason": "CATALOG_INVALID"}) == 1  # kept


async def test_signed_bundles_are_followed_and_bad_ones_refused(
    source: Path, tmp_path: Path, follow: Any, rsa_keys: KeyPair
) -> None:
    private, _ = rsa_keys.write(tmp_path, "good")
    impostor, _ = make_key_pair("RS256").write(tmp_path, "impostor")
    with bundle_server(tmp_path, source, "--signing-key", str(private)) as server:
        engine = await follow(server.url, key=key_of(rsa_keys))
        port = int(server.url.rsplit(":", 1)[1])
        revision = engine.revision
        assert revision == server.status()["revision"]
        before = await results(engine)
    assert engine.bundle is not None
    status = engine.bundle.status

    # Server gone: logged and counted, the revision stays and keeps deciding.
    async def unreachable() -> bool:
        return status.last_error == "BUNDLE_SERVER_UNREACHABLE"

    await eventually(unreachable, "the follower to notice the server is gone")
    assert engine.revision == revision and await results(engine) == before

    # A server with another key comes up at the same address with a new revision: refused.
    set_plain_ttl(source, 4242)
    with bundle_server_at(tmp_path, source, port, "--signing-key", str(impostor)):

        async def refused() -> bool:
            return status.last_error == "BUNDLE_SIGNATURE_INVALID"

        await eventually(refused, "the wrongly signed bundle to be refused")
        assert engine.revision == revision and await results(engine) == before
    # And one that does not sign at all.
    with bundle_server_at(tmp_path, source, port):

        async def unsigned() -> bool:
            return status.last_error == "BUNDLE_UNSIGNED"

        await eventually(unsigned, "the unsigned bundle to be refused")
        assert engine.revision == revision and await results(engine) == before
    # The right key again: the new revision is taken.
    with bundle_server_at(tmp_path, source, port, "--signing-key", str(private)):

        async def taken() -> bool:
            return await ttl_of(engine) == 4242

        await eventually(taken, "the properly signed new revision")
        assert engine.revision != revision


async def test_start_fails_clearly_without_a_usable_bundle(
    source: Path, tmp_path: Path, follow: Any, rsa_keys: KeyPair
) -> None:
    with bundle_server(tmp_path, source) as server:
        with pytest.raises(ConfigError) as unsigned:
            await follow(server.url, key=key_of(rsa_keys), start_timeout=3)
        assert unsigned.value.reason == "POLICY_BUNDLE_UNAVAILABLE"
        assert "BUNDLE_UNSIGNED" in unsigned.value.message
        with pytest.raises(ConfigError) as token:
            await follow(server.url, token="wrong", start_timeout=3)
        assert "BUNDLE_HTTP_401" in token.value.message
        with pytest.raises(ConfigError) as large:
            await follow(server.url, max_bytes=1000, start_timeout=3)
        assert "BUNDLE_TOO_LARGE" in large.value.message


def test_the_engine_takes_a_folder_or_a_bundle(source: Path) -> None:
    client = BundleClient("http://127.0.0.1:1")
    for kwargs in ({}, {"policy_dir": source, "bundle": client}):
        with pytest.raises(ConfigError) as refused:
            EmbeddedEngine(**kwargs)
        assert refused.value.reason == "POLICY_CONFIG_INVALID"
    with pytest.raises(ConfigError) as url:
        BundleClient("ftp://example")
    assert url.value.reason == "BUNDLE_URL_INVALID"


def test_bundle_catalog_needs_the_catalog(source: Path) -> None:
    bundle = PolicySource.from_bundle(built(source))
    assert isinstance(bundle_catalog(bundle), Catalog)
    (source / CATALOG).unlink()
    with pytest.raises(ConfigError) as missing:
        bundle_catalog(PolicySource.from_bundle(built(source)))
    assert missing.value.reason == "BUNDLE_CATALOG_MISSING"
    assert build_detectors(ClassificationSettings()) is not None


# ------------------------------------------------------------------------------------------
# End to end: `labelgate serve` following the bundle server


def set_internal_replacement(source: Path, replacement: str) -> None:
    """A policy edit: what the default mask of internal data writes in place of the value."""
    path = source / "labelgate" / "tables" / "data.json"
    tables = json.loads(path.read_text())
    tables["labels"]["internal"]["default"]["mask"]["params"] = {"replacement": replacement}
    write_atomically(path, json.dumps(tables, indent=2))


async def test_a_gateway_follows_the_bundle_server(
    source: Path, tmp_path: Path, rsa_keys: KeyPair, record_property: Any
) -> None:
    from tests.gateway.aio import infer, outputs_of, texts
    from tests.gateway.expected import customer_request
    from tests.gateway.harness import gateway_config, make_token_issuer, run_backend, start_gateway
    from tests.support.pki import rsa_signing_key

    issuer = make_token_issuer(tmp_path, rsa_signing_key("idp-bundle"))
    private, public = rsa_keys.write(tmp_path, "bundle")
    request = customer_request([1], ("name", "segment"))
    headers = issuer.headers("no-group")

    async def seen() -> dict[str, list[str]]:
        response = await infer(gateway.address, request, headers)
        return {name: texts(tensor) for name, tensor in outputs_of(response).items()}

    with (
        run_backend(tmp_path / "backend") as (backend, _),
        bundle_server(tmp_path, source, "--signing-key", str(private)) as server,
    ):
        config = gateway_config(upstream=backend, engine="embedded", issuer=issuer)
        del config["classification"]  # the catalog comes from the bundle
        config["policy"] = {
            "bundle_url": server.url,
            "bundle_token": TOKEN,
            "bundle_public_key_file": str(public),
            "bundle_wait_seconds": 10,
        }
        with start_gateway(config, tmp_path / "gateway") as gateway:
            before = await seen()
            assert before["name"] == ["[REDACTED]"]  # internal, masked for no group
            assert before["segment"] != ["[REDACTED]"]  # public in the catalog

            latencies = []
            for n in range(EDITS):
                marker = f"[HIDDEN-{n}]"
                started = time.monotonic()
                set_internal_replacement(source, marker)

                async def changed(marker: str = marker) -> bool:
                    return (await seen())["name"] == [marker]

                await eventually(changed, f"policy edit {n} to reach the gateway's answers")
                latencies.append(time.monotonic() - started)
            median = statistics.median(latencies)
            record_property("gateway_bundle_edit_to_answer_median_s", round(median, 3))
            print(f"\nedit -> changed gateway answer: median {median:.3f}s over {EDITS} edits {latencies}")

            # A catalog edit travels in the same bundle: segment becomes internal, so masked.
            catalog = json.loads((source / CATALOG).read_text())
            for entry in catalog["entries"]:
                if entry.get("path") == "outputs.segment":
                    entry["labels"] = ["internal"]
            write_atomically(source / CATALOG, json.dumps(catalog, indent=2))
            last = f"[HIDDEN-{EDITS - 1}]"

            async def catalog_followed() -> bool:
                return (await seen())["segment"] == [last]

            await eventually(catalog_followed, "the catalog edit to reach the gateway's answers")


async def test_a_revision_the_embedded_engine_cannot_evaluate_exactly_is_refused(
    source: Path, tmp_path: Path, follow: Any
) -> None:
    with bundle_server(tmp_path, source) as server:
        engine = await follow(server.url)
        revision, before = engine.revision, await results(engine)
        # Valid Rego that OPA (and so the bundle server) accepts, but regopy cannot run exactly.
        extra = source / "labelgate" / "decision" / "lookup.rego"
        write_atomically(extra, 'package labelgate.decision\n\nlookup := http.send({"method": "get"})\n')
        assert engine.bundle is not None
        status = engine.bundle.status

        async def refused() -> bool:
            return status.refused > 0

        await eventually(refused, "the revision calling http.send to be refused")
        assert status.last_error == "POLICY_UNSUPPORTED_BY_EMBEDDED"
        assert "http.send" in (status.last_error_detail or "")
        assert "labelgate/decision/lookup.rego:3" in (status.last_error_detail or "")
        assert engine.revision == revision and await results(engine) == before
