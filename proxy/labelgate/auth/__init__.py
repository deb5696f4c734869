"""The authenticate stage: verified identity from mTLS, JWT bearer tokens or API keys.

``Authenticator.from_settings(AuthSettings)`` at start, ``await authenticator.start()`` (fetches
a remote JWKS, if any), then per call ``authenticator.authenticate(metadata, auth_context)``
-> ``Subject`` or ``Unauthenticated``; ``strip_caller_metadata`` before forwarding upstream.
"""

from __future__ import annotations

from labelgate.auth import reasons
from labelgate.auth.api_keys import ApiKeyStore, hash_api_key, mint_api_key, new_key_entry
from labelgate.auth.authenticator import Authenticator
from labelgate.auth.devkeys import (
    DEV_AUDIENCE,
    DEV_ISSUER,
    default_dev_key_dir,
    dev_token_command,
    mint_dev_token,
    parse_ttl,
)
from labelgate.auth.metadata import DOCUMENTED_CLIENT_OPTIONS, strip_caller_metadata
from labelgate.auth.mtls import server_credentials
from labelgate.auth.settings import ApiKeySettings, AuthSettings, JwtSettings, MtlsSettings
from labelgate.auth.subject import AuthMethod, Subject

__all__ = [
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "DOCUMENTED_CLIENT_OPTIONS",
    "ApiKeySettings",
    "ApiKeyStore",
    "AuthMethod",
    "AuthSettings",
    "Authenticator",
    "JwtSettings",
    "MtlsSettings",
    "Subject",
    "default_dev_key_dir",
    "dev_token_command",
    "hash_api_key",
    "mint_api_key",
    "mint_dev_token",
    "new_key_entry",
    "parse_ttl",
    "reasons",
    "server_credentials",
    "strip_caller_metadata",
]
