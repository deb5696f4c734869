"""What of the caller's gRPC metadata may travel upstream.

The gateway never forwards the caller's credentials: the upstream trusts the gateway, not
the caller, and a token forwarded is a token the upstream (or its logs) could replay.
Gateway-only options (``x-labelgate-*``) are forwarded only when documented, so a caller
can't smuggle headers that look like they came from the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable

Metadata = Iterable[tuple[str, str | bytes]]

# The client options a caller may set (docs: client options). Everything else under
# x-labelgate- is reserved for the gateway itself.
DOCUMENTED_CLIENT_OPTIONS = frozenset(
    {
        "x-labelgate-session",
        "x-labelgate-justification",
        "x-labelgate-approval",
        "x-labelgate-approval-id",
    }
)
LABELGATE_PREFIX = "x-labelgate-"

CREDENTIAL_KEYS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie"})

# HTTP/2 connection-specific headers, and headers the gRPC channel to the upstream writes
# itself (content-type, te, user-agent). Pseudo-headers (":authority") and the grpc-
# namespace (grpc-timeout, grpc-encoding, ...) are reserved by gRPC and dropped by prefix.
HOP_BY_HOP_KEYS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "host",
        "content-type",
        "content-length",
        "user-agent",
    }
)
RESERVED_PREFIXES = (":", "grpc-")


def strip_caller_metadata(metadata: Metadata) -> list[tuple[str, str | bytes]]:
    """The caller's metadata minus credentials, undocumented ``x-labelgate-*`` keys and
    hop-by-hop/reserved keys; keys lower-cased, order kept."""
    kept = []
    for key, value in metadata:
        name = key.lower()
        if name in CREDENTIAL_KEYS or name in HOP_BY_HOP_KEYS or name.startswith(RESERVED_PREFIXES):
            continue
        if name.startswith(LABELGATE_PREFIX) and name not in DOCUMENTED_CLIENT_OPTIONS:
            continue
        kept.append((name, value))
    return kept
