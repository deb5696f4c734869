"""``labelgate sessions list|show|replay``: read recorded sessions (``sessions_app``).

Register with ``app.add_typer(sessions_app, name="sessions")``. Where the recordings are:
``--dir`` (files), ``--postgres-dsn`` (or ``LABELGATE_RECORDING__POSTGRES_DSN``), or
``--config`` (the gateway config's ``recording`` section). Encrypted recordings are opened
with the ``--config``'s ``recording.encryption_key_file`` (and ``decryption_key_files``), also
when ``--dir``/``--postgres-dsn`` say where they are, or else with the key file in
``LABELGATE_RECORDING__ENCRYPTION_KEY_FILE``; without a key, sealed entries show as sealed
(a note on stderr says they are not damaged, and how to give the key).
``labelgate sessions generate-key FILE`` writes a new key. A session id may be given by a
unique prefix. Exit codes: 0 ok, 1 no such session (``SESSION_NOT_FOUND``), 2 usage errors;
each refusal is one line on stderr naming its reason.

``show`` and ``replay`` show recorded calls to a viewer, so they need one: ``--token`` (or
``LABELGATE_TOKEN``), a bearer token the gateway config's ``auth`` verifies, and ``--config``
for the policy. Each recorded response is then shown as that policy's replay decision for the
viewer allows (``viewing.py``), with the engine the config names (embedded, wasm or OPA).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelgate import reasons as cli_reasons
from labelgate.errors import LabelgateError
from labelgate.recording import reasons
from labelgate.recording.store import MAX_PAGE_SIZE, PAGE_SIZE
from labelgate.untrusted_text import error_line, shown

if TYPE_CHECKING:
    from labelgate.auth import Subject
    from labelgate.config import GatewaySettings
    from labelgate.recording.store import SessionStore

sessions_app = typer.Typer(help="Recorded sessions: list, show, replay; generate-key.", no_args_is_help=True)

DirOption = Annotated[Path | None, typer.Option("--dir", help="directory of session recording files")]
DsnOption = Annotated[
    str | None,
    typer.Option("--postgres-dsn", envvar="LABELGATE_RECORDING__POSTGRES_DSN", help="PostgreSQL DSN"),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="gateway config with a recording section")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LABELGATE_TOKEN",
        help="the viewer's bearer token (verified with the config's auth)",
        show_default=False,
    ),
]


def _usage(message: str, reason: str = cli_reasons.OPTION_INVALID) -> typer.Exit:
    """Exit 2 with one line on stderr naming the reason, as every labelgate command reports
    (the message's paths, DSN and libpq text escaped: ``error_line``)."""
    typer.echo(f"error: {error_line(message, reason)}", err=True)
    return typer.Exit(2)


def _refused(error: LabelgateError) -> typer.Exit:
    return _usage(error.message, error.reason)


KEY_ENV = "LABELGATE_RECORDING__ENCRYPTION_KEY_FILE"


@contextlib.contextmanager
def _config_warnings(config: Path | None) -> Iterator[None]:
    """What loading the config's store, auth and engine warns of (``dev_key_trusted``, ...)
    as ``serve --check-config`` shows it: a sentence on stderr naming the config. Logging is
    not set up in these commands, so Python would print a warning's bare event name."""
    from labelgate.warning_notes import warnings_as_notes

    where = shown(str(config)) if config is not None else "labelgate sessions"
    with warnings_as_notes(lambda note: typer.echo(f"{where}: warning: {shown(note)}", err=True)):
        yield


def open_store(directory: Path | None, dsn: str | None, config: Path | None) -> SessionStore:
    """The store, opening sealed entries with the configured keys: the ``--config``'s
    ``recording`` keys when it names one (also with ``--dir`` or ``--postgres-dsn``, which only
    say where the recordings are), else the key file in ``LABELGATE_RECORDING__ENCRYPTION_KEY_FILE``."""
    from labelgate.recording.sealing import sealed

    env_key = os.environ.get(KEY_ENV)
    keys: tuple[Path | None, list[Path]] = (Path(env_key) if env_key else None, [])
    if config is not None:
        from labelgate.config import load_settings

        try:
            recording = getattr(load_settings(config), "recording", None)
        except LabelgateError as error:
            raise _refused(error) from None
        if recording is not None and recording.encryption_key_file is not None:
            keys = (recording.encryption_key_file, list(recording.decryption_key_files))
    try:
        return sealed(_plain_store(directory, dsn, config), *keys)
    except LabelgateError as error:
        raise _refused(error) from None


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
    except OSError as error:
        raise _usage(f"cannot write {file}: {error.strerror or error}") from None


def _plain_store(directory: Path | None, dsn: str | None, config: Path | None) -> SessionStore:
    if directory is not None and dsn is not None:
        raise _usage("give --dir or --postgres-dsn, not both")
    if directory is None and dsn is None and config is not None:
        from labelgate.config import load_settings

        try:
            recording = getattr(load_settings(config), "recording", None)
        except LabelgateError as error:
            raise _refused(error) from None
        if recording is None or not recording.enabled:
            raise _usage(
                f"{config} has no recording section with a dir or postgres_dsn", reasons.SESSIONS_NOT_RECORDED
            )
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
        raise _usage(f"cannot read the recordings: {error}", reasons.SESSIONS_UNREADABLE) from None
    except Exception as error:
        if type(error).__module__.startswith("psycopg"):
            said = " ".join(str(error).split())  # libpq's text runs over lines: one line
            raise _usage(
                f"cannot read the recordings from PostgreSQL: {said}", reasons.SESSIONS_UNREADABLE
            ) from None
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


@dataclass(frozen=True)
class _Viewer:
    """Who is looking, and the gateway's policy setup that decides what they see."""

    subject: Subject
    settings: GatewaySettings


def _viewer(config: Path | None, token: str | None) -> _Viewer:
    """The viewer's verified identity under the config's auth; exit 2 without one."""
    from labelgate.auth import Authenticator
    from labelgate.config import load_settings

    if config is None or not token:
        raise _usage(
            "recorded calls are shown only through policy: give --config and --token (the viewer)",
            reasons.SESSIONS_NO_POLICY,
        )
    try:
        settings = load_settings(config)
        subject = Authenticator(settings.auth).authenticate([("authorization", f"Bearer {token}")], None)
    except LabelgateError as error:
        raise _refused(error) from None
    return _Viewer(subject, settings)


def _still_sealed(entries: list[dict[str, Any]]) -> int:
    """How many of a session's stored entries are still sealed: read with no key configured
    (with a key, the sealed store opens each one or says what is wrong with it)."""
    return sum(1 for entry in entries if isinstance(entry, dict) and "sealed" in entry)


def _sealed_note(count: int) -> str:
    """Why entries show as damaged when only their key is missing, and how to give it: the
    viewing code marks an entry it cannot open as damaged, which read like tampering."""
    one = count == 1
    what = f"{count} {'entry' if one else 'entries'} of this session {'is' if one else 'are'}"
    it, they = ("it", "it is") if one else ("them", "they are")
    return (
        f"note: {what} sealed (encrypted at rest) and no key is configured to open {it}; {they} not "
        f"damaged, though marked so below: give the key with a --config whose "
        f"recording.encryption_key_file names it, or with {KEY_ENV}=FILE"
    )


async def _view(store: SessionStore, wanted: str, viewer: _Viewer) -> tuple[str, list[dict[str, Any]]] | None:
    """The session's entries as the viewer may see them, decided by the config's engine."""
    from labelgate.gateway.classify_stage import ClassifierStage
    from labelgate.gateway.server import build_engine, follow_bundle_catalog, hash_key
    from labelgate.recording.viewing import ReplayPolicy, view_entries

    resolved = await _resolve(store, wanted)
    if resolved is None:
        return None
    sealed = _still_sealed(resolved[1])
    if sealed:
        typer.echo(_sealed_note(sealed), err=True)
    settings = viewer.settings
    key = hash_key(settings)  # the gateway's classifier and masking key, as build_pipeline sets them
    classifier = ClassifierStage.from_settings(
        settings.classification, from_bundle=settings.policy.bundle_url is not None, key_secret=key
    )
    engine = build_engine(settings)
    follow_bundle_catalog(engine, classifier)
    await engine.start()
    try:
        policy = ReplayPolicy(
            decide=engine.decide,
            classifier=lambda: classifier.classifier,
            hash_key=key,
            deadline_seconds=settings.policy.decision_deadline_ms / 1000,
        )
        return resolved[0], await view_entries(policy, viewer.subject, resolved[1])
    finally:
        await engine.close()


def _viewed_session(
    store: SessionStore, session_id: str, viewer: _Viewer
) -> tuple[str, list[dict[str, Any]]]:
    try:
        resolved = _run(store, lambda s: _view(s, session_id, viewer))
    except LabelgateError as error:
        raise _refused(error) from None
    if resolved is None:
        missing = f"no recorded session {session_id!r} (or the prefix is not unique)"
        typer.echo(f"error: {error_line(missing, reasons.SESSION_NOT_FOUND)}", err=True)
        raise typer.Exit(1)
    return resolved  # type: ignore[no-any-return]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@sessions_app.command("list")
def list_command(
    directory: DirOption = None,
    postgres_dsn: DsnOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_PAGE_SIZE, help="sessions per page, most recent first")
    ] = PAGE_SIZE,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="the page after the one that printed this cursor")
    ] = None,
) -> None:
    """The recorded sessions, most recent first, a page at a time (--limit, --cursor)."""
    from dataclasses import asdict

    from labelgate.recording.replay import sessions_table

    try:
        with _config_warnings(config):
            store = open_store(directory, postgres_dsn, config)
        page = _run(store, lambda s: s.sessions_page(limit, cursor))
    except LabelgateError as error:  # a cursor this store did not write
        raise _refused(error) from None
    if json_output:
        typer.echo(json.dumps([asdict(info) for info in page.sessions], indent=2))
    else:
        _console().print(sessions_table(page.sessions))
    if page.next is not None:
        typer.echo(f"more sessions: add --cursor {page.next}", err=True)


@sessions_app.command("show")
def show_command(
    session_id: Annotated[str, typer.Argument(help="session id (or a unique prefix)")],
    directory: DirOption = None,
    postgres_dsn: DsnOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    token: TokenOption = None,
) -> None:
    """One line per call of a session; --json prints the entries as the viewer may see them."""
    from labelgate.recording.replay import calls_table

    with _config_warnings(config):
        viewer = _viewer(config, token)
        found, entries = _viewed_session(open_store(directory, postgres_dsn, config), session_id, viewer)
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
    token: TokenOption = None,
) -> None:
    """The session's timeline, call by call, each response as the viewer's replay decision allows."""
    from labelgate.recording.replay import print_replay

    with _config_warnings(config):
        viewer = _viewer(config, token)
        found, entries = _viewed_session(open_store(directory, postgres_dsn, config), session_id, viewer)
    print_replay(_console(), found, entries)
