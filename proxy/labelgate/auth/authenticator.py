"""The authenticate stage: caller metadata + TLS peer -> verified ``Subject``, or ``Unauthenticated``.

Credentials, in the default order: the mTLS client certificate, ``authorization: Bearer
<jwt>``, ``x-api-key``. When a caller presents several:

- every presented credential is verified, and one that fails refuses the call. A bad
  token never falls through to a weaker credential, and a caller can't hide a revoked
  credential behind a good one;
- the subject is the first presented method in ``AuthSettings.order``; the identities the
  other credentials proved are kept in ``attributes["also_verified"]`` ({method: id}) so
  policy can still see, e.g., the workload (mTLS) behind a user token, and each of those
  credentials whole in ``attributes["also_verified_credentials"]`` ({method: its own
  subject object, as ``Subject.to_policy`` writes it: ``id``, ``name``, ``groups``, ``auth``,
  ``attributes``}), so a policy can judge every credential (a revoked token id is refused
  behind a client certificate too: ``subject.attributes.also_verified_credentials.jwt
  .attributes.jti``);
- a call lasts no longer than its first credential to expire (``expiry.earliest_expiry``, the
  least ``exp`` of the subject's and of every other credential's): a stream's messages, a
  routed client stream's messages and its reply, a call released after an approval hold
  (which ends at that expiry) and the end-of-stream flush check it, and the decision cache
  keeps no entry past it (a token next to a client certificate ends them as it would alone);
  a plain unary call is checked when it is authenticated only;
- a header credential for a method this gateway does not accept is refused
  (``AUTH_METHOD_NOT_ENABLED``) rather than ignored: the caller meant something by it.
  A client certificate when mTLS is not configured is transport detail and is ignored.

``authenticate`` is synchronous and does no I/O: keys were loaded at start (``start()``
fetches a remote JWKS and keeps it fresh in the background).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from labelgate.auth import reasons
from labelgate.auth.api_keys import ApiKeyStore
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.mtls import AuthContext, MtlsIdentifier
from labelgate.auth.settings import AuthSettings
from labelgate.auth.subject import AUTH_METHODS, AuthMethod, Subject
from labelgate.errors import ConfigError, Unauthenticated
from labelgate.expiry import ALSO_VERIFIED, ALSO_VERIFIED_CREDENTIALS
from labelgate.logs import get_logger

log = get_logger(__name__)

MetadataInput = Sequence[tuple[str, str | bytes]]


class Authenticator:
    """``Authenticator(settings)`` reads every key, certificate mapping and keys file now (start-up)
    and raises one ConfigError listing every problem; ``await start()`` then fetches a remote
    JWKS if one is configured (until then such tokens get ``TOKEN_KEYS_UNAVAILABLE``).
    Tests may pass the parts instead."""

    def __init__(
        self,
        settings: AuthSettings | None = None,
        *,
        mtls: MtlsIdentifier | None = None,
        jwt: JwtVerifier | None = None,
        api_keys: ApiKeyStore | None = None,
        order: Sequence[AuthMethod] = AUTH_METHODS,
    ) -> None:
        if settings is not None:
            if mtls is not None or jwt is not None or api_keys is not None:
                raise ValueError("pass settings or the parts, not both")
            mtls, jwt, api_keys = _build_parts(settings)
            order = settings.order
        self.mtls = mtls
        self.jwt = jwt
        self.api_keys = api_keys
        self.order = tuple(order)
        configured = {"mtls": mtls, "jwt": jwt, "api_key": api_keys}
        unordered = [
            method for method, part in configured.items() if part is not None and method not in self.order
        ]
        if unordered:  # a presented credential of that kind would otherwise go unchecked
            raise ValueError(f"order {list(self.order)} leaves out configured methods {unordered}")

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        return cls(settings)

    async def start(self) -> None:
        if self.jwt is not None:
            await self.jwt.start()

    async def close(self) -> None:
        if self.jwt is not None:
            await self.jwt.close()

    def authenticate(self, metadata: MetadataInput, auth_context: AuthContext | None) -> Subject:
        checks = self._presented(metadata, auth_context)
        if not checks:
            raise Unauthenticated(
                reasons.NO_CREDENTIALS, "no credentials: send a client certificate, bearer token or API key"
            )
        verified = {method: checks[method]() for method in self.order if method in checks}
        primary, *others = verified
        subject = verified[primary]
        if not others:
            return subject
        # The others' ids for approvals (``requester_of``) and the default policy; their whole
        # credentials for what else a policy or the expiry checks need (exp, jti, groups).
        also = {method: verified[method].id for method in others}
        credentials = {method: verified[method].to_policy() for method in others}
        attributes = {**subject.attributes, ALSO_VERIFIED: also, ALSO_VERIFIED_CREDENTIALS: credentials}
        return dataclasses.replace(subject, attributes=attributes)

    def _presented(
        self, metadata: MetadataInput, auth_context: AuthContext | None
    ) -> dict[AuthMethod, Callable[[], Subject]]:
        checks: dict[AuthMethod, Callable[[], Subject]] = {}
        mtls = self.mtls
        if mtls is not None and mtls.presented(auth_context):
            checks["mtls"] = lambda: mtls.identify(auth_context)
        authorization = _single_value(metadata, "authorization", reasons.TOKEN_MALFORMED)
        if authorization is not None:
            token = _bearer_token(authorization)
            verifier = self.jwt
            if verifier is None:
                raise Unauthenticated(
                    reasons.AUTH_METHOD_NOT_ENABLED, "this gateway does not accept bearer tokens"
                )
            checks["jwt"] = lambda: verifier.verify(token)
        api_key = _single_value(metadata, "x-api-key", reasons.API_KEY_MALFORMED)
        if api_key is not None:
            store = self.api_keys
            if store is None:
                raise Unauthenticated(
                    reasons.AUTH_METHOD_NOT_ENABLED, "this gateway does not accept API keys"
                )
            checks["api_key"] = lambda: store.verify(api_key)
        return checks


def _single_value(metadata: MetadataInput, name: str, malformed: str) -> str | None:
    values = [value for key, value in metadata if key.lower() == name]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated(malformed, f"more than one {name} header")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise Unauthenticated(malformed, f"the {name} header is not ASCII") from None
    return value.strip()


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(
            reasons.AUTHORIZATION_SCHEME_UNSUPPORTED, "the authorization header must be 'Bearer <token>'"
        )
    token = token.strip()
    if not token:
        raise Unauthenticated(reasons.TOKEN_MALFORMED, "the authorization header has no token")
    return token


def _build_parts(
    settings: AuthSettings,
) -> tuple[MtlsIdentifier | None, JwtVerifier | None, ApiKeyStore | None]:
    problems: list[str] = []
    mtls = jwt = api_keys = None
    try:
        mtls = MtlsIdentifier.from_settings(settings.mtls) if settings.mtls else None
    except ConfigError as error:
        problems.append(error.message)
    try:
        jwt = JwtVerifier.from_settings(settings.jwt) if settings.jwt else None
    except ConfigError as error:
        problems.append(error.message)
    try:
        api_keys = ApiKeyStore.load(settings.api_keys.keys_file) if settings.api_keys else None
    except ConfigError as error:
        problems.append(error.message)
    if problems:
        raise ConfigError(reasons.AUTH_CONFIG_INVALID, "; ".join(problems))
    if not settings.enabled():
        log.warning("no_auth_method", note="no jwt, mtls or api_keys configured: every call is refused")
    return mtls, jwt, api_keys
