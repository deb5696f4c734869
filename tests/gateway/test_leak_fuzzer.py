"""The leak fuzzer: random misbehaving upstream replies, with values planted in every place an
Open Inference Protocol message can carry bytes, go through a real gateway (``labelgate
serve`` with a durable audit writer and session recording, in front of ``planted_upstream.py``).
Nothing planted may reach the caller, nor the audit log, the logs or the recordings.

The oracle is sound because of where values are planted (the default policy, ``rego/``):

- detector-recognizable values (valid SSNs, Luhn-valid card numbers, valid IBANs, standing
  alone) go anywhere: they are confidential, which neither persona used here sees in clear
  (no group: redacted; analysts: the last 4 characters); so do credentials (PEM private
  keys, JWTs, AWS key ids, GitHub tokens: ``secret``, restricted, emptied for every persona),
  but where a header carries them (metadata), whose values hold no line breaks: no PEM key.
  A key's base64 lines are planted one by one (its markers are no secret), in free text or
  one line per element of a BYTES output (a "lines" column, its END marker sometimes left
  out: every later element is then masked);
- random tokens no detector recognises go only where the persona may not see them in clear:
  side doors (ids, model name and version, parameters, unknown fields, metadata, error
  texts, stream ``error_message``) and outputs whose label hides them from the persona:
  a model the catalog does not know (the default label, ``internal``) for callers without
  groups, or outputs the backend labels confidential or restricted. Backend labels are a
  source like the catalog: one that labels an uncatalogued output ``public`` makes it public.
  The keys of a JSON element count as part of its value.
- detector values stand alone (a word after each, a space at each end of a streamed
  element, whose deltas the gateway reads as one text), so both a gateway that reads a
  stream's deltas one by one and one that joins them must find every one.

So any planted value the caller receives is a leak, whatever the gateway decided to do with
the reply (release, mask, refuse). What the caller receives is every byte: serialized
messages, status message and details, initial and trailing metadata; JSON escapes are
decoded, and streamed BYTES deltas are concatenated per request, output and element, the way
a client reassembles decoupled replies. At rest, no planted value may appear at all.

The test also calls the upstream directly with every scenario: each planted value must be
visible there, or the scenario planted it nowhere and proves nothing.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import random
import re
import signal
import string
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stdnum.iban
import stdnum.luhn
import stdnum.us.ssn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.oip.tensors import decode_outputs
from tests.classify.secret_values import PEM_LABELS, TOKEN_FORMS, jwt_value, pem_value
from tests.gateway.harness import (
    AuditedStack,
    Received,
    TokenIssuer,
    capture_stream,
    capture_unary,
    files_at_rest,
    run_audited_gateway,
    run_planted_upstream,
)
from tests.gateway.planted_upstream import element_bytes, plant_request, unknown

EXAMPLES = 200
PUBLIC_MODEL = "sentiment"  # the default catalog: outputs.* public
UNKNOWN_MODEL = "fuzz-uncatalogued"  # not in the catalog: internal
# The catalog's labels for every output of each model (none: the default label applies).
CATALOG_LABELS: dict[str, frozenset[str]] = {PUBLIC_MODEL: frozenset({"public"}), UNKNOWN_MODEL: frozenset()}
DEFAULT_LABEL = "internal"
LABELS = ("public", "internal", "confidential", "restricted")
RANK = {label: rank for rank, label in enumerate(LABELS)}


def label_of(labels: frozenset[str] | set[str]) -> str:
    """An output's label: the most sensitive its sources (catalog, backend) give, or the
    default when no source labels it. A backend may label an uncatalogued output public."""
    return max(labels, key=RANK.__getitem__) if labels else DEFAULT_LABEL


# What each persona sees in clear under the default policy (rego/labelgate/tables/data.json).
CLEAR = {"no-group": {"public"}, "analyst": {"public", "internal"}}
OUTPUT_TYPES = {"text": "BYTES", "doc": "BYTES", "label": "BYTES", "score": "FP32", "count": "INT64"}
WORDS = ("please", "note", "call", "about", "the", "order", "today", "thanks", "refund", "soon", "ok")
KEYS = ("note", "status", "items", "contact", "a", "b")
ODD_KEYS = ("", "a.b", "x[]", "{k}", " ", "ключ", "k" * 40)
UNKNOWN_NUMBERS = (15, 99, 1000, 2047, 536870911)
ERROR_CODES = (
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "INTERNAL",
    "UNKNOWN",
    "DATA_LOSS",
    "UNAVAILABLE",
)
_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")


# --- planted values -----------------------------------------------------------------------------
# Hypothesis draws the structure (what goes where, in which form); the values themselves come
# from a counter-seeded generator, so every planted value is unique in the run and a leak
# names the one place it was planted.


def grouped(number: str, separator: str) -> str:
    return separator.join(number[i : i + 4] for i in range(0, len(number), 4))


def make_ssn(rng: random.Random) -> str:
    while True:
        area = rng.choice([a for a in range(1, 900) if a != 666])
        value = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if stdnum.us.ssn.is_valid(value):
            return value


def make_card(rng: random.Random, separator: str = "") -> str:
    prefix = rng.choice(["4", "51", "52", "53", "54", "55"])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(15 - len(prefix)))
    number = body + stdnum.luhn.calc_check_digit(body)
    assert stdnum.luhn.is_valid(number)
    return grouped(number, separator) if separator else number


def make_iban(rng: random.Random, separator: str = "") -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    number = "DE" + stdnum.iban.calc_check_digits("DE00" + bban) + bban
    assert stdnum.iban.is_valid(number)
    return grouped(number, separator) if separator else number


DETECTABLE_FORMS = ("ssn", "card", "card ", "card-", "iban", "iban ")
# Digits and hyphens as full-width forms: what only the folded text shows (``folding.py``).
FULL_WIDTH = str.maketrans("0123456789-", "０１２３４５６７８９－")
CREDENTIAL_FORMS = ("pem", "jwt", "aws", "github")


@dataclass(frozen=True)
class Planted:
    value: str
    where: str

    def forms(self) -> list[str]:
        """The value, and its form without separators when that is long (grouped cards and
        IBANs): a gateway that strips separators still leaks."""
        compact = re.sub(r"[\s-]", "", self.value)
        forms = [self.value] + ([compact] if compact != self.value and len(compact) >= 12 else [])
        # Written in full-width digits (``Planter.decoyed``), a value a reader still reads.
        return forms + [form.translate(FULL_WIDTH) for form in forms if form.translate(FULL_WIDTH) != form]


def readable(data: bytes) -> bytes:
    """``data`` and the same bytes with JSON ``\\uXXXX`` escapes decoded."""
    decoded = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "replace"), data)
    return data + b"\n" + decoded


def stream_texts(received: Received) -> bytes:
    """Streamed BYTES elements concatenated per (reply id, output, element), in arrival order."""
    joined: dict[tuple[str, str, int], bytes] = collections.defaultdict(bytes)
    for message in received.messages:
        try:
            response = pb.ModelStreamInferResponse.FromString(message).infer_response
            tensors = decode_outputs(response)
        except Exception:  # noqa: S112 - a message that does not decode is scanned as bytes only
            continue
        for tensor in tensors:
            if tensor.datatype == "BYTES":
                for index, value in enumerate(tensor.values):
                    joined[response.id, tensor.name, index] += bytes(value)
    return b"\n".join(joined.values())


def found_in(data: bytes, planted: list[Planted]) -> list[Planted]:
    haystack = readable(data)
    return [p for p in planted if any(form.encode() in haystack for form in p.forms())]


# --- scenarios ----------------------------------------------------------------------------------

_values = itertools.count()


class Planter:
    """Draws one scenario for one persona and records every value planted, and where."""

    def __init__(self, draw: st.DrawFn, persona: str) -> None:
        self._draw = draw
        self.persona = persona
        self.planted: list[Planted] = []
        # Rare events by plain odds: Hypothesis favours simple draws (small integers, first
        # choices), which would make "rare" faults common and most replies malformed.
        self.rng: random.Random = draw(st.randoms(use_true_random=True))
        # Stream replies may be deltas of one text (decoupled models): the gateway reads an
        # element's deltas as one text, so a value must stand alone in the joined text too.
        # Elements get a space at each end, and JSON escapes stay out: a string of deltas
        # is no JSON document, and its escapes mean nothing.
        self.deltas = False

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self._draw(strategy)

    def chance(self, numerator: int, denominator: int) -> bool:
        return self.rng.random() < numerator / denominator

    def odds(self) -> random.Random:
        """Plain odds for choices as many as a planted value has characters: a value's length
        comes from the counter-seeded generator, not from Hypothesis, so neither Hypothesis'
        draws nor ``rng`` may depend on it (the same draws must make the same scenario)."""
        return random.Random(self.rng.getrandbits(64))

    def plant(self, value: str, where: str) -> str:
        self.planted.append(Planted(value, where))
        return value

    # values
    def token(self, where: str, length: int = 16) -> str:
        rng = random.Random(next(_values))
        return self.plant("PLT" + "".join(rng.choices(string.ascii_lowercase, k=length - 3)), where)

    def detectable(self, where: str, form: str | None = None, one_line: bool = False) -> str:
        """A value a detector finds: one of ``DETECTABLE_FORMS`` (``form``), or a credential
        (``credential``; ``one_line``: no PEM key)."""
        if form is None and self.chance(1, 4):
            return self.credential(where, one_line)
        form = form or self.draw(st.sampled_from(DETECTABLE_FORMS))
        rng = random.Random(next(_values))
        kind, separator = form[:4].rstrip(), form[4:]
        if kind == "ssn":
            return self.plant(make_ssn(rng), where)
        if kind == "card":
            return self.plant(make_card(rng, separator), where)
        return self.plant(make_iban(rng, separator), where)

    def decoyed(self, where: str) -> str:
        """An SSN or card only the folded text shows (full-width digits), after a decoy of
        its kind: a value as written that folding joins to the digit after it
        (``111-22-3333\\u200b0``), which a count of values per detector took for it."""
        rng = random.Random(next(_values))
        kind = rng.choice(["ssn", "card"])
        decoy = make_ssn(rng) if kind == "ssn" else make_card(rng)
        value = self.detectable(where, kind)
        return f"{decoy}\u200b{rng.randint(0, 9)} {value.translate(FULL_WIDTH)}"

    def credential(self, where: str, one_line: bool = False) -> str:
        """A PEM private key, a JWT, an AWS key id or a GitHub token (``one_line``: not a key)."""
        rng = random.Random(next(_values))
        kind = rng.choice(CREDENTIAL_FORMS[1:] if one_line else CREDENTIAL_FORMS)
        if kind == "pem":
            return "\n".join(self.key_lines(f"{where}/pem", rng))
        value = jwt_value(rng, signed=rng.random() < 0.8) if kind == "jwt" else TOKEN_FORMS[kind](rng)
        return self.plant(value, f"{where}/{kind}")

    def key_lines(self, where: str, rng: random.Random | None = None) -> list[str]:
        """A PEM private key's lines, its base64 lines planted one by one."""
        rng = rng or random.Random(next(_values))
        lines = pem_value(rng, rng.choice(PEM_LABELS), rng.randint(1, 3)).split("\n")
        for line in lines[1:-1]:
            self.plant(line, where)
        return lines

    def secret(self, where: str, one_line: bool = False) -> str:
        return self.detectable(where, one_line=one_line) if self.chance(1, 3) else self.token(where)

    def text(self, where: str, clear: bool, secrets: int | None = None) -> str:
        """Words with values among them, each value followed by a word: two values side by side
        ("4111 1111 1111 1111 5500 ...") would read as one longer number, which no detector
        should flag."""
        words = list(self.draw(st.lists(st.sampled_from(WORDS), max_size=5)))
        count = self.draw(st.integers(0, 2)) if secrets is None else secrets
        slots = [self.draw(st.integers(0, len(words))) for _ in range(count)]
        parts: list[str] = []
        for position in range(len(words) + 1):
            for _ in range(slots.count(position)):
                if self.chance(1, 10):
                    parts += [self.decoyed(where), "and"]
                else:
                    parts += [self.detectable(where) if clear else self.secret(where), "and"]
            if position < len(words):
                parts.append(words[position])
        return " ".join(parts)

    def leaf(self, where: str, clear: bool, depth: int) -> Any:
        kind = self.draw(st.sampled_from(["text", "text", "number", "list", "object"]))
        if kind == "number":
            return self.draw(st.integers(0, 999))
        if kind == "list":
            return [self.text(where, clear) for _ in range(self.draw(st.integers(0, 2)))]
        if kind == "object" and depth < 2:
            keys = self.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True))
            return {key: self.leaf(where, clear, depth + 1) for key in keys}
        return self.text(where, clear)

    def document(self, where: str, clear: bool) -> str:
        """A JSON object; some are classified key by key, others must be taken as a whole."""
        variant = self.draw(
            st.sampled_from(
                [
                    "plain",
                    "odd-key",
                    "secret-key",
                    "detector-key",
                    "plain" if self.deltas else "escaped",
                    "many-keys",
                    "duplicate",
                    "card-int",
                ]
            )
        )
        where = f"{where}/json-{variant}"
        keys = self.draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
        document: dict[str, Any] = {key: self.leaf(where, clear, 0) for key in keys}
        if variant == "odd-key":
            document[self.draw(st.sampled_from(ODD_KEYS))] = self.text(where, clear)
        elif variant == "secret-key" and not clear:  # a key is data the caller must not see
            document[f"sk_live_{self.token(where)}"] = self.text(where, clear)
        elif variant == "detector-key":
            document[self.detectable(where)] = self.text(where, clear)
        elif variant == "card-int":
            document["card"] = int(self.detectable(where, "card"))
        elif variant == "many-keys":
            document.update({f"k{i:03d}": WORDS[i % len(WORDS)] for i in range(300)})
            document["many_note"] = self.text(where, clear, secrets=1)
        escaped_value = self.detectable(where) if variant == "escaped" else None
        if escaped_value is not None:
            document["escaped_note"] = f"see {escaped_value} now"
        text = json.dumps(document)
        if escaped_value is not None:
            mask = [odds.random() < 0.5 for odds in [self.odds()] for _ in escaped_value]
            escaped = "".join(
                f"\\u{ord(c):04x}" if c.isalnum() and (hit or i == 0) else c
                for i, (c, hit) in enumerate(zip(escaped_value, mask, strict=True))
            )
            text = text.replace(escaped_value, escaped, 1)
        if variant == "duplicate":
            first, second = self.text(where, clear, secrets=1), self.text(where, clear, secrets=1)
            text = '{"dup": %s, "dup": %s, %s' % (json.dumps(first), json.dumps(second), text[1:])  # noqa: UP031
        return text

    def unknowns(self, where: str) -> list[dict[str, Any]]:
        found = []
        for _ in range(self.draw(st.integers(0, 2))):
            number = self.draw(st.sampled_from(UNKNOWN_NUMBERS))
            if self.chance(1, 4):  # fixed64: exactly the 8 bytes of a token
                found.append(unknown(number, self.token(f"{where}/unknown-fixed64", 8), "fixed64"))
            else:
                found.append(unknown(number, self.secret(f"{where}/unknown")))
        return found

    def parameters(self, where: str) -> dict[str, Any]:
        parameters: dict[str, Any] = {}
        kinds = ["sql", "trace", "key", "nested", "masked", "final", "number"]
        for kind in self.draw(st.lists(st.sampled_from(kinds), max_size=3, unique=True)):
            if kind in ("sql", "trace"):
                parameters[kind] = self.secret(f"{where}/value")
            elif kind == "key":
                parameters[self.token(f"{where}/key")] = "v"
            elif kind == "nested":
                parameters["nested"] = {"string": "x", "unknown": self.unknowns(f"{where}/nested")}
            elif kind == "masked":  # only the gateway says what it masked
                parameters["labelgate.masked"] = self.token(f"{where}/labelgate.masked")
            elif kind == "final":
                parameters["triton_final_response"] = self.draw(st.booleans())
            else:
                parameters["rows"] = self.draw(st.integers(0, 10**6))
        return parameters

    def label_parameter(self, where: str) -> tuple[str | None, str | None]:
        """(the ``labelgate.labels`` value to send, the valid label it sets or None)."""
        choice = self.draw(st.sampled_from([None] * 24 + [*LABELS, *LABELS, "invalid"]))
        if choice == "invalid":
            return f"restricted,{self.token(f'{where}/labelgate.labels')}", None
        return choice, choice

    def key_column(self, where: str, values: list[Any]) -> None:
        """Now and then a PEM key one line per element among ``values`` (a "lines" column),
        its END marker sometimes left out: then the elements after it are masked too."""
        if self.chance(1, 6):
            lines = self.key_lines(f"{where}/pem-lines")
            at = self.rng.randint(0, len(values))
            values[at:at] = lines if self.chance(3, 4) else lines[:-1]

    def output(
        self, name: str, labels: frozenset[str], where: str, raw: bool, hidden: bool, lines: bool = True
    ) -> dict[str, Any]:
        """``lines``: a key may be written one line per element here (see ``reply``)."""
        datatype = OUTPUT_TYPES[name]
        parameters = self.parameters(f"{where}/output-parameters")
        sent, backend = self.label_parameter(f"{where}/output-parameters")
        if sent is not None:
            parameters["labelgate.labels"] = sent
        label = label_of(labels | {backend} if backend else labels)
        clear = label in CLEAR[self.persona] and not hidden
        where = f"{where}/values-{'hidden' if hidden else label}"
        spec: dict[str, Any] = {"name": name, "datatype": datatype, "parameters": parameters}
        if datatype == "BYTES":
            values: list[Any] = []
            for _ in range(self.draw(st.integers(1, 3))):
                if self.chance(1, 3):
                    values.append(self.document(where, clear))
                elif not clear and self.chance(1, 6):  # not UTF-8
                    values.append({"hex": (b"\xff\xfe " + self.token(f"{where}/binary").encode()).hex()})
                else:
                    values.append(self.text(where, clear))
            if lines:
                self.key_column(where, values)
            spec["values"] = [f" {v} " if self.deltas and isinstance(v, str) else v for v in values]
        elif not clear and (raw or datatype == "FP32") and self.chance(1, 2):
            # The token's bytes as the tensor's own bytes (typed INT64 travels as varints: raw only).
            data = self.token(f"{where}/numeric-bytes").encode()
            spec["values"] = list(struct.unpack("<4f" if datatype == "FP32" else "<2q", data))
            spec["raw_hex"] = data.hex()
        else:
            count = self.draw(st.integers(1, 3))
            spec["values"] = [0.5 * i for i in range(count)] if datatype == "FP32" else list(range(count))
        spec["unknown"] = self.unknowns(f"{where}/output")
        if not raw:
            spec["contents_unknown"] = self.unknowns(f"{where}/contents")
        if self.chance(1, 30):  # a contents field the datatype (or the raw form) does not use
            spec["contents"] = {"bytes_contents": [self.secret(f"{where}/stray-contents")]}
        return spec

    def reply(
        self, model: str, where: str, hidden: bool = False, stream: bool = False, last: bool = True
    ) -> dict[str, Any]:
        """A ``ModelInferResponse`` spec (planted_upstream.py) for a request of ``model``;
        ``hidden``: none of it may reach the caller (an error reply); ``last``: no later reply
        to the same request follows (in a stream).

        A key one line per element goes only into a request's last reply: the carry-over cuts
        each element of a streamed output on its own, and may release an element's text (a
        line of the key) from a reply before the last while the element holding the BEGIN
        marker is still held back, to be scanned without it."""
        reply: dict[str, Any] = {"raw": self.draw(st.booleans())}
        parameters = self.parameters(f"{where}/reply-parameters")
        sent, response_label = self.label_parameter(f"{where}/reply-parameters")
        if sent is not None:
            parameters["labelgate.labels"] = sent
        reply["parameters"] = parameters
        labels = CATALOG_LABELS[model] | ({response_label} if response_label else set())
        names = self.draw(
            st.lists(st.sampled_from(sorted(OUTPUT_TYPES)), min_size=1, max_size=3, unique=True)
        )
        reply["outputs"] = [self.output(name, labels, where, reply["raw"], hidden, last) for name in names]
        for side in ("model_name", "model_version") if stream else ("model_name", "model_version", "id"):
            choice = self.draw(st.sampled_from(["as asked", "planted", "lie"]))
            if choice == "planted":
                reply[side] = self.secret(f"{where}/reply-{side}")
            elif choice == "lie" and side == "model_name":
                reply[side] = PUBLIC_MODEL  # decisions follow the request's model, never this
        reply["unknown"] = self.unknowns(f"{where}/reply")
        self.malform(reply, where)
        return reply

    def malform(self, reply: dict[str, Any], where: str) -> None:
        """Now and then a reply the gateway cannot decode: nothing of it may pass either."""
        fault = self.draw(st.sampled_from([None] * 36 + ["datatype", "extra-raw", "shape"]))
        output = reply["outputs"][0]
        if fault == "datatype":  # the same bytes, under a datatype that is a token
            if "raw_hex" in output:
                elements = [bytes.fromhex(output.pop("raw_hex"))]
            else:
                elements = [
                    element_bytes(v) if isinstance(v, str | dict) else str(v).encode()
                    for v in output.get("values", [])
                ]
            output["datatype"] = self.token(f"{where}/datatype")
            output["values"], output["shape"] = [], [len(elements)]
            output["raw_hex"] = b"".join(struct.pack("<I", len(e)) + e for e in elements).hex()
            output["contents"] = {"bytes_contents": [{"hex": e.hex()} for e in elements]}
        elif fault == "extra-raw" and reply["raw"]:
            reply["extra_raw_hex"] = [self.secret(f"{where}/extra-raw").encode().hex()]
        elif fault == "shape":
            output["shape"] = [len(output.get("values", [])) + 1]

    def error(self, where: str) -> dict[str, Any]:
        details = []
        if self.chance(1, 2):
            details.append(
                {
                    "type": "ErrorInfo",
                    "reason": "UPSTREAM_OWN_REASON",
                    "domain": "upstream",
                    "metadata": {"row": self.secret(f"{where}/error-details")},
                }
            )
        if self.chance(1, 2):
            details.append({"type": "DebugInfo", "detail": self.secret(f"{where}/error-details")})
        return {
            "code": self.draw(st.sampled_from(ERROR_CODES)),
            "message": self.text(f"{where}/error-message", clear=False, secrets=1),
            "details": details,
            "trailing_metadata": self.metadata(f"{where}/error-trailers"),
        }

    def metadata(self, where: str) -> list[list[str]]:
        pairs = []
        for _ in range(self.draw(st.integers(0, 2))):
            key = "x-up-" + self.draw(st.text(string.ascii_lowercase, min_size=1, max_size=6))
            pairs.append([key, self.secret(where, one_line=True)])
        return pairs


@dataclass
class Scenario:
    persona: str
    kind: str
    requests: list[pb.ModelInferRequest]
    planted: list[Planted] = field(default_factory=list)


def unary_scenario(planter: Planter) -> Scenario:
    model = planter.draw(st.sampled_from(sorted(CATALOG_LABELS)))
    plant: dict[str, Any] = {}
    if planter.chance(1, 6):
        plant["error"] = planter.error("unary")
    else:
        plant["reply"] = planter.reply(model, "unary")
    if planter.chance(1, 4):
        plant["initial_metadata"] = planter.metadata("unary/initial-metadata")
    if planter.chance(1, 4):
        plant["trailing_metadata"] = planter.metadata("unary/trailing-metadata")
    request = plant_request(plant, model=model, request_id="fuzz-unary")
    return Scenario(planter.persona, "unary", [request], planter.planted)


def split_replies(planter: Planter, model: str, request: int, where: str) -> list[dict[str, Any]]:
    """A text with one planted value, split across 2-4 decoupled replies to request ``request``
    of the stream (named explicitly: another request's plant may carry them)."""
    label = label_of(CATALOG_LABELS[model])
    if planter.chance(1, 3):  # a key, JWT or token held back until it is whole
        text = f" note {planter.credential(f'{where}/split-{label}')} and thanks "
    else:
        text = " " + planter.text(f"{where}/split-{label}", label in CLEAR[planter.persona], secrets=1) + " "
    odds = planter.odds()
    cuts = sorted(odds.sample(range(1, len(text)), odds.randint(1, min(3, len(text) - 1))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return [
        {
            "reply": {
                "id": {"request": request},
                "outputs": [{"name": "text", "datatype": "BYTES", "values": [piece]}],
            },
            "final": number == len(pieces) - 1,
        }
        for number, piece in enumerate(pieces)
    ]


def request_replies(planter: Planter, models: list[str], index: int, where: str) -> list[dict[str, Any]]:
    """The replies to request ``index`` of a stream: 1-2 of them, the last one final (or
    untagged), or a value split across decoupled replies, or an ``error_message`` reply."""
    model = models[index]
    kind = planter.draw(st.sampled_from(["replies", "replies", "split", "error_message"]))
    if kind == "split":
        return split_replies(planter, model, index, where)
    count = planter.draw(st.integers(1, 2))
    replies: list[dict[str, Any]] = []
    for number in range(count):
        last = number == count - 1
        if kind == "error_message" and last:
            # Nothing of an error reply may pass: plant as if no output were visible.
            message = planter.text(f"{where}/error_message", clear=False, secrets=1)
            spec: dict[str, Any] = {
                "error_message": message,
                "reply": planter.reply(model, where, hidden=True, stream=True, last=True),
            }
        else:
            spec = {"reply": planter.reply(model, where, stream=True, last=last)}
            spec["final"] = planter.draw(st.sampled_from([None, True, False])) if last else False
        identity = planter.draw(st.sampled_from(["own"] * 30 + ["foreign", "missing"]))
        if identity == "foreign":
            spec["reply"]["id"] = planter.token(f"{where}/foreign-id")
        elif identity == "missing":
            spec["reply"]["id"] = ""
        else:
            spec["reply"]["id"] = {"request": index}
        spec["unknown"] = planter.unknowns(f"{where}/stream-reply")
        replies.append(spec)
    return replies


def stream_scenario(planter: Planter) -> Scenario:
    count = planter.draw(st.integers(1, 3))
    models = [planter.draw(st.sampled_from(sorted(CATALOG_LABELS))) for _ in range(count)]
    ids = [f"fuzz-{i}" for i in range(count)] if planter.draw(st.booleans()) else ["fuzz"] * count
    where = "stream"
    planter.deltas = True
    replies = [request_replies(planter, models, index, where) for index in range(count)]
    if count > 1 and planter.chance(1, 3):
        # The upstream answers out of order: one request's plant carries another's replies,
        # sent once every request has arrived.
        first, second = sorted(planter.draw(st.sets(st.integers(0, count - 1), min_size=2, max_size=2)))
        replies[first], replies[second] = replies[second], replies[first]
        for spec in replies[first] + replies[second]:
            spec["after_requests"] = count
    requests = []
    for index, model in enumerate(models):
        plant: dict[str, Any] = {"stream": replies[index]}
        if index == 0 and planter.chance(1, 4):
            plant["initial_metadata"] = planter.metadata(f"{where}/initial-metadata")
        if index == count - 1 and planter.chance(1, 5):
            plant["error"] = planter.error(where)
        requests.append(plant_request(plant, model=model, request_id=ids[index]))
    return Scenario(planter.persona, "stream", requests, planter.planted)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    planter = Planter(draw, draw(st.sampled_from(sorted(CLEAR))))
    return stream_scenario(planter) if draw(st.booleans()) else unary_scenario(planter)


# --- the run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token_issuer: TokenIssuer) -> Iterator[AuditedStack]:
    """One planted upstream and one audited, recording gateway for the whole fuzz run."""
    directory = tmp_path_factory.mktemp("leak-fuzzer")
    with (
        run_planted_upstream(directory) as (address, _),
        run_audited_gateway(directory, address, token_issuer) as audited,
    ):
        yield audited


async def call(address: str, scenario: Scenario, headers: dict[str, str]) -> tuple[Received, bytes]:
    """Everything the caller receives, and the concatenated stream texts."""
    if scenario.kind == "unary":
        received = await capture_unary(address, scenario.requests[0], headers)
        return received, b""
    received = await capture_stream(address, scenario.requests, headers)
    return received, stream_texts(received)


@dataclass
class Tally:
    examples: int = 0
    delivered: int = 0  # examples in which the caller received at least one output
    codes: collections.Counter = field(default_factory=collections.Counter)
    direct_codes: collections.Counter = field(default_factory=collections.Counter)
    messages: collections.Counter = field(default_factory=collections.Counter)
    leaks: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    unseen: list[Planted] = field(default_factory=list)  # planted, yet not sent by the upstream
    planted: list[Planted] = field(default_factory=list)
    # The first scenario that leaked through each channel, to reproduce it by hand.
    witnesses: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{len(v)}x {where}: e.g. {v[0]}" for where, v in sorted(self.leaks.items())]
        lines += ["", "first scenario per channel (persona, kind, plant of each request):"]
        lines += [f"{where}:\n  {witness}" for where, witness in sorted(self.witnesses.items())]
        return "\n".join(lines)


def assert_credentials_planted(planted: list[Planted]) -> None:
    """Not vacuous: every credential form was planted, a key one line per element too, and
    some split across streamed replies."""
    steps = [planted.where.split("/") for planted in planted]
    assert {*CREDENTIAL_FORMS, "pem-lines"} <= {step for where in steps for step in where}
    split = {where[-1] for where in steps if any(step.startswith("split-") for step in where)}
    assert split & set(CREDENTIAL_FORMS), "no credential was split across streamed replies"


def describe(scenario: Scenario, received: Received) -> str:
    plants = [
        {
            "model": r.model_name,
            "id": r.id,
            "plant": json.loads(base64.b64decode(r.parameters["plant"].string_param)),
        }
        for r in scenario.requests
    ]
    return json.dumps(
        {"persona": scenario.persona, "kind": scenario.kind, "requests": plants, "status": received.code.name}
    )[:4000]


def delivered_outputs(received: Received, kind: str) -> bool:
    for message in received.messages:
        try:
            response = (
                pb.ModelInferResponse.FromString(message)
                if kind == "unary"
                else pb.ModelStreamInferResponse.FromString(message).infer_response
            )
        except Exception:  # noqa: S112
            continue
        if response.outputs:
            return True
    return False


def test_no_planted_value_leaks_to_the_caller_or_at_rest(stack: AuditedStack) -> None:
    started = time.monotonic()
    tally = Tally()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),  # every example runs; leaks are tallied, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios())
    def one(scenario: Scenario) -> None:
        tally.examples += 1
        tally.planted += scenario.planted
        direct, direct_texts = asyncio.run(call(stack.upstream, scenario, {}))
        seen = found_in(direct.blob() + b"\n" + direct_texts, scenario.planted)
        tally.unseen += [p for p in scenario.planted if p not in seen]

        headers = stack.headers(scenario.persona)
        received, texts = asyncio.run(call(stack.address, scenario, headers))
        tally.codes[f"{scenario.kind}:{received.code.name}:{received.reason()}"] += 1
        tally.direct_codes[direct.code.name] += 1
        tally.messages[f"{received.code.name}: {received.details[:100]}"] += 1
        tally.delivered += delivered_outputs(received, scenario.kind)
        for planted in found_in(received.blob() + b"\n" + texts, scenario.planted):
            channel = f"caller {scenario.persona}: {planted.where}"
            tally.leaks[channel].append(planted.value)
            tally.witnesses.setdefault(channel, describe(scenario, received))

    one()

    # Stop the gateway (it drains its session recorder), then read everything it left at rest.
    stack.gateway.process.signal(signal.SIGTERM)
    stack.gateway.process.popen.wait(timeout=60)
    at_rest = files_at_rest(stack.audit.log_dir, stack.recording_dir, *stack.log_files)
    for planted in found_in(at_rest, tally.planted):
        tally.leaks[f"at rest: {planted.where}"].append(planted.value)

    elapsed = time.monotonic() - started
    print(f"\nleak fuzzer: {tally.examples} examples, {len(tally.planted)} values planted, {elapsed:.1f}s")
    print(f"outcomes: {dict(tally.codes)}; outputs delivered in {tally.delivered} examples")
    print(f"upstream, called directly: {dict(tally.direct_codes)}")
    print("status messages:", *[f"  {n}x {m}" for m, n in tally.messages.most_common(12)], sep="\n")
    assert tally.examples == EXAMPLES
    assert not tally.unseen, (
        f"the upstream did not send {len(tally.unseen)} planted values: {tally.unseen[:8]}"
    )
    assert tally.planted, "nothing was planted"
    assert not tally.leaks, f"planted values leaked:\n{tally.summary()}"
    assert_credentials_planted(tally.planted)
    # Not vacuous: most replies are well-formed and must come through, stripped and masked.
    assert tally.delivered >= EXAMPLES // 4, f"outputs delivered in only {tally.delivered} examples"
    assert stack.gateway.process.popen.returncode is not None


def test_the_oracle_sees_a_planted_value_when_it_is_there() -> None:
    """The checks can fail: escaped, split, compacted and plain forms are all found."""
    card = Planted("4111 1111 1111 1111", "x")
    assert found_in(b'{"n": "\\u0034111 1111 1111 1111"}', [card]) == [card]
    assert found_in(b"digits 4111111111111111", [card]) == [card]
    response = pb.ModelStreamInferResponse()
    response.infer_response.id = "r"
    pieces = []
    for piece in ("4111 11", "11 1111 ", "1111"):
        reply = pb.ModelStreamInferResponse()
        reply.infer_response.id = "r"
        output = reply.infer_response.outputs.add(name="text", datatype="BYTES", shape=[1])
        output.contents.bytes_contents.append(piece.encode())
        pieces.append(reply.SerializeToString())
    assert found_in(stream_texts(Received(messages=pieces)), [card]) == [card]
    assert found_in(b"4111 1111 1111 ****", [card]) == []
    assert found_in("n ４１１１ １１１１ １１１１ １１１１".encode(), [card]) == [card]
    assert found_in(
        b'{"n": "\\uff14\\uff11\\uff11\\uff11\\uff11\\uff11\\uff11\\uff11'
        b'\\uff11\\uff11\\uff11\\uff11\\uff11\\uff11\\uff11\\uff11"}',
        [card],
    ) == [card]
