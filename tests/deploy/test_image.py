"""The image: Dockerfile lint (hadolint), build context (.dockerignore), the lock file and its
staleness check, pinned versions."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.support import CHART, DEPLOY, IMAGE_DIRS, IMAGE_FILES, REPO, image_tag, load_module

DOCKERFILE = DEPLOY / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
lock = load_module(DEPLOY / "lock.py")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install labelgate\nRUN cd /src && make\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3003"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_image_installs_only_the_locked_dependencies() -> None:
    text = DOCKERFILE.read_text()
    assert "--require-hashes" in text and "--requirement requirements.lock" in text
    assert "COPY deploy/requirements.lock" in text
    assert "pip install --no-deps /wheels/labelgate-" in text


def test_versions_are_pinned_everywhere() -> None:
    values = (CHART / "values.yaml").read_text()
    assert image_tag(DOCKERFILE.read_text(), "openpolicyagent/opa") == ["1.22.3-static"]
    assert re.search(r"repository: openpolicyagent/opa\n\s+tag: 1\.22\.3-static", values)
    assert re.search(r"^OPA_VERSION\s*:= 1\.22\.3$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert "python:3.11-" in DOCKERFILE.read_text() and lock.PYTHON_VERSION == "3.11"


def test_what_the_tests_assume_of_the_image_is_in_the_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    for target, source in IMAGE_FILES.items():
        assert f"COPY {source.relative_to(REPO)} {target}" in text
    for folder in IMAGE_DIRS[:-1]:
        assert folder in text


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes (folders include their files)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [path] + [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts))]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates
        ):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (
        ".venv/bin/python",
        ".tools/bin/opa",
        ".git/HEAD",
        "tests/conftest.py",
        "bench/results/x.json",
    ):
        assert _ignored(heavy, patterns), heavy
    sources = re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE.read_text(), re.MULTILINE)
    assert "proxy" in sources and "deploy/requirements.lock" in sources
    for source in sources:
        assert not _ignored(source, patterns), source
        assert (REPO / source).exists(), source
    assert _ignored("proxy/labelgate/__pycache__/cli.cpython-311.pyc", patterns)
    assert not _ignored("proxy/labelgate/cli.py", patterns)


def test_lock_is_current() -> None:
    assert lock.lock_problems() == []


def test_lock_check_notices_a_changed_dependency(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (REPO / "pyproject.toml").read_text()
    pyproject.write_text(text.replace('"pyyaml>=6",', '"pyyaml>=6",\n  "left-pad>=1.0",'))
    problems = lock.lock_problems(pyproject)
    assert any("changed since the lock" in p for p in problems)
    assert "left-pad is not pinned" in problems


def test_lock_check_notices_a_pin_outside_the_specifier(tmp_path: Path) -> None:
    stale = tmp_path / "requirements.lock"
    text = lock.LOCK.read_text()
    pinned = re.search(r"^pydantic==(\S+) ", text, re.MULTILINE)
    assert pinned is not None
    stale.write_text(text.replace(f"pydantic=={pinned.group(1)} ", "pydantic==2.0.0 "))
    assert any(p.startswith("pydantic: pinned 2.0.0") for p in lock.lock_problems(lock.PYPROJECT, stale))
    unhashed = tmp_path / "unhashed.lock"
    unhashed.write_text(re.sub(r" \\\n\s+--hash=sha256:\w+", "", text))
    assert any("has no --hash" in p for p in lock.lock_problems(lock.PYPROJECT, unhashed))


def test_lock_check_runs_offline_and_fast() -> None:
    offline = {
        "PATH": "/usr/bin:/bin",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    command = [sys.executable, str(DEPLOY / "lock.py"), "--check"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=offline)
    assert result.returncode == 0, result.stderr
