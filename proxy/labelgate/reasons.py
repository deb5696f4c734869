"""Stable reasons of the errors the package's top-level modules raise (``config``,
``client``, ``quickstart``); each subpackage keeps its own in its ``reasons.py``.

Callers, logs and dashboards key on these strings, so they never change meaning; a reason
used by several packages means the same thing in each (``tests/test_reasons.py``).
"""

from __future__ import annotations

# The configuration can never work / the config file cannot be read (config.py, admin).
CONFIG_INVALID = "CONFIG_INVALID"
CONFIG_UNREADABLE = "CONFIG_UNREADABLE"

# make run (quickstart.py).
DEMO_BACKEND_EXITED = "DEMO_BACKEND_EXITED"
DEMO_BACKEND_TIMEOUT = "DEMO_BACKEND_TIMEOUT"
AUDIT_WRITER_FAILED = "AUDIT_WRITER_FAILED"

# labelgate infer and approvals from the terminal (client.py), the commands' options (cli.py).
BAD_IDS = "BAD_IDS"
ANSWER_INVALID = "ANSWER_INVALID"
APPROVAL_STILL_PENDING = "APPROVAL_STILL_PENDING"
INPUTS_FILE_INVALID = "INPUTS_FILE_INVALID"
INPUTS_FILE_UNREADABLE = "INPUTS_FILE_UNREADABLE"
INPUT_INVALID = "INPUT_INVALID"
INPUT_MISSING = "INPUT_MISSING"
INPUT_SHAPE_MISMATCH = "INPUT_SHAPE_MISMATCH"
INPUT_TYPE_MISMATCH = "INPUT_TYPE_MISMATCH"
INPUT_TYPE_UNSUPPORTED = "INPUT_TYPE_UNSUPPORTED"
INPUT_UNKNOWN = "INPUT_UNKNOWN"
NO_INPUTS = "NO_INPUTS"
OPTION_INVALID = "OPTION_INVALID"
REST_URL_INVALID = "REST_URL_INVALID"
SERVER_UNREACHABLE = "SERVER_UNREACHABLE"
TLS_FILE_UNREADABLE = "TLS_FILE_UNREADABLE"

# The native extension (native.py): a panic inside it refuses the call.
NATIVE_KERNEL_FAILED = "NATIVE_KERNEL_FAILED"
