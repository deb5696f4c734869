"""The demo backend's models: what they take, what they return, how they compute it.

Pure functions over ``labelgate.oip.tensor.Tensor``; the gRPC side lives in
``labelgate.demo.backend``. Every model takes rank-1 inputs of N elements and returns
rank-1 outputs of N elements (metadata shape ``[-1]``).

- ``customer-profile``: INT64 ``customer_ids`` -> one synthetic customer row per id
  (``labelgate.demo.data``), one output per column.
- ``sentiment``: BYTES ``text`` -> ``label`` (BYTES: positive/negative/neutral) and
  ``score`` (FP32 share of positive words, 0.5 when there are none), from fixed word lists.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labelgate.demo import reasons
from labelgate.demo.data import as_fp32, customer
from labelgate.errors import InvalidInput
from labelgate.oip.tensor import Tensor

# The most rows one call may ask for: keeps a single request from pinning the demo backend.
MAX_ROWS = 100_000

PLATFORM = "labelgate-demo"
VERSION = "1"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str


@dataclass(frozen=True)
class DemoModel:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # (inputs by name, validated; output names to produce, in order) -> those outputs.
    infer: Callable[[dict[str, Tensor], Sequence[str]], list[Tensor]]

    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]


def validate_inputs(model: DemoModel, tensors: Sequence[Tensor]) -> dict[str, Tensor]:
    """Check the inputs against the model's signature; every problem gets a clear message."""
    by_name = {tensor.name: tensor for tensor in tensors}
    expected = {spec.name: spec for spec in model.inputs}
    signature = ", ".join(f"{s.name} ({s.datatype} [N])" for s in model.inputs) or "none"
    for name in by_name:
        if name not in expected:
            raise InvalidInput(
                reasons.UNKNOWN_INPUT, f"model '{model.name}' has no input '{name}'; its inputs: {signature}"
            )
    lengths = set()
    for spec in model.inputs:
        tensor = by_name.get(spec.name)
        if tensor is None:
            raise InvalidInput(
                reasons.MISSING_INPUT,
                f"model '{model.name}' needs input '{spec.name}' ({spec.datatype}, shape [N])",
            )
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                reasons.WRONG_DATATYPE, f"input '{spec.name}' must be {spec.datatype}, got {tensor.datatype}"
            )
        if len(tensor.shape) != 1:
            raise InvalidInput(
                reasons.WRONG_SHAPE, f"input '{spec.name}' must have shape [N], got {tensor.shape}"
            )
        if tensor.shape[0] > MAX_ROWS:
            raise InvalidInput(
                reasons.TOO_MANY_ROWS,
                f"input '{spec.name}' has {tensor.shape[0]} elements; at most {MAX_ROWS} per call",
            )
        lengths.add(tensor.shape[0])
    if len(lengths) > 1:
        raise InvalidInput(
            reasons.WRONG_SHAPE, f"model '{model.name}' needs all inputs to have the same length"
        )
    return by_name


# --- customer-profile ----------------------------------------------------------------

_CUSTOMER_OUTPUTS = (
    TensorSpec("customer_id", "INT64"),
    TensorSpec("segment", "BYTES"),
    TensorSpec("name", "BYTES"),
    TensorSpec("email", "BYTES"),
    TensorSpec("risk_score", "FP32"),
    TensorSpec("ssn", "BYTES"),
    TensorSpec("card_number", "BYTES"),
    TensorSpec("notes", "BYTES"),
    TensorSpec("account_secret", "BYTES"),
)
_CUSTOMER_DATATYPES = {spec.name: spec.datatype for spec in _CUSTOMER_OUTPUTS}


@functools.lru_cache(maxsize=65536)
def _customer_columns(customer_id: int) -> dict[str, int | float | bytes]:
    """One row as tensor element values, encoded once per id (benchmarks repeat ids)."""
    row = customer(customer_id)
    return {
        name: value.encode() if isinstance(value, str) else value
        for name, value in vars(row).items()
        if name in _CUSTOMER_DATATYPES
    }


def _customer_profile(inputs: dict[str, Tensor], outputs: Sequence[str]) -> list[Tensor]:
    ids = inputs["customer_ids"].values
    negative = [i for i in ids if i < 0]
    if negative:
        raise InvalidInput(reasons.BAD_VALUE, f"customer ids are non-negative; got {negative[0]}")
    rows = [_customer_columns(i) for i in ids]
    return [
        Tensor(name, _CUSTOMER_DATATYPES[name], [len(rows)], [row[name] for row in rows]) for name in outputs
    ]


CUSTOMER_PROFILE = DemoModel(
    name="customer-profile",
    inputs=(TensorSpec("customer_ids", "INT64"),),
    outputs=_CUSTOMER_OUTPUTS,
    infer=_customer_profile,
)


# --- sentiment -------------------------------------------------------------------------

# fmt: off
POSITIVE_WORDS = frozenset((
    "good", "great", "excellent", "love", "loved", "happy", "fast", "helpful", "amazing", "nice",
    "thanks", "thank", "pleased", "friendly",
))
NEGATIVE_WORDS = frozenset((
    "bad", "terrible", "awful", "hate", "hated", "slow", "broken", "angry", "poor", "worst", "rude",
    "disappointed",
))
# fmt: on
_WORD = re.compile(r"[a-z']+")


def sentiment_of(text: str) -> tuple[str, float]:
    """(label, score): score is the share of positive words among the opinion words."""
    words = _WORD.findall(text.lower())
    positive = sum(word in POSITIVE_WORDS for word in words)
    negative = sum(word in NEGATIVE_WORDS for word in words)
    if positive + negative == 0:
        return "neutral", 0.5
    score = as_fp32(positive / (positive + negative))
    label = "positive" if score > 0.5 else "negative" if score < 0.5 else "neutral"
    return label, score


def _sentiment(inputs: dict[str, Tensor], outputs: Sequence[str]) -> list[Tensor]:
    results = [sentiment_of(text.decode("utf-8", errors="replace")) for text in inputs["text"].values]
    columns = {
        "label": Tensor("label", "BYTES", [len(results)], [label.encode() for label, _ in results]),
        "score": Tensor("score", "FP32", [len(results)], [score for _, score in results]),
    }
    return [columns[name] for name in outputs]


SENTIMENT = DemoModel(
    name="sentiment",
    inputs=(TensorSpec("text", "BYTES"),),
    outputs=(TensorSpec("label", "BYTES"), TensorSpec("score", "FP32")),
    infer=_sentiment,
)
