"""The last line of defence of every ``labelgate`` command: an exception no command expected
ends in one line on stderr and exit code 1, never in a Python traceback (which can carry
paths, values and the program's insides to whoever reads the terminal or the CI log).

``LABELGATE_DEBUG=1`` prints the traceback as well, for a bug report.

``refused`` is the other way a command ends in one line: a ``LabelgateError`` it expected,
as ``error: <message> (<REASON>)`` (``untrusted_text.error_line``) and its exit code.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import typer

from labelgate.errors import LabelgateError
from labelgate.untrusted_text import error_line, shown

DEBUG_VARIABLE = "LABELGATE_DEBUG"
INTERNAL_ERROR_EXIT = 1
_MESSAGE_LIMIT = 500


def internal_error_line(error: BaseException) -> str:
    """``labelgate: internal error (<type>): <message>``, on one line, bounded, and what is not
    printable in it shown as its escape (the message may quote a path or a value)."""
    message = " ".join(str(error).split())
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "..."
    return f"labelgate: internal error ({type(error).__name__}): {shown(message)}"


def refused(error: LabelgateError) -> typer.Exit:
    """Print ``error`` as ``error: <message> (<REASON>)`` on stderr; the exit to raise. Its
    message may quote text labelgate did not write (a model's input names, an OPA check error
    quoting a .rego string, a path), so it is ``error_line``'s."""
    typer.echo(f"error: {error_line(error.message, error.reason)}", err=True)
    return typer.Exit(error.exit_code)


def report_internal_error(error: BaseException) -> NoReturn:
    if os.environ.get(DEBUG_VARIABLE) == "1":
        traceback.print_exception(error, file=sys.stderr)
    print(internal_error_line(error), file=sys.stderr, flush=True)
    sys.exit(INTERNAL_ERROR_EXIT)


class GuardedTyper(typer.Typer):
    """A Typer app whose unexpected exceptions go through ``report_internal_error``. Click
    already turns usage errors, ``typer.Exit`` and Ctrl-C into exit codes; what is left here
    is a bug or an input no command anticipated."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as error:  # the backstop: everything unexpected
            report_internal_error(error)


def run_guarded(function: Any) -> None:
    """``typer.run`` behind the same backstop (the ``python -m`` entry points)."""
    app = GuardedTyper(add_completion=False, pretty_exceptions_enable=False)
    app.command()(function)
    app()
