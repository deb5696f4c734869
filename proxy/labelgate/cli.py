"""The ``labelgate`` command. Each subcommand is a thin shell over one module.

Imports happen inside the commands so that ``labelgate --help`` stays fast and a
command only loads what it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labelgate.errors import LabelgateError

app = typer.Typer(
    name="labelgate",
    help="A data-classification gateway for inference services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
policy_app = typer.Typer(help="Evaluate and inspect policies.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


def _fail(error: LabelgateError) -> typer.Exit:
    typer.echo(f"error: {error.message} ({error.reason})", err=True)
    return typer.Exit(error.exit_code)


@app.command("demo-backend")
def demo_backend(
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve the demo inference backend on")] = (
        "127.0.0.1:8001"
    ),
) -> None:
    """Serve the synthetic Open Inference Protocol backend (customer-profile, sentiment)."""
    from labelgate.demo.backend import run

    try:
        run(listen)
    except LabelgateError as error:
        raise _fail(error) from None


@policy_app.command("eval")
def policy_eval(
    input_file: Annotated[Path, typer.Option("--input", help="JSON file with a labelgate.v1 policy input")],
    engine: Annotated[str, typer.Option(help="embedded or opa")] = "embedded",
    opa_url: Annotated[str, typer.Option(help="OPA server URL for --engine opa")] = "http://127.0.0.1:8181",
    policy_dir: Annotated[Path, typer.Option(help="Rego policy folder for --engine embedded")] = Path("rego"),
    explain: Annotated[bool, typer.Option(help="Also print why the policy decided so")] = False,
) -> None:
    """Print the validated decision for one input as JSON."""
    from labelgate.policy.cli import evaluate

    try:
        evaluate(input_file, engine=engine, opa_url=opa_url, policy_dir=policy_dir, explain=explain)
    except LabelgateError as error:
        raise _fail(error) from None


if __name__ == "__main__":
    app()
