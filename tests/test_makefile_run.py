"""`make run` installs what the demo needs once, and not again after `make venv` / `make test`.

Review (docs): `make run` after `make test` ran pip and rebuilt the native extension again,
because it waited for its own marker (`.venv/.installed-app`) while `make venv` leaves
`.venv/.installed` (the package with every extra, and the extension). The Makefile is run
for real in a scratch copy of the repository's top level, with a stand-in `python` that
logs what it is asked (so nothing is installed, and the shared `.venv` is never touched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import REPO

STAND_IN = """#!/bin/bash
# A stand-in python: logs each call; `-m venv DIR` lays out DIR/bin with python and labelgate.
echo "python $*" >> {log}
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
  printf '#!/bin/bash\\necho "labelgate $*" >> {log}\\n' > "$3/bin/labelgate"
  chmod +x "$3/bin/labelgate"
fi
"""

if shutil.which("make") is None:
    pytest.skip("make is not installed", allow_module_level=True)


def checkout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A scratch top level (Makefile, pyproject.toml), a stand-in python and the log it writes."""
    top = tmp_path / "repo"
    top.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, top / name)
    log = tmp_path / "calls.log"
    log.touch()
    python = tmp_path / "python3"
    python.write_text(STAND_IN.format(log=log))
    python.chmod(0o755)
    return top, python, log


def make_run(top: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "run", f"PYTHON={python}"],
        cwd=top,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))},
    )


def as_made_by_make_venv(top: Path, python: Path, *, older_than_pyproject: bool = False) -> None:
    """The venv `make venv` leaves: python and labelgate in .venv/bin, and its .installed marker."""
    subprocess.run([str(python), "-m", "venv", str(top / ".venv")], check=True)
    marker = top / ".venv" / ".installed"
    marker.touch()
    pyproject = (top / "pyproject.toml").stat().st_mtime
    stamp = pyproject - 60 if older_than_pyproject else pyproject + 60
    os.utime(marker, (stamp, stamp))


def test_after_make_venv_make_run_installs_nothing(tmp_path: Path) -> None:
    top, python, log = checkout(tmp_path)
    as_made_by_make_venv(top, python)
    log.write_text("")

    done = make_run(top, python)
    assert done.returncode == 0, done.stdout + done.stderr
    assert log.read_text().splitlines() == ["labelgate quickstart"], log.read_text()
    again = make_run(top, python)  # and the next time neither
    assert again.returncode == 0 and log.read_text().splitlines() == ["labelgate quickstart"] * 2


def test_on_a_fresh_machine_make_run_installs_the_package(tmp_path: Path) -> None:
    top, python, log = checkout(tmp_path)

    done = make_run(top, python)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"python -m venv {top / '.venv'}", calls
    assert "python -m pip install --quiet -e ." in calls, calls
    assert calls[-1] == "labelgate quickstart", calls


def test_a_venv_older_than_pyproject_is_brought_up_to_date(tmp_path: Path) -> None:
    top, python, log = checkout(tmp_path)
    as_made_by_make_venv(top, python, older_than_pyproject=True)
    log.write_text("")

    done = make_run(top, python)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    assert "python -m pip install --quiet -e ." in calls and calls[-1] == "labelgate quickstart", calls
