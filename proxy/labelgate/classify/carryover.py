"""Streamed text scanned across replies: pure.

A token-streaming model sends ``4111 11`` / ``11 1111 `` / ``1111``: scanned reply by
reply, no piece is a card number. So for streamed (decoupled) replies the gateway keeps
a carry-over per request, output and element: each reply's BYTES element is appended to
what was held, and only the part no future byte can still turn into a match is released
for classification now; the rest (at most ``window`` bytes, the longest match a detector
can make, and never the middle of a match already visible) waits for the next reply. The
final reply of a request, or the end of the stream, releases everything held.

Only text whose matches a scan of its raw bytes sees can be cut that way: ASCII without
backslashes or control characters (but tab, newline, return), with no custom detector whose
match may be longer than the window. Anything else is held whole until the request's final
reply (or until it is a whole JSON object): text that is not ASCII or holds such control
characters (the classifier also reads it folded, ``folding.py``: a full-width SSN is
invisible to a raw scan, and zero-width characters, NULs or ANSI escapes stretch a value
past any window),
text with JSON escapes (read decoded), and an element that opened as a JSON object (its
keys label its leaves). Held text beyond ``hold_limit`` bytes in all fails the stream closed.

Released text is classified and decided like any output, so a value split across replies
reaches the classifier whole, and callers allowed to read the text around it still do.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from labelgate.classify import jsonpaths, reasons
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.folding import may_hide
from labelgate.errors import ResourceExhausted
from labelgate.oip.tensor import Tensor

STREAM_HELD_TOO_LARGE = reasons.STREAM_HELD_TOO_LARGE


@dataclass
class _Held:
    shape: list[int]
    tails: dict[int, bytes] = field(default_factory=dict)  # element index -> held bytes


class CarryOver:
    """Held-back text of one stream, keyed by request."""

    def __init__(self, detectors: DetectorSet, window: int, hold_limit: int = 16 << 20) -> None:
        self.detectors = detectors
        self.window = window
        self.hold_limit = hold_limit
        longest = detectors.longest_custom_match()
        # Cutting needs every match to fit the window (see the module docstring).
        self._cuts = longest is not None and longest <= window
        self._held: dict[Hashable, dict[str, _Held]] = {}
        self._held_bytes = 0  # across the stream's requests and elements

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
            # What is left of this request's holdings is released above or dropped.
            self._held_bytes -= sum(len(tail) for rest in held.values() for tail in rest.tails.values())
        return released

    def flush(self) -> list[tuple[Hashable, list[Tensor]]]:
        """Everything still held, per request (the stream ended before their final replies)."""
        pending, self._held = self._held, {}
        self._held_bytes = 0
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
            tail = state.tails.pop(index, b"") if state else b""
            self._held_bytes -= len(tail)
            text = tail + bytes(value)
            # Parsed only when a "}" arrived: held JSON is not parsed again on every reply.
            if final or (not text) or (b"}" in bytes(value) and jsonpaths.parse_object(text) is not None):
                # A whole JSON object is a message of its own: halves would be neither JSON
                # nor text the catalog can label.
                values.append(text)
                continue
            cut = self._cut(text) if self._cuttable(text) else 0
            values.append(text[:cut])
            if cut < len(text):
                self._held_bytes += len(text) - cut
                if self._held_bytes > self.hold_limit:
                    raise ResourceExhausted(
                        STREAM_HELD_TOO_LARGE,
                        f"a stream holds more than {self.hold_limit} bytes that cannot be "
                        "released before their requests' final replies",
                    )
                state = held.setdefault(tensor.name, _Held(list(tensor.shape)))
                state.tails[index] = text[cut:]
        # A final reply whose tensor shrank leaves tails with no element to carry them: they
        # are dropped, never attached to another element.
        return tensor.with_values(values)

    def _cuttable(self, text: bytes) -> bool:
        """Whether a scan of ``text``'s raw bytes sees every match it could hold."""
        return self._cuts and not may_hide(text) and b"\\" not in text and text.lstrip()[:1] != b"{"

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


def _flushed(name: str, held: _Held) -> Tensor:
    count = 1
    for dim in held.shape:
        count *= dim
    values = [held.tails.get(index, b"") for index in range(count)]
    return Tensor(name, "BYTES", list(held.shape), values)
