"""The admin listener's guard: what every request passes before the web app sees it.

One ASGI middleware, outermost, so nothing of a body is read, parsed or buffered before:

1. **Authentication first** for the approvals API (``/api/v1/approvals...``): the bearer
   token is verified from the headers alone; without a valid one the answer is 401 and the
   body is never read (so a malformed or huge body cannot earn a 400 or cost memory before
   the caller proved who it is). The verified subject is handed to the API in the scope.
2. **A body limit enforced while reading** (``admin.max_body_bytes``, 64 KiB by default): a
   body must declare its length (a chunked one is refused at once, 411); a declared
   ``Content-Length`` over the limit is refused at once (413, connection closed); what is
   read is counted as it arrives and refused past the limit all the same (413), and the
   HTTP parser never reads beyond the declared length.
3. **A body deadline** (``admin.body_timeout_seconds``): a body still incomplete then is
   refused (408), so a slow sender cannot hold a request open.
4. **HSTS** on every answer when the listener speaks HTTPS.

The inbox forms check their session cookie before reading their (bounded) body themselves
(``approvals/web.py``); the sign-in form checks its double-submit cookie first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from labelgate.approvals.api import API_PREFIX, PROBLEM_TYPE, SUBJECT_STATE
from labelgate.auth import Subject
from labelgate.auth import reasons as auth_reasons
from labelgate.digits import whole_number
from labelgate.errors import LabelgateError, Unauthenticated
from labelgate.logs import get_logger
from labelgate.untrusted_text import bounded

log = get_logger(__name__)
HSTS = "max-age=31536000"
# A refused request's path is logged up to this many characters, else as its length and digest:
# it is an unauthenticated caller's (percent-decoded) text, and a refusal a line of bounded size.
LOGGED_PATH = 256
Authenticate = Callable[[str | None], Awaitable[Subject]]


def _problem(status: int, title: str, detail: str, reason: str, headers: dict[str, str]) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "reason": reason}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


def _single_authorization(raw: list[tuple[bytes, bytes]], headers: dict[str, str]) -> str | None:
    """The request's one Authorization header. ``headers`` keeps the last of repeated ones, so
    two (bob's token, then alice's) would be whichever a proxy put last: refused instead, as the
    gateway refuses them (``Authenticator``)."""
    if sum(1 for key, _ in raw if key.lower() == b"authorization") > 1:
        raise Unauthenticated(auth_reasons.TOKEN_MALFORMED, "more than one authorization header")
    return headers.get("authorization")


class AdminGuard:
    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        max_body_bytes: int,
        body_timeout_seconds: float,
        hsts: bool = False,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.hsts = hsts
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hsts:
            send = _with_hsts(send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        path = scope.get("path", "")
        if self.authenticate is not None and (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            try:
                subject = await self.authenticate(_single_authorization(scope["headers"], headers))
            except LabelgateError as error:
                response = _problem(
                    error.http_status,
                    "unauthenticated" if error.http_status == 401 else "refused",
                    error.message,
                    error.reason,
                    {"WWW-Authenticate": "Bearer", "Connection": "close"},
                )
                await self._discard_small_body(headers, receive)
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[SUBJECT_STATE] = subject
        if "transfer-encoding" in headers:
            # A body must say how long it is: browsers and API clients do, and an unbounded
            # chunked stream is only ever parsed to be thrown away.
            response = _problem(
                411,
                "length required",
                "send the request body with a Content-Length (chunked bodies are not accepted)",
                "LENGTH_REQUIRED",
                {"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        declared = headers.get("content-length")
        length = None if declared is None else whole_number(declared)
        if declared is not None and (length is None or length > self.max_body_bytes):
            log.warning(
                "admin body refused",
                path=bounded(path, LOGGED_PATH),
                declared=declared[:20],
                limit=self.max_body_bytes,
            )
            response = _problem(
                413,
                "content too large",
                f"request bodies are limited to {self.max_body_bytes} bytes",
                "BODY_TOO_LARGE",
                {"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive, bounded(path, LOGGED_PATH)), send)

    async def _discard_small_body(self, headers: dict[str, str], receive: Receive) -> None:
        """Read (and drop, never parse) a body that is within the limit before refusing: closing
        a connection with unread bytes makes the kernel reset it, and the client can lose the
        refusal itself. Larger or unannounced bodies are not read at all."""
        declared = headers.get("content-length", "")
        length = whole_number(declared)
        if length is None or not 0 < length <= self.max_body_bytes:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout_seconds):
                while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                    pass

    def _bounded(self, receive: Receive, path: str) -> Receive:
        """``receive`` held to the body limit and deadline; ``path`` is as logged (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_seconds
        state = {"read": 0, "done": False}

        async def bounded_receive() -> Message:
            if state["done"]:  # the body is in: later receives only wait for a disconnect
                return await receive()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except TimeoutError:
                log.warning("admin body too slow", path=path, read=state["read"])
                raise HTTPException(
                    408, f"the request body did not arrive within {self.body_timeout_seconds:g} s"
                ) from None
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_body_bytes:
                    log.warning(
                        "admin body refused", path=path, read=state["read"], limit=self.max_body_bytes
                    )
                    raise HTTPException(413, f"request bodies are limited to {self.max_body_bytes} bytes")
                if not message.get("more_body", False):
                    state["done"] = True
            else:
                state["done"] = True
            return message

        return bounded_receive


def _with_hsts(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), (b"strict-transport-security", HSTS.encode())],
            }
        await send(message)

    return sending
