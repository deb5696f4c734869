"""Stage ceilings: what a gateway would cost per call if one stage cost nothing.

    .venv/bin/python -m bench.ab --ceiling response-free [--typed-floor] [--concurrency 32]

A target's miss says how far off it is, not where it can be closed. A ceiling arm answers
that: its gateway runs the real pipeline with one stage made free, so its CPU per call is
the best any work on that stage alone could reach, measured in the same run as the floor.

- ``response-free``: everything ``Pipeline.release_inference`` does after the upstream's
  reply (decode, classify, parameters, enforce, encode) is done once per model and reply
  shape, then reused; each later call still takes the response phase's real decision, with
  the first call's fields (a cache hit, as on the full path). What remains is the server,
  authentication, the request phase, the upstream call, the decisions and the record: the
  part no native response path can make cheaper.

Measurement only, for a backend that answers every call alike (the bench's demo backend
does); it is installed in the gateway process by ``launcher`` and is never imported by
``labelgate``. The first call of each shape runs the real path, so ``bench.stack.verify``
still sees the policy's masks applied.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelgate.gateway.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
RESPONSE_FREE = "response-free"
CEILINGS = (RESPONSE_FREE,)

# The response phase's fields of the call in this task: what the reused reply was decided on.
_RESPONSE_FIELDS: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "response_fields", default=None
)


def launcher(ceiling: str) -> str:
    """``python -c`` code that installs ``ceiling`` and then runs the ``labelgate`` command."""
    if ceiling not in CEILINGS:
        raise ValueError(f"unknown ceiling {ceiling!r}; expected one of {list(CEILINGS)}")
    return f"import bench.ceilings as c; c.install({ceiling!r}); from labelgate.cli import app; app()"


def ceiling_command(
    ceiling: str, *args: str, labelgate_path: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The ``labelgate`` command line with ``ceiling`` installed, and the environment it needs:
    ``labelgate`` from ``labelgate_path`` (a tree's ``proxy/``; default: this environment's
    ``PYTHONPATH``), ``bench`` from this checkout."""
    first = labelgate_path if labelgate_path is not None else os.environ.get("PYTHONPATH")
    paths = [path for path in (first, str(ROOT)) if path]
    return [sys.executable, "-c", launcher(ceiling), *args], {"PYTHONPATH": os.pathsep.join(paths)}


def install(ceiling: str) -> Callable[[], None]:
    """Patch ``Pipeline`` for ``ceiling`` in this process; returns the undo."""
    if ceiling != RESPONSE_FREE:
        raise ValueError(f"unknown ceiling {ceiling!r}; expected one of {list(CEILINGS)}")
    release, decide = Pipeline.release_inference, Pipeline.decide
    Pipeline.release_inference = _reused(release)  # type: ignore[method-assign]
    Pipeline.decide = _noting_response_fields(decide)  # type: ignore[method-assign]

    def undo() -> None:
        Pipeline.release_inference = release  # type: ignore[method-assign]
        Pipeline.decide = decide  # type: ignore[method-assign]

    return undo


def _noting_response_fields(decide: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(decide)
    async def noting(
        self: Pipeline, call: Any, subject: Any, target: Any, phase: str, fields: Any, outcome: Any
    ) -> Any:
        if phase == "response":
            _RESPONSE_FIELDS.set(fields)
        return await decide(self, call, subject, target, phase, fields, outcome)

    return noting


def _reused(release: Callable[..., Any]) -> Callable[..., Any]:
    # What one reply is reused for: the same model, outputs asked for, caller and reply shape.
    Shape = tuple[str, tuple[str, ...], str, tuple[str, ...], tuple[int, ...]]
    # -> (the response phase's fields, the reply, outcome.masked)
    done: dict[Shape, tuple[list[Any], Any, Any]] = {}

    @functools.wraps(release)
    async def reused(
        self: Pipeline, call: Any, subject: Any, target: Any, response: Any, outcome: Any, **kwargs: Any
    ) -> Any:
        if kwargs:  # a streamed reply (decoded tensors handed in): always the real path
            return await release(self, call, subject, target, response, outcome, **kwargs)
        shape = (
            target.model,
            tuple(target.requested_outputs),
            subject.id,
            tuple(subject.groups),
            tuple(map(len, response.raw_output_contents)),
        )
        found = done.get(shape)
        if found is None:
            _RESPONSE_FIELDS.set(None)
            reply = await release(self, call, subject, target, response, outcome)
            fields = _RESPONSE_FIELDS.get()
            if fields is None:
                raise RuntimeError("the response phase was not decided: nothing to reuse")
            done[shape] = (fields, reply, outcome.masked)
            return reply
        fields, reply, masked = found
        await self.decide(call, subject, target, "response", fields, outcome)
        outcome.masked = masked
        outcome.delivered = reply
        return reply

    return reused
