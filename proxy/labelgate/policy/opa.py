"""Decisions from an OPA server over its REST Data API, failing closed.

The session comes from ``opa_client.AsyncOpaClient`` (bearer token header, one pooled
aiohttp session). The health check goes through that session too, not the client's
``check_health``: readiness needs ``/health?bundles`` (``OpaEngine.healthy``). The decision
call itself goes straight through that client's session rather than
``AsyncOpaClient.query_rule``, because query_rule (via ``_request``) was measured/read to:

- retry 500/502/504 and every ``aiohttp.ClientConnectionError`` - which includes aiohttp's
  own timeout errors - after a 0.3 s backoff sleep: longer than our whole 250 ms budget,
  and a 500 from OPA (an evaluation error) is deterministic, so a retry only doubles load;
- ``raise_for_status()`` on non-200, dropping OPA's error body and leaving us to parse
  the status back out of an exception;
- offer no per-call deadline (only a session-wide ``ClientTimeout``).

``AsyncOpaClient._init_session`` also cannot take a CA file or turn verification off, so
``_OpaSession`` overrides it to build the TLS context and a bounded connection pool.

Retry policy on the data path: at most one retry, only for connection errors (connection
refused, a pooled keep-alive socket the server already closed), never after a timeout:
one deadline (``timeout``) covers all attempts, so a timed-out call has spent its budget.
A decision is a read-only query, so repeating it is safe.

Revision order: OPA names the revision it evaluated under on every answer (provenance), and
answers come back in any order (a connection pool, or several OPA replicas behind one URL),
so the answer that arrives last may be the one evaluated under the older revision. Every
request is numbered when it is issued, and only an answer to a request issued after the last
revision change may change the revision (the newest request wins, not the newest answer).
An answer to an earlier request that names another revision than the one in force was
evaluated under a revision already replaced (or by a replica not yet at it): it changes
nothing, and ``decide`` does not use it: it asks again once, within the same deadline, and
denies (``POLICY_REVISION_STALE``, "policy revision changed while deciding") if that answer is
also from a replaced revision. ``revision_generation`` counts the changes, so the decision
cache can tell that the revision moved while it waited, even to and fro.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
from opa_client.opa_async import AsyncOpaClient
from tenacity import RetryCallState
from yarl import URL

from labelgate import retry
from labelgate.errors import ConfigError
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.contract import (
    POLICY_ERROR,
    POLICY_TIMEOUT,
    POLICY_UNAVAILABLE,
    POLICY_UNDEFINED,
    Decision,
    input_phase,
    validate_result,
)
from labelgate.policy.engine import DECISION_PATH
from labelgate.retry import RetrySettings
from labelgate.shown_urls import shown_url

log = get_logger(__name__)

UNBUNDLED = "unbundled"
UNKNOWN_REVISION = "unknown"
# A data path no policy defines: answering it costs OPA nothing, and the reply still
# carries provenance (bundle revisions), which is all start() wants.
_REVISION_PROBE_PATH = "labelgate_revision_probe"
# How a decision is asked. ``strict-builtin-errors``: by default OPA turns a builtin's error
# (``count(5)``, ``to_number("x")``) into undefined, so a ``deny`` rule that errs is not true
# and ``allow if not deny`` allows: fail open. Strict, OPA answers 500 (``eval_*_error``),
# which is a deny like any other error (``POLICY_ERROR_500``), as the embedded engine's is.
DECISION_PARAMS = {"provenance": "true", "strict-builtin-errors": "true"}


class _OpaSession(AsyncOpaClient):  # type: ignore[misc]  # opa-python-client ships no types
    """AsyncOpaClient with our TLS settings and pool size, and no session-wide timeout."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None, pool_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ssl_context = ssl_context
        self._pool_size = pool_size

    async def _init_session(self) -> None:
        self._connector = aiohttp.TCPConnector(
            ssl=self._ssl_context if self._ssl_context is not None else True,
            limit=self._pool_size,
            keepalive_timeout=30,
        )
        # Deadlines are per call (asyncio.timeout in OpaEngine), never session-wide.
        self._session = aiohttp.ClientSession(
            headers=self.headers,
            connector=self._connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "session not opened"
        return self._session


def _ssl_context(
    ca_file: Path | None, client_cert: Path | None, client_key: Path | None, verify: bool
) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if client_cert is not None:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(reasons.POLICY_TLS_INVALID, f"cannot load OPA TLS files: {error}") from error
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def revision_from_provenance(provenance: Any) -> str:
    """One string for the policy revision OPA reports.

    One bundle: its revision. Several: ``name=revision`` pairs joined by ``;``, sorted by
    name. No bundles (policy loaded from files or the Policy API): ``unbundled``.
    """
    if not isinstance(provenance, dict):
        return UNKNOWN_REVISION
    bundles = provenance.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        return UNBUNDLED
    revisions = {name: str((info or {}).get("revision", "")) for name, info in bundles.items()}
    if len(revisions) == 1:
        return next(iter(revisions.values()))
    return ";".join(f"{name}={rev}" for name, rev in sorted(revisions.items()))


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


class _Reconnect(Exception):
    """A connection error worth another attempt (refused, or a pooled socket already closed)."""


class OpaEngine:
    """PolicyEngine backed by ``POST /v1/data/<decision_path>?provenance=true&strict-builtin-errors=true``."""

    name = "opa"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        retries: int = 1,
        token: str | None = None,
        ca_file: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        verify: bool = True,
        decision_path: str = DECISION_PATH,
        pool_size: int = 64,
        health_timeout: float = 1.0,
        retry: RetrySettings | None = None,
    ) -> None:
        try:
            base = URL(url.rstrip("/"))
        except ValueError as error:  # a port out of range, a host that is not one
            raise ConfigError(
                reasons.POLICY_URL_INVALID,
                f"OPA url {shown_url(url)!r} is not a URL: {shown_url(url, str(error))}",
            ) from None
        if base.scheme not in ("http", "https") or not base.host:
            raise ConfigError(
                reasons.POLICY_URL_INVALID, f"OPA url must be http(s)://host[:port], got {shown_url(url)!r}"
            )
        if not 0 <= retries <= 1:
            raise ConfigError(reasons.POLICY_CONFIG_INVALID, f"OPA retries must be 0 or 1, got {retries}")
        if timeout <= 0:
            raise ConfigError(reasons.POLICY_CONFIG_INVALID, f"OPA timeout must be > 0 s, got {timeout}")
        self._base = str(base)
        # What log lines say: the userinfo a URL may carry (sent as basic auth) never in them.
        self._shown = shown_url(self._base)
        self._decision_url = f"{self._base}/v1/data/{decision_path.strip('/')}"
        self._health_url = f"{self._base}/health"
        self._timeout = timeout
        # The one retry policy; by default ``retries`` more attempts at once (a few ms apart).
        self._retry = retry or RetrySettings(
            max_attempts=retries + 1, initial_seconds=0.005, max_seconds=0.05, jitter_seconds=0.005
        )
        self._health_timeout = health_timeout
        https = base.scheme == "https"
        self._client = _OpaSession(
            ssl_context=_ssl_context(ca_file, client_cert, client_key, verify) if https else None,
            pool_size=pool_size,
            host=base.raw_host or "",
            port=base.port or (443 if https else 80),
            ssl=https,
            token=token,
            retries=0,  # the client's own retry loop is not used on the data path (see above)
        )
        self._opened = False
        self._revision = UNKNOWN_REVISION
        # Revision order (module docstring): requests are numbered as they are issued
        # (``_issued``, the last number handed out); ``_changed_at`` is ``_issued`` when the
        # revision last changed, so only answers to requests numbered above it may change it.
        self._issued = 0
        self._changed_at = 0
        self._generation = 0

    @property
    def revision(self) -> str:
        """The revision OPA reported answering the newest request whose answer may set it
        ("unknown" before the first one): never set back by an answer that arrives late."""
        return self._revision

    @property
    def revision_generation(self) -> int:
        """How many times ``revision`` has changed: a cache reads it before and after waiting
        on a decision, and stores the decision only if it did not move meanwhile."""
        return self._generation

    @property
    def url(self) -> str:
        """The server's URL as messages show it (userinfo as ``***``)."""
        return self._shown

    async def start(self) -> None:
        """Open the pooled session and learn the revision. OPA being down is not fatal here:
        it may come up later, and until then every decision fails closed."""
        await self._open()
        try:
            issued = self._issue()
            async with asyncio.timeout(self._health_timeout):
                status, body = await self._post(
                    f"{self._base}/v1/data/{_REVISION_PROBE_PATH}",
                    {"provenance": "true"},
                    b"{}",
                    deadline=time.monotonic() + self._health_timeout,
                )
            if status == 200:
                self._note_revision(json.loads(body).get("provenance"), issued)
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError) as error:
            log.warning("opa_unreachable_at_start", url=self._shown, error_type=type(error).__name__)
        log.info("policy_engine_started", engine=self.name, url=self._shown, revision=self._revision)

    async def close(self) -> None:
        await self._client.close_connection()
        self._opened = False

    async def healthy(self) -> bool:
        """Whether OPA answers and has its policy: ``GET /health?bundles`` is 200 within
        ``health_timeout``.

        Plain ``/health`` is 200 as soon as OPA listens, also before the bundle it follows is
        activated (after an OPA restart, or while the bundle server is down), when every
        decision is undefined (``POLICY_UNDEFINED``). With ``bundles`` OPA answers 500 until
        every bundle it is configured with has been activated once, and 200 from then on,
        also while later downloads fail (the activated policy keeps deciding). An OPA that
        reads its policy from files (``opa run --server rego/``, or ``--bundle``) has no
        bundle configured and reads the files before it listens: 200 there too. The one case
        this cannot see is an OPA with neither, whose policy is pushed through its Policy
        API: that OPA is healthy with or without it.

        One cheap request (readiness asks every couple of seconds), no retry: the next poll
        asks again. Connection errors and timeouts are False.
        """
        await self._open()
        try:
            async with (
                asyncio.timeout(self._health_timeout),
                self._client.session.get(self._health_url, params={"bundles": "true"}) as response,
            ):
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def decide(self, input: dict[str, Any]) -> Decision:
        # One deadline for the decision, a second question (revision order) included.
        deadline = time.monotonic() + self._timeout
        body, current = await self._query(input, DECISION_PARAMS, deadline)
        if not current:
            # Evaluated under a revision already replaced: ask again, as a request issued
            # after the change, whose answer is under the revision in force (or newer).
            body, current = await self._query(input, DECISION_PARAMS, deadline)
            if not current:
                # The revision moved again while asking: fail closed rather than use it.
                return Decision.deny(reasons.POLICY_REVISION_STALE, engine=self.name, revision=self._revision)
        if isinstance(body, Decision):
            return body
        decision_id = body.get("decision_id")
        if "result" not in body:
            # 200 {} : nothing is defined at the decision path for this input.
            return self._deny(POLICY_UNDEFINED, decision_id)
        return validate_result(
            body["result"],
            phase=input_phase(input),
            engine=self.name,
            revision=self._revision,
            decision_id=decision_id,
        )

    async def explain(self, input: dict[str, Any], mode: str = "full") -> dict[str, Any] | Decision:
        """OPA's own answer with ``explain=<mode>`` (notes, fails, full, debug), for people.

        Returns the raw body (``result``, ``explanation`` as text lines) or a fail-closed
        Decision when OPA could not answer. The body is returned even when it was evaluated
        under a revision already replaced (its ``provenance`` says which): it is for people.
        """
        params = {"provenance": "true", "explain": mode, "pretty": "true"}
        return (await self._query(input, params, time.monotonic() + self._timeout))[0]

    async def _query(
        self, input: dict[str, Any], params: dict[str, str], deadline: float
    ) -> tuple[dict[str, Any] | Decision, bool]:
        """OPA's answer (its body, or a fail-closed Decision) and whether it may be used as a
        decision under the revision in force: False for an answer to a request issued before
        the last revision change that names another revision (module docstring)."""
        issued = self._issue()
        try:
            # Encoded here, inside the try: an input json.dumps cannot encode (not JSON, or
            # nested past the recursion limit) is a deny like any other failure, never a raise.
            payload = _encode({"input": input})
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._open()
                status, raw = await self._post(self._decision_url, params, payload, deadline=deadline)
        except TimeoutError:
            log.warning("opa_timeout", url=self._shown, timeout_s=self._timeout)
            return self._deny(POLICY_TIMEOUT), True
        except aiohttp.ClientConnectionError as error:
            log.warning("opa_unavailable", url=self._shown, error_type=type(error).__name__)
            return self._deny(POLICY_UNAVAILABLE), True
        except (aiohttp.ClientError, TypeError, ValueError, RecursionError) as error:
            # TypeError/ValueError/RecursionError: the input could not be encoded as JSON.
            log.error("opa_request_failed", url=self._shown, error_type=type(error).__name__)
            return self._deny(POLICY_ERROR), True
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status != 200:
            details = body if isinstance(body, dict) else {}
            errors = details.get("errors")
            # OPA's messages can quote input values: log only the codes and locations.
            log.error(
                "opa_error_status",
                url=self._shown,
                status=status,
                code=details.get("code"),
                errors=[
                    (e.get("code"), e.get("location"))
                    for e in (errors if isinstance(errors, list) else [])
                    if isinstance(e, dict)
                ],
            )
            return self._deny(f"POLICY_ERROR_{status}"), True
        if not isinstance(body, dict):
            log.error("opa_reply_not_json_object", url=self._shown)
            return self._deny(POLICY_ERROR), True
        return body, self._note_revision(body.get("provenance"), issued)

    async def _post(
        self, url: str, params: dict[str, str], data: bytes, *, deadline: float
    ) -> tuple[int, bytes]:
        session = self._client.session

        async def attempt() -> tuple[int, bytes]:
            try:
                async with session.post(
                    url, params=params, data=data, headers={"Content-Type": "application/json"}
                ) as response:
                    return response.status, await response.read()
            except aiohttp.ServerTimeoutError:
                raise  # a timeout is also a ClientConnectionError: never retried
            except aiohttp.ClientConnectionError as error:
                raise _Reconnect from error

        def note(state: RetryCallState) -> None:
            failed = state.outcome.exception() if state.outcome else None
            cause = failed.__cause__ if failed is not None else None
            log.info("opa_retry", url=self._shown, error_type=type(cause).__name__)

        # One deadline covers every attempt: no retry starts, or waits, past the decision's.
        try:
            return await retry.policy(self._retry, _Reconnect, deadline=deadline, before_sleep=note)(attempt)
        except _Reconnect as failed:
            raise failed.__cause__ from None  # type: ignore[misc]

    async def _open(self) -> None:
        if not self._opened:
            await self._client._init_session()
            self._opened = True

    def _issue(self) -> int:
        """The number of a request about to be sent (revision order, module docstring)."""
        self._issued += 1
        return self._issued

    def _note_revision(self, provenance: Any, issued: int) -> bool:
        """Take the revision an answer to request ``issued`` names, if that request is newer
        than the last revision change; False when it is not and names another revision (an
        answer evaluated under a replaced revision: not to be used as a decision)."""
        revision = revision_from_provenance(provenance)
        if revision == self._revision:
            return True
        if issued <= self._changed_at:
            log.info(
                "policy_revision_answer_outdated",
                engine=self.name,
                answered=revision,
                revision=self._revision,
            )
            return False
        log.info("policy_revision_seen", engine=self.name, old=self._revision, new=revision)
        self._revision = revision
        self._changed_at = self._issued
        self._generation += 1
        return True

    def _deny(self, reason_code: str, decision_id: str | None = None) -> Decision:
        return Decision.deny(reason_code, engine=self.name, revision=self._revision, decision_id=decision_id)
