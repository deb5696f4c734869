"""What one session page or one page of the session list costs is bounded, whatever callers and
upstreams recorded (review of the admin listener: 300,000 sessions made a 105 MB list page, one
reply of 2.4 million one-byte elements an 84 MB session page, each holding ``/healthz`` for
about 4 s).

- The list is paged (``?cursor=``): a page reads only the files it shows (the file store) or
  asks PostgreSQL for one page (``LIMIT``); following the cursors lists every session once.
- A session page shows at most ``CALLS_PER_PAGE`` calls (``?start=``), ``ELEMENTS_PER_TENSOR``
  elements of a tensor and ``VALUES_PER_PAGE`` cells in all, says how many are not shown, and
  never builds the elements it leaves out.
- Building the rows and rendering the template happen in a worker thread, not on the admin
  loop that answers ``/healthz``; so does the file store's listing.

Sizes, counts, thread identities and page content only: no timing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.admin.app import build_admin_app
from labelgate.auth import Authenticator
from labelgate.auth.settings import AuthSettings, JwtSettings
from labelgate.calls import CallRecord
from labelgate.errors import InvalidInput
from labelgate.oip import tensors as tensor_codec
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_outputs
from labelgate.policy.embedded import EmbeddedEngine
from labelgate.recording import files, web
from labelgate.recording.entries import call_entry, encode_line, encode_message, file_name, session_header
from labelgate.recording.files import FileSessionStore
from labelgate.recording.postgres import PostgresSessionStore
from labelgate.recording.store import SessionStore, encode_cursor
from tests.approvals.test_session_page import _ready, approval_service, context, cookie, replay_policy
from tests.recording.conftest import Clock, make_call, make_outcome
from tests.recording.test_cli import invoke
from tests.support.postgres import PostgresServer
from tests.support.procs import REPO


def auditor() -> dict[str, str]:
    """An auditor's session cookie, made when it is sent: one made at import lapses ten
    minutes later, before a long run reaches these tests (CI saw sign-in pages)."""
    return cookie("ana", "auditors")


SESSION = "big~" + "0" * 32
LIMIT = 16 * 1024 * 1024
SHOWN, CALLS = 1000, 100  # web.ELEMENTS_PER_TENSOR, web.CALLS_PER_PAGE: what the pages promise


def _entry(session_id: str, clock: Clock, response: pb.ModelInferResponse | None = None) -> dict[str, Any]:
    """A call entry as the recorder writes it, under ``session_id``."""
    outcome = make_outcome(response) if response is not None else make_outcome()
    entry = call_entry(CallRecord.of(make_call(), outcome, None, clock()), record_input_values=False)
    return {**entry, "session_id": session_id}


def _write_session(folder: Path, session_id: str, entries: list[dict[str, Any]]) -> Path:
    path = folder / file_name(session_id)
    lines = [encode_line(session_header(session_id, entries[0]["time"])), *map(encode_line, entries)]
    path.write_bytes(b"".join(lines))
    return path


def _many_sessions(folder: Path, count: int) -> list[str]:
    """``count`` one-call sessions, most recently written last; a few share a modification time
    (the order's tie-breaker is the file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    ids = []
    for number in range(count):
        session_id = f"s{number:04d}~" + "1" * 32
        path = _write_session(folder, session_id, [_entry(session_id, clock)])
        written = 1_700_000_000_000_000_000 + (number // 3) * 1_000_000_000  # threes share a time
        os.utime(path, ns=(written, written))
        ids.append(session_id)
    return ids


def _response(count: int) -> pb.ModelInferResponse:
    """A delivered reply whose two outputs have ``count`` elements each (raw form)."""
    response = pb.ModelInferResponse(model_name="customer-profile", id="r1")
    outputs = [
        Tensor("customer_id", "INT64", [count], list(range(count))),
        Tensor("notes", "BYTES", [count], [f"n{i}".encode() for i in range(count)]),
    ]
    for tensor in outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    encode_outputs(response, outputs, raw=True)
    return response


@pytest.fixture
async def engine() -> AsyncIterator[EmbeddedEngine]:
    started = EmbeddedEngine(REPO / "rego", watch_interval=None)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


@contextlib.asynccontextmanager
async def admin(store: SessionStore, engine: EmbeddedEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The real admin app (inbox, session pages) over ``store``, auditors may view."""
    async with approval_service("auditors") as service:
        authenticator = Authenticator(AuthSettings(jwt=JwtSettings(trust_dev_key=True)))
        app = build_admin_app(_ready, context(service, authenticator))
        app.state.session_store = store
        app.state.replay_policy = replay_policy(engine)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            yield http


def _listed(html: str) -> list[str]:
    return [json.loads(f'"{found}"') for found in re.findall(r'<tr data-session="([^"]+)">', html)]


def _next(html: str) -> str | None:
    found = re.search(r'rel="next" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found else None


# -- the session list --------------------------------------------------------------------------


async def test_the_list_is_paged_and_the_cursors_list_every_session_once(
    tmp_path: Path, engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = await asyncio.to_thread(_many_sessions, tmp_path / "s", 230)
    read: list[str] = []
    whole = files._info

    def counted(path: Path) -> Any:
        read.append(path.name)
        return whole(path)

    monkeypatch.setattr(files, "_info", counted)
    pages: list[list[str]] = []
    files_read: list[int] = []
    async with admin(FileSessionStore(tmp_path / "s"), engine) as http:
        url: str | None = "/inbox/sessions"
        while url is not None:
            page = await http.get(url, headers=auditor())
            assert page.status_code == 200, page.text
            pages.append(_listed(page.text))
            files_read.append(len(read))
            read.clear()
            url = _next(page.text)
    assert [len(page) for page in pages] == [100, 100, 30]
    assert files_read == [100, 100, 30]  # each page read the files it shows, and no other
    listed = [session for page in pages for session in page]
    assert listed == list(reversed(written))  # most recently written first, ties by file name


async def test_a_cursor_the_server_did_not_write_is_a_400(tmp_path: Path, engine: EmbeddedEngine) -> None:
    await asyncio.to_thread(_many_sessions, tmp_path / "s", 3)
    forged = [
        "not base64 at all!",
        base64.urlsafe_b64encode(b'"ab"').decode(),  # JSON, not a position
        encode_cursor("yesterday", "x.jsonl"),  # not a modification time
        encode_cursor("\N{SUPERSCRIPT TWO}", "x.jsonl"),  # a digit to isdigit(), not to int()
        encode_cursor("1", "x\x00.jsonl"),
        "A" * 5000,
    ]
    async with admin(FileSessionStore(tmp_path / "s"), engine) as http:
        for cursor in forged:
            page = await http.get("/inbox/sessions", params={"cursor": cursor}, headers=auditor())
            assert page.status_code == 400, cursor
            assert "SESSIONS_CURSOR_INVALID" in page.text and "Traceback" not in page.text
        html = await http.get(
            "/inbox/sessions", params={"cursor": "%%%"}, headers={**auditor(), "accept": "text/html"}
        )
        assert html.status_code == 400 and "SESSIONS_CURSOR_INVALID" in html.text


async def test_postgres_pages_in_sql_with_ties_broken_by_session_id(postgres: PostgresServer) -> None:
    store = PostgresSessionStore(postgres.create_database())
    await store.open()
    try:
        written = []
        for number in range(7):
            session_id = f"p{number}~" + "2" * 32
            entry = _entry(session_id, Clock())
            # Pairs share their last time (the session id breaks the tie), and the times differ
            # by microseconds, finer than the listing shows: the cursor keeps them exactly.
            entry["time"] = f"2026-01-01T09:00:00.{(number + 1) // 2:06d}+00:00"
            await store.append(session_id, [entry], LIMIT)
            written.append(session_id)
        pages, cursor = [], None
        while True:
            page = await store.sessions_page(3, cursor)
            pages.append([info.session_id for info in page.sessions])
            if page.next is None:
                break
            cursor = page.next
        assert [len(page) for page in pages] == [3, 3, 1]
        assert [s for page in pages for s in page] == list(reversed(written))
        for forged in ("%%%", encode_cursor("not a time", "x"), encode_cursor("2026-01-01T00:00:00", "x")):
            with pytest.raises(InvalidInput) as refused:
                await store.sessions_page(3, forged)
            assert refused.value.reason == "SESSIONS_CURSOR_INVALID"
        with pytest.raises(InvalidInput):
            await store.sessions_page(3, encode_cursor("2026-01-01T00:00:00+00:00", "x\x00"))
    finally:
        await store.close()


def test_the_cli_lists_a_page_and_says_how_to_get_the_next(tmp_path: Path) -> None:
    written = _many_sessions(tmp_path, 3)
    first = invoke("list", "--dir", str(tmp_path), "--json", "--limit", "2")
    assert first.exit_code == 0, first.output
    assert [s["session_id"] for s in json.loads(first.stdout)] == written[:0:-1]
    (cursor,) = re.findall(r"--cursor (\S+)", first.stderr)
    rest = invoke("list", "--dir", str(tmp_path), "--json", "--limit", "2", "--cursor", cursor)
    assert [s["session_id"] for s in json.loads(rest.stdout)] == written[:1] and "--cursor" not in rest.stderr
    bad = invoke("list", "--dir", str(tmp_path), "--cursor", "%%%")
    assert bad.exit_code == 2 and "SESSIONS_CURSOR_INVALID" in bad.output


# -- one session's page ------------------------------------------------------------------------


async def test_a_tensor_shows_its_first_elements_and_says_how_many_are_not_shown(
    tmp_path: Path, engine: EmbeddedEngine
) -> None:
    (tmp_path / "s").mkdir()
    _write_session(tmp_path / "s", SESSION, [_entry(SESSION, Clock(), _response(3000))])
    async with admin(FileSessionStore(tmp_path / "s"), engine) as http:
        page = await http.get(f"/inbox/sessions/{SESSION}", headers=auditor())
    assert page.status_code == 200
    html = page.text
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    assert body.count("<tr>") == SHOWN and body.count("<td>") == 2 * SHOWN
    assert "<td>999</td>" in body and "<td>1000</td>" not in body  # customer_id: public, in clear
    assert "2000 more elements of each of these outputs not shown." in html


def test_the_elements_not_shown_are_never_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    split = tensor_codec.split_raw_bytes

    def counted(data: bytes, count: int, *rest: Any) -> list[bytes]:
        built.append(count)
        return split(data, count, *rest)

    monkeypatch.setattr(tensor_codec, "split_raw_bytes", counted)
    viewed = {"kind": "call", "response": encode_message(_response(50_000)), "replay": {"outcome": "shown"}}
    (item,) = web.timeline([viewed])
    (table,) = item["response"]["tables"]
    assert len(table["rows"]) == web.ELEMENTS_PER_TENSOR and table["rows_hidden"] == 49_000
    assert table["rows"][-1] == ("999", "n999")
    assert built and max(built) == web.ELEMENTS_PER_TENSOR  # never the 50,000


def test_a_page_shows_at_most_its_budget_of_values_and_links_each_call_cut_short() -> None:
    viewed = [
        {"kind": "call", "response": encode_message(_response(600)), "replay": {"outcome": "shown"}}
        for _ in range(3)
    ]
    items = web.timeline(viewed, first=4, budget=web.Budget(values=2000))
    shown = [sum(len(t["rows"]) * len(t["columns"]) for t in item["response"]["tables"]) for item in items]
    assert shown == [1200, 800, 0] and [item["number"] for item in items] == [4, 5, 6]
    assert [item["response"]["cut"] for item in items] == [False, True, True]
    assert items[1]["response"]["tables"][0]["rows_hidden"] == 200
    assert items[2]["response"]["outputs_hidden"] == 2
    text = pb.ModelMetadataResponse(name="m", versions=[str(n) for n in range(10_000)])
    (metadata,) = web.timeline(
        [{"kind": "call", "response": encode_message(text), "replay": {}}], budget=web.Budget(characters=500)
    )
    assert len(metadata["response"]["text"]) == 500 and metadata["response"]["text_hidden"]


async def test_a_long_session_is_paged_by_calls(tmp_path: Path, engine: EmbeddedEngine) -> None:
    (tmp_path / "s").mkdir()
    clock = Clock()
    calls = []
    for _ in range(CALLS + 20):
        calls.append(_entry(SESSION, clock))
        clock.advance(seconds=1)
    marker = {"kind": "truncated", "time": calls[-1]["time"], "session_id": SESSION, "request_id": "r-x",
              "limit_bytes": LIMIT, "recorded_bytes": LIMIT - 10}  # fmt: skip
    _write_session(tmp_path / "s", SESSION, [*calls, marker])
    async with admin(FileSessionStore(tmp_path / "s"), engine) as http:
        first = (await http.get(f"/inbox/sessions/{SESSION}", headers=auditor())).text
        later = _next(first)
        assert later == f"/inbox/sessions/{SESSION}?start={CALLS + 1}"
        second = (await http.get(later, headers=auditor())).text
        past = await http.get(f"/inbox/sessions/{SESSION}?start=0", headers=auditor())
    numbers = [re.findall(r'id="call-(\d+)"', html) for html in (first, second)]
    assert [int(n) for page in numbers for n in page] == list(range(1, CALLS + 21))
    assert f"Calls 1 to {CALLS} of {CALLS + 20}." in first
    assert 'data-kind="truncated"' not in first and 'data-kind="truncated"' in second  # after its call
    assert _next(second) is None and 'rel="prev"' in second
    assert past.status_code == 400


# -- off the admin loop ------------------------------------------------------------------------


async def test_listing_building_and_rendering_run_off_the_event_loop(
    tmp_path: Path, engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(_many_sessions, tmp_path / "s", 3)
    _write_session(tmp_path / "s", SESSION, [_entry(SESSION, Clock(), _response(10))])
    threads: dict[str, set[int]] = {}

    def spy(module: Any, name: str) -> None:
        original = getattr(module, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.get_ident())
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, spied)

    from labelgate.approvals import web as inbox

    spy(inbox, "_page")  # the inbox's renderer: the template becomes HTML here
    spy(web, "_cell")  # each cell of a response's tables
    spy(FileSessionStore, "sessions_page_blocking")
    async with admin(FileSessionStore(tmp_path / "s"), engine) as http:
        assert (await http.get("/inbox/sessions", headers=auditor())).status_code == 200
        assert (await http.get(f"/inbox/sessions/{SESSION}", headers=auditor())).status_code == 200
    loop = threading.get_ident()
    assert all(loop not in where for where in threads.values()), threads
    assert set(threads) == {"_page", "_cell", "sessions_page_blocking"}
