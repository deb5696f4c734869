"""What an inference reply's layout may leak: its outputs' names (``check_output_names``,
``names_detected``) and shapes (``check_output_shapes``), which the upstream chooses.

Apart from the classifier since they are not values: names travel where values never do (to
the caller as names, and into field paths, logs, audit records and decision inputs), and a
shape reaches the caller through any mask. So a detector firing in either refuses the reply
(``UpstreamError``) before its outputs are classified, rather than labelling a field.
``names_detected`` also reads the names of the models an index lists (``gateway``).
"""

from __future__ import annotations

from collections.abc import Sequence

from labelgate.classify import reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.hidden_values import hidden_by_folding
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.message_numbers import digit_runs
from labelgate.errors import UpstreamError
from labelgate.oip.tensor import Tensor

OUTPUT_NAME_DETECTED = reasons.OUTPUT_NAME_DETECTED
OUTPUT_SHAPE_DETECTED = reasons.OUTPUT_SHAPE_DETECTED
# Key spellings are kept per model; past this many models (names come from callers) the
# memo starts over.
MODEL_MEMO_SIZE = 1024

# How a caller prints a reply's output names together: run on, by a space, a tab (a TSV
# header), a hyphen, a comma or a line each. The price: names that are numbers may read as one
# value together (of 50 runs of four consecutive years, 8 read as a card and are refused).
_NAME_SEPARATORS = ("", " ", "\t", "-", ",", "\n")


def check_output_names(
    tensors: Sequence[Tensor], detectors: DetectorSet, clean: set[tuple[str, ...]] | None = None
) -> None:
    """Refuse a reply whose output names hold what a detector finds (``OUTPUT_NAME_DETECTED``).

    The upstream chooses its outputs' names, and they travel where values never do: to the
    caller as names, and into field paths, log lines, audit records and stored decision
    inputs. So they are scanned like JSON keys, by every detector, as written, folded
    (``folding``: full-width digits, zero-width characters) and with JSON escapes decoded,
    each alone and all of them joined in order, and a hit in any form fails the reply closed.
    ``clean`` remembers name sets that passed (a model answers with the same names call after
    call); past ``MODEL_MEMO_SIZE`` sets it starts over."""
    names = tuple(tensor.name for tensor in tensors)
    if clean is not None and names in clean:
        return
    found = names_detected(names, detectors)
    if not found and len(names) > 1:
        # A value split over names (``ssn 123``, ``45``, ``6789``) is whole where a caller
        # prints them together: read them in the reply's order, joined as shapes are.
        found = names_detected([separator.join(names) for separator in _NAME_SEPARATORS], detectors)
    if found:
        detector = min(found.values())
        # Neither the name nor its position in the reply is quoted: the name is the data.
        raise UpstreamError(
            OUTPUT_NAME_DETECTED, f"an output's name holds what the {detector} detector finds"
        )
    if clean is not None:
        if len(clean) >= MODEL_MEMO_SIZE:
            clean.clear()
        clean.add(names)


def names_detected(names: Sequence[str], detectors: DetectorSet) -> dict[int, str]:
    """For each name that holds what a detector finds, as written, folded or with its escapes
    decoded (what a caller's terminal or JSON reader shows), its index and the first such
    detector by name. Names an upstream chose (outputs, the models an index lists) travel
    where values never do: into field paths, decision inputs, logs and records."""
    encoded = [name.encode("utf-8", "surrogatepass") for name in names]
    found = detectors.scan_each(encoded)
    for index, hits in hidden_by_folding(encoded, detectors, found).items():
        found.setdefault(index, []).extend(hits)
    if any(map(may_escape, encoded)):
        for index, hits in hidden_by_escapes(encoded, detectors).items():
            found.setdefault(index, []).extend(hits)
    return {index: min(hit.detector for hit in hits) for index, hits in found.items() if hits}


def check_output_shapes(tensors: Sequence[Tensor], detectors: DetectorSet) -> None:
    """Refuse a reply whose output shapes, read as digits, hold what a detector finds
    (``OUTPUT_SHAPE_DETECTED``). A shape is the upstream's choice as much as a name is: with
    dimensions of 1 anywhere (``[4, 1, 1, ..., 1]`` of four elements reads 4111111111111111)
    or a factorisation of the element count (``[123, 45, 6789]``), it carries digits to the
    caller through any mask, since masks change values, never the layout. The dimensions are
    read run together and joined by a space, a hyphen and a comma (how a caller prints them:
    ``message_numbers.digit_runs``, as a message's repeated integers are read)."""
    forms = [run for tensor in tensors for run in digit_runs(tensor.shape)]
    if not forms:
        return
    found = detectors.scan_each(forms)
    if found:
        detector = min(hit.detector for hits in found.values() for hit in hits)
        raise UpstreamError(
            OUTPUT_SHAPE_DETECTED, f"an output's shape holds what the {detector} detector finds"
        )
