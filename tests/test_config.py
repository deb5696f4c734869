"""The configuration model: sources, typed paths, and each section's own checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from labelgate.config import GatewaySettings, load_settings
from labelgate.config_paths import ConfigPath
from labelgate.errors import ConfigError

AUTH = {"api_keys": {}}


def write(folder: Path, config: dict[str, object]) -> Path:
    path = folder / "labelgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_relative_paths_resolve_against_the_config_folder_by_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys.yaml").write_text("keys: []\n")
    config = write(
        tmp_path,
        {
            "auth": {"api_keys": {"keys_file": "keys.yaml"}},
            "policy": {"dir": "policy"},
            "audit": {"socket": "run/audit.sock", "inputs_file": "/abs/inputs.db"},
            "routes": [{"method_prefix": "/demo.Svc/", "descriptor_set": "svc.pb"}],
            "recording": {"dir": "sessions", "decryption_key_files": ["old.key"]},
            # Not a path, though it looks like one: kept as written.
            "upstream": {"address": "backend:8001", "server_name": "x_file", "tls": True},
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(Path(os.path.relpath(config, elsewhere)))
    assert settings.auth.api_keys is not None and settings.auth.api_keys.keys_file == tmp_path / "keys.yaml"
    assert settings.policy.dir == tmp_path / "policy"
    assert settings.audit.socket == tmp_path / "run" / "audit.sock"
    assert settings.audit.inputs_file == Path("/abs/inputs.db")
    assert settings.routes[0].descriptor_set == tmp_path / "svc.pb"
    assert settings.recording.dir == tmp_path / "sessions"
    assert settings.recording.decryption_key_files == [tmp_path / "old.key"]
    assert settings.upstream.server_name == "x_file"


def test_without_a_config_file_paths_stay_as_given() -> None:
    settings = GatewaySettings(auth=AUTH, policy={"dir": "policy"})
    assert settings.policy.dir == Path("policy")
    assert load_settings(auth=AUTH, policy={"dir": "policy"}).policy.dir == Path("policy")


def test_paths_from_the_environment_or_code_stay_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what the config file says resolves against its folder: a relative path in an
    environment variable or an override means the working directory, as it always did."""
    config = write(tmp_path, {"auth": AUTH, "policy": {"dir": "from-file"}, "recording": {"dir": "rec"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LABELGATE_POLICY__DIR", "from-env")
    monkeypatch.setenv("LABELGATE_CLASSIFICATION__CATALOG_FILE", "catalog.json")
    settings = load_settings(config, audit={"socket": "run/audit.sock"})
    assert settings.policy.dir == Path("from-env")
    assert settings.classification.catalog_file == Path("catalog.json")
    assert settings.audit.socket == Path("run/audit.sock")
    assert settings.recording.dir == tmp_path / "rec"  # the file's own value still resolves
    monkeypatch.delenv("LABELGATE_POLICY__DIR")
    assert load_settings(config).policy.dir == tmp_path / "from-file"


def test_environment_variables_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, {"auth": AUTH, "policy": {"timeout_ms": 100}, "workers": 2})
    monkeypatch.setenv("LABELGATE_POLICY__TIMEOUT_MS", "300")
    settings = load_settings(config, workers=3)
    assert settings.policy.timeout_ms == 300
    assert settings.workers == 3, "flags are stronger than the file"


@pytest.mark.parametrize(
    ("content", "reason", "says"),
    [
        ("listen: [unclosed\n", "CONFIG_INVALID", "is not valid YAML"),
        ("- a\n- b\n", "CONFIG_INVALID", "must hold a mapping at the top level"),
    ],
)
def test_a_file_that_is_not_a_config_is_refused(tmp_path: Path, content: str, reason: str, says: str) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.reason == reason and says in refused.value.message


def test_a_missing_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.yaml", tmp_path):
        with pytest.raises(ConfigError) as refused:
            load_settings(path)
        assert refused.value.reason == "CONFIG_UNREADABLE"
        assert f"cannot read {path}" in refused.value.message


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text("")
    with pytest.raises(ConfigError, match="no method"):
        load_settings(config)
    assert load_settings(config, auth=AUTH).listen == "127.0.0.1:8443"


@pytest.mark.parametrize(
    ("overrides", "where", "says"),
    [
        ({"masking": {"hash_key": "short"}}, "masking", "at least 16 bytes"),
        ({"masking": {"hash_key": "k" * 16, "hash_key_file": "/k"}}, "masking", "choose one"),
        ({"audit": {"fail_open": True}}, "audit", "no writer to fail open from"),
        (
            {"audit": {"commit_delay_ms": 30, "timeout_seconds": 0.05}},
            "audit",
            "at most half of audit.timeout",
        ),
        ({"upstream": {"ca_file": "/ca.pem"}}, "upstream", "tls is false"),
        (
            {"upstreams": [{"name": "a", "models": ["m"], "server_name": "a"}]},
            "upstreams.0",
            "tls is false",
        ),
        ({"routes": [{"method_prefix": "/grpc.health.v1.Health/"}]}, "routes.0", "gateway's own services"),
        ({"routes": [{"method_prefix": "/inference.GRPCInferenceService/"}]}, "routes.0", "built in"),
        ({"policy": {"bundle_token": "t"}}, "policy", "set but policy.bundle_url is not"),
        (
            {"policy": {"bundle_url": "http://127.0.0.1:1", "bundle_state_file": "/var/lib/lg/bundle.json"}},
            "policy",
            "set policy.bundle_public_key_file",
        ),
    ],
)
def test_each_section_checks_itself(overrides: dict[str, object], where: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, **overrides)
    assert f"  - {where}: " in refused.value.message and says in refused.value.message


def test_cross_section_problems_are_listed_together() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            auth=AUTH,
            engine="opa",
            policy={"bundle_url": "http://127.0.0.1:1"},
            listen="127.0.0.1:9090",
            routes=[{"method_prefix": "/a.B/"}, {"method_prefix": "/a.B/"}],
        )
    message = refused.value.message
    for says in (
        "needs engine 'embedded' or 'wasm'",
        "admin_listen must differ from listen",
        "a method_prefix appears twice",
    ):
        assert says in message, message
    assert "the configuration has 3 problems" in message


IDP = "https://idp.example.com"


def jwt_auth(issuer: str = IDP, **jwt: str) -> dict[str, object]:
    return {"jwt": {"issuer": issuer, "audience": "labelgate", "jwks_url": f"{IDP}/jwks", **jwt}}


def inbox_oidc(issuer: str = IDP, **oidc: str) -> dict[str, object]:
    return {"oidc": {"issuer": issuer, "client_id": "labelgate-inbox", **oidc}}


@pytest.mark.parametrize(
    ("auth", "admin"),
    [
        (jwt_auth(subject_claim="email"), inbox_oidc()),  # the inbox keeps the default "sub"
        (jwt_auth(), inbox_oidc(subject_claim="preferred_username")),
        (jwt_auth(f"{IDP}/", subject_claim="email"), inbox_oidc(subject_claim="sub")),
    ],
)
def test_one_issuer_with_two_subject_claims_is_refused(auth: dict, admin: dict) -> None:
    """olivia@corp.example calling the gateway and 00u1ab2c3 in the inbox would be two people,
    so she could approve her own held call."""
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=auth, admin=admin)
    message = refused.value.message
    assert "admin.oidc.subject_claim" in message and "auth.jwt.subject_claim" in message
    assert "the same person would get two ids" in message


@pytest.mark.parametrize(
    ("auth", "admin"),
    [
        (jwt_auth(subject_claim="email"), inbox_oidc(subject_claim="email")),
        (jwt_auth(), inbox_oidc()),
        (jwt_auth(subject_claim="email"), inbox_oidc("https://login.other.example")),  # another issuer
        ({"jwt": {"trust_dev_key": True}}, inbox_oidc(subject_claim="email")),  # the dev key only
    ],
)
def test_one_subject_claim_per_issuer_loads(auth: dict, admin: dict) -> None:
    assert load_settings(auth=auth, admin=admin).admin.oidc is not None


def test_no_auth_method_is_a_problem_of_the_gateway_not_the_section() -> None:
    with pytest.raises(ValidationError, match="no method"):
        GatewaySettings()
    assert GatewaySettings(auth=AUTH).auth.enabled() == ["api_key"]


def _untyped_paths(model: type[BaseModel], where: str) -> list[str]:
    """Settings typed ``Path`` without ``ConfigPath``'s resolution, anywhere in ``model``."""
    resolves = next(m for m in get_args(ConfigPath)[1:] if isinstance(m, BeforeValidator))

    def walk(annotation: object, metadata: list[object], at: str) -> list[str]:
        if get_origin(annotation) is Annotated:
            inner, *extra = get_args(annotation)
            return walk(inner, [*metadata, *extra], at)
        if annotation is Path:
            return [] if resolves in metadata else [at]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return _untyped_paths(annotation, at)
        return [found for arg in get_args(annotation) for found in walk(arg, [], at)]

    return [
        found
        for name, field in model.model_fields.items()
        for found in walk(field.annotation, list(field.metadata), f"{where}.{name}")
    ]


def test_every_path_setting_is_a_config_path() -> None:
    # A plain Path would be read relative to the working directory, not the config file.
    assert _untyped_paths(GatewaySettings, "config") == []


def test_the_path_check_sees_a_plain_path() -> None:
    class Loose(BaseModel):
        typed: ConfigPath | None = None
        plain: list[Path] = []

    assert _untyped_paths(Loose, "x") == ["x.plain"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"listen: \xcc\xff\n", "is not UTF-8 text"),
        (b"[" * 100_000, "is nested too deeply"),
    ],
)
def test_a_binary_or_too_deep_file_is_refused(tmp_path: Path, content: bytes, says: str) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.reason == "CONFIG_INVALID" and says in refused.value.message


# Each passed validation, and --check-config, then failed (or misbehaved) at `serve`.
@pytest.mark.parametrize(
    ("overrides", "where", "says"),
    [
        ({"limits": {"max_message_bytes": 2**31}}, "limits.max_message_bytes", "less than or equal"),
        ({"tracing": {"endpoint": "http://[::1"}}, "tracing.endpoint", "is not HOST:PORT or an http(s) URL"),
        ({"tracing": {"endpoint": "collector:99999"}}, "tracing.endpoint", "is not HOST:PORT"),
        (
            {"engine": "opa", "policy": {"opa_url": "http://127.0.0.1:99999"}},
            "policy.opa_url",
            "is not a URL",
        ),
        ({"engine": "opa", "policy": {"opa_url": "127.0.0.1:8181"}}, "policy.opa_url", "http(s)://"),
        ({"rest_listen": "127.0.0.1:8443"}, "config", "rest_listen must differ"),
        ({"rest_listen": "127.0.0.1:9090"}, "config", "rest_listen must differ"),
        (
            {"classification": {"detectors": {"custom": [{"name": "x", "pattern": "("}]}}},
            "classification.detectors",
            "invalid regex",
        ),
        (
            {"classification": {"detectors": {"disabled": ["credit_crad"]}}},
            "classification.detectors",
            "unknown built-in detector 'credit_crad'",
        ),
        (
            {"classification": {"detectors": {"labels": {"emial": "restricted"}}}},
            "classification.detectors",
            "unknown built-in detector 'emial'",
        ),
        (
            {"recording": {"postgres_dsn": "notadsn"}},
            "config",
            "recording.postgres_dsn: not a PostgreSQL DSN",
        ),
    ],
)
def test_what_serve_cannot_use_is_refused_at_load(overrides: dict[str, Any], where: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, **overrides)
    assert f"  - {where}: " in refused.value.message and says in refused.value.message, refused.value.message


def test_a_postgres_dsn_problem_does_not_repeat_the_dsn() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, recording={"postgres_dsn": "postgresql://u:s3cret@[::1/db"})
    assert "not a PostgreSQL DSN" in refused.value.message and "s3cret" not in refused.value.message


def test_good_urls_detectors_and_dsns_still_load() -> None:
    settings = load_settings(
        auth=AUTH,
        engine="opa",
        rest_listen="127.0.0.1:8080",
        policy={"opa_url": "https://opa.internal:8181"},
        tracing={"endpoint": "collector:4317"},
        classification={"detectors": {"disabled": ["phone"], "labels": {"email": "restricted"}}},
        recording={"postgres_dsn": "host=db dbname=sessions"},
    )
    assert settings.tracing.endpoint == "collector:4317"
    assert settings.classification.detectors.disabled == ["phone"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LABELGATE_APPROVALS__VIEWER_GROUPS", "auditors,x"),
        ("LABELGATE_UPSTREAM__FORWARD_METADATA", "traceparent"),
        ("LABELGATE_ROUTES", "notjson"),
    ],
)
def test_a_variable_that_is_not_json_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH)
    assert refused.value.reason == "CONFIG_INVALID"
    assert refused.value.message.startswith(f"{variable}: ")


# -- serve --check-config: what serve reads at start must be there and load ---------------
def recording_problems(tmp_path: Path, **overrides: Any) -> list[str]:
    from labelgate.config import startup_problems

    settings = load_settings(auth=AUTH, **overrides)
    return [p for p in startup_problems(settings) if p.startswith(("recording.", "audit."))]


def test_check_config_reads_the_recording_keys_as_serve_does(tmp_path: Path) -> None:
    from labelgate.recording.sealing import write_key_file

    good, old = write_key_file(tmp_path / "good.key"), write_key_file(tmp_path / "old.key")
    short = tmp_path / "short.key"
    short.write_text("c2hvcnQ=\n")  # 5 bytes
    sessions = str(tmp_path / "sessions")
    ok = {"dir": sessions, "encryption_key_file": str(good), "decryption_key_files": [str(old)]}
    assert recording_problems(tmp_path, recording=ok) == []
    for recording, where, says in [
        (
            {"dir": sessions, "encryption_key_file": str(tmp_path / "missing.key")},
            "recording.encryption_key_file",
            "cannot read recording key",
        ),
        (
            {"dir": sessions, "encryption_key_file": str(short)},
            "recording.encryption_key_file",
            "not 32 bytes",
        ),
        (
            {**ok, "decryption_key_files": [str(old), str(tmp_path / "gone.key")]},
            "recording.decryption_key_files[1]",
            "gone.key",
        ),
    ]:
        (problem,) = recording_problems(tmp_path, recording=recording)
        assert problem.startswith(f"{where}: ") and says in problem, problem
    # Without a store, serve records nothing and reads no key.
    assert recording_problems(tmp_path, recording={"encryption_key_file": str(short)}) == []


def test_check_config_refuses_an_inputs_file_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert recording_problems(tmp_path, audit={"inputs_file": str(tmp_path / "inputs.sqlite3")}) == []
    (problem,) = recording_problems(tmp_path, audit={"inputs_file": str(blocker / "inputs.sqlite3")})
    assert problem.startswith("audit.inputs_file: ") and "not a writable folder" in problem


def test_the_decision_cache_is_bounded_by_the_bytes_of_its_keys_as_configured(tmp_path: Path) -> None:
    """``policy.cache_max_bytes`` (default 64 MiB, the cache's own default) reaches the cache the
    gateway builds, beside ``policy.cache_max_entries``."""
    from labelgate.gateway.server import build_engine
    from labelgate.policy.cache import DEFAULT_MAX_BYTES, CachingEngine

    default = load_settings(auth=AUTH, policy={"dir": str(tmp_path)})
    assert default.policy.cache_max_bytes == DEFAULT_MAX_BYTES == 64 * 2**20
    settings = load_settings(
        auth=AUTH, policy={"dir": str(tmp_path), "cache_max_entries": 5, "cache_max_bytes": 4096}
    )
    engine = build_engine(settings)
    assert isinstance(engine, CachingEngine)
    assert (engine._max_entries, engine._max_bytes) == (5, 4096)
    with pytest.raises(ConfigError):
        load_settings(auth=AUTH, policy={"dir": str(tmp_path), "cache_max_bytes": 0})


# -- the YAML file: what a loader would silently change or expand -------------------------
@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        # The reviewer's case: the second `recording:` dropped the first one's encryption key.
        (
            "auth: {api_keys: {}}\nrecording:\n  encryption_key_file: rec.key\n"
            "listen: 127.0.0.1:8443\nrecording:\n  dir: sessions\n",
            "'recording'",
            "lines 2 and 5",
        ),
        (
            "auth: {api_keys: {}}\nupstream:\n  address: a:1\n  tls: true\n  address: b:2\n",
            "'address'",
            "3 and 5",
        ),
        (
            "auth: {api_keys: {}}\nupstreams:\n  - {name: a, models: [m], name: b}\n",
            "'name'",
            "lines 3 and 3",
        ),
        ("auth: {api_keys: {}}\nrelease:\n  parameters:\n    x: public\n    x: secret\n", "'x'", "4 and 5"),
    ],
)
def test_a_key_written_twice_is_refused_at_any_depth(tmp_path: Path, text: str, key: str, lines: str) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    message = refused.value.message
    assert refused.value.reason == "CONFIG_INVALID"
    assert f"the key {key} appears twice" in message and lines in message, message


def alias_bomb(levels: int) -> str:
    """Each level a list of nine aliases of the one before: 9**levels strings once copied."""
    text = 'l0: &l0 ["x","x","x","x","x","x","x","x","x"]\n'
    for level in range(1, levels):
        text += f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]\n"
    return text


@pytest.mark.parametrize(
    "text",
    [
        alias_bomb(5),  # 59,049 strings copied; the reviewer's 9 levels took gigabytes
        "auth: &keys {api_keys: {}}\n",  # an anchor alone is refused too: write the value out
        "auth: {api_keys: {}}\nupstreams:\n  - &u {name: a, models: [m]}\n  - {<<: *u, name: b}\n",
    ],
)
def test_yaml_anchors_and_aliases_are_refused(tmp_path: Path, text: str) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.reason == "CONFIG_INVALID"
    assert "anchors and aliases (&name, *name) are not accepted" in refused.value.message
    assert "line " in refused.value.message


def test_a_config_file_past_one_mebibyte_is_refused(tmp_path: Path) -> None:
    from labelgate.config import MAX_CONFIG_BYTES

    config = tmp_path / "labelgate.yaml"
    config.write_bytes(b"auth: {api_keys: {}}\n" + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.reason == "CONFIG_INVALID" and "is larger than 1 MiB" in refused.value.message


def test_the_shipped_configs_still_load() -> None:
    root = Path(__file__).resolve().parents[1]
    for config in (
        "deploy/quickstart/labelgate.yaml",
        "deploy/docker/labelgate.yaml",
        "deploy/compose/labelgate.yaml",
    ):
        try:
            load_settings(root / config)
        except ConfigError as error:  # a file or variable it names may be absent here; not the YAML
            assert "is not valid YAML" not in error.message and str(config) not in error.message, (
                error.message
            )


# -- values that can never work: infinities ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("upstream:\n  timeout_seconds: .inf\n", "upstream.timeout_seconds", "less than or equal to 86400"),
        (
            "upstreams:\n  - {name: a, models: [m], timeout_seconds: .inf}\n",
            "upstreams.0.timeout_seconds",
            "less than or equal to 86400",
        ),
        # A section defined beside its module (recording/settings.py) is held to it as well.
        (
            "recording:\n  sweep_interval_seconds: .inf\n",
            "config",
            "recording.sweep_interval_seconds: must be a finite",
        ),
    ],
)
def test_an_infinite_number_is_refused(tmp_path: Path, text: str, where: str, says: str) -> None:
    config = tmp_path / "labelgate.yaml"
    config.write_text("auth: {api_keys: {}}\n" + text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert f"  - {where}: " in refused.value.message and says in refused.value.message, refused.value.message


# -- LABELGATE_* variables that name no setting -----------------------------------------------
@pytest.mark.parametrize(
    ("variable", "says"),
    [
        (
            "LABELGATE_RECORDNG__ENCRYPTION_KEY_FILE",
            "no setting is called 'recordng'; did you mean LABELGATE_RECORDING__ENCRYPTION_KEY_FILE?",
        ),
        ("LABELGATE_NOSUCH__DIR", "no setting is called 'nosuch'"),
        ("LABELGATE_WORKRS", "did you mean LABELGATE_WORKERS?"),
        ("labelgate_recordng", "did you mean LABELGATE_RECORDING?"),  # read case-insensitively
    ],
)
def test_a_misspelt_variable_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str, says: str) -> None:
    monkeypatch.setenv(variable, "/keys/recording.key")
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH)
    assert refused.value.reason == "CONFIG_INVALID"
    assert f"  - {variable}: " in refused.value.message and says in refused.value.message, (
        refused.value.message
    )


def test_other_labelgate_variables_still_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables labelgate's own commands read, and those a Kubernetes Service named
    labelgate puts in every pod of its namespace, are no settings and no typos."""
    import re

    from labelgate.config import misspelt_variables

    sources = Path(__file__).resolve().parents[1] / "proxy" / "labelgate"
    named = {
        name
        for path in sources.rglob("*.py")
        if path.parent.name != "config"  # the config package's docstrings spell typos on purpose
        for name in re.findall(r"LABELGATE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8"))
    }
    service_links = ["LABELGATE_PORT", "LABELGATE_SERVICE_HOST", "LABELGATE_PORT_8443_TCP_ADDR"]
    service_links += ["LABELGATE_APPROVALS_SERVICE_PORT", "LABELGATE_METRICS_PORT"]
    assert misspelt_variables(dict.fromkeys([*named, *service_links], "x")) == []
    for name in service_links:
        monkeypatch.setenv(name, "tcp://10.0.0.1:8443")
    assert load_settings(auth=AUTH).workers == 1


# -- credentials in URLs are never quoted ----------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"engine": "opa", "policy": {"opa_url": "http://admin:S3cretPW@opa:99999"}},
        {"engine": "opa", "policy": {"opa_url": "ftp://admin:S3cretPW@opa:8181"}},
        {
            "engine": "opa",
            "policy": {"opa_url": "http://admin:S3cret\uff03PW@opa:8181"},
        },  # urllib quotes the netloc
        {"tracing": {"endpoint": "http://u:S3cretPW@collector:99999"}},
        {"tracing": {"endpoint": "u:S3cretPW@collector:99999"}},
        {"tracing": {"endpoint": "https://u:S3cret\uff03PW@collector:4318"}},
        {"listen": "u:S3cretPW@host:port"},
    ],
)
def test_a_url_problem_never_quotes_its_credentials(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, **overrides)
    assert "S3cret" not in refused.value.message and "***@" in refused.value.message, refused.value.message


def test_the_issuer_of_two_subject_claims_is_shown_without_credentials() -> None:
    issuer = "https://u:S3cretPW@idp.example.com"
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=jwt_auth(issuer, subject_claim="email"), admin=inbox_oidc(issuer))
    # An inbox issuer carrying credentials is refused on its own (test_url_credentials.py), so
    # the check of two claims never sees one; the credentials are not quoted either way.
    assert "admin.oidc.issuer: " in refused.value.message and "S3cret" not in refused.value.message


# -- every upstream address: one check, one message (THREAT-MODEL, configuration / logs) -----
ENTRY = {"name": "text", "address": "127.0.0.1:8001", "models": ["m"]}
ROUTED = {"method_prefix": "/demo.Svc/"}


@pytest.mark.parametrize(
    ("setting", "overrides"),
    [
        ("upstream.address", lambda address: {"upstream": {"address": address}}),
        ("upstreams.0.address", lambda address: {"upstreams": [{**ENTRY, "address": address}]}),
        (
            "routes.1.upstream",
            lambda address: {"routes": [{"method_prefix": "/a.A/"}, {**ROUTED, "upstream": address}]},
        ),
    ],
)
@pytest.mark.parametrize(
    "address",
    [
        "triton:S3cretPW@127.0.0.1:8001",
        "triton:S3cret/PW@127.0.0.1:8001",  # a "/" ended the userinfo a URL's reading sees
        "triton:S3cret#PW@127.0.0.1:8001",
        "S3cretPW@127.0.0.1:8001",
        "triton:S3cretPW@backend",  # no port either: the credentials are named first
    ],
)
def test_every_upstream_address_refuses_credentials_without_quoting_them(
    setting: str, overrides: Any, address: str
) -> None:
    """``routes[].upstream`` was not checked at all: ``user:pw@host:port`` was dialled, and its
    password was in every subject assertion's audience and every line naming the upstream."""
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, **overrides(address))
    message = refused.value.message
    assert f"  - {setting}: " in message and "carries credentials (user:password@)" in message, message
    assert "S3cret" not in message and "PW" not in message, message
    assert "the gateway's credential for an upstream is its token" in message, message


def test_a_routes_upstream_is_an_address_like_any_other_or_an_entrys_name() -> None:
    """Without a port it names an entry of ``upstreams``: one it did not name was dialled as
    a host on gRPC's default port, at the first call."""

    def refusal(route_upstream: str) -> str:
        with pytest.raises(ConfigError) as refused:
            load_settings(auth=AUTH, upstreams=[ENTRY], routes=[{**ROUTED, "upstream": route_upstream}])
        return refused.value.message

    assert "routes.0.upstream: 'http://backend' is not HOST:PORT" in refusal("http://backend")
    assert "routes.0.upstream: 'backend:port' is not HOST:PORT" in refusal("backend:port")
    assert "routes[0].upstream: 'txet' is not HOST:PORT nor the name of an entry of upstreams" in refusal(
        "txet"
    )
    for fine in ("text", "backend:8001", "[::1]:8001", None):
        settings = load_settings(auth=AUTH, upstreams=[ENTRY], routes=[{**ROUTED, "upstream": fine}])
        assert settings.routes[0].upstream == fine


def test_no_forward_metadata_names_a_tracestate() -> None:
    """A caller's ``tracestate`` is never forwarded (docs/OPERATING.md, Tracing): it was in the
    default, and naming it now is refused rather than silently doing nothing."""
    assert load_settings(auth=AUTH).upstream.forward_metadata == ["traceparent", "x-request-id"]
    for where, overrides in (
        ("upstream.forward_metadata", {"upstream": {"forward_metadata": ["traceparent", "TraceState"]}}),
        ("upstreams.0.forward_metadata", {"upstreams": [{**ENTRY, "forward_metadata": ["tracestate"]}]}),
    ):
        with pytest.raises(ConfigError) as refused:
            load_settings(auth=AUTH, **overrides)
        assert f"  - {where}: tracestate is never forwarded" in refused.value.message, refused.value.message


# -- serve --check-config: what each file holds, loaded as serve loads it --------------------
def problems_of(prefixes: tuple[str, ...], **overrides: Any) -> list[str]:
    from labelgate.config import startup_problems

    return [p for p in startup_problems(load_settings(auth=AUTH, **overrides)) if p.startswith(prefixes)]


def test_check_config_compiles_the_policy(tmp_path: Path) -> None:
    bad = tmp_path / "rego"
    bad.mkdir()
    (bad / "x.rego").write_text("package labelgate.decision\nthis is not rego {\n")
    (problem,) = problems_of(("policy.",), policy={"dir": str(bad)})
    assert problem.startswith("policy.dir: ") and "x.rego:2" in problem, problem
    assert problems_of(("policy.",), policy={"dir": "rego"}) == []


def test_check_config_loads_the_tls_pairs(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.support.pki import create_ca

    ca = create_ca()
    cert, key = ca.server_cert().write(tmp_path, "server")
    _, other_key = ca.server_cert().write(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ca.server_cert().key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a pem\n")
    for where in ("server_tls", "admin.tls"):

        def check(cert_file: Path, key_file: Path, where: str = where) -> list[str]:
            pair = {"cert_file": str(cert_file), "key_file": str(key_file)}
            settings = {"server_tls": pair} if where == "server_tls" else {"admin": {"tls": pair}}
            return problems_of((where,), **settings)

        assert check(cert, key) == []
        for cert_file, key_file, says in [
            (not_pem, key, f"cert_file {not_pem} holds no PEM certificate"),
            (cert, not_pem, f"key_file {not_pem} holds no PEM private key"),
            (key, cert, f"cert_file {key} holds no PEM certificate"),
            (cert, other_key, f"the private key in {other_key} is not the one of the certificate in {cert}"),
            (cert, encrypted, f"key_file {encrypted} is an encrypted private key"),
        ]:
            (problem,) = check(cert_file, key_file)
            assert problem.startswith(f"{where}: {says}"), problem


def test_check_config_loads_the_trusted_certificates_and_descriptors(tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2

    from tests.support.pki import create_ca

    ca_file = create_ca().write(tmp_path)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a pem\n")
    descriptors = tmp_path / "svc.pb"
    files = descriptor_pb2.FileDescriptorSet(file=[descriptor_pb2.FileDescriptorProto(name="demo/svc.proto")])
    descriptors.write_bytes(files.SerializeToString())
    corrupt = tmp_path / "corrupt.pb"
    corrupt.write_bytes(b"\xff\xff\xff\xff")

    def settings(ca: Path, descriptor_set: Path) -> dict[str, Any]:
        return {
            "upstream": {"tls": True, "ca_file": str(ca)},
            "upstreams": [{"name": "b", "models": ["m"], "tls": True, "ca_file": str(ca)}],
            "routes": [{"method_prefix": "/demo.Svc/", "descriptor_set": str(descriptor_set)}],
            "engine": "opa",
            "policy": {"opa_ca_file": str(ca)},
        }

    prefixes = ("upstream", "policy.opa_ca_file", "routes")
    assert problems_of(prefixes, **settings(ca_file, descriptors)) == []
    found = problems_of(prefixes, **settings(not_pem, corrupt))
    assert sorted(p.partition(":")[0] for p in found) == [
        "policy.opa_ca_file",
        "routes[0].descriptor_set",
        "upstream.ca_file",
        "upstreams[0].ca_file",
    ], found
    for problem in found:
        says = (
            "is not a FileDescriptorSet"
            if problem.startswith("routes")
            else f"{not_pem} holds no PEM certificate"
        )
        assert says in problem, problem


def test_check_config_loads_the_client_certificate_authority(tmp_path: Path) -> None:
    from labelgate.config import startup_problems
    from tests.support.pki import create_ca

    ca = create_ca()
    cert, key = ca.server_cert().write(tmp_path, "server")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a pem\n")
    tls = {"cert_file": str(cert), "key_file": str(key)}

    def problems(ca_file: Path) -> list[str]:
        settings = load_settings(auth={"mtls": {"ca_file": str(ca_file)}}, server_tls=tls)
        return [p for p in startup_problems(settings) if p.startswith("auth.mtls")]

    assert problems(ca.write(tmp_path)) == []
    (problem,) = problems(not_pem)
    assert problem.startswith(f"auth.mtls.ca_file: {not_pem} holds no PEM certificate"), problem


# -- release.parameters: a label, or a label and the value types it may carry ----------------


def test_released_parameters_load_in_the_short_and_the_typed_form(tmp_path: Path) -> None:
    from labelgate.config import ReleasedParameter

    config = tmp_path / "labelgate.yaml"
    config.write_text(
        "auth: {api_keys: {}}\n"
        "release:\n"
        "  parameters:\n"
        "    sequence_id: internal\n"  # the short form: any type, as before
        "    triton_final_response: {label: public, types: [bool]}\n"
        "    score: {label: internal, types: [double, int64]}\n"
    )
    released = load_settings(config).release.parameters
    assert released == {
        "sequence_id": "internal",
        "triton_final_response": ReleasedParameter(label="public", types=["bool"]),
        "score": ReleasedParameter(label="internal", types=["double", "int64"]),
    }


def test_the_final_flag_is_released_as_a_bool_only_by_default() -> None:
    from labelgate.config import ReleasedParameter

    released = load_settings(auth=AUTH).release.parameters
    assert released == {"triton_final_response": ReleasedParameter(label="public", types=["bool"])}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"label": "public", "types": []}, "at least 1 item"),
        ({"label": "public", "types": ["float"]}, "'bool', 'int64', 'uint64', 'double' or 'string'"),
        ({"label": "public"}, "Field required"),
        ({"label": "secret", "types": ["bool"]}, "'public', 'internal', 'confidential' or 'restricted'"),
        ({"label": "public", "types": ["bool"], "type": "bool"}, "Extra inputs"),
        ("secret", "'public', 'internal', 'confidential' or 'restricted'"),
        # Neither a label nor a mapping: told the labels it may be (review: it named the typed
        # form's internal tag and Python class).
        (None, "'public', 'internal', 'confidential' or 'restricted'"),
        (5, "'public', 'internal', 'confidential' or 'restricted'"),
        (True, "'public', 'internal', 'confidential' or 'restricted'"),
        ({"label": "public", "types": ["bool", "bool"]}, "each type once"),
    ],
)
def test_a_released_parameter_that_does_not_fit_either_form_is_refused(value: Any, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(auth=AUTH, release={"parameters": {"flag": value}})
    assert "  - release.parameters.flag" in refused.value.message, refused.value.message
    assert says in refused.value.message, refused.value.message
    assert refused.value.message.count("  - ") == 1, "one problem, of the form written"


def test_the_final_flag_may_be_released_only_as_a_bool() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            auth=AUTH,
            release={
                "parameters": {"triton_final_response": {"label": "public", "types": ["bool", "string"]}}
            },
        )
    assert "Triton's final-response flag, a bool" in refused.value.message
    short = load_settings(auth=AUTH, release={"parameters": {"triton_final_response": "public"}})
    assert short.release.parameters == {"triton_final_response": "public"}  # a bool all the same
