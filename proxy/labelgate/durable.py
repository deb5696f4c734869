"""Replace a small file so that a crash leaves the old content or the new, never a mix.

Write a sibling, fsync it, rename it over the file, fsync the folder: the rename is atomic,
and the two fsyncs make both the content and the rename survive a power loss. Used for
state a restart must find as it was left (export cursors, the bundle high-water mark).

A writer killed between writing its sibling and the rename leaves that sibling behind; the
file's sole writer removes such leftovers (``remove_leftovers``) before it writes again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _sibling_affixes(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".tmp"


def replace_durably(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Make ``data`` the whole content of ``path`` (creating its folder), durably. The sibling
    is a new file of its own (``mkstemp``): two writers at once (the workers of one ``serve``)
    never write into, or rename away, each other's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    prefix, suffix = _sibling_affixes(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_leftovers(path: Path) -> None:
    """Remove the siblings a killed writer of ``path`` left. Only for a caller that is the
    file's sole writer at the moment (one owner, or under its lock): another writer's sibling
    in flight would be removed too."""
    prefix, suffix = _sibling_affixes(path)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
