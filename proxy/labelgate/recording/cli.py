"""``labelgate sessions list|show|replay``: read recorded sessions (``sessions_app``).

Register with ``app.add_typer(sessions_app, name="sessions")``. Where the recordings are:
``--dir`` (files), ``--postgres-dsn`` (or ``LABELGATE_RECORDING__POSTGRES_DSN``), or
``--config`` (the gateway config's ``recording`` section). Encrypted recordings are opened
with the config's ``recording.encryption_key_file`` (and ``decryption_key_files``), or, with
``--dir``/``--postgres-dsn``, the key file in ``LABELGATE_RECORDING__ENCRYPTION_KEY_FILE``.
``labelgate sessions generate-key FILE`` writes a new key. A session id may be given by a
unique prefix. Exit codes: 0 ok, 1 no such session, 2 usage errors.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelgate.errors import LabelgateError

if TYPE_CHECKING:
    from labelgate.recording.store import SessionStore

sessions_app = typer.Typer(help="Recorded sessions: list, show, replay.", no_args_is_help=True)

DirOption = Annotated[Path | None, typer.Option("--dir", help="directory of session recording files")]
DsnOption = Annotated[
    str | None,
    typer.Option("--postgres-dsn", envvar="LABELGATE_RECORDING__POSTGRES_DSN", help="PostgreSQL DSN"),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="gateway config with a recording section")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def _usage(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


KEY_ENV = "LABELGATE_RECORDING__ENCRYPTION_KEY_FILE"


def open_store(directory: Path | None, dsn: str | None, config: Path | None) -> SessionStore:
    """The store, opening sealed entries with the configured keys."""
    from labelgate.recording.sealing import sealed

    env_key = os.environ.get(KEY_ENV)
    keys: tuple[Path | None, list[Path]] = (Path(env_key) if env_key else None, [])
    if directory is None and dsn is None and config is not None:
        from labelgate.config import load_settings

        try:
            recording = getattr(load_settings(config), "recording", None)
        except LabelgateError as error:
            raise _usage(f"{error.message} ({error.reason})") from None
        if recording is not None:
            keys = (recording.encryption_key_file, list(recording.decryption_key_files))
    try:
        return sealed(_plain_store(directory, dsn, config), *keys)
    except LabelgateError as error:
        raise _usage(f"{error.message} ({error.reason})") from None


@sessions_app.command("generate-key")
def generate_key_command(
    file: Annotated[Path, typer.Argument(help="where to write the key (must not exist)")],
) -> None:
    """Write a new recording encryption key (32 random bytes, base64, mode 0600)."""
    from labelgate.recording.sealing import write_key_file

    try:
        typer.echo(write_key_file(file))
    except FileExistsError:
        raise _usage(f"{file} exists: a key is never overwritten") from None


def _plain_store(directory: Path | None, dsn: str | None, config: Path | None) -> SessionStore:
    if directory is not None and dsn is not None:
        raise _usage("give --dir or --postgres-dsn, not both")
    if directory is None and dsn is None and config is not None:
        from labelgate.config import load_settings

        try:
            recording = getattr(load_settings(config), "recording", None)
        except LabelgateError as error:
            raise _usage(f"{error.message} ({error.reason})") from None
        if recording is None or not recording.enabled:
            raise _usage(f"{config} has no recording section with a dir or postgres_dsn")
        directory = recording.dir
        dsn = recording.postgres_dsn.get_secret_value() if recording.postgres_dsn else None
    if dsn is not None:
        from labelgate.recording.postgres import PostgresSessionStore

        return PostgresSessionStore(dsn)
    if directory is not None:
        if not directory.is_dir():
            raise _usage(f"{directory} is not a directory")
        from labelgate.recording.files import FileSessionStore

        return FileSessionStore(directory)
    raise _usage("say where the recordings are: --dir, --postgres-dsn or --config")


async def _with_store(store: SessionStore, work: Any) -> Any:
    try:
        return await work(store)
    finally:
        await store.close()


def _run(store: SessionStore, work: Any) -> Any:
    try:
        return asyncio.run(_with_store(store, work))
    except OSError as error:
        raise _usage(f"cannot read the recordings: {error}") from None
    except Exception as error:
        if type(error).__module__.startswith("psycopg"):
            raise _usage(f"cannot read the recordings from PostgreSQL: {error}") from None
        raise


async def _resolve(store: SessionStore, wanted: str) -> tuple[str, list[dict[str, Any]]] | None:
    entries = await store.entries(wanted)
    if entries is not None:
        return wanted, entries
    matches = [info.session_id for info in await store.sessions() if info.session_id.startswith(wanted)]
    if len(matches) != 1:
        return None
    found = await store.entries(matches[0])
    return (matches[0], found) if found is not None else None


def _session(store: SessionStore, session_id: str) -> tuple[str, list[dict[str, Any]]]:
    resolved = _run(store, lambda s: _resolve(s, session_id))
    if resolved is None:
        typer.echo(f"error: no recorded session {session_id!r} (or the prefix is not unique)", err=True)
        raise typer.Exit(1)
    return resolved


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@sessions_app.command("list")
def list_command(
    directory: DirOption = None,
    postgres_dsn: DsnOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """The recorded sessions, most recent first."""
    from dataclasses import asdict

    from labelgate.recording.replay import sessions_table

    sessions = _run(open_store(directory, postgres_dsn, config), lambda s: s.sessions())
    if json_output:
        typer.echo(json.dumps([asdict(info) for info in sessions], indent=2))
        return
    _console().print(sessions_table(sessions))


@sessions_app.command("show")
def show_command(
    session_id: Annotated[str, typer.Argument(help="session id (or a unique prefix)")],
    directory: DirOption = None,
    postgres_dsn: DsnOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """One line per call of a session; --json prints the stored entries."""
    from labelgate.recording.replay import calls_table

    found, entries = _session(open_store(directory, postgres_dsn, config), session_id)
    if json_output:
        for entry in entries:
            typer.echo(json.dumps(entry, sort_keys=True))
        return
    _console().print(calls_table(found, entries))


@sessions_app.command("replay")
def replay_command(
    session_id: Annotated[str, typer.Argument(help="session id (or a unique prefix)")],
    directory: DirOption = None,
    postgres_dsn: DsnOption = None,
    config: ConfigOption = None,
) -> None:
    """The session's timeline, call by call, with each response decoded as it was delivered."""
    from labelgate.recording.replay import print_replay

    found, entries = _session(open_store(directory, postgres_dsn, config), session_id)
    print_replay(_console(), found, entries)
