"""Compile a policy in a child process first: rego-cpp aborts the whole process on some policies
OPA accepts (``shape 'rego-localref' has no field 'rego-refhead'``, found by fuzzing: ``with
input as`` and import aliases), which in the gateway would take every call down with it, at
start or when a followed bundle or an edited file brings such a revision. The child compiles
what the gateway is about to compile; when it dies, the revision is refused
(POLICY_COMPILE_FAILED) and the one in force keeps deciding.

The child runs this module (``python -m labelgate.policy.compile_check``), which imports only
regopy: the modules, the data as JSON text and the entrypoint arrive on stdin as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

from labelgate.errors import ConfigError
from labelgate.policy import reasons

# A compile that takes longer than this is refused too (rego-cpp compiles the default pack in
# well under a second; a policy that keeps it busy for a minute would stall every reload).
TIMEOUT_SECONDS = 60.0
_REGO_ERROR = 3  # the child's exit status when rego-cpp refuses the policy (reported in process)


def check_in_child(
    modules: tuple[tuple[str, str], ...], data_json: str, entrypoint: str, origin: str
) -> None:
    """Compile in a child process; raise ConfigError when the child dies or stalls. A policy
    rego-cpp refuses cleanly passes here: the in-process compile reports it with its message."""
    request = json.dumps({"modules": modules, "data": data_json, "entrypoint": entrypoint})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "labelgate.policy.compile_check"],
            input=request.encode("utf-8", "surrogatepass"),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ConfigError(
            reasons.POLICY_COMPILE_FAILED,
            f"{origin}: rego-cpp did not finish compiling it within {TIMEOUT_SECONDS:.0f} s",
        ) from error
    if done.returncode not in (0, _REGO_ERROR):
        raise ConfigError(
            reasons.POLICY_COMPILE_FAILED,
            f"{origin}: rego-cpp crashed compiling it (exit status {done.returncode}); "
            "run this policy with --engine opa",
        )


def _main() -> int:
    import regopy

    request = json.loads(sys.stdin.buffer.read())
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    interpreter.strict_built_in_errors = True
    try:
        for name, text in request["modules"]:
            interpreter.add_module(name, text)
        interpreter.add_data_json(request["data"])
        interpreter.build(None, [request["entrypoint"]])
    except regopy.RegoError:
        return _REGO_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(_main())
