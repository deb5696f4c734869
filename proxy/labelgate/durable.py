"""Replace a small file so that a crash leaves the old content or the new, never a mix.

Write a sibling, fsync it, rename it over the file, fsync the folder: the rename is atomic,
and the two fsyncs make both the content and the rename survive a power loss. Used for
state a restart must find as it was left (export cursors, the bundle high-water mark).
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_durably(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Make ``data`` the whole content of ``path`` (creating its folder), durably."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
