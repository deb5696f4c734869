"""Commands: ``labelgate audit verify|keygen|writer`` (``audit_app``).

Register with ``app.add_typer(audit_app, name="audit")``; ``labelgate audit-writer``, the
old name of ``audit writer``, is ``app.command("audit-writer", hidden=True)(audit_writer_command)``.
Exit codes: 0 ok, 1 tampered (or the writer failed to write), 2 usage errors (missing file,
bad key, bad settings, a log the writer refuses to continue).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelgate.cli_backstop import refused
from labelgate.errors import LabelgateError
from labelgate.logs import LogLevel
from labelgate.untrusted_text import error_line, shown

if TYPE_CHECKING:
    from labelgate.audit.verify import VerifyReport

audit_app = typer.Typer(help="The durable, tamper-evident audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify_command(
    path: Annotated[Path, typer.Argument(help="the audit log directory, or one audit-*.jsonl file")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="PEM Ed25519 public key that signs the checkpoints")
    ] = None,
    expect_seq: Annotated[
        int | None,
        typer.Option(
            "--expect-seq",
            help="fail unless the log reaches this record (the seq of the latest record a SIEM received)",
        ),
    ] = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            help="fail unless a record has this chain hash (record --expect-seq's, when given)",
        ),
    ] = None,
) -> None:
    """Recompute the hash chain and check the checkpoints; exit 1 on any tampering.

    A tail cut together with its checkpoints leaves a log that verifies: only a copy kept off
    this host shows it, so give the seq and hash of the latest record your SIEM holds."""
    from labelgate.audit.checkpoints import load_public_key
    from labelgate.audit.verify import verify_log

    try:
        key = load_public_key(public_key) if public_key is not None else None
        report = verify_log(path, key, expect_seq=expect_seq, expect_head=expect_head)
    except LabelgateError as error:
        raise refused(error) from None
    except OSError as error:
        said = error_line(f"cannot read {error.filename or path}: {error.strerror}", None)
        typer.echo(f"error: {said}", err=True)
        raise typer.Exit(2) from None
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: VerifyReport) -> None:
    from rich.console import Console
    from rich.markup import escape

    def text(value: object) -> str:
        # Whatever the files hold (a checkpoint's time and key id, text quoted in a finding)
        # is data, not markup or terminal commands: a forged time moved the cursor up, erased
        # the TAMPERED line and printed a green OK in its place. rich's escape only covers
        # markup ("[/]" was an internal error); shown writes ESC and the like as escapes.
        return escape(shown(str(value)))

    # soft_wrap: one finding per line, also when the output goes to a file or a CI log.
    console = Console(highlight=False, soft_wrap=True)
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
    console.print(
        f"audit log {text(report.target)}: {len(report.files)} file(s), {report.records} record(s) "
        f"verified ({span}), {report.checkpoints} checkpoint(s)"
    )
    for problem in report.problems:
        kind, where, what = text(problem.kind), text(problem.where()), text(problem.message)
        console.print(f"[bold red]TAMPERED[/] [red]{kind}[/] at {where}: {what}")
    signed = "signature and head" if report.signatures_checked else "head only, signature not checked"
    if report.ok and report.uncovered:
        first, which = report.last_seq - report.uncovered + 1, "signed " if report.signatures_checked else ""
        one = first == report.last_seq
        records = f"record {first} is" if one else f"records {first}..{report.last_seq} are"
        console.print(
            f"[bold yellow]OK, NOT ALL SIGNED[/] chain intact, head {text(report.head)}; {records} covered "
            f"by no {which}checkpoint: {'it' if one else 'they'} may have been appended, or records after "
            f"{'it' if one else 'them'} cut, without trace"
        )
    elif report.ok:
        console.print(f"[bold green]OK[/] chain intact, head {text(report.head)}")
    last = report.last_verified
    if last is not None:
        console.print(
            f"last verified checkpoint: #{last.number} at seq {last.seq} "
            f"({text(last.time)}, key {text(last.key_id)}; {signed})"
        )
    else:
        console.print("last verified checkpoint: none")
    for note in report.notes:
        console.print(f"[yellow]note[/] {text(note)}")


@audit_app.command("keygen")
def keygen_command(
    out: Annotated[Path, typer.Option("--out", help="directory for audit-signing.key and .pub")] = Path("."),
    force: Annotated[bool, typer.Option(help="replace an existing key pair")] = False,
) -> None:
    """Create an Ed25519 key pair for signing checkpoints (the private key file is mode 0600)."""
    from labelgate.audit import reasons
    from labelgate.audit.checkpoints import generate_keypair
    from labelgate.errors import ConfigError

    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(reasons.AUDIT_KEY_INVALID, f"--out {out} is a file: name a folder")
        private_path, public_path, kid = generate_keypair(out, force=force)
    except LabelgateError as error:
        raise refused(error) from None
    except OSError as error:
        said = error_line(f"cannot write the key pair into {out}: {error.strerror or error}", None)
        typer.echo(f"error: {said}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"signing key: {private_path}\npublic key:  {public_path}\nkey id:      {kid}")


@audit_app.command("writer")
def audit_writer_command(
    socket_path: Annotated[Path, typer.Option("--socket", help="Unix socket the gateway connects to")],
    log_dir: Annotated[Path, typer.Option("--log-dir", help="directory of the audit log")],
    signing_key: Annotated[
        Path | None, typer.Option("--signing-key", help="PEM Ed25519 key that signs checkpoints")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(help="sign a checkpoint every N records")] = 1000,
    checkpoint_seconds: Annotated[float, typer.Option(help="...or after this many seconds")] = 10.0,
    max_segment_bytes: Annotated[int, typer.Option(help="start a new log file past this size")] = 64 << 20,
    max_batch: Annotated[int, typer.Option(help="most records one write+fsync covers")] = 4096,
    no_fsync: Annotated[
        bool, typer.Option("--no-fsync", help="BENCHMARKS ONLY: acknowledge before records are durable")
    ] = False,
    allow_uid: Annotated[
        list[int] | None,
        typer.Option(
            "--allow-uid", help="user id that may append (repeatable; default: the writer's own user)"
        ),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option(help="log level")] = LogLevel.info,
) -> None:
    """Run the audit writer: append events durably (group commit) and sign checkpoints.

    To check a log: labelgate audit verify DIR (or python -m labelgate.audit verify DIR)."""
    from labelgate.audit.writer import WriterSettings, run_writer
    from labelgate.logs import configure

    configure(log_level)
    settings = WriterSettings(
        socket_path=socket_path,
        log_dir=log_dir,
        signing_key=signing_key,
        checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds,
        max_segment_bytes=max_segment_bytes,
        max_batch=max_batch,
        fsync=not no_fsync,
        allowed_uids=frozenset(allow_uid) if allow_uid else None,
    )
    try:
        status = run_writer(settings)
    except LabelgateError as error:
        raise refused(error) from None
    if status:
        raise typer.Exit(status)


def writer_cli(args: list[str] | None = None) -> None:
    """``python -m labelgate.audit``: the writer command on its own (its options, as every
    deployment and test starts it); ``python -m labelgate.audit verify|keygen|writer ...`` is
    that ``labelgate audit`` command (``verify DIR`` was taken for the writer's arguments)."""
    import sys

    from labelgate.cli_backstop import report_internal_error, run_guarded

    args = sys.argv[1:] if args is None else args
    if args and args[0] in {command.name for command in audit_app.registered_commands}:
        try:
            audit_app(args, prog_name="python -m labelgate.audit")
        except Exception as error:  # the CLI backstop (labelgate.cli_backstop)
            report_internal_error(error)
        return
    run_guarded(audit_writer_command)


if __name__ == "__main__":
    from labelgate.cli_backstop import report_internal_error

    try:
        audit_app()
    except Exception as error:  # the CLI backstop (labelgate.cli_backstop)
        report_internal_error(error)
