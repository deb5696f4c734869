"""Reading the config file and wording what is wrong with a config: the YAML loader that
refuses a key written twice and YAML aliases (``_ConfigLoader``), the settings source that
reads the file with it and fails closed (``ConfigFile``), and the messages
``config.load_settings`` raises (``format_validation_error``, ``environment_problem``).

Apart from the model because none of this is about what a setting means; the model
(``config.GatewaySettings``) names ``ConfigFile`` as its file source.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError, YamlConfigSettingsSource

from labelgate import reasons
from labelgate.config_paths import from_config_file
from labelgate.errors import ConfigError

# A config is a few kilobytes (the examples in deploy/ are 1.5-15 KB); a file past this is a
# mistake, and PyYAML's pure-Python loader takes seconds per megabyte.
MAX_CONFIG_BYTES = 1 << 20


class _Refused(yaml.YAMLError):
    """What ``_ConfigLoader`` refuses in otherwise valid YAML; its message names the line."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (what pydantic-settings reads with), refusing two things YAML
    allows: a mapping key written twice, of which PyYAML keeps the last and drops the first
    without a word (a second ``recording:`` section silently dropped the first one's encryption
    key), and anchors and aliases. An alias shares one node however often it is used: nine
    levels of nine aliases load in microseconds, then every copy of them (``from_config_file``,
    pydantic's validation) builds billions of values. Refusing them, rather than bounding
    copies, keeps every later step linear in the file's size; a configuration is short enough
    to write out, and no configuration labelgate ships uses them."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                f"line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) are not "
                "accepted in a configuration: write the value out where it is used"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<``: explicit keys override merged ones, by YAML's design
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the constructor itself refuses it
            if first is not key_node:
                shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
                raise _Refused(
                    f"the key {shown} appears twice in one mapping (lines {first.start_mark.line + 1} "
                    f"and {key_node.start_mark.line + 1}): YAML keeps only the last, so the settings "
                    "of the first would be ignored"
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


class ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source over the file ``load_settings`` names, failing closed:
    the library skips a missing file and lets parse errors through; here each is a
    ConfigError with the file's name. It reads with ``_ConfigLoader``, at most
    ``MAX_CONFIG_BYTES``."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        if path is not None:
            try:
                path.open("rb").close()
            except OSError as error:
                raise ConfigError(
                    reasons.CONFIG_UNREADABLE, f"cannot read {path}: {error.strerror}"
                ) from None
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            with file_path.open("rb") as file:
                raw = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as error:
            raise ConfigError(
                reasons.CONFIG_UNREADABLE, f"cannot read {file_path}: {error.strerror}"
            ) from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                reasons.CONFIG_INVALID,
                f"{file_path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration",
            )
        try:
            loader = _ConfigLoader(raw.decode("utf-8"))
            loader.name = str(file_path)  # its error marks name the file
            try:
                data: object = loader.get_single_data() or {}
            finally:
                loader.dispose()
        except _Refused as error:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} is not valid YAML: {error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                reasons.CONFIG_INVALID, f"{file_path} is not UTF-8 text (byte {error.start})"
            ) from None
        except RecursionError:
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} is nested too deeply") from None
        if not isinstance(data, dict):
            raise ConfigError(reasons.CONFIG_INVALID, f"{file_path} must hold a mapping at the top level")
        # Marked, so its relative paths (only these) resolve against its folder (config_paths).
        marked: dict[str, Any] = from_config_file(data)
        return marked


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"].removeprefix("Value error, ")
        for part in message.split("; "):
            lines.append(f"  - {where}: {part}")
    return "\n".join(lines)


def environment_problem(error: SettingsError) -> str:
    """Name the LABELGATE_* variable pydantic-settings could not parse (it names the field)."""
    import json
    import os
    import re

    field = re.search(r'field "([^"]+)"', str(error))
    prefix = f"LABELGATE_{field.group(1)}".upper() if field else "LABELGATE_"
    unparsed = []
    for name, value in sorted(os.environ.items()):
        if name.upper() == prefix or name.upper().startswith(prefix + "__"):
            try:
                json.loads(value)
            except ValueError:
                unparsed.append(name)
    named = ", ".join(unparsed) or f"{prefix}*"
    return f'{named}: a list or object setting takes a JSON value, e.g. ["a", "b"]'
