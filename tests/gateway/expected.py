"""Requests and the values the default policy must let through: from the demo data
(``labelgate.demo.data``), never from the gateway itself."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.demo.data import customer, note_kind
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import encode_inputs

CUSTOMER_OUTPUTS = (
    "customer_id",
    "segment",
    "name",
    "email",
    "risk_score",
    "ssn",
    "card_number",
    "notes",
    "account_secret",
)


def customer_request(
    ids: Sequence[int],
    outputs: Sequence[str] = (),
    *,
    raw: bool = True,
    model: str = "customer-profile",
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ``customer-profile`` request; ``raw`` picks the representation of inputs (and so outputs)."""
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    encode_inputs(request, [Tensor("customer_ids", "INT64", [len(ids)], list(ids))], raw=raw)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def partial(value: str, keep_last: int = 4) -> str:
    """What the ``partial`` strategy makes of a value (the default policy's analysts mask)."""
    if len(value) <= keep_last:
        return "*" * len(value)
    return "*" * (len(value) - keep_last) + value[-keep_last:]


IBAN_PATTERN = re.compile(r"\b[A-Z]{2}\d{2}[0-9]{10,30}\b")


def notes_secrets(customer_id: int) -> list[str]:
    """The confidential values hidden in a row's ``notes``: its SSN, card number or IBANs."""
    row = customer(customer_id)
    kind = note_kind(customer_id)
    if kind == "json":
        document = json.loads(row.notes)
        return [document["contact"]["ssn"], document["billing"]["iban"], document["billing"]["card_number"]]
    if kind == "ssn":
        return [row.ssn]
    if kind == "card":
        return [row.card_number]
    if kind == "iban":
        found = IBAN_PATTERN.findall(row.notes)
        assert found, f"no IBAN in the notes of customer {customer_id}"
        return found
    return []


def confidential_and_restricted(ids: Sequence[int]) -> list[str]:
    """Every confidential or restricted value the backend produces for these rows."""
    values: list[str] = []
    for customer_id in ids:
        row = customer(customer_id)
        values += [row.ssn, row.card_number, row.account_secret, *notes_secrets(customer_id)]
    return values


def analyst_notes(customer_id: int) -> str | dict[str, Any]:
    """``notes`` as an analyst must see it: SSN, card and IBAN spans partially masked, the rest
    (e-mail addresses too: they are internal) in clear. JSON notes come back as the parsed
    document with its nested values masked (the gateway may re-serialize the JSON)."""
    notes = customer(customer_id).notes
    if note_kind(customer_id) == "json":
        document = json.loads(notes)
        for section, key in (("contact", "ssn"), ("billing", "iban"), ("billing", "card_number")):
            document[section][key] = partial(document[section][key])
        return document
    for value in notes_secrets(customer_id):
        notes = notes.replace(value, partial(value))
    return notes


def column(name: str, ids: Sequence[int]) -> list[Any]:
    """A column of the demo data, as the backend returns it."""
    return [getattr(customer(i), name) for i in ids]
