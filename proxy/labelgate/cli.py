"""The ``labelgate`` command. Each subcommand is a thin shell over one module.

Imports happen inside the commands so that ``labelgate --help`` stays fast and a
command only loads what it uses.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from labelgate import __version__, reasons
from labelgate.approvals.cli import approvals_app, approvals_server_cli
from labelgate.audit.cli import audit_app, audit_writer_command
from labelgate.audit.export.cli import audit_forwarder_command
from labelgate.bundle.cli import bundle_app, bundle_server_cli
from labelgate.cli_backstop import GuardedTyper, refused
from labelgate.errors import LabelgateError
from labelgate.logs import LogLevel
from labelgate.recording.cli import sessions_app
from labelgate.untrusted_text import error_line, shown

app = GuardedTyper(
    name="labelgate",
    help="A data-classification gateway for inference services.",
    epilog="An unexpected error prints one line and exits 1; LABELGATE_DEBUG=1 adds its traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
policy_app = typer.Typer(help="Evaluate and inspect policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
# Servers live under their groups (bundle serve, approvals serve, audit writer); the old
# top-level names stay as hidden aliases for one release (deploy files still use them).
app.add_typer(bundle_app, name="bundle")
app.command("bundle-server", hidden=True)(bundle_server_cli)
# Just-in-time approvals: review from the terminal, or serve the API and inbox on their own.
app.add_typer(approvals_app, name="approvals")
app.command("approvals-server", hidden=True)(approvals_server_cli)
app.add_typer(audit_app, name="audit")
app.add_typer(sessions_app, name="sessions")
app.command("audit-writer", hidden=True)(audit_writer_command)
audit_app.command("forwarder")(audit_forwarder_command)
app.command("audit-forwarder", hidden=True)(audit_forwarder_command)


class Engine(StrEnum):
    """Policy engines."""

    embedded = "embedded"
    wasm = "wasm"
    opa = "opa"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labelgate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """A data-classification gateway for inference services."""


@app.command("demo-backend")
def demo_backend(
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve the demo inference backend on")] = (
        "127.0.0.1:8001"
    ),
    debug_model: Annotated[
        bool,
        typer.Option(
            envvar="LABELGATE_DEMO_DEBUG_MODEL",
            help="Also serve _debug-metadata (for tests): it echoes the metadata of recent calls, "
            "other callers' included, so it is off unless asked for",
        ),
    ] = False,
) -> None:
    """Serve the synthetic Open Inference Protocol backend (customer-profile, sentiment)."""
    from labelgate.demo.backend import run
    from labelgate.gateway.ports import ensure_free

    try:
        ensure_free(listen, "--listen")
        run(listen, debug_model=debug_model)
    except LabelgateError as error:
        raise refused(error) from None


@policy_app.command("eval")
def policy_eval(
    input_file: Annotated[Path, typer.Option("--input", help="JSON file with a labelgate.v1 policy input")],
    engine: Annotated[Engine, typer.Option(help="policy engine")] = Engine.embedded,
    opa_url: Annotated[str, typer.Option(help="OPA server URL for --engine opa")] = "http://127.0.0.1:8181",
    policy_dir: Annotated[Path, typer.Option(help="Rego policy folder for --engine embedded or wasm")] = Path(
        "rego"
    ),
    explain: Annotated[bool, typer.Option(help="Also print why the policy decided so")] = False,
) -> None:
    """Print the validated decision for one input as JSON."""
    from labelgate.policy.cli import evaluate

    try:
        evaluate(input_file, engine=engine.value, opa_url=opa_url, policy_dir=policy_dir, explain=explain)
    except LabelgateError as error:
        raise refused(error) from None


@policy_app.command("impact")
def policy_impact(
    candidate: Annotated[Path, typer.Option(help="the candidate policy folder")],
    inputs: Annotated[
        Path | None,
        typer.Option(help="decision inputs: the gateway's audit.inputs_file (SQLite) or a .jsonl sample"),
    ] = None,
    from_source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="or the inputs of the decisions OPA logged to a bundle server: its URL (with a reader "
            "token) or its fleet.sqlite3",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LABELGATE_BUNDLE_READER_TOKEN", help="reader token for --from URL", show_default=False
        ),
    ] = None,
    current: Annotated[Path, typer.Option(help="the policy folder in production")] = Path("rego"),
    since: Annotated[
        str | None, typer.Option(help="only inputs seen in this window, e.g. 24h, 7d (default: all stored)")
    ] = None,
    engine: Annotated[Engine, typer.Option(help="the production engine")] = Engine.embedded,
    json_output: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print a Markdown summary (CI comments)")
    ] = False,
) -> None:
    """Replay recorded decision inputs on the current and the candidate policy and report what
    changes, by subject group, model and field. Exit 0: nothing changed; 3: something changed;
    2: an error (a policy that does not load, unreadable inputs, a decision that failed closed)."""
    from labelgate.policy.cli import IMPACT_ERROR, impact

    if json_output and markdown:
        typer.echo("error: --json and --markdown are exclusive", err=True)
        raise typer.Exit(IMPACT_ERROR)
    output = "json" if json_output else "markdown" if markdown else "table"
    try:
        code = impact(
            candidate=candidate,
            current=current,
            inputs=inputs,
            since=since,
            engine=engine.value,
            output=output,
            source=from_source,
            token=token,
        )
    except LabelgateError as error:
        typer.echo(f"error: {error_line(error.message, error.reason)}", err=True)
        raise typer.Exit(IMPACT_ERROR) from None
    raise typer.Exit(code)


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT for gRPC clients")] = None,
    rest_listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for REST clients (KServe v2, tritonclient.http, curl)")
    ] = None,
    admin_listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for /healthz, /readyz, /metrics")
    ] = None,
    upstream: Annotated[str | None, typer.Option(help="HOST:PORT of the inference backend")] = None,
    engine: Annotated[Engine | None, typer.Option(help="policy engine")] = None,
    workers: Annotated[int | None, typer.Option(help="processes sharing the port (SO_REUSEPORT)")] = None,
    log_level: Annotated[LogLevel | None, typer.Option(help="log level")] = None,
    check_config: Annotated[
        bool,
        typer.Option(
            "--check-config",
            help="load and validate the config and the files it names, then exit: 0 ok, 2 with every problem",
        ),
    ] = False,
) -> None:
    """Run the gateway."""
    from labelgate.config import load_settings

    overrides: dict[str, Any] = {
        "listen": listen,
        "rest_listen": rest_listen,
        "admin_listen": admin_listen,
        "engine": engine.value if engine is not None else None,
        "workers": workers,
        "log_level": log_level.value if log_level is not None else None,
    }
    if upstream is not None:
        overrides["upstream"] = {"address": upstream}
    if check_config:
        _check_config(config, overrides)
        return
    from labelgate.gateway.server import run

    try:
        settings = load_settings(config, **overrides)
        run(settings)
    except LabelgateError as error:
        raise refused(error) from None


def _check_config(config: Path | None, overrides: dict[str, Any]) -> None:
    """``serve --check-config``: settings first (every problem at once), then what start-up reads."""
    from labelgate.config import load_settings, startup_notes, startup_problems
    from labelgate.warning_notes import warnings_as_notes

    # The config's path and the paths and texts it holds are not labelgate's words: what is not
    # printable is shown as its escape (as in every error line), so each path, problem and
    # warning stays on its line, and only a message that lists problems one a line spans lines.
    where = shown(str(config)) if config is not None else "the defaults and LABELGATE_* variables"
    try:
        with warnings_as_notes() as warnings:
            settings = load_settings(config, **overrides)
            problems = startup_problems(settings)
    except LabelgateError as error:
        typer.echo(f"{where}: {error_line(error.message, error.reason)}", err=True)
        raise typer.Exit(2) from None
    # What a gateway that starts warns of once started (no audit, no recording); still OK.
    notes = [] if problems else [f"{event}: {note}" for event, note in startup_notes(settings)]
    for warning in [*warnings, *notes]:
        typer.echo(f"{where}: warning: {shown(warning)}", err=True)
    if problems:
        count = len(problems)
        typer.echo(f"{where}: {count} problem{'s' if count != 1 else ''} at start-up:", err=True)
        for problem in problems:
            typer.echo(f"  - {shown(problem)}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{where}: OK")


@app.command("dev-token")
def dev_token(
    sub: Annotated[str, typer.Option(help="subject (user id) of the token")],
    groups: Annotated[str, typer.Option(help="comma-separated groups; none by default")] = "",
    ttl: Annotated[str, typer.Option(help="lifetime, e.g. 1h, 30m, 3600")] = "1h",
) -> None:
    """Print a development JWT signed with the quickstart's INSECURE dev key."""
    from labelgate.auth.devkeys import dev_token_command

    try:
        typer.echo(dev_token_command(sub, groups, ttl))
    except LabelgateError as error:
        raise refused(error) from None


@app.command("infer")
def infer(
    model: Annotated[str, typer.Option(help="model name")] = "customer-profile",
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help='NAME=VALUE, repeated; VALUE is JSON (1, [1,2], "text") or plain text; the model\'s '
            "metadata types and shapes it",
        ),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option(help='JSON file: {"NAME": VALUE, ...} or KServe\'s {"inputs": [{"name", "data"}]}'),
    ] = None,
    ids: Annotated[
        str | None, typer.Option(help="shortcut for --input customer_ids=[...]: comma-separated ids")
    ] = None,
    target: Annotated[str, typer.Option(help="gateway gRPC HOST:PORT")] = "127.0.0.1:8443",
    rest: Annotated[
        str | None, typer.Option(help="call the REST binding at this URL instead (http(s)://HOST:PORT)")
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="LABELGATE_TOKEN", help="bearer token")] = None,
    outputs: Annotated[str, typer.Option(help="comma-separated outputs to ask for; all by default")] = "",
    tls: Annotated[bool, typer.Option("--tls", help="gRPC over TLS (REST: use an https URL)")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA certificate(s) to trust (PEM)")] = None,
    server_name: Annotated[
        str | None, typer.Option(help="the name the gRPC server's certificate has")
    ] = None,
    cert_file: Annotated[Path | None, typer.Option(help="client certificate (PEM), for mTLS")] = None,
    key_file: Annotated[Path | None, typer.Option(help="client key (PEM), for mTLS")] = None,
    timeout: Annotated[float, typer.Option(help="seconds each call may take")] = 30.0,
    wait: Annotated[
        float,
        typer.Option(help="held for approval: seconds to wait for approvers (0: print its id, stop)"),
    ] = 300.0,
    approval_id: Annotated[
        str | None, typer.Option(help="present this granted approval (apr-...) with the call")
    ] = None,
    justification: Annotated[str | None, typer.Option(help="why, for the approvers")] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="print KServe v2 JSON instead of a table (strict JSON: NaN and infinities as the strings "
            '"NaN", "Infinity", "-Infinity")',
        ),
    ] = False,
) -> None:
    """Call a model through the gateway (gRPC or REST) and show what came back; a call held for
    approval shows who must approve and the time left, and is made again once granted."""
    from labelgate.client import InferRequest, Tls, infer_command, read_inputs
    from labelgate.errors import InvalidInput

    try:
        pairs = list(inputs or [])
        if ids is not None:
            pairs.append(f"customer_ids=[{ids}]")
        elif not pairs and inputs_file is None and model == "customer-profile":
            pairs.append("customer_ids=[1,2,3]")  # the quickstart's model, as before
        # NaN passes every comparison; inf would never time out.
        if not (math.isfinite(timeout) and math.isfinite(wait)) or timeout <= 0 or wait < 0:
            raise InvalidInput(reasons.OPTION_INVALID, "--timeout must be above 0 and --wait at least 0")
        if (cert_file is None) != (key_file is None):
            raise InvalidInput(reasons.OPTION_INVALID, "--cert-file and --key-file go together")
        # Any TLS option means TLS: a client pair or a server name given without --tls made a
        # plaintext connection, the bearer token in clear. Over REST the URL's scheme decides,
        # and an http:// URL with TLS options is refused rather than sent in clear.
        tls_options = [
            flag
            for flag, value in (
                ("--tls", tls),
                ("--ca-file", ca_file),
                ("--server-name", server_name),
                ("--cert-file", cert_file),
                ("--key-file", key_file),
            )
            if value
        ]
        if rest is not None and tls_options and not rest.lower().startswith("https://"):
            raise InvalidInput(
                reasons.OPTION_INVALID,
                f"{', '.join(tls_options)} {'needs' if len(tls_options) == 1 else 'need'} an https:// URL "
                "for --rest (TLS is the URL's scheme)",
            )
        ask = InferRequest(
            model=model,
            inputs=read_inputs(pairs, inputs_file),
            outputs=[name.strip() for name in outputs.split(",") if name.strip()],
            target=target,
            rest=rest,
            token=token,
            tls=Tls(bool(tls_options), ca_file, server_name, cert_file, key_file),
            timeout=timeout,
            wait_seconds=wait,
            approval_id=approval_id,
            justification=justification,
        )
        infer_command(ask, json_output)
    except LabelgateError as error:
        raise refused(error) from None


@app.command("quickstart")
def quickstart(
    config: Annotated[Path, typer.Option(help="gateway config")] = Path("deploy/quickstart/labelgate.yaml"),
) -> None:
    """Run the demo backend and the gateway in front of it, and print calls to try."""
    from labelgate.quickstart import run_quickstart

    try:
        run_quickstart(config)
    except LabelgateError as error:
        raise refused(error) from None


if __name__ == "__main__":
    app()
