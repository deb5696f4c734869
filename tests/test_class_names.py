"""No two modules of the package define a public class of the same name.

Two ``Mask`` classes or two ``BundleUnavailable`` errors make a reader (and an ``except``
clause) guess which one is meant. A name that must stay in two modules goes in
``REVIEWED`` with the reason; private classes (``_Name``) never leave their module and are
not counted.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "proxy" / "labelgate"

# name -> why the same name in several modules means the same thing (or cannot be changed).
REVIEWED: dict[str, str] = {}


def public_classes(root: Path = PACKAGE) -> dict[str, list[str]]:
    defined: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        if "_proto" in path.parts:
            continue  # generated code
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                defined[node.name].append(str(path.relative_to(root)))
    return defined


def test_no_class_name_is_defined_in_two_modules() -> None:
    collisions = {
        name: modules
        for name, modules in public_classes().items()
        if len(modules) > 1 and name not in REVIEWED
    }
    assert not collisions, f"rename one of each, or review it into REVIEWED: {collisions}"


def test_the_reviewed_names_still_collide() -> None:
    stale = [name for name in REVIEWED if len(public_classes().get(name, [])) < 2]
    assert not stale, f"no longer defined twice; drop from REVIEWED: {stale}"


def test_the_scan_finds_a_collision(tmp_path: Path) -> None:
    # Guards the scan itself: a name defined in two modules is found, a private one is not.
    (tmp_path / "a.py").write_text("class Mask:\n    pass\nclass _Conn:\n    pass\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c.py").write_text("class Mask:\n    pass\nclass _Conn:\n    pass\n")
    assert dict(public_classes(tmp_path)) == {"Mask": ["a.py", "b/c.py"]}
