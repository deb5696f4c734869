"""Reply parameters: only released names are read, of the types they were released with, each
labelled and scanned."""

from __future__ import annotations

import pytest

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.parameters import PARAMETER_TYPES, classify_parameters, released_parameters
from labelgate.config import ReleasedParameter

RELEASED = {"triton_final_response": "public", "note": "internal"}


def response() -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["triton_final_response"].bool_param = True
    reply.parameters["note"].string_param = "ssn 123-45-6789 here"
    reply.parameters["secret"].string_param = "sk_live_never"
    reply.parameters["labelgate.labels"].string_param = "public"
    output = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    output.parameters["note"].int64_param = 4111111111111111
    output.parameters["other"].string_param = "dropped"
    return reply


def test_only_released_names_are_read() -> None:
    found = released_parameters(response(), RELEASED)
    assert [(p.output, p.name) for p in found] == [
        ("", "note"),
        ("", "triton_final_response"),
        ("text", "note"),
    ]


def test_released_parameters_are_labelled_and_scanned() -> None:
    result = classify_parameters(released_parameters(response(), RELEASED), RELEASED, DetectorSet.default())
    labels = {field.path: set(field.labels) for field in result.fields}
    assert labels["parameters.triton_final_response"] == {"public"}
    assert labels["parameters.note"] == {"internal"}
    assert labels["parameters.note{us_ssn}"] == {"confidential"}
    assert labels["outputs.text.parameters.note{credit_card}"] == {"confidential"}
    assert [hit.detector for hit in result.spans["parameters.note"]] == ["us_ssn"]
    assert not any("secret" in path or "other" in path for path in labels)


def test_a_double_holding_a_card_and_an_escaped_card_are_found() -> None:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].double_param = 4111111111111111.0
    output = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    escaped = "card \\u0034111111111111111"  # a backslash-u escape: the card, decoded
    output.parameters["note"].string_param = escaped
    result = classify_parameters(released_parameters(reply, RELEASED), RELEASED, DetectorSet.default())
    labels = {field.path: set(field.labels) for field in result.fields}
    assert labels["parameters.note{credit_card}"] == {"confidential"}
    assert labels["outputs.text.parameters.note{credit_card}"] == {"confidential"}
    # Found only once decoded: the span covers the whole value, as for output text.
    [hit] = result.spans["outputs.text.parameters.note"]
    assert (hit.start, hit.end) == (0, len(escaped.encode()))


def test_parameters_hiding_a_card_in_character_references_or_newer_digits_are_found() -> None:
    # Found by review (rev-tensors): both reached the caller unmasked.
    references = "card " + "".join(f"&#{ord(digit)};" for digit in "4111111111111111")
    kawi = "card " + "4111111111111111".translate({ord(d): 0x11F50 + int(d) for d in "0123456789"})
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].string_param = references
    output = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    output.parameters["note"].string_param = kawi
    result = classify_parameters(released_parameters(reply, RELEASED), RELEASED, DetectorSet.default())
    labels = {field.path: set(field.labels) for field in result.fields}
    assert labels["parameters.note{credit_card}"] == {"confidential"}
    assert labels["outputs.text.parameters.note{credit_card}"] == {"confidential"}
    [hit] = result.spans["parameters.note"]
    assert (hit.start, hit.end) == (0, len(references)), "found only decoded: the whole value"


def test_parameters_hiding_a_value_in_markup_are_found() -> None:
    # Found by review (rev-rest-render 1): a page or a Markdown renderer shows the values.
    tags = "card 4111<!---->1111<!---->1111<!---->1111"
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["note"].string_param = tags
    output = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    output.parameters["note"].string_param = "ssn 123\\-45\\-6789"
    result = classify_parameters(released_parameters(reply, RELEASED), RELEASED, DetectorSet.default())
    labels = {field.path: set(field.labels) for field in result.fields}
    assert labels["parameters.note{credit_card}"] == {"confidential"}
    assert labels["outputs.text.parameters.note{us_ssn}"] == {"confidential"}
    [hit] = result.spans["parameters.note"]
    assert (hit.start, hit.end) == (0, len(tags)), "found only rendered: the whole value"


# -- a released name carries only the types it was released with -------------------------------

TYPED = {
    "triton_final_response": ReleasedParameter(label="public", types=["bool"]),
    "score": ReleasedParameter(label="internal", types=["double"]),
    "count": ReleasedParameter(label="internal", types=["int64", "uint64"]),
    "any": "internal",
}
PROFILE = "Jane Doe lives at 42 Elm Street, diagnosis HIV+"  # no detector finds it


def typed_reply() -> pb.ModelInferResponse:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["triton_final_response"].string_param = PROFILE
    reply.parameters["score"].int64_param = 1234
    reply.parameters["count"].uint64_param = 2**64 - 1
    reply.parameters["any"].string_param = "kept"
    output = reply.outputs.add(name="text", datatype="BYTES", shape=[1])
    output.parameters["triton_final_response"].bool_param = True
    output.parameters["score"].double_param = 0.5
    output.parameters["count"].string_param = PROFILE
    output.parameters["any"].double_param = 2.5
    return reply


def test_a_released_name_holding_a_value_of_another_type_is_dropped_unseen() -> None:
    # Found by review: triton_final_response was released whatever its type, so an upstream's
    # string there (a name and a diagnosis: no detector's) reached every caller as public.
    found = released_parameters(typed_reply(), TYPED)
    assert [(p.output, p.name, p.value) for p in found] == [
        ("", "any", "kept"),
        ("", "count", 2**64 - 1),
        ("text", "any", 2.5),
        ("text", "score", 0.5),
        ("text", "triton_final_response", True),
    ]
    result = classify_parameters(found, TYPED, DetectorSet.default())
    assert {field.path for field in result.fields} == {
        "parameters.any",
        "parameters.count",
        "outputs.text.parameters.any",
        "outputs.text.parameters.score",
        "outputs.text.parameters.triton_final_response",
    }
    assert {field.path: set(field.labels) for field in result.fields}[
        "outputs.text.parameters.triton_final_response"
    ] == {"public"}


@pytest.mark.parametrize("kind", PARAMETER_TYPES)
def test_each_type_passes_only_where_it_was_released(kind: str) -> None:
    values = {"bool": True, "int64": -7, "uint64": 7, "double": 0.25, "string": "text"}
    reply = pb.ModelInferResponse(model_name="m")
    for name in PARAMETER_TYPES:
        setattr(reply.parameters[name], f"{name}_param", values[name])
    released = {name: ReleasedParameter(label="public", types=[kind]) for name in PARAMETER_TYPES}
    found = released_parameters(reply, released)
    assert [(p.name, p.value) for p in found] == [(kind, values[kind])]


@pytest.mark.parametrize("kind", [kind for kind in PARAMETER_TYPES if kind != "bool"])
def test_the_final_flag_released_in_the_short_form_is_still_a_bool_only(kind: str) -> None:
    """Review, eighth round: re-listed beside another name in the short form (as the old default
    was written), ``triton_final_response`` released text again on unary replies."""
    values = {"int64": 7, "uint64": 7, "double": 0.25, "string": "Jane Doe, diagnosis HIV+"}
    reply = pb.ModelInferResponse(model_name="m")
    setattr(reply.parameters["triton_final_response"], f"{kind}_param", values[kind])
    reply.parameters["sequence_id"].string_param = "s-1"
    released = {"triton_final_response": "public", "sequence_id": "internal"}
    assert [(p.name, p.value) for p in released_parameters(reply, released)] == [("sequence_id", "s-1")]
    reply.parameters["triton_final_response"].bool_param = True
    assert [p.name for p in released_parameters(reply, released)] == ["sequence_id", "triton_final_response"]


def test_a_released_name_without_a_value_is_dropped() -> None:
    reply = pb.ModelInferResponse(model_name="m")
    reply.parameters["any"].SetInParent()
    assert released_parameters(reply, TYPED) == []
