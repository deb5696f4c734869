"""Recorded sessions in the web inbox: ``/inbox/sessions`` and ``/inbox/sessions/{id}``.

The timeline of a session, call by call, with each response **as the viewer's replay
decision allows** (``viewing.py``): the policy decides, for the signed-in viewer, which of
the recorded values they may see, and its masks are applied before the page is rendered.
A viewer the policy denies, an engine error, or a server without a replay policy shows none
of the values.

The pages live under ``/inbox`` because that is where the inbox's session cookie is sent,
and they borrow the inbox's sign-in and layout (``InboxHooks``, handed in by
``labelgate.approvals.web.mount_inbox``), since the inbox sits above recordings in the
layers. The store is ``app.state.session_store`` (a ``SessionStore``) and the policy
``app.state.replay_policy`` (a ``ReplayPolicy`` with the gateway's engine), both set by
whoever builds the app; without a store the pages say recording is off.

What a page holds is bounded, whatever the callers and upstreams recorded: session ids and
reply sizes are theirs to choose. The list shows ``SESSIONS_PER_PAGE`` sessions at a time
(``?cursor=`` from the previous page's link; the store reads only those); a session page shows
``CALLS_PER_PAGE`` calls (``?start=``, the first call's number), at most
``ELEMENTS_PER_TENSOR`` elements of a tensor and ``VALUES_PER_PAGE`` table cells in all, and
says how many are not shown; the elements not shown are never built. The store read runs where
the store runs it (files: a worker thread); building the rows and rendering the template run in
a worker thread, so the admin loop keeps answering ``/healthz`` and ``/readyz``. Unbounded, one
session of 300,000 files made a 105 MB list in 21.6 s, and one reply of 2.4 million one-byte
elements an 84 MB page in 4.5 s, each holding ``/healthz`` for about 4 s (review).
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from google.protobuf import text_format
from google.protobuf.message import Message

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.auth import Subject
from labelgate.errors import InvalidInput, LabelgateError, NotFound, PolicyUnavailable
from labelgate.logs import get_logger
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, item_size
from labelgate.recording import reasons
from labelgate.recording.entries import MARKER_MEANING, checked, decode_message
from labelgate.recording.store import PAGE_SIZE, SessionPage, SessionStore
from labelgate.recording.viewing import ReplayPolicy, view_entries

log = get_logger(__name__)
SESSIONS_PATH = "/inbox/sessions"
MAX_SESSION_ID = 256
_TENSOR_OF_PATH = re.compile(r"^outputs\.([^.\[{]+)")

SESSIONS_PER_PAGE = PAGE_SIZE
CALLS_PER_PAGE = 100
ELEMENTS_PER_TENSOR = 1000
VALUES_PER_PAGE = 20_000  # table cells of every response on a page
CHARACTERS_PER_PAGE = 200_000  # of responses shown as protobuf text
ITEMS_PER_LIST = 100  # masked fields, inputs, outputs asked: one per tensor, so unbounded too


@dataclass(frozen=True)
class InboxHooks:
    """What the inbox lends the session pages.

    ``viewer(request, next_url)``: the signed-in person and their session token if they may
    read recordings, the sign-in page (a Response) if nobody is signed in; raises
    PermissionDenied for anyone else. ``render(request, template, person, token, **values)``:
    a page in the inbox's layout (rendered on the spot: the pages call it in a worker thread)."""

    viewer: Callable[[Request, str], tuple[Subject, str] | Response]
    render: Callable[..., Response]


def sessions_router(hooks: InboxHooks) -> APIRouter:
    """The two session pages; include it before the inbox's ``/inbox/{approval_id}``."""
    router = APIRouter(prefix=SESSIONS_PATH, include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    async def sessions_list(request: Request, cursor: str | None = None) -> Response:
        allowed = hooks.viewer(request, SESSIONS_PATH)
        if isinstance(allowed, Response):
            return allowed
        person, token = allowed
        page = await _session_store(request).sessions_page(SESSIONS_PER_PAGE, cursor or None)
        log.info("sessions listed", subject=person.id, count=len(page.sessions), first_page=not cursor)
        return await asyncio.to_thread(_render_list, hooks, request, person, token, page, bool(cursor))

    @router.get("/{session_id:path}", response_class=HTMLResponse)
    async def session_page(
        request: Request,
        session_id: str,
        start: Annotated[int, Query(ge=1, le=2**31, description="number of the first call shown")] = 1,
    ) -> Response:
        if not session_id or len(session_id) > MAX_SESSION_ID:
            raise InvalidInput(
                reasons.SESSION_ID_INVALID, f"a session id is 1 to {MAX_SESSION_ID} characters"
            )
        allowed = hooks.viewer(request, f"{SESSIONS_PATH}/{quote(session_id, safe='')}")
        if isinstance(allowed, Response):
            return allowed
        person, token = allowed
        policy = _replay_policy(request)  # before anything is read: no policy, nothing shown
        entries = await _session_store(request).entries(session_id)
        if entries is None:
            raise NotFound(reasons.SESSION_NOT_FOUND, "no recorded session has that id")
        window = await asyncio.to_thread(calls_window, entries, start, CALLS_PER_PAGE)
        log.info("session viewed", subject=person.id, session=session_id, start=start)
        viewed = await view_entries(policy, person, window.entries)  # only this page's calls
        return await asyncio.to_thread(
            _render_session, hooks, request, person, token, session_id, window, viewed
        )

    return router


def _render_list(
    hooks: InboxHooks, request: Request, person: Subject, token: str, page: SessionPage, later: bool
) -> Response:
    from labelgate.recording.replay import human_bytes  # rich: only once a page is shown

    rows = [
        {"info": info, "size": human_bytes(info.bytes), "href": quote(info.session_id, safe="")}
        for info in page.sessions
    ]
    following = f"{SESSIONS_PATH}?cursor={quote(page.next, safe='')}" if page.next else None
    return hooks.render(
        request, "sessions.html", person, token, sessions=rows, next_url=following, later_page=later
    )


@dataclass(frozen=True)
class CallsWindow:
    """The entries of one session page: calls ``start`` to ``start + count - 1`` (numbered as
    the session page numbers them), each with the markers and damaged lines that follow it;
    ``calls`` is how many the whole session has."""

    entries: list[dict[str, Any]]
    start: int
    count: int
    calls: int


def _is_call(entry: dict[str, Any]) -> bool:
    """Whether ``view_entries`` shows the entry as a call (``timeline`` numbers those)."""
    return "sealed" not in entry and checked(entry).get("kind") == "call"


def calls_window(entries: list[dict[str, Any]], start: int, count: int) -> CallsWindow:
    number = 0
    shown = []
    for entry in entries:
        number += _is_call(entry)
        # What comes before the first call is on the first page; what follows a call, on its page.
        if start <= max(number, 1) < start + count:
            shown.append(entry)
    return CallsWindow(shown, start, count, number)


def _render_session(
    hooks: InboxHooks,
    request: Request,
    person: Subject,
    token: str,
    session_id: str,
    window: CallsWindow,
    viewed: list[dict[str, Any]],
) -> Response:
    items = timeline(viewed, first=window.start)
    shown = sum(item["kind"] == "call" for item in items)
    href = f"{SESSIONS_PATH}/{quote(session_id, safe='')}"
    earlier = max(1, window.start - window.count) if window.start > 1 else None
    later = window.start + window.count if window.start + window.count <= window.calls else None
    return hooks.render(
        request,
        "session.html",
        person,
        token,
        session_id=session_id,
        items=items,
        calls=window.calls,
        first=window.start,
        last=window.start + shown - 1,
        page_href=href,
        earlier_url=f"{href}?start={earlier}" if earlier is not None else None,
        later_url=f"{href}?start={later}" if later is not None else None,
        values_per_page=VALUES_PER_PAGE,
    )


def _session_store(request: Request) -> SessionStore:
    store = getattr(request.app.state, "session_store", None)
    if store is None:
        raise NotFound(
            reasons.SESSIONS_NOT_RECORDED, "this server has no session recording store (recording: ...)"
        )
    return store  # type: ignore[no-any-return]


def _replay_policy(request: Request) -> ReplayPolicy:
    policy = getattr(request.app.state, "replay_policy", None)
    if not isinstance(policy, ReplayPolicy):
        raise PolicyUnavailable(
            reasons.SESSIONS_NO_POLICY,
            "recorded calls are shown only through policy, and this server has none",
        )
    return policy


class Budget:
    """What is left to show on one page: table cells and characters of protobuf text."""

    def __init__(self, values: int = VALUES_PER_PAGE, characters: int = CHARACTERS_PER_PAGE) -> None:
        self.values = values
        self.characters = characters


def timeline(
    entries: list[dict[str, Any]], first: int = 1, budget: Budget | None = None
) -> list[dict[str, Any]]:
    """Viewed entries as the session page shows them: calls numbered from ``first``, markers and
    torn lines kept; the responses' values within ``budget`` (a page's, by default)."""
    budget = budget or Budget()
    items: list[dict[str, Any]] = []
    number = first - 1
    for entry in entries:
        kind = entry.get("kind")
        if kind == "call":
            number += 1
            items.append({"kind": "call", "number": number, **_call(entry, budget)})
        elif kind == "truncated":
            items.append({"kind": "truncated", **entry, "meaning": MARKER_MEANING})
        elif kind != "session":
            items.append({"kind": "damaged", "line": entry.get("line", "?"), "note": entry.get("note", "")})
    return items


def _call(entry: dict[str, Any], budget: Budget) -> dict[str, Any]:
    decision = entry.get("decision") or {}
    replay = entry.get("replay") or {}
    summary = entry.get("request") or {}
    masked = decision.get("masked") or []
    inputs = summary.get("inputs") or []
    asked = summary.get("outputs") or []
    return {
        "e": entry,
        "decision": decision,
        "masked": masked[:ITEMS_PER_LIST],
        "masked_hidden": max(0, len(masked) - ITEMS_PER_LIST),
        "replay": replay,
        "inputs": inputs[:ITEMS_PER_LIST],
        "inputs_hidden": max(0, len(inputs) - ITEMS_PER_LIST),
        "outputs_asked": asked[:ITEMS_PER_LIST],
        "outputs_asked_hidden": max(0, len(asked) - ITEMS_PER_LIST),
        "response": _response(entry.get("response"), replay.get("masked") or [], budget),
    }


def _response(
    stored: dict[str, Any] | None, masked: list[dict[str, Any]], budget: Budget
) -> dict[str, Any] | None:
    """The viewed response decoded: tensor tables for inference, protobuf text otherwise, each
    within what ``budget`` has left (and is charged with what is shown)."""
    # Imported here: the replay renderer pulls in rich, which the admin app should not pay for
    # unless a page is shown.
    from labelgate.recording.replay import human_bytes

    if not stored:
        return None
    view: dict[str, Any] = {"type": stored.get("type"), "size": human_bytes(stored.get("bytes", 0))}
    message = decode_message(stored)
    if message is None:
        return {**view, "note": "type not known here, not decoded"}
    if message.DESCRIPTOR.full_name != "inference.ModelInferResponse":
        text, hidden = _text(message, budget)
        return {**view, "text": text, "text_hidden": hidden}
    try:
        tensors = decode_outputs(message)  # type: ignore[arg-type]  # validated; values not built
    except LabelgateError as error:
        return {**view, "note": f"outputs do not decode ({error.reason})"}
    strategies: dict[str, set[str]] = {}
    for item in masked:
        if match := _TENSOR_OF_PATH.match(item.get("path", "")):
            strategies.setdefault(match.group(1), set()).add(item.get("strategy", "?"))
    groups: dict[
        int, list[Tensor]
    ] = {}  # a table per element count: one column per tensor, a row per element
    for tensor in tensors:
        groups.setdefault(tensor.size, []).append(tensor)
    tables = []
    outputs_hidden = 0
    cut = False  # by the page's budget, not the per-tensor cap
    for count, members in groups.items():
        width = min(len(members), budget.values)  # columns the page has room for
        rows = min(count, ELEMENTS_PER_TENSOR, budget.values // width) if width else 0
        if not width or (count and not rows):
            outputs_hidden += len(members)
            cut = True
            continue
        shown, outputs_hidden = members[:width], outputs_hidden + len(members) - width
        cut = cut or width < len(members) or rows < min(count, ELEMENTS_PER_TENSOR)
        columns = [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": t.shape,
                "masked": sorted(strategies.get(t.name, ())),
            }
            for t in shown
        ]
        values = [[_cell(value, t.datatype) for value in first_values(t, rows)] for t in shown]
        budget.values -= rows * width
        tables.append(
            {"columns": columns, "rows": list(zip(*values, strict=True)), "rows_hidden": count - rows}
        )
    return {**view, "tables": tables, "outputs_hidden": outputs_hidden, "cut": cut}


def first_values(tensor: Tensor, count: int) -> list[Any]:
    """The first ``count`` values of ``tensor``, without building the others: a tensor decoded
    from a raw buffer builds its values only when asked, and all of them at once."""
    raw = tensor.raw_source()
    if count >= tensor.size or tensor.values_built or raw is None:
        return tensor.values[:count]
    if tensor.datatype == "BYTES":  # the buffer was checked whole when it was decoded
        end = 0
        for _ in range(count):
            end += 4 + struct.unpack_from("<I", raw, end)[0]
    else:
        end = count * item_size(tensor.datatype)
    head = pb.ModelInferResponse()
    head.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=[count])
    head.raw_output_contents.append(raw[:end])
    (decoded,) = decode_outputs(head)
    return decoded.values


class _Full(Exception):
    """The text has reached what the page may still show."""


class _Capped:
    """A text stream that keeps ``limit`` characters and stops the printer past them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.length = 0

    def write(self, text: str) -> None:
        room = self.limit - self.length
        self.parts.append(text[:room])
        self.length += min(len(text), room)
        if len(text) > room:
            raise _Full


def _text(message: Message, budget: Budget) -> tuple[str, bool]:
    """The message as protobuf text within what the page has left, and whether some is cut;
    printing stops there, so a large message is never printed whole."""
    out = _Capped(budget.characters)
    try:
        text_format.PrintMessage(message, out, as_utf8=True)
        hidden = False
    except _Full:
        hidden = True
    budget.characters -= out.length
    return "".join(out.parts), hidden


def _cell(value: Any, datatype: str) -> str:
    """An element as text: the CLI replay's rendering, but bytes that are not UTF-8 as hex."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + value.hex()
    from labelgate.recording.replay import cell_text

    return cell_text(value, datatype)
