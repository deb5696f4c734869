"""Bearer JWT -> Subject.

The token's header only selects a key: its ``alg`` must be on the allow-list and match the
algorithm the key was loaded for, so ``alg: none`` and HS256-signed-with-the-RSA-public-key
forgeries are refused before any signature maths. ``iss``, ``aud``, ``exp`` and ``nbf`` are
required, and ``exp``, ``nbf`` and ``iat`` must be numbers, dates from 1970 to the year 9999.
The subject claim is printable text without surrounding spaces, like a group name. Groups come
from the groups claim (``groups_from_claim``): a list of names, or one string that is one name
(never split); a name with invisible characters or surrounding spaces makes the token invalid.
Refusal messages are written here, never copied from PyJWT, so they can't echo the token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jwt

from labelgate.auth import reasons
from labelgate.auth.devkeys import DEV_AUDIENCE, DEV_ISSUER, dev_jwks_path
from labelgate.auth.jwks import KeyIndex, TrustedKey, parse_jwks, read_jwks_file
from labelgate.auth.remote_jwks import RemoteJwks
from labelgate.auth.settings import JwtSettings
from labelgate.auth.subject import Subject, group_name_problem
from labelgate.auth.verified_tokens import VerifiedTokens
from labelgate.errors import ConfigError, Unauthenticated
from labelgate.logs import get_logger

log = get_logger(__name__)

MAX_TOKEN_LENGTH = 16 * 1024
MAX_GROUPS = 1000
REQUIRED_CLAIMS = ("iss", "aud", "exp", "nbf")
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
# The range of a NumericDate taken here: 1970-01-01 to 9999-12-31T23:59:59Z (what datetime can
# hold). Outside it a value is no real date, and 10**400 would not even convert to a float.
LATEST_NUMERIC_DATE = 253402300799

# Most specific first: InvalidSignatureError and friends subclass DecodeError.
_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, reasons.TOKEN_EXPIRED, "the token has expired"),
    (jwt.ImmatureSignatureError, reasons.TOKEN_NOT_YET_VALID, "the token is not valid yet (nbf or iat)"),
    (jwt.InvalidAudienceError, reasons.TOKEN_BAD_AUDIENCE, "the token is not for this gateway (aud)"),
    (jwt.InvalidIssuerError, reasons.TOKEN_BAD_ISSUER, "the token's issuer is not trusted for its key (iss)"),
    (jwt.InvalidSignatureError, reasons.TOKEN_BAD_SIGNATURE, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, reasons.TOKEN_ALGORITHM_NOT_ALLOWED, "the token's algorithm is not allowed"),
    (
        jwt.exceptions.InvalidSubjectError,
        reasons.TOKEN_BAD_SUBJECT,
        "the token's 'sub' claim is not a string",
    ),
    (jwt.PyJWTError, reasons.TOKEN_MALFORMED, "the token cannot be decoded"),
)


class JwtVerifier:
    """Verifies tokens against local keys (file, dev) and, when configured, a remote JWKS."""

    def __init__(
        self,
        local_keys: KeyIndex,
        *,
        algorithms: Sequence[str],
        subject_claim: str = "sub",
        groups_claim: str = "groups",
        leeway_seconds: int = 30,
        remote: RemoteJwks | None = None,
    ) -> None:
        self._local = local_keys
        self._algorithms = frozenset(algorithms)
        self._subject_claim = subject_claim
        self._groups_claim = groups_claim
        self._leeway = leeway_seconds
        self.remote = remote
        self._merged: tuple[KeyIndex | None, KeyIndex] = (None, local_keys)
        self.verified = VerifiedTokens()

    @classmethod
    def from_settings(cls, settings: JwtSettings) -> JwtVerifier:
        """Read the local key files now (start-up), listing every problem in one ConfigError."""
        keys: list[TrustedKey] = []
        problems: list[str] = []

        def load(path: Path, issuer: str, audience: str, source: str) -> None:
            document, read_problems = read_jwks_file(path)
            problems.extend(read_problems)
            if document is not None:
                found, parse_problems = parse_jwks(
                    document, algorithms=settings.algorithms, issuer=issuer, audience=audience, source=source
                )
                keys.extend(found)
                problems.extend(parse_problems)

        if settings.jwks_file is not None:
            load(settings.jwks_file, settings.issuer or "", settings.audience or "", "jwks_file")
        if settings.trust_dev_key:
            # The dev key vouches only for the dev issuer: it can't be used to claim the real one.
            load(dev_jwks_path(settings.dev_keys_dir), DEV_ISSUER, DEV_AUDIENCE, "dev")
            log.warning(
                "dev_key_trusted",
                issuer=DEV_ISSUER,
                note="INSECURE: anyone with the repository can mint tokens",
            )
        dev_kids = {key.kid for key in keys if key.source == "dev" and key.kid is not None}
        shared = sorted(
            kid for kid in dev_kids if kid in {key.kid for key in keys if key.source == "jwks_file"}
        )
        if shared:
            problems.append(f"the dev JWKS and jwks_file both publish kid {shared}")
        if problems:
            raise ConfigError(reasons.AUTH_CONFIG_INVALID, "JWT keys: " + "; ".join(problems))
        remote = None
        if settings.jwks_url is not None:
            remote = RemoteJwks(
                settings.jwks_url,
                algorithms=settings.algorithms,
                issuer=settings.issuer or "",
                audience=settings.audience or "",
                refresh_seconds=settings.jwks_refresh_seconds,
                timeout_seconds=settings.jwks_timeout_seconds,
            )
        return cls(
            KeyIndex(keys),
            algorithms=settings.algorithms,
            subject_claim=settings.subject_claim,
            groups_claim=settings.groups_claim,
            leeway_seconds=settings.leeway_seconds,
            remote=remote,
        )

    async def start(self) -> None:
        if self.remote is not None:
            await self.remote.start()

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()

    def verify(self, token: str) -> Subject:
        keys = self._trusted_keys()
        if keys is not None and isinstance(token, str):
            cached = self.verified.get(token, keys)
            if cached is not None:
                return cached
        subject, expires = self._verify(token)
        if keys is not None:
            self.verified.put(token, keys, subject, expires)
        return subject

    def _trusted_keys(self) -> object | None:
        """What the verified-token memo is bound to: the key set in use (None: not loaded)."""
        return self._local if self.remote is None else self.remote.index

    def _verify(self, token: str) -> tuple[Subject, float]:
        """The full check: the subject, and when the token expires (``exp``, no leeway)."""
        key = self._select_key(token)
        try:
            claims = jwt.decode(
                token,
                key.jwk,
                algorithms=[key.algorithm],
                audience=key.audience,
                issuer=key.issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(
                reasons.TOKEN_MISSING_CLAIM, f"the token lacks the {error.claim!r} claim"
            ) from None
        except jwt.PyJWTError as error:
            reason, message = next((r, m) for kind, r, m in _REFUSALS if isinstance(error, kind))
            raise Unauthenticated(reason, message) from None
        _check_numeric_dates(claims)
        # Qualified by the issuer the key vouches for (``jwt.decode`` checked ``iss`` against
        # it): a dev-key token is ``jwt:labelgate-dev#<sub>`` and can never be a production id.
        issuer = key.issuer or claims["iss"]
        if not isinstance(issuer, str) or not issuer or "#" in issuer:
            raise Unauthenticated(reasons.TOKEN_BAD_ISSUER, "the token's issuer cannot name a subject (iss)")
        subject = Subject.proven(
            "jwt",
            self._subject(claims),
            issuer=issuer,
            groups=self._groups(claims),
            attributes=_attributes(claims, key),
        )
        return subject, float(claims["exp"])

    def _select_key(self, token: str) -> TrustedKey:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(
                reasons.TOKEN_MALFORMED, f"the token is empty or longer than {MAX_TOKEN_LENGTH}"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(reasons.TOKEN_MALFORMED, "the token is not a signed JWT") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if not isinstance(algorithm, str) or (kid is not None and not isinstance(kid, str)):
            raise Unauthenticated(
                reasons.TOKEN_MALFORMED, "the token header's 'alg' or 'kid' is not a string"
            )
        if algorithm not in self._algorithms:
            raise Unauthenticated(
                reasons.TOKEN_ALGORITHM_NOT_ALLOWED,
                f"the token's algorithm is not allowed (allowed: {', '.join(sorted(self._algorithms))})",
            )
        candidates = self._index().candidates(kid, algorithm)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates and self.remote is not None:
            self.remote.request_refresh()  # maybe the provider rotated keys; this token still fails
        if not candidates:
            raise Unauthenticated(
                reasons.TOKEN_UNKNOWN_KEY, f"no trusted {algorithm} key has the token's kid"
            )
        raise Unauthenticated(
            reasons.TOKEN_UNKNOWN_KEY,
            "the token has no kid and several keys could verify it"
            if kid is None
            else "the token's kid is ambiguous",
        )

    def _index(self) -> KeyIndex:
        if self.remote is None:
            return self._local
        remote = self.remote.index
        if remote is None:
            if not len(self._local):
                raise Unauthenticated(
                    reasons.TOKEN_KEYS_UNAVAILABLE, "the identity provider's keys are not loaded"
                )
            return self._local
        if self._merged[0] is not remote:  # rebuilt once per refresh, not per call
            self._merged = (remote, self._local.merged(remote))
        return self._merged[1]

    def _subject(self, claims: Mapping[str, Any]) -> str:
        value = claim_value(claims, self._subject_claim)  # as the inbox's sign-in reads it
        if value is None:
            raise Unauthenticated(
                reasons.TOKEN_MISSING_CLAIM, f"the token lacks the {self._subject_claim!r} claim"
            )
        if not isinstance(value, str) or not value.strip() or len(value) > 256:
            raise Unauthenticated(
                reasons.TOKEN_BAD_SUBJECT,
                f"the {self._subject_claim!r} claim must be a string of 1 to 256 characters",
            )
        # The rule group names follow: a subject that holds a control, bidi or zero-width
        # character, or starts or ends with a space, looks like another person's (``alice`` +
        # U+200B) or forges a log line; it is refused, never cleaned up into someone else.
        problem = group_name_problem(value)
        if problem is not None:
            raise Unauthenticated(reasons.TOKEN_BAD_SUBJECT, f"the {self._subject_claim!r} claim {problem}")
        return value

    def _groups(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        try:
            names = groups_from_claim(claim_value(claims, self._groups_claim))
        except ValueError as error:
            raise Unauthenticated(
                reasons.TOKEN_BAD_GROUPS, f"the {self._groups_claim!r} claim {error}"
            ) from None
        if len(names) > MAX_GROUPS:
            raise Unauthenticated(
                reasons.TOKEN_BAD_GROUPS, f"the {self._groups_claim!r} claim names over {MAX_GROUPS} groups"
            )
        return tuple(names)


def groups_from_claim(value: Any) -> list[str]:
    """The group names of a groups claim (``None``: absent, no groups). A list is taken item by
    item, as it is; a single string is one group name, as providers send a single-valued claim
    (ADFS, SAML bridges), and is never split: ``"former data-owners"`` is not ``data-owners``,
    ``"not,approvers"`` is not ``approvers``. Nothing is trimmed: a name ``group_name_problem``
    refuses (an empty string too) makes the whole claim invalid (ValueError, whose text
    completes "the claim ..." and never quotes the name), so two groups the identity provider
    tells apart never become one here."""
    if value is None:
        return []
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, list) and all(isinstance(name, str) for name in value):
        names = list(value)
    else:
        raise ValueError("must be a list of strings or a string")
    for position, name in enumerate(names, 1):
        problem = group_name_problem(name)
        if problem is not None:
            raise ValueError(f"has a group name (number {position}) that {problem}")
    return names


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """``claims[name]``, else a dotted path into nested objects (``realm_access.roles``). The exact
    name wins so that URL-style claim names (``https://example.com/groups``) work as they are."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """``exp``, ``nbf`` and ``iat`` are JSON numbers (RFC 7519 NumericDate). PyJWT also takes
    a numeric string ("1796490140") and ``true``; a subject holding such an ``exp`` would
    outlive it, since what checks a stream's subject later compares numbers only. A number
    outside 0 to ``LATEST_NUMERIC_DATE`` (``10**400``, ``-1e308``; NaN fails the comparison) is
    no date either: refused as malformed rather than overflowing where it becomes a float."""
    for name in NUMERIC_DATE_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(reasons.TOKEN_MALFORMED, f"the token's {name!r} claim is not a number")
        if not 0 <= value <= LATEST_NUMERIC_DATE:
            raise Unauthenticated(
                reasons.TOKEN_MALFORMED, f"the token's {name!r} claim is not a date from 1970 to 9999"
            )


def _attributes(claims: Mapping[str, Any], key: TrustedKey) -> dict[str, Any]:
    attributes: dict[str, Any] = {"iss": claims["iss"], "exp": claims["exp"], "key_source": key.source}
    if key.kid is not None:
        attributes["kid"] = key.kid
    for name in ("jti", "azp", "client_id"):
        if isinstance(claims.get(name), str):
            attributes[name] = claims[name]
    return attributes
