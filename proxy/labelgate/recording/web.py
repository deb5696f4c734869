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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from google.protobuf import text_format

from labelgate.auth import Subject
from labelgate.errors import InvalidInput, LabelgateError, NotFound, PolicyUnavailable
from labelgate.logs import get_logger
from labelgate.oip.tensors import decode_outputs
from labelgate.recording import reasons
from labelgate.recording.entries import decode_message
from labelgate.recording.store import SessionStore
from labelgate.recording.viewing import ReplayPolicy, view_entries

log = get_logger(__name__)
SESSIONS_PATH = "/inbox/sessions"
MAX_SESSION_ID = 256
_TENSOR_OF_PATH = re.compile(r"^outputs\.([^.\[{]+)")


@dataclass(frozen=True)
class InboxHooks:
    """What the inbox lends the session pages.

    ``viewer(request, next_url)``: the signed-in person and their session token if they may
    read recordings, the sign-in page (a Response) if nobody is signed in; raises
    PermissionDenied for anyone else. ``render(request, template, person, token, **values)``:
    a page in the inbox's layout."""

    viewer: Callable[[Request, str], tuple[Subject, str] | Response]
    render: Callable[..., Response]


def sessions_router(hooks: InboxHooks) -> APIRouter:
    """The two session pages; include it before the inbox's ``/inbox/{approval_id}``."""
    router = APIRouter(prefix=SESSIONS_PATH, include_in_schema=False)

    @router.get("", response_class=HTMLResponse)
    async def sessions_list(request: Request) -> Response:
        allowed = hooks.viewer(request, SESSIONS_PATH)
        if isinstance(allowed, Response):
            return allowed
        person, token = allowed
        from labelgate.recording.replay import human_bytes  # rich: only once a page is shown

        found = sorted(await _session_store(request).sessions(), key=lambda info: info.last, reverse=True)
        log.info("sessions listed", subject=person.id, count=len(found))
        rows = [
            {"info": info, "size": human_bytes(info.bytes), "href": quote(info.session_id, safe="")}
            for info in found
        ]
        return hooks.render(request, "sessions.html", person, token, sessions=rows)

    @router.get("/{session_id:path}", response_class=HTMLResponse)
    async def session_page(request: Request, session_id: str) -> Response:
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
        log.info("session viewed", subject=person.id, session=session_id)
        viewed = await view_entries(policy, person, entries)
        return hooks.render(
            request, "session.html", person, token, session_id=session_id, items=timeline(viewed)
        )

    return router


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


def timeline(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Viewed entries as the session page shows them: calls numbered, markers and torn lines kept."""
    items: list[dict[str, Any]] = []
    number = 0
    for entry in entries:
        kind = entry.get("kind")
        if kind == "call":
            number += 1
            items.append({"kind": "call", "number": number, **_call(entry)})
        elif kind == "truncated":
            items.append({"kind": "truncated", **entry})
        elif kind != "session":
            items.append({"kind": "damaged", "line": entry.get("line", "?"), "note": entry.get("note", "")})
    return items


def _call(entry: dict[str, Any]) -> dict[str, Any]:
    decision = entry.get("decision") or {}
    replay = entry.get("replay") or {}
    summary = entry.get("request") or {}
    return {
        "e": entry,
        "decision": decision,
        "masked": decision.get("masked") or [],
        "replay": replay,
        "inputs": summary.get("inputs") or [],
        "outputs_asked": summary.get("outputs") or [],
        "response": _response(entry.get("response"), replay.get("masked") or []),
    }


def _response(stored: dict[str, Any] | None, masked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The viewed response decoded: tensor tables for inference, protobuf text otherwise."""
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
        return {**view, "text": text_format.MessageToString(message, as_utf8=True)}
    try:
        tensors = decode_outputs(message)  # type: ignore[arg-type]
    except LabelgateError as error:
        return {**view, "note": f"outputs do not decode ({error.reason})"}
    strategies: dict[str, set[str]] = {}
    for item in masked:
        if match := _TENSOR_OF_PATH.match(item.get("path", "")):
            strategies.setdefault(match.group(1), set()).add(item.get("strategy", "?"))
    groups: dict[int, list[Any]] = {}  # a table per element count: one column per tensor, a row per element
    for tensor in tensors:
        groups.setdefault(len(tensor.values), []).append(tensor)
    tables = []
    for count, members in groups.items():
        columns = [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": t.shape,
                "masked": sorted(strategies.get(t.name, ())),
            }
            for t in members
        ]
        rows = [[_cell(t.values[row], t.datatype) for t in members] for row in range(count)]
        tables.append({"columns": columns, "rows": rows})
    return {**view, "tables": tables}


def _cell(value: Any, datatype: str) -> str:
    """An element as text: the CLI replay's rendering, but bytes that are not UTF-8 as hex."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + value.hex()
    from labelgate.recording.replay import cell_text

    return cell_text(value, datatype)
