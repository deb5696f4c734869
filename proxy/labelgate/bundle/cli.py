"""Command line: ``labelgate bundle build`` (for CI) and ``labelgate bundle-server``.

``bundle_app`` is registered by ``labelgate.cli`` as ``labelgate bundle``; ``bundle_server_cli``
as ``labelgate bundle-server``. ``python -m labelgate.bundle.cli`` offers both on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelgate.errors import ConfigError, LabelgateError

if TYPE_CHECKING:
    from labelgate.bundle.signing import Signer

bundle_app = typer.Typer(help="Build OPA policy bundles.", no_args_is_help=True)

TOKEN_ENV = "LABELGATE_BUNDLE_TOKEN"  # noqa: S105 - the name of the variable, not a secret


def _fail(error: LabelgateError) -> typer.Exit:
    typer.echo(f"error: {error.message} ({error.reason})", err=True)
    return typer.Exit(error.exit_code)


def _signer(key: Path | None, algorithm: str, key_id: str) -> Signer | None:
    if key is None:
        return None
    from labelgate.bundle.signing import Signer

    return Signer.from_file(key, algorithm, key_id)


def build_command(
    source: Path,
    output: Path,
    *,
    signing_key: Path | None = None,
    signing_alg: str = "RS256",
    key_id: str = "default",
    check: bool = True,
    opa: str | None = None,
) -> str:
    """Build (and by default validate, as the server would) a bundle file; returns its revision."""
    from labelgate.bundle.build import build_bundle
    from labelgate.bundle.source import OpaValidator, read_snapshot

    snapshot = read_snapshot(source)
    bundle = build_bundle(snapshot.files, _signer(signing_key, signing_alg, key_id))
    if check:
        OpaValidator(opa).validate(snapshot, bundle)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(bundle.tarball)
    return bundle.revision


@bundle_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="policy source folder (rego + data.json)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="bundle file to write (.tar.gz)")],
    signing_key: Annotated[Path | None, typer.Option(help="PEM private key: sign the bundle")] = None,
    signing_alg: Annotated[str, typer.Option(help="RS256 or ES256")] = "RS256",
    key_id: Annotated[str, typer.Option(help="key id OPA's config names the public key by")] = "default",
    check: Annotated[bool, typer.Option(help="run opa check --strict and opa test first")] = True,
    opa: Annotated[str | None, typer.Option(help="opa binary (default: .tools/bin/opa or PATH)")] = None,
) -> None:
    """Build a deterministic OPA bundle from SOURCE; print its revision."""
    try:
        revision = build_command(
            source,
            output,
            signing_key=signing_key,
            signing_alg=signing_alg,
            key_id=key_id,
            check=check,
            opa=opa,
        )
    except LabelgateError as error:
        raise _fail(error) from None
    typer.echo(revision)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError("LISTEN_INVALID", f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def bundle_server_command(
    source: Path,
    listen: str,
    token: str | None,
    *,
    bundle_name: str = "labelgate",
    state_dir: Path = Path(".labelgate/bundle-server"),
    opa: str | None = None,
    signing_key: Path | None = None,
    signing_alg: str = "RS256",
    key_id: str = "default",
    poll_interval: float = 0.5,
    log_level: str = "info",
) -> None:
    """Serve bundles built from ``source`` until interrupted."""
    import uvicorn

    from labelgate.bundle.server import ServerSettings, create_app
    from labelgate.logs import configure

    host, port = parse_listen(listen)
    if token is not None and not token.strip():
        raise ConfigError("BUNDLE_TOKEN_EMPTY", f"the bearer token is empty (check {TOKEN_ENV})")
    configure(log_level)
    settings = ServerSettings(
        source=source,
        bundle_name=bundle_name,
        token=token,
        state_dir=state_dir,
        opa=opa,
        signer=_signer(signing_key, signing_alg, key_id),
        poll_interval=poll_interval,
    )
    app = create_app(settings)
    publisher = app.state.publisher

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Held long polls would keep shutdown waiting for their full wait: answer them (304).
            publisher.release_waiters_threadsafe()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    # log_config=None: uvicorn's loggers go through labelgate's JSON handler.
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    Server(config).run()


def bundle_server_cli(
    source: Annotated[Path, typer.Option(help="policy source folder to watch (rego + data.json)")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve on")] = "127.0.0.1:8282",
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help="bearer token OPA clients must send", show_default=False),
    ] = None,
    bundle_name: Annotated[str, typer.Option("--bundle", help="bundle name: served at /bundles/NAME")] = (
        "labelgate"
    ),
    state_dir: Annotated[Path, typer.Option(help="folder for the fleet database")] = Path(
        ".labelgate/bundle-server"
    ),
    opa: Annotated[str | None, typer.Option(help="opa binary (default: .tools/bin/opa or PATH)")] = None,
    signing_key: Annotated[Path | None, typer.Option(help="PEM private key: sign every bundle")] = None,
    signing_alg: Annotated[str, typer.Option(help="RS256 or ES256")] = "RS256",
    key_id: Annotated[str, typer.Option(help="key id OPA's config names the public key by")] = "default",
    poll_interval: Annotated[float, typer.Option(help="seconds between source checks")] = 0.5,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve OPA bundles built from a policy folder; publish every edit that passes opa check and opa test."""
    try:
        bundle_server_command(
            source,
            listen,
            token,
            bundle_name=bundle_name,
            state_dir=state_dir,
            opa=opa,
            signing_key=signing_key,
            signing_alg=signing_alg,
            key_id=key_id,
            poll_interval=poll_interval,
            log_level=log_level,
        )
    except LabelgateError as error:
        raise _fail(error) from None


def command_line() -> typer.Typer:
    """Both commands on their own, as ``labelgate`` will have them."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    app.add_typer(bundle_app, name="bundle")
    app.command("bundle-server")(bundle_server_cli)
    return app


def main() -> None:
    command_line()()


if __name__ == "__main__":
    main()
