"""The CI guard itself: a skipped test must fail under CI=true and pass without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SKIPPING_TEST = """
import pytest

def test_skips():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False
"""


@pytest.mark.parametrize(("ci", "expected_rc"), [("true", 1), ("", 0)])
def test_skip_fails_only_in_ci(tmp_path: Path, ci: str, expected_rc: int) -> None:
    probe = REPO / "tests" / f"test_zz_probe_{os.getpid()}_{ci or 'local'}.py"
    probe.write_text(SKIPPING_TEST)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
            cwd=REPO,
            env={**os.environ, "CI": ci},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    assert run.returncode == expected_rc, run.stdout + run.stderr
    if ci:
        assert "2 failed" in run.stdout
        assert "a skipped or xfailed test is a failed test" in run.stdout
    else:
        assert "1 skipped, 1 xfailed" in run.stdout
