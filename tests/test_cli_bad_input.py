"""Bad input on every command: a clear error (the reason, exit code 2 or 1), never a Python
traceback. Each case runs the real ``labelgate`` program, so the entry point's backstop
(``labelgate.cli_backstop``) is in the path too; the cases here are each stopped at their
cause, so the backstop's ``internal error`` line must not show."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import free_port, labelgate_command

REPO = Path(__file__).resolve().parents[1]
REGO = str(REPO / "rego")
CATALOG = REPO / "rego" / "labelgate" / "catalog" / "data.json"
DEV_KEYS = REPO / "deploy" / "quickstart" / "dev-keys"


@dataclass(frozen=True)
class Files:
    deep: Path  # JSON (and YAML) nested past Python's recursion limit
    binary: Path  # not UTF-8
    folder: Path  # an (empty) folder
    tmp: Path
    not_http: str  # HOST:PORT of a server that answers bytes that are not HTTP/1


@pytest.fixture(scope="module")
def not_http_server() -> Iterator[str]:
    """A TCP server that answers every connection with a gRPC-like binary preface (what
    ``--url`` pointed at a gRPC port meets)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x7f\xff\xff\xff\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


@pytest.fixture
def files(tmp_path: Path, not_http_server: str) -> Files:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"\x00\x01\x02\xcc\xff\xfe garbage \x80\x81")
    folder = tmp_path / "adir"
    folder.mkdir()
    return Files(deep, binary, folder, tmp_path, not_http_server)


def _config(tmp_path: Path, name: str, extra: str) -> Path:
    path = tmp_path / name
    path.write_text(
        "listen: 127.0.0.1:18443\nadmin_listen: 127.0.0.1:19090\nengine: embedded\n"
        f"policy: {{dir: {REGO}}}\nmasking: {{hash_key: test-insecure-hash-key-0123456789}}\n"
        f"auth: {{jwt: {{trust_dev_key: true, dev_keys_dir: {DEV_KEYS}}}}}\n" + extra
    )
    return path


def _jwks_config(tmp_path: Path, jwks: Path) -> Path:
    path = tmp_path / "jwks.yaml"
    path.write_text(
        f"listen: 127.0.0.1:{free_port()}\nadmin_listen: null\npolicy: {{dir: {REGO}}}\n"
        "masking: {hash_key: test-insecure-hash-key-0123456789}\n"
        f"auth: {{jwt: {{issuer: x, audience: y, jwks_file: {jwks}}}}}\n"
    )
    return path


def _bundle(*more: str) -> list[str]:
    return ["bundle", "serve", "--source", REGO, "--listen", f"127.0.0.1:{free_port()}", *more]


def _writer(f: Files, *more: str) -> list[str]:
    return ["audit", "writer", "--socket", str(f.tmp / "w.sock"), "--log-dir", str(f.tmp / "log"), *more]


def _forwarder(f: Files, *more: str) -> list[str]:
    return [
        "audit",
        "forwarder",
        "--log-dir",
        str(f.folder),
        "--state-dir",
        str(f.tmp / "fw"),
        *more,
        "--once",
    ]


def _text(f: Files, name: str, content: str) -> Path:
    path = f.tmp / name
    path.write_text(content)
    return path


def _impact(f: Files, *more: object) -> list[object]:
    return ["policy", "impact", "--candidate", REGO, "--current", REGO, *more]


# (id, argv from the files, exit code, what stderr says)
CASES = [
    # deeply nested JSON / YAML (RecursionError)
    ("policy-eval-deep", lambda f: ["policy", "eval", "--input", f.deep], 2, "INPUT_INVALID"),
    (
        "infer-inputs-file-deep",
        lambda f: ["infer", "--inputs-file", f.deep, "--target", "127.0.0.1:1"],
        2,
        "INPUTS_FILE_INVALID",
    ),
    (
        "policy-impact-inputs-deep",
        lambda f: ["policy", "impact", "--candidate", REGO, "--current", REGO, "--inputs", f.deep],
        2,
        "nested too deeply",
    ),
    ("serve-config-deep", lambda f: ["serve", "--config", f.deep, "--check-config"], 2, "CONFIG_INVALID"),
    ("sessions-config-deep", lambda f: ["sessions", "list", "--config", f.deep], 2, "CONFIG_INVALID"),
    ("bundle-tokens-deep", lambda f: _bundle("--tokens-file", str(f.deep)), 2, "BUNDLE_TOKENS_INVALID"),
    (
        "catalog-deep",
        lambda f: [
            "serve",
            "--config",
            _config(f.tmp, "c.yaml", f"classification: {{catalog_file: {f.deep}}}\n"),
            "--check-config",
        ],
        2,
        "catalog file",
    ),
    (
        "jwks-deep",
        lambda f: [
            "serve",
            "--config",
            _jwks_config(f.tmp, f.deep),
        ],
        2,
        "nested too deeply",
    ),
    # files that are not UTF-8
    ("serve-config-binary", lambda f: ["serve", "--config", f.binary, "--check-config"], 2, "not UTF-8"),
    ("quickstart-config-binary", lambda f: ["quickstart", "--config", f.binary], 2, "CONFIG_INVALID"),
    ("approvals-serve-binary", lambda f: ["approvals", "serve", "--config", f.binary], 2, "CONFIG_INVALID"),
    ("sessions-config-binary", lambda f: ["sessions", "list", "--config", f.binary], 2, "CONFIG_INVALID"),
    ("bundle-tokens-binary", lambda f: _bundle("--tokens-file", str(f.binary)), 2, "BUNDLE_TOKENS_INVALID"),
    (
        "bundle-gate-binary",
        lambda f: _bundle("--insecure-no-auth", "--publish-gate", str(f.binary)),
        2,
        "PUBLISH_GATE_INVALID",
    ),
    (
        "forwarder-token-binary",
        lambda f: _forwarder(f, "--http", "http://127.0.0.1:1", "--http-token-file", str(f.binary)),
        2,
        "AUDIT_FORWARDER_CONFIG",
    ),
    # URLs the clients cannot parse
    ("infer-rest-bad-url", lambda f: ["infer", "--rest", "http://[::1"], 2, "REST_URL_INVALID"),
    (
        "approvals-not-a-url",
        lambda f: ["approvals", "list", "--url", "notaurl", "--token", "x"],
        2,
        "OPTION_INVALID",
    ),
    (
        "approvals-bad-ipv6",
        lambda f: ["approvals", "list", "--url", "http://[::1", "--token", "x"],
        2,
        "OPTION_INVALID",
    ),
    ("forwarder-http-bad-url", lambda f: _forwarder(f, "--http", "http://[::1"), 2, "AUDIT_FORWARDER_CONFIG"),
    (
        "forwarder-syslog-port",
        lambda f: _forwarder(f, "--syslog", "tcp://127.0.0.1:99999"),
        2,
        "AUDIT_FORWARDER_CONFIG",
    ),
    (
        "impact-from-bad-url",
        lambda f: ["policy", "impact", "--candidate", REGO, "--from", "http://[::1", "--token", "x"],
        2,
        "INPUTS_UNREADABLE",
    ),
    # a server that does not speak HTTP/1
    (
        "approvals-not-http",
        lambda f: ["approvals", "list", "--url", f"http://{f.not_http}", "--token", "x"],
        1,
        "ANSWER_INVALID",
    ),
    (
        "infer-rest-not-http",
        lambda f: ["infer", "--rest", f"http://{f.not_http}", "--token", "x"],
        1,
        "ANSWER_INVALID",
    ),
    # other bad values
    (
        "infer-ca-garbage",
        lambda f: ["infer", "--rest", "https://127.0.0.1:1", "--ca-file", f.binary],
        2,
        "TLS_FILE_UNREADABLE",
    ),
    (
        "infer-token-newline",
        lambda f: ["infer", "--rest", "http://127.0.0.1:1", "--token", "a\nb"],
        2,
        "OPTION_INVALID",
    ),
    ("infer-timeout-nan", lambda f: ["infer", "--timeout", "nan"], 2, "OPTION_INVALID"),
    ("infer-target-port-wraps", lambda f: ["infer", "--target", "127.0.0.1:83537"], 2, "OPTION_INVALID"),
    ("writer-checkpoint-nan", lambda f: _writer(f, "--checkpoint-seconds", "nan"), 2, "AUDIT_WRITER_CONFIG"),
    ("writer-negative-uid", lambda f: _writer(f, "--allow-uid", "-5"), 2, "AUDIT_WRITER_CONFIG"),
    (
        "bundle-poll-nan",
        lambda f: _bundle("--insecure-no-auth", "--poll-interval", "nan"),
        2,
        "CONFIG_INVALID",
    ),
    (
        "bundle-decision-retention-nan",
        lambda f: _bundle("--insecure-no-auth", "--decision-retention-days", "nan"),
        2,
        "BUNDLE_SERVER_CONFIG_INVALID",
    ),
    (
        "bundle-status-retention-nan",
        lambda f: _bundle("--insecure-no-auth", "--status-retention-days", "nan"),
        2,
        "BUNDLE_SERVER_CONFIG_INVALID",
    ),
    # not-a-number and other durations that are no duration
    ("impact-since-nan", lambda f: _impact(f, "--inputs", f.binary, "--since", "nan"), 2, "SINCE_INVALID"),
    ("impact-since-nanh", lambda f: _impact(f, "--inputs", f.binary, "--since", "NaNh"), 2, "SINCE_INVALID"),
    ("impact-since-huge", lambda f: _impact(f, "--inputs", f.binary, "--since", "1e400"), 2, "SINCE_INVALID"),
    (
        "forwarder-poll-nan",
        lambda f: _forwarder(f, "--jsonl-dir", str(f.tmp / "x"), "--poll-seconds", "nan"),
        2,
        "AUDIT_FORWARDER_CONFIG",
    ),
    (
        "forwarder-timeout-nan",
        lambda f: _forwarder(f, "--jsonl-dir", str(f.tmp / "x"), "--timeout-seconds", "nan"),
        2,
        "AUDIT_FORWARDER_CONFIG",
    ),
    # sample lines that are not inputs
    (
        "impact-inputs-number",
        lambda f: _impact(f, "--inputs", _text(f, "n.jsonl", "5\n")),
        2,
        "n.jsonl:1: not a JSON object",
    ),
    (
        "impact-inputs-string",
        lambda f: _impact(f, "--inputs", _text(f, "s.jsonl", '"text"\n')),
        2,
        "s.jsonl:1: not a JSON object",
    ),
    (
        "impact-inputs-seen-text",
        lambda f: _impact(f, "--inputs", _text(f, "t.jsonl", '{"input": {}, "seen": "x"}\n')),
        2,
        "t.jsonl:1: seen",
    ),
    (
        "impact-inputs-seen-negative",
        lambda f: _impact(f, "--inputs", _text(f, "m.jsonl", '{"input": {}, "seen": -1000}\n')),
        2,
        "m.jsonl:1: seen",
    ),
    # a token file of two tokens (a header cannot carry the newline)
    (
        "forwarder-token-two-lines",
        lambda f: _forwarder(
            f, "--http", "http://127.0.0.1:1/x", "--http-token-file", _text(f, "token", "one\ntwo\n")
        ),
        2,
        "AUDIT_FORWARDER_CONFIG",
    ),
    # where nothing can be written
    (
        "sessions-generate-key-proc",
        lambda f: ["sessions", "generate-key", "/proc/labelgate-x"],
        2,
        "cannot write",
    ),
    ("keygen-out-proc", lambda f: ["audit", "keygen", "--out", "/proc/labelgate-x"], 2, "cannot write"),
    # a file where a folder belongs, or the reverse
    ("keygen-out-file", lambda f: ["audit", "keygen", "--out", f.binary], 2, "AUDIT_KEY_INVALID"),
    (
        "writer-log-dir-file",
        lambda f: ["audit", "writer", "--socket", str(f.tmp / "w.sock"), "--log-dir", f.binary],
        2,
        "AUDIT_WRITER_CONFIG",
    ),
    (
        "bundle-build-into-folder",
        lambda f: ["bundle", "build", REGO, "-o", f.folder, "--no-check"],
        2,
        "BUNDLE_OUTPUT_INVALID",
    ),
    (
        "bundle-state-dir-file",
        lambda f: _bundle("--insecure-no-auth", "--state-dir", str(f.binary)),
        2,
        "BUNDLE_SERVER_CONFIG_INVALID",
    ),
]


def run_cli(argv: list[object], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        labelgate_command(*map(str, argv)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(("argv", "code", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(files: Files, argv: object, code: int, says: str) -> None:
    done = run_cli(argv(files))  # type: ignore[operator]
    errors = done.stderr.strip()
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "internal error" not in errors, errors  # stopped at its cause, not by the backstop
    assert done.returncode == code, errors
    assert says in errors, errors
    assert len(errors.splitlines()) <= 3, errors  # a line (a config check: a heading and its problem)


def test_a_duplicate_key_in_the_catalog_is_refused(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    text = CATALOG.read_text()
    catalog.write_text(
        '{"default_label": "public",' + text.lstrip()[1:]
    )  # the file's own one wins in json.loads
    config = _config(tmp_path, "c.yaml", f"classification: {{catalog_file: {catalog}}}\n")
    done = run_cli(["serve", "--config", config, "--check-config"])
    assert done.returncode == 2, done.stderr
    assert "'default_label' appears twice" in done.stderr, done.stderr


def test_a_labelgate_variable_that_is_not_json_names_itself(tmp_path: Path) -> None:
    config = _config(tmp_path, "c.yaml", "")
    done = run_cli(
        ["serve", "--config", config, "--check-config"], {"LABELGATE_APPROVALS__VIEWER_GROUPS": "auditors,x"}
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "LABELGATE_APPROVALS__VIEWER_GROUPS" in done.stderr and "CONFIG_INVALID" in done.stderr


def test_a_session_file_nested_too_deeply_is_skipped_as_damaged(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "conn-00_00-00.jsonl").write_text("[" * 100_000 + "\n")
    done = run_cli(["sessions", "list", "--dir", sessions, "--json"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_session_file_that_is_not_json_objects_is_skipped_as_damaged(tmp_path: Path) -> None:
    """A line that is JSON but not an object (an array) is a damaged line, like one torn by
    a crash: the listing shows the other sessions, the session shows the line as damaged."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "conn-00_00-00.jsonl").write_text('["not", "a", "header"]\n[]\n')
    done = run_cli(["sessions", "list", "--dir", sessions, "--json"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr and done.stdout.strip() == "[]"


def test_the_forwarder_module_refuses_a_token_file_of_two_lines_in_one_line(tmp_path: Path) -> None:
    """``python -m labelgate.audit.export`` once printed a 261-line traceback for this."""
    import sys

    token = tmp_path / "token"
    token.write_text("one\ntwo\n")
    done = subprocess.run(
        [sys.executable, "-m", "labelgate.audit.export", "--log-dir", str(tmp_path),
         "--state-dir", str(tmp_path / "state"), "--http", "http://127.0.0.1:1/x",
         "--http-token-file", str(token), "--once"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "AUDIT_FORWARDER_CONFIG" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


SECRET_URLS = [
    ("approvals-list", ["approvals", "list", "--url", "http://u:S3cretPW@127.0.0.1:99999", "--token", "x"]),
    (
        "approvals-list-unreachable",
        ["approvals", "list", "--url", "http://u:S3cretPW@127.0.0.1:1", "--token", "x"],
    ),
    (
        "policy-impact-from",
        [
            "policy",
            "impact",
            "--candidate",
            REGO,
            "--current",
            REGO,
            "--from",
            "http://u:S3cretPW@127.0.0.1:1",
        ],
    ),
    (
        "policy-eval-opa-url",
        [
            "policy",
            "eval",
            "--input",
            str(REPO / "proto/labelgate/v1/schema/examples/analyst-response.json"),
            "--engine",
            "opa",
            "--opa-url",
            "http://u:S3cretPW@127.0.0.1:99999",
        ],
    ),
]


@pytest.mark.parametrize("argv", [case[1] for case in SECRET_URLS], ids=[case[0] for case in SECRET_URLS])
def test_a_url_with_credentials_is_never_echoed_whole(argv: list[object]) -> None:
    """Errors about a URL named it whole, its password too: into terminals and CI logs."""
    done = run_cli(argv)
    assert done.returncode != 0
    assert "S3cretPW" not in done.stderr + done.stdout, done.stderr
    assert "***@127.0.0.1" in done.stderr, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


# An error message may quote text labelgate did not write (a model's input names, an OPA
# check error quoting a .rego string literal, a path): an OSC sequence that sets the window
# title and a bidi override that reorders what follows.
PLANTED_IN_MESSAGE = "name\x1b]0;X\x1b\\ and \u202eevil"


@pytest.mark.parametrize("module", ["labelgate.cli", "labelgate.bundle.cli", "labelgate.audit.cli"])
def test_fail_shows_a_quoted_escape_sequence_as_text(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from labelgate.errors import ConfigError

    fail = importlib.import_module(module).refused  # each command module's, the one shared helper
    exit_ = fail(ConfigError("INPUT_UNKNOWN", f"the model has no input {PLANTED_IN_MESSAGE}"))
    printed = capsys.readouterr().err
    assert exit_.exit_code == 2
    assert "\x1b" not in printed and "\u202e" not in printed, repr(printed)
    assert printed == "error: the model has no input name\\x1b]0;X\\x1b\\ and \\u202eevil (INPUT_UNKNOWN)\n"


def test_fail_keeps_a_message_of_ordinary_text_and_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from labelgate.cli_backstop import refused
    from labelgate.errors import ConfigError

    message = "the config has 2 problems:\n  - listen: Zoë's [port] 🙂\n  - auth: a\\b"
    refused(ConfigError("CONFIG_INVALID", message))
    assert capsys.readouterr().err == f"error: {message} (CONFIG_INVALID)\n"


@pytest.mark.parametrize(
    "argv",
    [
        lambda planted: ["serve", "--config", f"/nonexistent/{planted}.yaml"],
        lambda planted: ["bundle", "build", f"/nonexistent/{planted}", "--output", "/nonexistent/b.tar.gz"],
    ],
    ids=["serve-config", "bundle-build-source"],
)
def test_an_error_quoting_a_planted_name_reaches_stderr_escaped(argv: object) -> None:
    done = run_cli(argv(PLANTED_IN_MESSAGE))  # type: ignore[operator]
    assert done.returncode == 2, done.stderr
    assert "internal error" not in done.stderr and done.stderr.startswith("error: "), done.stderr
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr, repr(done.stderr)
    assert "name\\x1b]0;X\\x1b\\ and \\u202eevil" in done.stderr, done.stderr
