"""Listen addresses checked before a server starts, so a port another program holds is one
clear error (``LISTEN_IN_USE``, exit 2) instead of a library's traceback or, with
``SO_REUSEPORT``, a silently shared port.

The probe binds without ``SO_REUSEPORT``: Linux then refuses it whenever any socket holds the
address, whether or not that socket set the option. Port 0 (any free port) is not checked.
"""

from __future__ import annotations

import errno
import socket

from labelgate.digits import whole_number
from labelgate.errors import ConfigError
from labelgate.gateway import reasons


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    number = whole_number(port)
    if not sep or number is None or not host:
        raise ConfigError(reasons.LISTEN_INVALID, f"a listen address must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), number


def ensure_free(listen: str, what: str = "listen") -> None:
    """Raise ``ConfigError(LISTEN_IN_USE)`` when ``listen`` (HOST:PORT) cannot be bound now."""
    host, port = split_listen(listen)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(reasons.LISTEN_INVALID, f"{what} {listen}: {error.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        reasons.LISTEN_IN_USE,
                        f"{what} {listen}: the address is already in use by another program",
                    ) from None
                raise ConfigError(reasons.LISTEN_FAILED, f"{what} {listen}: {error.strerror}") from None
