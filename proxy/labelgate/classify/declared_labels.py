"""The labels an upstream declares for its outputs (``labelgate.labels`` parameters), read
off a ``ModelInferResponse`` before its outputs are classified (``classifier``).

Apart from the classifier since they come from the reply's parameters, not its contents:
they only add to what the catalog and the detectors say (``classifier.classify_outputs``),
and a value that is not a string of known labels refuses the reply (``UpstreamError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labelgate.classify import reasons
from labelgate.classify.labels import LABELS, is_label
from labelgate.errors import UpstreamError

BACKEND_LABELS_PARAMETER = "labelgate.labels"
BACKEND_LABELS_INVALID = reasons.BACKEND_LABELS_INVALID


def backend_labels(response: Any) -> dict[str, set[str]]:
    """Labels the backend declared, per output name, from a ``ModelInferResponse``.

    ``parameters["labelgate.labels"]`` is a comma-separated string on an output or on the
    response (then it applies to every output). A value that is not a string or names an
    unknown label is an ``UpstreamError``: guessing could under-label the data.
    """
    shared = _parse_labels(response.parameters, "the response")
    result: dict[str, set[str]] = {}
    for position, output in enumerate(response.outputs):
        # Named by position: an output's name is the upstream's text, and errors reach callers.
        labels = shared | _parse_labels(output.parameters, f"output #{position}")
        if labels:
            result[output.name] = labels
    return result


def _parse_labels(parameters: Mapping[str, Any], where: str) -> set[str]:
    if BACKEND_LABELS_PARAMETER not in parameters:
        return set()
    parameter = parameters[BACKEND_LABELS_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise UpstreamError(
            BACKEND_LABELS_INVALID,
            f"parameter '{BACKEND_LABELS_PARAMETER}' of {where} must be a string of comma-separated labels",
        )
    labels = {part.strip() for part in parameter.string_param.split(",") if part.strip()}
    unknown = [label for label in labels if not is_label(label)]
    if unknown:
        # The unknown names are not quoted: they are the upstream's text, and may be data.
        raise UpstreamError(
            BACKEND_LABELS_INVALID,
            f"parameter '{BACKEND_LABELS_PARAMETER}' of {where} names {len(unknown)} unknown label(s); "
            f"expected some of {list(LABELS)}",
        )
    return labels
