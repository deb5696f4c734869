"""Bounds checked before policy runs: what a caller asks for and what a reply classifies to
must stay small enough that deciding on it is cheap, whoever sent it. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate.calls import Target
from labelgate.classify import Field
from labelgate.config import LimitSettings
from labelgate.errors import InvalidInput
from labelgate.gateway import reasons


def check_target(target: Target, limits: LimitSettings) -> None:
    # A model name is a path's first part, and every record of the call holds it.
    model_bytes = len(target.model.encode("utf-8", "surrogatepass"))
    if model_bytes > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"the model name has {model_bytes} bytes; at most {limits.max_path_bytes} "
            "(limits.max_path_bytes)",
        )
    outputs = target.requested_outputs
    if len(outputs) > limits.max_requested_outputs:
        raise InvalidInput(
            reasons.TOO_MANY_OUTPUTS,
            f"the request names {len(outputs)} outputs; at most {limits.max_requested_outputs} "
            "(limits.max_requested_outputs)",
        )
    longest = max((len(name.encode("utf-8", "surrogatepass")) for name in outputs), default=0)
    if longest > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"a requested output name has {longest} bytes; at most {limits.max_path_bytes} "
            "(limits.max_path_bytes)",
        )


def check_fields(fields: Sequence[Field], limits: LimitSettings) -> None:
    if len(fields) > limits.max_fields:
        raise InvalidInput(
            reasons.TOO_MANY_FIELDS,
            f"the reply classifies to {len(fields)} fields; at most {limits.max_fields} (limits.max_fields)",
        )
    longest = max((len(item.path.encode("utf-8", "surrogatepass")) for item in fields), default=0)
    if longest > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"a field path has {longest} bytes; at most {limits.max_path_bytes} (limits.max_path_bytes)",
        )
