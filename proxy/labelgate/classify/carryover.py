"""Streamed text scanned across replies: pure.

A token-streaming model sends ``4111 11`` / ``11 1111 `` / ``1111``: scanned reply by
reply, no piece is a card number. So for streamed (decoupled) replies the gateway keeps
a carry-over per request, output and element: each reply's BYTES element is appended to
what was held, and only the part no future byte can still turn into a match is released
for classification now; the rest (at most ``window`` bytes, the longest match a detector
can make, and never the middle of a match already visible) waits for the next reply. The
final reply of a request, or the end of the stream, releases everything held.

Released text is classified and decided like any output, so a value split across replies
reaches the classifier whole, and callers allowed to read the text around it still do.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from labelgate.classify import jsonpaths
from labelgate.classify.detectors import DetectorSet
from labelgate.oip.tensor import Tensor


@dataclass
class _Held:
    shape: list[int]
    tails: dict[int, bytes] = field(default_factory=dict)  # element index -> held bytes


class CarryOver:
    """Held-back text of one stream, keyed by request."""

    def __init__(self, detectors: DetectorSet, window: int) -> None:
        self.detectors = detectors
        self.window = window
        self._held: dict[Hashable, dict[str, _Held]] = {}

    def release(self, request: Hashable, tensors: Sequence[Tensor], final: bool) -> list[Tensor]:
        """What of ``tensors`` can be classified and sent now; holds back the rest.

        With ``final`` everything held for ``request`` is released, including outputs this
        reply does not carry (they come back as BYTES tensors of their last shape).
        """
        held = self._held.pop(request, {}) if final else self._held.setdefault(request, {})
        released = [self._release_tensor(tensor, held, final) for tensor in tensors]
        if final:
            carried = {tensor.name for tensor in tensors}
            released += [_flushed(name, rest) for name, rest in held.items() if name not in carried]
        return released

    def flush(self) -> list[tuple[Hashable, list[Tensor]]]:
        """Everything still held, per request (the stream ended before their final replies)."""
        pending, self._held = self._held, {}
        return [
            (request, [_flushed(name, rest) for name, rest in outputs.items() if rest.tails])
            for request, outputs in pending.items()
            if any(rest.tails for rest in outputs.values())
        ]

    def _release_tensor(self, tensor: Tensor, held: dict[str, _Held], final: bool) -> Tensor:
        if tensor.datatype != "BYTES":
            return tensor
        state = held.get(tensor.name)
        values: list[bytes] = []
        for index, value in enumerate(tensor.values):
            text = (state.tails.pop(index, b"") if state else b"") + bytes(value)
            if final or (not text) or _whole_json(text, state, index):
                values.append(text)
                continue
            cut = self._cut(text)
            values.append(text[:cut])
            if cut < len(text):
                state = held.setdefault(tensor.name, _Held(list(tensor.shape)))
                state.tails[index] = text[cut:]
        # A final reply whose tensor shrank leaves tails with no element to carry them: they
        # are dropped, never attached to another element.
        return tensor.with_values(values)

    def _cut(self, text: bytes) -> int:
        """Where to cut: ``window`` bytes before the end, moved back to the start of any
        match that straddles it and off the middle of a UTF-8 character."""
        cut = max(0, len(text) - self.window)
        for hit in self.detectors.scan(text):
            if hit.start < cut < hit.end:
                cut = hit.start
        while 0 < cut < len(text) and text[cut] & 0xC0 == 0x80:
            cut -= 1
        return cut


def _whole_json(text: bytes, state: _Held | None, index: int) -> bool:
    """A reply element that is a whole JSON object, with nothing held before it, is a
    message of its own: cutting it would leave two halves that are neither JSON nor text
    the catalog can label."""
    return (state is None or index not in state.tails) and jsonpaths.parse_object(text) is not None


def _flushed(name: str, held: _Held) -> Tensor:
    count = 1
    for dim in held.shape:
        count *= dim
    values = [held.tails.get(index, b"") for index in range(count)]
    return Tensor(name, "BYTES", list(held.shape), values)
