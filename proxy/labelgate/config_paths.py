"""``ConfigPath``: the type of every path setting, resolved against the config file's folder.

A config file names files beside it (``catalog_file: catalog.json``); read from another
working directory it must still mean the file beside the config. ``load_settings`` puts the
file's folder in the validation context (``config_folder_context``), and every path setting
is typed ``ConfigPath`` (or ``list[ConfigPath]``), so which values are paths follows from the
settings' types, never from their names. Without a folder in the context (settings built in
code, no config file) a path is kept as given, relative to the working directory.

This sits below every settings section (``auth``, ``recording``, ``config``) so each of
them can type its paths with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

_FOLDER_KEY = "labelgate_config_folder"


def config_folder_context(folder: Path | None) -> dict[str, Any]:
    """The validation context under which relative ``ConfigPath`` values resolve in ``folder``."""
    return {_FOLDER_KEY: folder}


def _resolve_in_config_folder(path: Path, info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, dict) else {}
    folder = context.get(_FOLDER_KEY)
    if folder is None:
        return path
    # Absolute paths are resolved too (symlinks, ``..``), so a config reads the same files
    # however its paths are spelt.
    return (Path(folder) / path).resolve()


ConfigPath = Annotated[Path, AfterValidator(_resolve_in_config_folder)]
