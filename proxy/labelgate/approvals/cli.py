"""``labelgate approvals list|show|approve|deny`` (a client of the REST API) and
``labelgate approvals serve`` (``approvals-server``, its old name, is a hidden alias).

The API is the gateway's admin listener (or an approvals server): ``--url`` or
``LABELGATE_APPROVALS_URL``. The token is the approver's JWT: ``--token`` or ``LABELGATE_TOKEN``.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

import typer

from labelgate.approvals import reasons
from labelgate.cli_backstop import refused
from labelgate.errors import LabelgateError
from labelgate.shown_urls import shown_url
from labelgate.untrusted_text import bearer_token_problem, error_line, shown

approvals_app = typer.Typer(help="Review just-in-time approval requests.", no_args_is_help=True)

Url = Annotated[
    str, typer.Option(envvar="LABELGATE_APPROVALS_URL", help="approvals API (the gateway's admin listener)")
]
Token = Annotated[str | None, typer.Option(envvar="LABELGATE_TOKEN", help="your bearer token (JWT)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
DEFAULT_URL = "http://127.0.0.1:9090"
# The only approval ids there are (``service.APPROVAL_ID``, what ``new_id("apr")`` makes; the
# API's path pattern): checked here because an id is pasted into a URL path, where a ``#``
# or ``/`` in it would make ``deny 'apr-…/approve#'`` an approval.
APPROVAL_ID = re.compile(r"apr-[0-9a-f]{16}")


class ListedState(StrEnum):
    """Which requests ``approvals list`` shows."""

    pending = "pending"
    resolved = "resolved"
    all = "all"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def approval_path(approval_id: str, action: str = "") -> str:
    """``/api/v1/approvals/<id>[/<action>]``; an id not of the form the server makes is
    refused before any request (exit 2). Quoted as well: the id is the caller's text."""
    if not APPROVAL_ID.fullmatch(approval_id):
        raise ApiError(
            400,
            reasons.APPROVAL_ID_INVALID,
            f"{approval_id!r} is not an approval id (apr- and 16 hex digits, as approvals list shows them)",
        )
    return f"/api/v1/approvals/{quote(approval_id, safe='')}" + (f"/{action}" if action else "")


def _check_token(token: str | None) -> str:
    """The token goes in one header, as a bearer token is (``untrusted_text.bearer_token_problem``)."""
    if not token:
        raise ApiError(400, "NO_CREDENTIALS", "no token: pass --token or set LABELGATE_TOKEN")
    problem = bearer_token_problem(token)
    if problem is not None:
        raise ApiError(400, "OPTION_INVALID", problem)
    return token


def call_api(url: str, token: str | None, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the approvals API; a problem response becomes ``ApiError``."""
    token = _check_token(token)
    _check_url(url)
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own API
        url.rstrip("/") + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as error:
        try:
            problem = json.load(error)
        except (ValueError, RecursionError):
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        raise ApiError(
            error.code, problem.get("reason", "HTTP_ERROR"), problem.get("detail", str(error))
        ) from None
    except urllib.error.URLError as error:
        raise ApiError(0, "API_UNREACHABLE", f"cannot reach {shown_url(url)}: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise ApiError(0, "API_UNREACHABLE", f"cannot reach {shown_url(url)}: {error}") from None
    except http.client.InvalidURL:  # a space or a control character in --url's path
        raise ApiError(400, "OPTION_INVALID", f"--url {shown_url(url)!r} cannot be sent as it is") from None
    except http.client.HTTPException as error:  # e.g. a gRPC port: no HTTP/1 status line
        raise ApiError(
            0, "ANSWER_INVALID", f"{shown_url(url)} did not answer in HTTP/1.1 ({type(error).__name__})"
        ) from None
    except ValueError as error:  # what urllib cannot send (the message may quote a header)
        raise ApiError(
            400, "OPTION_INVALID", f"cannot send a request to {shown_url(url)} ({type(error).__name__})"
        ) from None
    try:
        answer: object = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(0, "ANSWER_INVALID", f"{shown_url(url)} did not answer with JSON") from None
    if not isinstance(answer, dict):
        raise ApiError(0, "ANSWER_INVALID", f"{shown_url(url)} did not answer with a JSON object")
    return answer


def _check_url(url: str) -> None:
    """--url must be one urllib can open: http(s), a host, a port that fits."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ApiError(400, "OPTION_INVALID", f"--url {shown_url(url)!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise ApiError(400, "OPTION_INVALID", f"--url takes http(s)://HOST:PORT, got {shown_url(url)!r}")
    if "?" in url or "#" in url:  # each command's path goes after it
        raise ApiError(400, "OPTION_INVALID", f"--url takes no ?query or #fragment, got {shown_url(url)!r}")


def _left(item: dict[str, Any]) -> str:
    from datetime import datetime

    seconds = datetime.fromisoformat(item["expires_at"]).timestamp() - time.time()
    return f"{max(0, int(seconds))}s"


# The most characters of other people's text one value of ``describe`` shows: a justification
# or a reason may hold 1000 (the inbox and ``--json`` show them whole).
SHOWN_TEXT = 240
# Where ``describe``'s values start ("  justification: "): a value wrapped on a terminal goes on
# under it, never back to the column its labels and votes start in.
VALUE_COLUMN = 17
_LABEL = "  {:<" + str(VALUE_COLUMN - 3) + "} "
_GRANT_SCOPES = {
    "query": "this query only (the same inputs and outputs)",
    "model": "any query to the model",
}


def _said(value: object, limit: int = SHOWN_TEXT) -> str:
    """Other people's text on one line of the terminal: what is not printable as its escape
    (``shown``), a run of spaces as one (200 spaces pushed the rest of a justification to the
    start of a terminal row, where it read as a vote), cut to ``limit`` with an ellipsis."""
    text = " ".join(shown(str(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _texts(value: object) -> list[str]:
    """A list of strings in an answer, else the answer is not a request (TypeError)."""
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise TypeError("not a list of strings")
    return value


def _listed(value: object) -> str:
    return _said(", ".join(_texts(value)))


def _count(value: object) -> int:
    """A count in an answer, else the answer is not a request (ValueError)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a count")
    return value


def _count_or_none(value: object) -> int | None:
    return None if value is None else _count(value)


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(seconds // 3600, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def _labelled(label: str, values: list[str]) -> list[str]:
    """``label`` and its values, one a line, the later ones under the first."""
    first, *rest = values or ["-"]
    return [_LABEL.format(label + ":") + first, *(" " * VALUE_COLUMN + value for value in rest)]


def _grant(item: dict[str, Any]) -> list[str]:
    """What a grant made from this request releases (the inbox's "Grant" line)."""
    scope = item["grant_scope"]
    if scope not in _GRANT_SCOPES:
        raise ValueError("not a grant scope")
    single_use = item["single_use"]
    if not isinstance(single_use, bool):
        raise TypeError("single_use is not a bool")
    ttl, budget = _count(item["grant_ttl_seconds"]), _count_or_none(item["row_budget"])
    rows = "none" if budget is None else f"{budget} row(s) in total"
    return [
        f"{_duration(ttl)}, scope {scope}: {_GRANT_SCOPES[scope]}",
        f"single use: {'yes' if single_use else 'no'}; row budget: {rows}",
    ]


def _query(item: dict[str, Any]) -> list[str]:
    """What the held call asked: its inputs (no values), the outputs it named, its rows."""
    query = item["query"]
    inputs = [
        f"{_said(one['name'])} {_said(one['datatype'])} [{', '.join(str(_count(n)) for n in one['shape'])}]"
        for one in query["inputs"]
    ]
    rows = _count_or_none(query["rows"])
    return [
        *_labelled("inputs", inputs),
        *_labelled("outputs", [_listed(query["requested_outputs"]) or "all"]),
        *_labelled("rows", ["not known" if rows is None else str(rows)]),
    ]


def describe(item: dict[str, Any]) -> str:
    """One request as ``show``, ``approve`` and ``deny`` print it: who asks, for what (the
    fields at stake, the query, what a grant would release), and the votes so far.

    Requesters, models, justifications and reasons are other people's text (and the whole
    answer a server's): each value is ``_said``, so no control or format character reaches the
    terminal and no value makes a line of its own. An answer without a request's fields raises
    KeyError, TypeError or ValueError (``_described`` makes that ANSWER_INVALID)."""
    approvals = f"{_count(item['approvals'])} of {_count(item['min_approvals'])} approval(s)"
    lines = [
        f"{_said(item['id'])}  {_said(item['state'])}  ({approvals} from {_listed(item['approver_groups'])})",
        f"  requester:     {_said(item['requester'])} ({_listed(item['requester_groups']) or 'no groups'})",
        f"  call:          {_said(item['method'])} model {_said(item['model']) or '-'}",
        f"                 ({_said(item['phase'])} phase, {_said(item['mode'])})",
        f"  labels:        {_listed(item['labels'])}",
        *_labelled("fields", [f"{_said(f['path'])} ({_listed(f['labels'])})" for f in item["fields"]]),
        *_query(item),
        *_labelled("grant", _grant(item)),
        f"  why held:      {_said(item['policy_reason'])}",
        f"  justification: {_said(item['justification']) or '-'}",
        f"  asked:         {_said(item['created_at'])}   expires: {_said(item['expires_at'])}",
    ]
    if item["resolution"]:
        lines.append(f"  outcome:       {_said(item['resolution'])}")
    for vote in item["votes"]:
        by = f"{_said(vote['verdict'])} by {_said(vote['approver'])} at {_said(vote['at'])}"
        lines.append(f"  vote:          {by}: {_said(vote['reason']) or '-'}")
    lines.append(f"  inbox:         {_said(item['link'])}")
    return "\n".join(shown(line) for line in lines)


def _described(item: dict[str, Any], url: str, vote: str = "") -> str:
    """``describe(item)``, or ANSWER_INVALID in one line when the answer is not a request
    (``vote``: what the server accepted before it answered so, said, since it counts)."""
    try:
        return describe(item)
    except (KeyError, TypeError, ValueError, AttributeError):
        recorded = f"your {vote} was recorded, but " if vote else ""
        raise ApiError(
            0, "ANSWER_INVALID", f"{recorded}{shown_url(url)} did not answer with a request"
        ) from None


def _echo_described(text: str) -> None:
    """``describe``'s text; on a terminal, a line wider than it wraps under the values' column
    (``_fitted``) rather than back to the first column, where labels and votes start."""
    import shutil
    import sys

    if sys.stdout.isatty():
        width = shutil.get_terminal_size().columns
        text = "\n".join(part for line in text.splitlines() for part in _fitted(line, width))
    typer.echo(text)


def _fitted(line: str, width: int) -> list[str]:
    """``line`` in parts of at most ``width`` cells, cut at a space where one fits, the later
    parts indented to ``VALUE_COLUMN`` (a terminal too narrow for that wraps the line itself)."""
    from rich.cells import cell_len, chop_cells

    if cell_len(line) <= width or width < VALUE_COLUMN + 20:
        return [line]
    parts: list[str] = []
    rest, room, after = line, width, VALUE_COLUMN  # the first part is cut in its value only
    while cell_len(rest) > room:
        piece = chop_cells(rest, room)[0]
        space = piece.rfind(" ")
        if space > after:
            parts.append(piece[:space].rstrip(" "))
            rest = rest[space + 1 :].lstrip(" ")
        else:  # a word longer than the room: cut inside it
            parts.append(piece)
            rest = rest[len(piece) :]
        room, after = width - VALUE_COLUMN, 0
    parts.append(rest)
    return [parts[0], *(" " * VALUE_COLUMN + part for part in parts[1:])]


def _run(action: Any) -> None:
    try:
        action()
    except ApiError as error:
        # The detail may be the server's: shown whole first, so its line breaks are escapes too
        # and it cannot print a line that reads as this command's own.
        typer.echo(f"error: {error_line(shown(str(error.detail)), str(error.reason))}", err=True)
        raise typer.Exit(2 if error.status in (400, 404, 409) else 1) from None


def _table(items: list[dict[str, Any]], state: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough that ids are never cut
        console = Console(highlight=False, width=max(console.width, 200))
    if not items:
        console.print(f"no {state} approval requests")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("REQUESTER")
    table.add_column("LABELS")
    table.add_column("MODEL")
    table.add_column("VOTES", justify="right", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    for item in items:
        left = f"{_left(item)} left" if item["state"] == "pending" else item["state"]
        cells = (
            item["id"],
            item["requester"],
            ", ".join(item["labels"]),
            item["model"] or item["method"],
            f"{item['approvals']}/{item['min_approvals']}",
            left,
        )
        # Names are text, never markup, and never terminal controls (see describe).
        table.add_row(*(Text(shown(str(cell))) for cell in cells))
    console.print(table)


@approvals_app.command("list")
def list_command(
    url: Url = DEFAULT_URL,
    token: Token = None,
    state: Annotated[ListedState, typer.Option(help="which requests")] = ListedState.pending,
    json_output: JsonFlag = False,
) -> None:
    """List the requests you may see (pending by default)."""

    def action() -> None:
        items = call_api(url, token, "/api/v1/approvals?" + urlencode({"state": state.value})).get("items")
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ApiError(0, "ANSWER_INVALID", f"{shown_url(url)} did not answer with a list of requests")
        if json_output:
            typer.echo(json.dumps(items, indent=2))
            return
        try:
            _table(items, state.value)
        except (KeyError, TypeError, ValueError):  # an item without the fields of a request
            raise ApiError(0, "ANSWER_INVALID", f"{shown_url(url)} did not answer with requests") from None

    _run(action)


@approvals_app.command("show")
def show_command(
    approval_id: str, url: Url = DEFAULT_URL, token: Token = None, json_output: JsonFlag = False
) -> None:
    """Show one request with its votes."""

    def action() -> None:
        item = call_api(url, token, approval_path(approval_id))
        if json_output:
            typer.echo(json.dumps(item, indent=2))
            return
        _echo_described(_described(item, url))

    _run(action)


@approvals_app.command("approve")
def approve_command(
    approval_id: str,
    url: Url = DEFAULT_URL,
    token: Token = None,
    reason: Annotated[str, typer.Option(help="why (recorded with your approval)")] = "",
) -> None:
    """Approve a request (one vote; some need several people)."""

    def action() -> None:
        item = call_api(url, token, approval_path(approval_id, "approve"), {"reason": reason})
        _echo_described(_described(item, url, "approval"))

    _run(action)


@approvals_app.command("deny")
def deny_command(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="why (the caller sees it)")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Deny a request, with a reason."""

    def action() -> None:
        item = call_api(url, token, approval_path(approval_id, "deny"), {"reason": reason})
        _echo_described(_described(item, url, "denial"))

    _run(action)


@approvals_app.command("serve")
def approvals_server_cli(
    config: Annotated[
        Path | None, typer.Option(help="the gateway's YAML config (store and JWT settings)")
    ] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT for the API and the inbox")] = "127.0.0.1:9091",
) -> None:
    """Serve the approvals API and web inbox on their own (same store as the gateways)."""
    from labelgate.admin.approvals_server import run
    from labelgate.config import load_settings
    from labelgate.gateway.ports import ensure_free

    try:
        ensure_free(listen, "--listen")
        run(load_settings(config), listen)
    except LabelgateError as error:
        raise refused(error) from None
