"""Inbox sign-in with OpenID Connect: authorization code flow with PKCE (``admin.oidc``).

``OidcSignin.begin`` makes the authorization URL (authlib builds it and the S256 code
challenge) and a **pending login**: state, nonce, code verifier and where to go afterwards,
signed with the inbox's session key and kept in a short-lived cookie (SameSite=Lax, so the
provider's redirect back carries it; nothing is kept on the server, so any replica finishes a
login another began). ``OidcSignin.finish`` checks the returned ``state`` against the pending
login, redeems the code (with the verifier) at the token endpoint, and verifies the ID token
(joserfc): its signature with a key from the provider's JWKS (asymmetric algorithms only),
``iss`` (the configured issuer, which discovery must also name), ``aud`` (this client; ``azp``
too when there are several audiences), ``exp``/``iat`` and the ``nonce``.

Who signs in: ``jwt:<issuer>#<sub>``, the qualified id a bearer token from the same issuer
gets, so an approver is one person whether they use the inbox or the API; groups from
``admin.oidc.groups_claim``, read as a bearer token's are (``groups_from_claim``). A failure
is a ``LabelgateError`` with a stable reason (``OIDC_*``); the page says what went wrong, never
a token or a provider's raw answer. The subject is refused unless it is printable text that
neither starts nor ends with a space (the rule group names follow): ``olivia`` and ``olivia``
followed by a zero-width space would be two people who look like one in the inbox.

The provider is reached only where the configured issuer's https allows: no request follows
a redirect (discovery, JWKS, token endpoint; a 3xx is refused and says so), and the
discovered ``authorization_endpoint``, ``token_endpoint`` and ``jwks_uri`` must be https,
http only on loopback when the issuer itself is http on loopback (a local test provider).
Keys or a sign-in code sent in clear could be swapped or stolen.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from labelgate.approvals import reasons, signed
from labelgate.auth import Subject
from labelgate.auth.jwt_verifier import claim_value, groups_from_claim
from labelgate.auth.subject import group_name_problem
from labelgate.config import OidcSettings
from labelgate.errors import LabelgateError, PermissionDenied, Unauthenticated
from labelgate.logs import get_logger
from labelgate.shown_urls import shown_url

log = get_logger(__name__)
CALLBACK_PATH = "/inbox/oidc/callback"
PENDING_SECONDS = 600
MAX_GROUPS = 256
# ID tokens signed with a shared secret (HS*) or not at all are never accepted.
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_PENDING_FORMAT = "p1"
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class OidcUnavailable(LabelgateError):
    """The identity provider could not be reached or answered off-protocol."""

    http_status = 502


def _is_redirect(status: int) -> bool:
    return 300 <= status < 400


def _redirect_refused(status: int, what: str) -> OidcUnavailable:
    return OidcUnavailable(
        reasons.OIDC_PROVIDER_ERROR,
        f"the identity provider's {what} answered {status}, a redirect: redirects are not followed",
    )


def _on_loopback_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS


def endpoint_allowed(url: str, issuer: str) -> bool:
    """Whether the inbox may use a discovered endpoint: https, or http on loopback when the
    issuer itself is http on loopback (as ``auth.jwt.jwks_url`` is checked)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    return _on_loopback_http(issuer) and _on_loopback_http(url)


@dataclass(frozen=True)
class Pending:
    """A login in progress: what the callback must match, and where to go afterwards."""

    state: str
    nonce: str
    verifier: str
    next_url: str
    redirect_uri: str
    expires_at: float


_PENDING_PURPOSE = b"labelgate-oidc-pending"


def seal(key: bytes, pending: Pending) -> str:
    """The pending login as a cookie value, signed (it holds the verifier: HttpOnly only)."""
    payload = {
        "s": pending.state,
        "n": pending.nonce,
        "v": pending.verifier,
        "x": pending.next_url,
        "r": pending.redirect_uri,
        "e": int(pending.expires_at),
    }
    return signed.sign(key, _PENDING_PURPOSE, _PENDING_FORMAT, payload)


def unseal(key: bytes, value: str | None, now: float | None = None) -> Pending | None:
    """The pending login this inbox (or a replica with its key) began and that has not
    expired; None for anything else."""
    data = signed.verify(key, _PENDING_PURPOSE, _PENDING_FORMAT, value, max_bytes=2048)
    if data is None:
        return None
    try:
        pending = Pending(
            str(data["s"]), str(data["n"]), str(data["v"]), str(data["x"]), str(data["r"]), float(data["e"])
        )
    except (ValueError, KeyError, TypeError):
        return None
    return pending if pending.expires_at > (time.time() if now is None else now) else None


class OidcSignin:
    """One identity provider, discovered on first use (and its keys fetched again when an ID
    token names a key the cached JWKS lacks)."""

    def __init__(self, settings: OidcSettings, client_secret: str | None = None) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.client_secret = client_secret
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    # -- the provider --------------------------------------------------------------------
    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url, allow_redirects=False) as response,
            ):
                if _is_redirect(response.status):
                    log.error("oidc provider redirect refused", url=shown_url(url), status=response.status)
                    raise _redirect_refused(response.status, what)
                if response.status != 200:
                    raise OidcUnavailable(
                        reasons.OIDC_PROVIDER_ERROR, f"the identity provider answered {response.status}"
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning("oidc provider unreachable", url=shown_url(url), error_type=type(error).__name__)
            raise OidcUnavailable(
                reasons.OIDC_PROVIDER_UNREACHABLE, "the identity provider cannot be reached"
            ) from None
        if not isinstance(body, dict):
            raise OidcUnavailable(
                reasons.OIDC_PROVIDER_ERROR, "the identity provider's answer is not a JSON object"
            )
        return body

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            found = await self._get_json(
                self.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document"
            )
            if found.get("issuer") != self.issuer:
                log.error("oidc discovery names another issuer", configured=shown_url(self.issuer))
                raise OidcUnavailable(
                    reasons.OIDC_ISSUER_MISMATCH,
                    "the identity provider's discovery document names another issuer",
                )
            for name in ENDPOINTS:
                if not isinstance(found.get(name), str) or not found[name].startswith(
                    ("https://", "http://")
                ):
                    raise OidcUnavailable(
                        reasons.OIDC_PROVIDER_ERROR, f"the discovery document has no {name}"
                    )
                if not endpoint_allowed(found[name], self.issuer):
                    log.error("oidc discovery names an http endpoint", endpoint=name)
                    raise OidcUnavailable(
                        reasons.OIDC_PROVIDER_ERROR,
                        f"the discovery document's {name} is not https "
                        "(http only on loopback, when the issuer is too)",
                    )
            self._metadata = found
        return self._metadata

    async def keys(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            document = await self._get_json((await self.metadata())["jwks_uri"], "JWKS (jwks_uri)")
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError):
                raise OidcUnavailable(
                    reasons.OIDC_PROVIDER_ERROR, "the identity provider's JWKS does not parse"
                ) from None
        return self._keys

    # -- the flow ------------------------------------------------------------------------
    async def begin(self, redirect_uri: str, next_url: str) -> tuple[str, Pending]:
        """The provider's authorization URL and the pending login to keep in a cookie."""
        endpoint = (await self.metadata())["authorization_endpoint"]
        pending = Pending(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),  # 64 characters: RFC 7636 asks for 43 to 128
            next_url=next_url,
            redirect_uri=redirect_uri,
            expires_at=time.time() + PENDING_SECONDS,
        )
        url = prepare_grant_uri(
            endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.settings.scopes),
            state=pending.state,
            nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
        )
        return url, pending

    async def finish(self, pending: Pending | None, params: Mapping[str, str]) -> Subject:
        """The person the provider vouches for, from the callback's query parameters."""
        if pending is None:
            raise Unauthenticated(
                reasons.OIDC_LOGIN_EXPIRED,
                "this sign-in was not started here or took too long: sign in again",
            )
        if not signed.same(params.get("state", ""), pending.state):
            log.warning("oidc callback refused", reason="state mismatch")
            raise PermissionDenied(
                reasons.OIDC_STATE_MISMATCH, "the sign-in answer does not belong to this browser's sign-in"
            )
        if "error" in params:
            code = "".join(c for c in params["error"][:40] if c.isalnum() or c == "_")
            raise Unauthenticated(
                reasons.OIDC_PROVIDER_REFUSED, f"the identity provider refused the sign-in ({code})"
            )
        code = params.get("code", "")
        if not code or len(code) > 2048:
            raise Unauthenticated(reasons.OIDC_NO_CODE, "the identity provider sent no authorization code")
        id_token = await self._redeem(code, pending)
        claims = await self._verify(id_token, pending.nonce)
        return self._subject(claims)

    async def _redeem(self, code: str, pending: Pending) -> str:
        endpoint = (await self.metadata())["token_endpoint"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
            "client_id": self.settings.client_id,
        }
        auth = None
        if self.client_secret is not None:
            auth = aiohttp.BasicAuth(self.settings.client_id, self.client_secret)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(
                    endpoint,
                    data=form,
                    auth=auth,
                    headers={"accept": "application/json"},
                    allow_redirects=False,  # a 307/308 would send the code and verifier on
                ) as response,
            ):
                status = response.status
                if _is_redirect(status):
                    log.error("oidc provider redirect refused", url=shown_url(endpoint), status=status)
                    raise _redirect_refused(status, "token endpoint")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise OidcUnavailable(
                reasons.OIDC_PROVIDER_UNREACHABLE, "the identity provider cannot be reached"
            ) from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            log.warning("oidc code refused", status=status, error=str(error)[:40])
            raise Unauthenticated(
                reasons.OIDC_CODE_REFUSED,
                "the identity provider did not accept the sign-in code: sign in again",
            )
        return str(body["id_token"])

    async def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        algorithms = list(ASYMMETRIC)
        try:
            try:
                token = jwt.decode(id_token, await self.keys(), algorithms=algorithms)
            except (JoseError, ValueError):
                # Perhaps a key the cached JWKS lacks (the provider rotated): fetch it once more.
                token = jwt.decode(id_token, await self.keys(refresh=True), algorithms=algorithms)
            registry = jwt.JWTClaimsRegistry(
                leeway=self.settings.leeway_seconds,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            )
            registry.validate(token.claims)
        except (JoseError, ValueError) as error:
            log.warning("oidc id token refused", error_type=type(error).__name__)
            reason = "OIDC_NONCE_MISMATCH" if "nonce" in str(error) else "OIDC_ID_TOKEN_INVALID"
            raise Unauthenticated(reason, "the identity provider's ID token did not verify") from None
        claims = dict(token.claims)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise Unauthenticated(
                reasons.OIDC_ID_TOKEN_INVALID, "the ID token was issued to another client (azp)"
            )
        return claims

    def _subject(self, claims: Mapping[str, Any]) -> Subject:
        sub = claim_value(claims, self.settings.subject_claim)
        if not isinstance(sub, str) or not 0 < len(sub) <= 256:
            raise Unauthenticated(reasons.OIDC_BAD_SUBJECT, "the ID token names no usable subject")
        # Compared exactly, never cleaned up, as group names are: a subject with an invisible
        # or control character (or a space at either end) would be another person who looks
        # like this one, for separation of duties and in the inbox.
        problem = group_name_problem(sub)
        if problem is not None:
            log.warning("oidc subject refused", claim=self.settings.subject_claim, problem=problem)
            raise Unauthenticated(
                reasons.OIDC_BAD_SUBJECT, f"the ID token's {self.settings.subject_claim!r} claim {problem}"
            )
        # The same rule as a bearer token's groups (nothing trimmed, a doubtful name refuses
        # the sign-in), so an approver is in the same groups whichever way they come in.
        try:
            groups = groups_from_claim(claim_value(claims, self.settings.groups_claim))
        except ValueError as error:
            raise Unauthenticated(
                reasons.OIDC_BAD_GROUPS, f"the {self.settings.groups_claim!r} claim {error}"
            ) from None
        if len(groups) > MAX_GROUPS:
            raise Unauthenticated(reasons.OIDC_BAD_GROUPS, f"the ID token names over {MAX_GROUPS} groups")
        return Subject.proven(
            "jwt",
            sub,
            issuer=self.issuer,
            groups=sorted(set(groups)),
            # The ID token's expiry (``_verify`` makes it essential): the inbox session it opens
            # ends by then, as one opened with a pasted bearer token ends at the token's.
            attributes={
                "iss": self.issuer,
                "via": "oidc",
                **({"exp": claims["exp"]} if "exp" in claims else {}),
            },
        )
