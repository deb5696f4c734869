"""A JWKS fetched from the identity provider's URL and refreshed off the hot path.

Verification reads ``index`` (a plain attribute holding an immutable ``KeyIndex``), so it
never waits on the network. The first fetch happens in ``start()``, which fails loudly when
the provider is unreachable; later refreshes run in a background task every
``refresh_seconds`` and keep the last good key set when a fetch fails. A token whose ``kid``
is unknown asks for an early refresh (rate-limited) so key rotation is picked up quickly,
but that token itself is refused.

The fetch never follows a redirect: ``jwks_url`` was checked to be https (http only on
loopback) because keys fetched in clear can be swapped, and a redirect could lead anywhere,
https -> http included. A 3xx is a failed fetch that says so. The body is read to its end
(a network delivers it in as many pieces as it likes), bounded by ``MAX_JWKS_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence

import aiohttp

from labelgate.auth import reasons
from labelgate.auth.jwks import MAX_JWKS_BYTES, KeyIndex, parse_jwks
from labelgate.errors import ConfigError
from labelgate.logs import get_logger
from labelgate.shown_urls import shown_url

log = get_logger(__name__)

# An unknown kid may trigger at most one fetch per this many seconds: a caller inventing
# kids must not be able to make the gateway hammer the identity provider.
EARLY_REFRESH_INTERVAL = 30.0
_READ_SIZE = 64 * 1024


class RemoteJwks:
    def __init__(
        self,
        url: str,
        *,
        algorithms: Sequence[str],
        issuer: str,
        audience: str,
        refresh_seconds: float,
        timeout_seconds: float,
    ) -> None:
        self.url = url
        # What messages and log lines name: settings refuse userinfo in jwks_url, and a
        # RemoteJwks built otherwise still never logs it (aiohttp would send it as basic auth).
        self.shown = shown_url(url)
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._refresh_seconds = refresh_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.index: KeyIndex | None = None
        self._task: asyncio.Task[None] | None = None
        self.early_refresh: asyncio.Task[bool] | None = None
        self._last_early: float | None = None

    async def start(self) -> None:
        problems = await self._fetch()
        if problems:
            raise ConfigError(
                reasons.JWKS_UNAVAILABLE, f"cannot load the JWKS from {self.shown}: " + "; ".join(problems)
            )
        self._task = asyncio.create_task(self._refresh_forever(), name="labelgate-jwks-refresh")

    async def close(self) -> None:
        for task in (self._task, self.early_refresh):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self.early_refresh = None

    async def refresh(self) -> bool:
        """Fetch now; True when the key set was replaced."""
        problems = await self._fetch()
        if problems:
            log.warning("jwks_refresh_failed", url=self.shown, problems=problems)
        return not problems

    def request_refresh(self) -> None:
        """From the (synchronous) verification path: refresh soon, without waiting for it."""
        if self._last_early is not None and time.monotonic() - self._last_early < EARLY_REFRESH_INTERVAL:
            return
        if self.early_refresh is not None and not self.early_refresh.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not inside the gateway's event loop: the periodic refresh will do
            return
        self._last_early = time.monotonic()
        self.early_refresh = loop.create_task(self.refresh(), name="labelgate-jwks-early-refresh")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # keep refreshing whatever one attempt did; the last good keys stay
                log.exception("jwks_refresh_crashed", url=self.shown)

    async def _fetch(self) -> list[str]:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(
                    self.url, headers={"accept": "application/json"}, allow_redirects=False
                ) as response,
            ):
                if 300 <= response.status < 400:
                    return [
                        f"HTTP {response.status}: a redirect, and redirects are not followed "
                        "(set jwks_url to the URL that serves the keys)"
                    ]
                if response.status != 200:
                    return [f"HTTP {response.status}"]
                body = await _read_bounded(response, MAX_JWKS_BYTES)
                if body is None:
                    return [f"response larger than {MAX_JWKS_BYTES} bytes"]
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return [f"fetch failed ({type(error).__name__})"]
        try:
            document = json.loads(body)
        except ValueError:
            return ["response is not JSON"]
        keys, problems = parse_jwks(
            document,
            algorithms=self._algorithms,
            issuer=self._issuer,
            audience=self._audience,
            source="jwks_url",
        )
        if not keys:
            return problems
        if problems:  # some keys were unusable; the usable ones still count
            log.warning("jwks_keys_skipped", url=self.shown, problems=problems)
        self.index = KeyIndex(keys)
        log.info("jwks_loaded", url=self.shown, keys=len(keys))
        return []


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it passes ``limit`` bytes. ``StreamReader.read(n)`` returns
    what has arrived so far (at most n bytes), not n bytes: one read would cut a body that
    comes in several pieces. It returns b"" only at the end of the body."""
    body = bytearray()
    while chunk := await response.content.read(_READ_SIZE):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
