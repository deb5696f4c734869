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
from labelgate.errors import LabelgateError
from labelgate.shown_urls import shown_url
from labelgate.untrusted_text import bearer_token_problem, shown

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


def describe(item: dict[str, Any]) -> str:
    lines = [
        f"{item['id']}  {item['state']}  ({item['approvals']} of {item['min_approvals']} approval(s) "
        f"from {', '.join(item['approver_groups'])})",
        f"  requester:     {item['requester']} ({', '.join(item['requester_groups']) or 'no groups'})",
        f"  call:          {item['method']} model {item['model'] or '-'}",
        f"                 ({item['phase']} phase, {item['mode']})",
        f"  labels:        {', '.join(item['labels'])}",
        f"  why held:      {item['policy_reason']}",
        f"  justification: {item['justification'] or '-'}",
        f"  asked:         {item['created_at']}   expires: {item['expires_at']}",
    ]
    if item["resolution"]:
        lines.append(f"  outcome:       {item['resolution']}")
    for vote in item["votes"]:
        why = vote["reason"] or "-"
        lines.append(f"  vote:          {vote['verdict']} by {vote['approver']} at {vote['at']}: {why}")
    lines.append(f"  inbox:         {item['link']}")
    # Requesters, models, justifications and reasons are other people's text: a control or
    # format character in one is printed as its escape, never sent to the terminal.
    return "\n".join(shown(line) for line in lines)


def _run(action: Any) -> None:
    try:
        action()
    except ApiError as error:
        typer.echo(shown(f"error: {error.detail} ({error.reason})"), err=True)
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
        typer.echo(json.dumps(item, indent=2) if json_output else describe(item))

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
        typer.echo(describe(item))

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
        typer.echo(describe(item))

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
        typer.echo(f"error: {error.message} ({error.reason})", err=True)
        raise typer.Exit(error.exit_code) from None
