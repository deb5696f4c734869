"""The bundle high-water mark kept on disk, so a restart does not forget the order.

A gateway following signed bundles refuses a signed revision whose sequence is not above the
one in force (``bundle_client.py``). Kept in memory only, that order is lost on restart: the
first signed revision served afterwards, an earlier revoked one included, would be taken. With
``policy.bundle_state_file`` set, the revision in force and its sequence are written here after
each signed revision applies, and read at start: a restarted gateway then refuses anything
below the mark, and the marked revision itself served again is taken as before. The workers of
one ``serve`` share the file: each raises it (``write_mark``, under a lock) and each reads it
again before taking another signed revision, so a worker may lag the others but never goes
below what any of them applied (``bundle_client.py``).

A mark that cannot be read (garbage, a sequence that is not a whole number, a file that is not
ours) stops the gateway from starting (``BUNDLE_STATE_INVALID``): guessing would reopen the
replay the file exists to close. A missing file is a first start.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from pathlib import Path

from labelgate.durable import remove_leftovers, replace_durably
from labelgate.errors import ConfigError
from labelgate.policy import reasons

# Larger than any real mark would need; a bigger file is not one we wrote.
_MAX_BYTES = 4096


@dataclass(frozen=True)
class BundleMark:
    """The newest signed revision this gateway applied, with its signed sequence."""

    revision: str
    sequence: int


def read_mark(path: Path) -> BundleMark | None:
    """The mark in ``path``; None when there is none yet; ConfigError when it is unreadable."""
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _invalid(path, f"cannot read it: {error.strerror or error}") from None
    if len(data) > _MAX_BYTES:
        raise _invalid(path, f"over {_MAX_BYTES} bytes")
    try:
        fields = json.loads(data)
    except (ValueError, RecursionError):
        raise _invalid(path, "not JSON") from None
    revision = fields.get("revision") if isinstance(fields, dict) else None
    sequence = fields.get("sequence") if isinstance(fields, dict) else None
    if not isinstance(revision, str) or not revision:
        raise _invalid(path, "no revision")
    if type(sequence) is not int or sequence < 0:
        raise _invalid(path, "its sequence is not a whole number >= 0")
    return BundleMark(revision, sequence)


def write_mark(path: Path, mark: BundleMark) -> None:
    """Raise the mark in ``path`` to ``mark``, durably; a mark already as high stays (blocking:
    call it from a worker thread). The workers of one ``serve`` follow the bundle server each
    on its own and share the file: under a lock, a slower worker never lowers what a faster
    one wrote."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        remove_leftovers(path)
        try:
            held = read_mark(path)
        except ConfigError:
            held = None  # unreadable: this mark replaces it (the start refused it already)
        if held is not None and held.sequence >= mark.sequence:
            return
        data = json.dumps({"revision": mark.revision, "sequence": mark.sequence}, sort_keys=True)
        replace_durably(path, data.encode() + b"\n", mode=0o600)


def _invalid(path: Path, why: str) -> ConfigError:
    return ConfigError(
        reasons.BUNDLE_STATE_INVALID,
        f"the bundle state file {path} is not usable ({why}); it guards against replayed older "
        "bundles, so the gateway does not start without it: restore it, or delete it to trust "
        "the next signed revision served",
    )
