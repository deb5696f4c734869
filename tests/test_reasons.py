"""Error reasons are constants, each defined once, in one ``reasons.py`` per package.

Callers, logs and dashboards key on a reason (``LabelgateError.reason``), so it is spelt in
one place and a typo cannot make a new one. Read from the source with ``ast``:

- no error is raised with a literal reason (``ConfigError("X", ...)``): it names a constant;
- in each ``reasons.py`` every constant is its own name (``X = "X"``) and appears once;
- no module outside a ``reasons.py`` defines a reason constant again (it imports it);
- a reason defined by two packages means the same thing in both (``SAME_MEANING``).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "proxy" / "labelgate"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9_]*$")

# Reasons defined by several packages, reviewed to mean the same thing in each.
SAME_MEANING = {
    "BUNDLE_FILE_INVALID": "a bundle file (built or read) does not parse",
    "BUNDLE_TOO_LARGE": "a bundle over the size bound, served or fetched",
    "INPUT_INVALID": "an input the operator gave (a file or an option) is not valid",
    "LIMIT_INVALID": "a page-size query parameter out of range",
    "LISTEN_FAILED": "a listener that could not start",
    "LISTEN_INVALID": "a listen address that is not HOST:PORT",
    "OPA_BINARY_MISSING": "the opa binary is not on PATH nor $LABELGATE_OPA",
    "SHARED_MEMORY_UNSUPPORTED": "a request naming shared-memory tensors",
    "SIGNING_ALG_UNSUPPORTED": "a bundle signing algorithm other than RS256/ES256",
    "SINCE_INVALID": "a --since duration that does not parse",
}


def sources() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if "_proto" not in path.parts]


def unit_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def error_classes() -> set[str]:
    bases: dict[str, set[str]] = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
    errors = {"LabelgateError"}
    while grown := {name for name, parents in bases.items() if parents & errors} - errors:
        errors |= grown
    return errors


def literal_reasons(tree: ast.AST, errors: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        called = ast.unparse(node.func).rsplit(".", 1)[-1]
        first = node.args[0]
        if called in errors and isinstance(first, ast.Constant) and UPPER_SNAKE.match(str(first.value)):
            found.append((node.lineno, first.value))
    return found


def reason_constants(tree: ast.Module) -> list[tuple[str, object]]:
    """Module-level ``NAME = "VALUE"`` assignments whose value looks like a reason."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value.value if isinstance(node.value, ast.Constant) else None
            found.append((node.targets[0].id, value))
    return found


def reasons_modules() -> dict[str, Path]:
    return {unit_of(path): path for path in sources() if path.name == "reasons.py"}


def defined_reasons() -> dict[str, set[str]]:
    """reason -> the packages whose reasons.py defines it."""
    by_reason: dict[str, set[str]] = defaultdict(set)
    for unit, path in reasons_modules().items():
        for name, _ in reason_constants(ast.parse(path.read_text(encoding="utf-8"))):
            by_reason[name].add(unit)
    return by_reason


def test_errors_name_their_reason_by_a_constant() -> None:
    errors = error_classes()
    literal = [
        f"{path.relative_to(PACKAGE)}:{line}: {value!r}"
        for path in sources()
        for line, value in literal_reasons(ast.parse(path.read_text(encoding="utf-8")), errors)
    ]
    assert not literal, "use a constant from the package's reasons.py:\n" + "\n".join(literal)


def test_each_reasons_module_defines_each_reason_once_as_its_own_name() -> None:
    problems = []
    for unit, path in reasons_modules().items():
        names = reason_constants(ast.parse(path.read_text(encoding="utf-8")))
        problems += [f"{unit}: {name} = {value!r}" for name, value in names if value != name]
        problems += [f"{unit}: {name} not UPPER_SNAKE" for name, _ in names if not UPPER_SNAKE.match(name)]
        seen = [name for name, _ in names]
        problems += [f"{unit}: {name} defined twice" for name in set(seen) if seen.count(name) > 1]
    assert not problems, "\n".join(problems)


def test_no_module_defines_a_reason_again() -> None:
    reasons = defined_reasons()
    again = [
        f"{path.relative_to(PACKAGE)}: {name} = {value!r}"
        for path in sources()
        if path.name != "reasons.py"
        for name, value in reason_constants(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(value, str) and value in reasons
    ]
    assert not again, "import these from a reasons.py instead:\n" + "\n".join(again)


def test_a_reason_in_two_packages_means_the_same_thing() -> None:
    shared = {reason: sorted(units) for reason, units in defined_reasons().items() if len(units) > 1}
    unreviewed = {reason: units for reason, units in shared.items() if reason not in SAME_MEANING}
    assert not unreviewed, (
        "defined by several packages: use the lower package's constant, or review into SAME_MEANING: "
        f"{unreviewed}"
    )
    stale = sorted(set(SAME_MEANING) - set(shared))
    assert not stale, f"no longer shared; drop from SAME_MEANING: {stale}"


def test_the_scan_finds_a_literal_reason() -> None:
    # Guards the scan itself, on a module written here.
    tree = ast.parse(
        "class Oops(ConfigError):\n    pass\n"
        "raise errors.Oops('OOPS_LITERAL', 'text')\n"
        "raise ConfigError(reasons.FINE, 'text')\n"
    )
    assert literal_reasons(tree, error_classes() | {"Oops"}) == [(3, "OOPS_LITERAL")]
