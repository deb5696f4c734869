"""Replies the gateway builds itself, from parts it classified and decided: pure.

Nothing of an upstream message object is forwarded. A ``ModelInferResponse`` is made new:
model name, version and id are the caller's own request values; outputs are the decided
tensors; parameters are those released by configuration and not masked by policy, plus
``labelgate.masked`` on every output the gateway masked (a masked FP32 is ``0.0``, and a
client must be able to tell). Unknown fields and extensions of the upstream's message
cannot survive, because no field of it is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

from labelgate._proto.inference import open_inference_pb2 as pb

# Release strips extensions (the pipeline's last step for a routed reply); an Any's contents
# lose theirs when unpacked (``classify.messages.unpacked_any``).
from labelgate.classify.messages import without_extensions as without_extensions
from labelgate.classify.parameters import Parameter, ParameterClassification
from labelgate.enforce import reasons
from labelgate.enforce.strategies import Masker, MaskIndex, replace_spans
from labelgate.oip import tensors as oip
from labelgate.oip.tensor import Tensor

MASKED_PARAMETER = "labelgate.masked"
# The marker of an output masked only in parts (spans of text, nested JSON keys).
MASKED_IN_PARTS = "spans"
STREAM_ERROR_REASON = reasons.UPSTREAM_STREAM_ERROR
STREAM_ERROR_TEXT = f"the upstream reported an error ({STREAM_ERROR_REASON})"

_INT64_MAX = 2**63 - 1


def masked_markers(
    original: Sequence[Tensor], released: Sequence[Tensor], index: MaskIndex
) -> dict[str, str]:
    """Output name -> the ``labelgate.masked`` value, for outputs enforcement changed.

    ``apply_masks`` hands back an untouched tensor as the same object, so identity tells
    what it changed."""
    markers: dict[str, str] = {}
    for before, after in zip(original, released, strict=True):
        if after is before:
            continue
        whole = index.lookup(oip_path(before.name))
        markers[before.name] = whole.strategy if whole is not None else MASKED_IN_PARTS
    return markers


def oip_path(name: str) -> str:
    return f"outputs.{name}"


def decided_parameters(
    classified: ParameterClassification, index: MaskIndex, masker: Masker | None
) -> list[Parameter]:
    """The released parameters policy lets through: a mask on a parameter drops it; masks
    on detector spans rewrite its text (or drop a number, whose type cannot carry a mask)."""
    kept: list[Parameter] = []
    for parameter in classified.parameters:
        path = parameter.path
        if index.lookup(path) is not None:
            continue
        hits = classified.spans.get(path, [])
        spans = [
            (hit.start, hit.end, mask)
            for hit in hits
            if (mask := index.lookup(f"{path}{{{hit.detector}}}")) is not None
        ]
        if not spans:
            kept.append(parameter)
        elif isinstance(parameter.value, str) and masker is not None:
            rewritten = replace_spans(parameter.value.encode("utf-8", "surrogatepass"), spans, masker)
            if rewritten is not None:
                text = rewritten.decode("utf-8", "replace")
                kept.append(Parameter(parameter.output, parameter.name, text))
    return kept


def set_parameter(target: pb.InferParameter, value: bool | int | float | str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if value > _INT64_MAX:
            target.uint64_param = value
        else:
            target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = value


def infer_response(
    *,
    model: str,
    model_version: str,
    caller_id: str,
    tensors: Sequence[Tensor],
    raw: bool,
    parameters: Sequence[Parameter] = (),
    markers: dict[str, str] | None = None,
) -> pb.ModelInferResponse:
    """A new ``ModelInferResponse`` holding exactly the decided parts."""
    reply = pb.ModelInferResponse(model_name=model, model_version=model_version, id=caller_id)
    oip.encode_outputs(reply, tensors, raw=raw)
    outputs = {output.name: output for output in reply.outputs}
    for parameter in parameters:
        if not parameter.output:
            set_parameter(reply.parameters[parameter.name], parameter.value)
        elif parameter.output in outputs:
            set_parameter(outputs[parameter.output].parameters[parameter.name], parameter.value)
    for name, marker in (markers or {}).items():
        if name in outputs:
            outputs[name].parameters[MASKED_PARAMETER].string_param = marker
    return reply


# The fields infer_response sets; raw_output_contents has the highest number, so its
# entries written after the others are the bytes upb would write (fields in number order).
_RESPONSE_FIELDS = frozenset(
    {"model_name", "model_version", "id", "parameters", "outputs", "raw_output_contents"}
)
# Below this, upb's own buffer is as cheap as copying the small part into a new message.
_JOIN_FROM_BYTES = 256 * 1024
_RAW_OUTPUT_TAG = bytes([pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER << 3 | 2])  # length-delimited


def serialized_infer_response(reply: pb.ModelInferResponse) -> bytes:
    """``reply.SerializeToString(deterministic=True)``; a large reply's raw outputs joined in one copy.

    upb grows its output buffer step by step and copies the raw outputs into each new one,
    in fresh pages: for a 2.5 MB reply of 10,000 rows that is most of a millisecond's
    worth of page faults per megabyte, in the gRPC server's send. Here only the small part
    (names, shapes, parameters) goes through upb; the raw outputs are appended as
    length-delimited entries of their field. A message holding any other field (one this
    module never sets) is serialized by upb as it is; unknown fields, which a reply built
    here cannot hold, are not written."""
    raw = list(reply.raw_output_contents)  # each a copy out of upb: the join's parts
    if sum(map(len, raw)) < _JOIN_FROM_BYTES or any(
        field.name not in _RESPONSE_FIELDS for field, _ in reply.ListFields()
    ):
        # Deterministic: map entries (parameters) in key order, so both routes write the same
        # bytes for the same reply (upb's default order follows its hash tables).
        return reply.SerializeToString(deterministic=True)
    head = pb.ModelInferResponse(model_name=reply.model_name, model_version=reply.model_version, id=reply.id)
    for name, value in reply.parameters.items():
        head.parameters[name].CopyFrom(value)
    head.outputs.extend(reply.outputs)
    parts = [head.SerializeToString(deterministic=True)]
    for content in raw:
        parts += (_RAW_OUTPUT_TAG, _varint(len(content)), content)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def stream_error(caller_id: str, model: str) -> pb.ModelStreamInferResponse:
    """What a caller receives for an upstream's streamed error: a stable text, its own id."""
    return pb.ModelStreamInferResponse(
        error_message=STREAM_ERROR_TEXT,
        infer_response=pb.ModelInferResponse(model_name=model, id=caller_id),
    )
