"""`make run`: the demo backend and the gateway in front of it, plus calls to paste."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from labelgate import reasons
from labelgate.config import GatewaySettings, load_settings
from labelgate.errors import ConfigError
from labelgate.terminal_log import CallSummaryStream

# recording.encryption_key_file as an environment setting (prefix LABELGATE_, sections split
# by __): `labelgate sessions` reads it as the key, with or without --config.
KEY_VARIABLE = "LABELGATE_RECORDING__ENCRYPTION_KEY_FILE"


def _wait_for(address: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(
                reasons.DEMO_BACKEND_EXITED, f"the demo backend exited with code {process.returncode}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.1)
    raise ConfigError(
        reasons.DEMO_BACKEND_TIMEOUT, f"the demo backend did not listen on {address} in {timeout:.0f}s"
    )


def _as_typed(path: Path) -> str:
    """``path`` as a user types it in this working directory: relative when it is under it."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(path))
    shown = str(relative)
    return shlex.quote(shown if "/" in shown else f"./{shown}")  # a bare name would search PATH


def _command() -> str:
    """This environment's ``labelgate``, as the user must type it. Never the bare name, even
    when it is on PATH here: ``make run`` puts ``.venv/bin`` on PATH for its own recipe only,
    so in the user's shell a bare ``labelgate`` is "command not found"."""
    local = Path(sys.executable).parent / "labelgate"
    if not local.is_file():  # run as `python -m labelgate.cli`, no script installed
        return f"{shlex.quote(sys.executable)} -m labelgate.cli"
    return _as_typed(local)


def _sessions_lines(lg: str, settings: GatewaySettings, config: Path | None) -> list[str]:
    """How to list the recorded sessions and show one through policy, as an auditor (the
    policy's replay viewers). The quickstart seals recordings with the key it generates in
    its state folder (``with_generated_keys``). Its config does not name that key, so that
    ``serve --check-config`` of it passes on a fresh checkout, before any ``make run`` made
    the key: ``show`` is given the key by its variable."""
    recording = settings.recording
    if recording.dir is None:
        return []
    auditor = f'"$({lg} dev-token --sub audrey --groups auditors)"'
    key = recording.encryption_key_file
    with_key = f"{KEY_VARIABLE}={_as_typed(key)} " if key is not None else ""
    where = _as_typed(config) if config is not None else "CONFIG"
    return [
        f"Sessions: {lg} sessions list --dir {_as_typed(recording.dir)}",
        "  # a session's calls as an auditor may see them (SESSION_ID: one listed, or its start)",
        f"  {with_key}{lg} sessions show SESSION_ID --config {where} --token {auditor}",
    ]


def banner(settings: GatewaySettings, config: Path | None = None) -> str:
    """What ``make run`` prints once the gateway is up; ``config`` is the file it was started
    with (the ``sessions show`` command names it)."""
    lg = _command()
    target = f"--target {settings.listen}"
    token = f'"$({lg} dev-token --sub {{sub}}{{groups}})"'

    def call(sub: str, groups: str = "", extra: str = "") -> str:
        flag = f" --groups {groups}" if groups else ""
        return f"  {lg} infer {target}{extra} --token {token.format(sub=sub, groups=flag)}"

    admin = f"http://{settings.admin_listen}" if settings.admin_listen else None
    lines = [
        "",
        f"labelgate is up: gateway {settings.listen} -> demo backend {settings.upstream.address}"
        f" (engine: {settings.engine})",
        *(
            f"  routed by model: {', '.join(u.models)} -> {u.name} ({u.protocol}, {u.address})"
            for u in settings.upstreams
        ),
        "",
        "Try these (each persona of the default policy):",
        "  # no group: internal values redacted, confidential redacted, restricted emptied",
        call("alice"),
        "  # analysts: internal in clear, confidential shows the last 4 characters",
        call("ann", "analysts"),
        "  # asking for a restricted output by name is refused outright",
        call("alice", extra=" --outputs account_secret"),
        "  # data-stewards: confidential needs an approval from data-owners: the call is held",
        "  # (infer shows the approval id, who must approve, when the request expires and how",
        "  # long it waits, --wait SECONDS; --wait 0 prints the id and the --approval-id to add)",
        call("sam", "data-stewards"),
        "  # once granted, the same query is released until the grant expires; another query",
        "  # (other ids) is held again, as is any query after the grant's TTL:",
        call("sam", "data-stewards", extra=" --ids 4,5"),
    ]
    if settings.rest_listen:
        body = '{"inputs":[{"name":"customer_ids","datatype":"INT64","shape":[1],"data":[1]}]}'
        analyst = token.format(sub="ann", groups=" --groups analysts")[1:-1]  # without its quotes
        lines += [
            "  # the same call over REST (KServe v2), as an analyst",
            f'  curl -s -H "authorization: Bearer {analyst}"'
            f" -d '{body}' http://{settings.rest_listen}/v2/models/customer-profile/infer",
        ]
        if any("sentiment" in u.models for u in settings.upstreams):
            text = '{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["great service"]}]}'
            lines += [
                "  # sentiment goes to the second upstream (routed by model), over REST too",
                f'  curl -s -H "authorization: Bearer {analyst}"'
                f" -d '{text}' http://{settings.rest_listen}/v2/models/sentiment/infer",
            ]
    if admin:
        owner = f'"$({lg} dev-token --sub olivia --groups data-owners)"'
        lines += [
            "  # ...while it waits, approve it as a data owner: in the web inbox, or from a terminal",
            f"  open {admin}/inbox  (sign in with: {lg} dev-token --sub olivia --groups data-owners)",
            # --url always: the default (127.0.0.1:9090) is this config's only by chance.
            f"  {lg} approvals list --url {admin} --token {owner}",
            f"  {lg} approvals approve APPROVAL_ID --url {admin} --token {owner}"
            " --reason 'chargeback dispute'",
            "",
            f"Metrics: curl -s {admin}/metrics | grep labelgate_   Ready: curl -s {admin}/readyz",
        ]
    if settings.audit.socket:
        lines += [
            f"Audit log: {lg} audit verify {_as_typed(settings.audit.socket.parent / 'audit')}"
            f" --public-key {_as_typed(settings.audit.socket.parent / 'audit-signing.pub')}",
        ]
    lines += _sessions_lines(lg, settings, config)
    lines += ["", "Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _start_audit_writer(socket_path: Path) -> subprocess.Popen[bytes]:
    """The audit log is written outside the gateway: the quickstart runs its writer too."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    from labelgate.audit.checkpoints import generate_keypair

    state = socket_path.parent
    if not (state / "audit-signing.key").exists():
        generate_keypair(state)
    command = [sys.executable, "-m", "labelgate.cli", "audit-writer", "--socket", str(socket_path)]
    writer = subprocess.Popen(
        [
            *command,
            *("--log-dir", str(state / "audit"), "--signing-key", str(state / "audit-signing.key")),
            # Frequent signed checkpoints, so `audit verify` anchors the demo's first calls at once.
            *("--checkpoint-seconds", "1"),
        ]
    )
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if writer.poll() is not None or time.monotonic() > deadline:
            raise ConfigError(reasons.AUDIT_WRITER_FAILED, f"the audit writer did not start on {socket_path}")
        time.sleep(0.1)
    return writer


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


def with_generated_keys(settings: GatewaySettings) -> GatewaySettings:
    """The quickstart's keys, generated once in its state folder (next to the approvals
    database) so they stay the same across ``make run``s: the subject assertion signing key
    (its JWKS at the admin listener) and the recording encryption key."""
    from labelgate.auth.assertion import write_key_file as write_assertion_key
    from labelgate.recording.sealing import write_key_file as write_recording_key

    state = settings.approvals.sqlite_file
    if state is None:
        return settings
    assertion = settings.upstream.subject_assertion
    if assertion.enabled and not assertion.key_file and not assertion.key:
        key_file = write_assertion_key(state.parent / "subject-assertion-key.pem")
        upstream = settings.upstream.model_copy(
            update={"subject_assertion": assertion.model_copy(update={"key_file": key_file})}
        )
        settings = settings.model_copy(update={"upstream": upstream})
    recording = settings.recording
    if recording.enabled and recording.encryption_key_file is None:
        key = state.parent / "recording.key"
        if not key.exists():
            write_recording_key(key)
        recording = recording.model_copy(update={"encryption_key_file": key})
        settings = settings.model_copy(update={"recording": recording})
    return settings


def _state_folder(settings: GatewaySettings) -> Path:
    """Where the quickstart keeps its state (``.labelgate/``): next to its approvals database."""
    for state in (settings.approvals.sqlite_file, settings.audit.socket):
        if state is not None:
            return state.parent
    return Path(".labelgate")


def _demo_addresses(settings: GatewaySettings) -> list[str]:
    routed = [u.address for u in settings.upstreams if u.protocol == "grpc"]
    return list(dict.fromkeys([settings.upstream.address, *routed]))


def run_quickstart(config: Path) -> None:
    from labelgate.gateway.server import run

    settings = with_generated_keys(load_settings(config))
    for state in (settings.approvals.sqlite_file, settings.recording.dir):
        if state is not None:
            (state if state.suffix == "" else state.parent).mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    try:
        if settings.audit.socket is not None:
            children.append(_start_audit_writer(settings.audit.socket))
        # One demo backend per gRPC connection: the default route and each `upstreams:` entry.
        for address in _demo_addresses(settings):
            backend = subprocess.Popen(
                [sys.executable, "-m", "labelgate.cli", "demo-backend", "--listen", address]
            )
            children.append(backend)
            _wait_for(address, backend)
        log_file = _state_folder(settings) / "gateway.log"
        terminal = sys.stderr
        print(f"Gateway log: {log_file} (a short line per call below)", file=terminal, flush=True)

        def started() -> None:  # "up" only once it is: a failed start prints its error instead
            print(banner(settings, config), file=terminal, flush=True)

        # The gateway's log handler writes to sys.stderr: the full JSON goes to the file ...
        summaries = CallSummaryStream(log_file, sys.__stderr__ or terminal)
        sys.stderr = summaries
        try:
            run(settings, on_started=started)
        finally:
            # ... until it stops: what ends the command (a failed start's one line) goes to the
            # terminal whole, not through the call summaries.
            sys.stderr = terminal
            summaries.flush()
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            _stop(child)
