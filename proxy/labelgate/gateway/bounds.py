"""Bounds checked before policy runs: what a caller asks for and what a reply classifies to
must stay small enough that deciding on it is cheap, whoever sent it. Pure.

Who is refused depends on who sent the excess: the caller's request is INVALID_ARGUMENT
(``check_target``, ``check_fields``), the upstream's reply an upstream error
(``check_reply_fields``), whose text names only the configured bound."""

from __future__ import annotations

from collections.abc import Sequence

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.calls import INPUT_RANK_KEPT, OUTPUTS_KEPT, Target
from labelgate.classify import Field
from labelgate.config import LimitSettings
from labelgate.errors import InvalidInput, UpstreamError
from labelgate.gateway import reasons
from labelgate.oip import reasons as oip_reasons


def check_inputs(count: int, longest_name_bytes: int, limits: LimitSettings) -> None:
    """An inference request's inputs: how many (``limits.max_inputs``) and the longest name's
    UTF-8 bytes (``limits.max_path_bytes``, as an output's name). Each input's name, datatype
    and shape is copied into every decision input, cache key, digest and record of the call."""
    if count > limits.max_inputs:
        raise InvalidInput(
            oip_reasons.TOO_MANY_INPUTS,
            f"the request has {count} inputs; at most {limits.max_inputs} (limits.max_inputs)",
        )
    if longest_name_bytes > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"an input name has {longest_name_bytes} bytes; at most {limits.max_path_bytes} "
            "(limits.max_path_bytes)",
        )


def check_request_inputs(request: pb.ModelInferRequest, limits: LimitSettings) -> None:
    """``check_inputs`` on a ``ModelInferRequest`` itself, before a ``Target`` is made of it
    (REST: as its body is parsed, where a refusal is recorded without the request's summary)."""
    check_inputs(len(request.inputs), _longest_name(request.inputs) if request.inputs else 0, limits)


def _longest_name(inputs: Sequence[pb.ModelInferRequest.InferInputTensor]) -> int:
    return max(len(tensor.name.encode("utf-8", "surrogatepass")) for tensor in inputs)


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
            f"the request names {_counted(len(outputs))} outputs; at most {limits.max_requested_outputs} "
            "(limits.max_requested_outputs)",
        )
    longest = max((len(name.encode("utf-8", "surrogatepass")) for name in outputs), default=0)
    if longest > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"a requested output name has {longest} bytes; at most {limits.max_path_bytes} "
            "(limits.max_path_bytes)",
        )
    # Counted and measured when the target was made (``calls.infer_target``).
    if target.inputs_malformed:
        raise InvalidInput(
            oip_reasons.MALFORMED_TENSOR,
            f"an input has more than {INPUT_RANK_KEPT} dimensions or a datatype the Open Inference "
            "Protocol does not name",
        )
    check_inputs(target.input_count, target.input_name_bytes, limits)


def _counted(outputs: int) -> str:
    # A target keeps one output past what any configuration allows (``calls.OUTPUTS_KEPT``).
    return str(outputs) if outputs <= OUTPUTS_KEPT else f"more than {OUTPUTS_KEPT}"


def _longest_path(fields: Sequence[Field]) -> int:
    return max((len(item.path.encode("utf-8", "surrogatepass")) for item in fields), default=0)


def check_fields(fields: Sequence[Field], limits: LimitSettings) -> None:
    """The request phase's fields: the caller's request, the caller's fault (INVALID_ARGUMENT).
    The counts are the caller's own choice, so its refusal may tell it them."""
    if len(fields) > limits.max_fields:
        raise InvalidInput(
            reasons.TOO_MANY_FIELDS,
            f"the request classifies to {len(fields)} fields; at most {limits.max_fields} "
            "(limits.max_fields)",
        )
    longest = _longest_path(fields)
    if longest > limits.max_path_bytes:
        raise InvalidInput(
            reasons.PATH_TOO_LONG,
            f"a field path has {longest} bytes; at most {limits.max_path_bytes} (limits.max_path_bytes)",
        )


def check_reply_fields(fields: Sequence[Field], limits: LimitSettings) -> None:
    """The response phase's fields: the upstream's reply, the upstream's fault (UNAVAILABLE /
    502), never the caller's. The text is fixed but for the configured bound: a count or a
    length the upstream chose, quoted to the caller, would carry whatever number it liked past
    the policy (a card's digits as a field count)."""
    if len(fields) > limits.max_fields:
        raise UpstreamError(
            reasons.UPSTREAM_TOO_MANY_FIELDS,
            f"the upstream's reply classifies to more than {limits.max_fields} fields (limits.max_fields)",
        )
    if _longest_path(fields) > limits.max_path_bytes:
        raise UpstreamError(
            reasons.UPSTREAM_PATH_TOO_LONG,
            f"the upstream's reply has a field path longer than {limits.max_path_bytes} bytes "
            "(limits.max_path_bytes)",
        )
