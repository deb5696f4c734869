"""``labelgate audit-forwarder``: the forwarder process's command line.

Register with ``app.command("audit-forwarder")(audit_forwarder_command)``; it also runs on
its own as ``python -m labelgate.audit.export``. Exit codes: 0 stopped cleanly (with
``--once``: everything delivered), 1 not everything was delivered (``--once``): a
destination could not be reached, or records were left past the last checkpoint because no
committed mark vouched for them (missing, unreadable, or behind the checkpoint: one
``error: N records ... (AUDIT_EXPORT_INCOMPLETE)`` line says how many and why), 2 bad
settings, or a log the forwarder will not follow without skipping records.

Bad settings (an address without a host, a host DNS cannot carry, credentials where nothing
sends them, a token file that cannot be read) end in one ``error: ... (AUDIT_FORWARDER_CONFIG)``
line before anything starts, never in a traceback or an internal error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelgate.cli_backstop import refused, run_guarded
from labelgate.errors import LabelgateError
from labelgate.logs import LogLevel
from labelgate.untrusted_text import error_line


def audit_forwarder_command(
    log_dir: Annotated[Path, typer.Option("--log-dir", help="the audit log directory to follow")],
    state_dir: Annotated[Path, typer.Option("--state-dir", help="where each destination's cursor is kept")],
    syslog: Annotated[
        list[str] | None,
        typer.Option(
            "--syslog",
            help="tcp://HOST[:PORT] (RFC 6587 octet counting) or udp://HOST[:PORT]; PORT 514 if not given",
        ),
    ] = None,
    http: Annotated[
        list[str] | None,
        typer.Option(
            "--http",
            help="URL that receives batches as JSON arrays (POST; 2xx delivered; redirects not followed; "
            "user:password@ sent as basic auth, refused with --http-token-file)",
        ),
    ] = None,
    jsonl_dir: Annotated[
        list[Path] | None, typer.Option("--jsonl-dir", help="directory for rotated JSON-lines export files")
    ] = None,
    http_token_file: Annotated[
        Path | None, typer.Option("--http-token-file", help="file holding a bearer token for --http")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="most records per delivery")] = 500,
    poll_seconds: Annotated[float, typer.Option(help="how often to look for new records")] = 0.25,
    retry_max_seconds: Annotated[float, typer.Option(help="longest wait between retries")] = 30.0,
    retry_first_seconds: Annotated[float, typer.Option(help="first wait between retries")] = 0.2,
    retry_attempts: Annotated[
        int, typer.Option(help="with --once: attempts per batch before the run fails")
    ] = 5,
    timeout_seconds: Annotated[float, typer.Option(help="time limit of one delivery")] = 10.0,
    start: Annotated[
        str, typer.Option(help="where a destination without a cursor starts: beginning or end")
    ] = "beginning",
    hostname: Annotated[str | None, typer.Option(help="HOSTNAME of syslog messages")] = None,
    facility: Annotated[int, typer.Option(help="syslog facility (13: log audit)")] = 13,
    sd_id: Annotated[str, typer.Option(help="SD-ID of the structured data, NAME@PEN")] = "labelgate@32473",
    max_datagram: Annotated[int, typer.Option(help="largest UDP syslog message in bytes")] = 8192,
    jsonl_max_bytes: Annotated[int, typer.Option(help="start a new export file past this size")] = 64 << 20,
    jsonl_keep: Annotated[int, typer.Option(help="export files to keep")] = 10,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="deliver what the log holds now, then exit: 0 everything delivered; 1 a destination "
            "could not be reached, or records were left past the last checkpoint because the log's "
            "committed mark is missing or cannot be read (the error line says how many and why)",
        ),
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(help="log level")] = LogLevel.info,
) -> None:
    """Forward the audit log to SIEMs: syslog, HTTP and JSON-lines files, at least once."""
    import socket

    from labelgate.audit.export.forwarder import ForwarderSettings, run_forwarder
    from labelgate.logs import configure

    configure(log_level)
    if start not in ("beginning", "end"):
        typer.echo("error: --start is beginning or end", err=True)
        raise typer.Exit(2)
    from pydantic import ValidationError

    from labelgate.retry import RetrySettings

    # A short --retry-max-seconds alone also shortens the first wait.
    first = min(retry_first_seconds, retry_max_seconds) if retry_max_seconds > 0 else retry_first_seconds
    try:
        retry = RetrySettings(
            max_attempts=retry_attempts,
            initial_seconds=first,
            max_seconds=retry_max_seconds,
            jitter_seconds=first,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'retry'}: {e['msg']}" for e in error.errors())
        typer.echo(f"error: {error_line(f'retry settings: {problems}', None)}", err=True)
        raise typer.Exit(2) from None
    settings = ForwarderSettings(
        log_dir=log_dir,
        state_dir=state_dir,
        syslog=tuple(syslog or ()),
        http=tuple(http or ()),
        jsonl_dirs=tuple(jsonl_dir or ()),
        http_token_file=http_token_file,
        batch_size=batch_size,
        poll_seconds=poll_seconds,
        retry_max_seconds=retry_max_seconds,
        timeout_seconds=timeout_seconds,
        start=start,  # type: ignore[arg-type]
        hostname=hostname or socket.gethostname(),
        facility=facility,
        sd_id=sd_id,
        max_datagram=max_datagram,
        jsonl_max_bytes=jsonl_max_bytes,
        jsonl_keep=jsonl_keep,
        once=once,
        retry=retry,
    )
    try:
        status = run_forwarder(settings)
    except LabelgateError as error:  # its message names the --log-dir and addresses it was given
        raise refused(error) from None
    except OSError as error:
        said = error_line(f"{error.filename or ''} {error.strerror or error}".strip(), None)
        typer.echo(f"error: {said}", err=True)
        raise typer.Exit(2) from None
    if status:
        raise typer.Exit(status)


def forwarder_cli() -> None:
    """``python -m labelgate.audit.export``: the forwarder command behind the CLI backstop."""
    run_guarded(audit_forwarder_command)
