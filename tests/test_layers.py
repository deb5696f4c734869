"""The package's import layers: every import goes down (or stays inside its own package).

Read from the source with ``ast``, lazy imports and ``TYPE_CHECKING`` imports included, so
a newcomer can trust the table below and ``docs/ARCHITECTURE.md``: a package may use what
is beneath it, never what is above it, and so no two packages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "proxy" / "labelgate"

# Lowest first. Command-line modules (``*/cli.py``, ``cli.py``, ``__main__``) form the top
# layer: they wire everything together and nothing imports them.
LAYERS: list[set[str]] = [
    {"errors", "reasons", "_proto"},
    {"native", "untrusted_text", "shown_urls", "unique_keys", "expiry"},
    {
        "logs",
        "timestamps",
        "oip",
        "config_paths",
        "retry",
        "background",
        "digits",
        "memo",
        "terminal_log",
        "migrations",
        "interceptors",
        "deadlines",
        "durable",
        "cli_backstop",
        "warning_notes",
    },
    {"auth", "classify", "bundle", "audit", "demo", "tracing"},
    {"policy"},
    {"calls", "enforce"},
    {"recording"},
    {"config"},
    {"approvals"},
    {"admin"},
    {"gateway"},
    {"client", "quickstart"},
    {"commands"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "labelgate" or len(parts) == 1:
        return None
    if parts[-1] in ("cli", "__main__"):
        return "commands"
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(part for part in relative.parts if part != "__init__")


def imports() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        source = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                found += [(source, name, node.lineno) for name in [node.module, *names]]
            elif isinstance(node, ast.Import):
                found += [(source, alias.name, node.lineno) for alias in node.names]
    return found


def test_every_package_has_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in PACKAGE.rglob("*.py") if "_proto" not in path.parts}
    assert units - {None} <= set(RANK), f"give these a layer: {sorted(units - {None} - set(RANK))}"


def test_imports_only_go_down() -> None:
    upward = []
    for source, target, line in imports():
        src, dst = unit_of(source), unit_of(target)
        if src is None or dst is None or src == dst or dst not in RANK:
            continue
        if RANK[dst] >= RANK[src]:
            upward.append(f"{source}:{line} imports {target} ({src} -> {dst})")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(set(upward)))


@pytest.mark.parametrize("unit", sorted(RANK))
def test_layers_name_real_packages(unit: str) -> None:
    if unit == "commands":
        return
    assert (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").is_file(), unit
