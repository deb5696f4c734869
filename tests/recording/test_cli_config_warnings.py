"""``labelgate sessions show|replay`` show what loading the config warns of as ``serve
--check-config`` does: a sentence naming the config, never a bare event name.

The commands load the gateway config's auth and policy without logging set up, so Python
printed the JWT verifier's ``dev_key_trusted`` warning as just that word on stderr.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from labelgate.recording.files import FileSessionStore
from tests.recording.test_cli import record_sample, viewer
from tests.support.procs import REPO, labelgate_command

SENTENCE = "warning: dev_key_trusted: INSECURE: anyone with the repository can mint tokens"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        labelgate_command(*args), capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ)
    )


@pytest.mark.parametrize("command", ["show", "replay"])
def test_a_config_warning_is_a_sentence_as_check_config_prints_it(tmp_path: Path, command: str) -> None:
    record_sample(FileSessionStore(tmp_path))
    options = viewer(tmp_path, "auditors", "analysts")  # --config (trust_dev_key: true) --token
    config = options[1]

    done = run("sessions", command, "alpha", "--dir", str(tmp_path), *options)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "dev_key_trusted" not in lines, "a bare event name"
    assert f"{config}: {SENTENCE} (issuer labelgate-dev)" in lines, done.stderr

    checked = run("serve", "--check-config", "--config", config)
    assert f"{config}: {SENTENCE} (issuer labelgate-dev)" in checked.stderr.splitlines(), checked.stderr


def test_the_warning_comes_before_the_error_that_ends_the_command(tmp_path: Path) -> None:
    record_sample(FileSessionStore(tmp_path))
    options = viewer(tmp_path, "auditors")
    done = run("sessions", "show", "no-such-session", "--dir", str(tmp_path), *options)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"{options[1]}: {SENTENCE} (issuer labelgate-dev)", done.stderr
    assert lines[-1].startswith("error: no recorded session"), done.stderr
