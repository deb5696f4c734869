"""``ConfigPath``: the type of every path setting, resolved against the config file's folder.

A config file names files beside it (``catalog_file: catalog.json``); read from another
working directory it must still mean the file beside the config. ``load_settings`` puts the
file's folder in the validation context (``config_folder_context``), and every path setting
is typed ``ConfigPath`` (or ``list[ConfigPath]``), so which values are paths follows from the
settings' types, never from their names. Without a folder in the context (settings built in
code, no config file) a path is kept as given, relative to the working directory.

Only values written in the config file resolve there: its source marks each string it read
(``from_config_file``). A path from an environment variable or given in code (``load_settings``'
overrides, the CLI's flags) is relative to the working directory, as a shell user expects.

This sits below every settings section (``auth``, ``recording``, ``config``) so each of
them can type its paths with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo

_FOLDER_KEY = "labelgate_config_folder"


class FromConfigFile(str):
    """A string the config file holds (pydantic validates it into a plain ``str``)."""

    __slots__ = ()


def from_config_file(data: Any) -> Any:
    """``data`` (a parsed config file) with every string value marked ``FromConfigFile``.

    A copy, linear in the file's size because ``data`` is a tree: the config loader refuses
    YAML aliases (``config.loading._ConfigLoader``), whose shared nodes this copy would expand."""
    if isinstance(data, str):
        return FromConfigFile(data)
    if isinstance(data, dict):
        return {key: from_config_file(value) for key, value in data.items()}
    if isinstance(data, list):
        return [from_config_file(value) for value in data]
    return data


def config_folder_context(folder: Path | None) -> dict[str, Any]:
    """The validation context under which relative ``ConfigPath`` values resolve in ``folder``."""
    return {_FOLDER_KEY: folder}


def _resolve_in_config_folder(value: Any, info: ValidationInfo) -> Any:
    context = info.context if isinstance(info.context, dict) else {}
    folder = context.get(_FOLDER_KEY)
    if folder is None or not isinstance(value, FromConfigFile):
        return value  # validated as a Path as given: relative to the working directory
    # Absolute paths are resolved too (symlinks, ``..``), so a config reads the same files
    # however its paths are spelt.
    return (Path(folder) / str(value)).resolve()


ConfigPath = Annotated[Path, BeforeValidator(_resolve_in_config_folder)]
