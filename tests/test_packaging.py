"""Only product code ships: the wheel holds the ``labelgate`` package and nothing that measures
it, and no product module knows where the repository is.

The measurement harness lives in ``bench/`` beside ``tests/``; process, PostgreSQL and opa
helpers both use live in ``tests/support/``. Neither may reach the wheel, and the package
may not find its way back to them (``parents[3]``, a search for ``.tools/bin/opa``): an
installed gateway has no checkout around it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.support.procs import REPO

PACKAGE = REPO / "proxy" / "labelgate"
# Module names the harness used to have inside the package.
MEASUREMENT = re.compile(r"(^|/)(bench|benchmarks?|profile_\w+|measure_\w+|bench_\w+)(/|\.py$)")
REPOSITORY_LOOKUPS = (
    re.compile(r"\.parents\[\d+\]"),  # Path(__file__).parents[3]: the checkout around the package
    re.compile(r"""["']\.tools["']"""),  # a search for the pinned tools of a checkout
    re.compile(r"^\s*(from|import)\s+(bench|tests)\b", re.MULTILINE),  # development code
)


def _product_sources() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if "_proto" not in path.parts]


def test_no_product_module_knows_where_the_repository_is() -> None:
    found = [
        f"{path.relative_to(REPO)}: {match.group(0)!r}"
        for path in _product_sources()
        for pattern in REPOSITORY_LOOKUPS
        for match in pattern.finditer(path.read_text())
    ]
    assert found == []


def test_no_measurement_module_in_the_package_tree() -> None:
    found = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if MEASUREMENT.search(p.as_posix())]
    assert found == []


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a clean copy of what the build reads (a stale ``build/`` in the checkout
    would leak removed modules into the wheel); no build isolation, so no index is needed."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "proxy",
        source / "proxy",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )  # symlinks (labelgate/schema) are copied as what they point to, as the build does
    out = tmp_path / "wheel"
    args = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
        ".",
    ]
    done = subprocess.run(args, cwd=source, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("labelgate-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    with zipfile.ZipFile(_build_wheel(tmp_path_factory.mktemp("wheel"))) as wheel:
        return wheel.namelist()


def test_the_wheel_holds_only_the_labelgate_package(wheel_names: list[str]) -> None:
    tops = {PurePosixPath(name).parts[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"labelgate"}


def test_the_wheel_holds_no_measurement_code(wheel_names: list[str]) -> None:
    assert [name for name in wheel_names if MEASUREMENT.search(name)] == []
    assert [name for name in wheel_names if name.endswith(".rego")] == []  # bench's allow-all policy


def test_the_wheel_holds_the_product(wheel_names: list[str]) -> None:
    """Every product module of the tree, and its data, so the checks above read a real wheel."""
    modules = {f"labelgate/{p.relative_to(PACKAGE).as_posix()}" for p in _product_sources()}
    assert modules <= set(wheel_names)
    for data in ("labelgate/py.typed", "labelgate/schema/input.json", "labelgate/schema/result.json"):
        assert data in wheel_names
