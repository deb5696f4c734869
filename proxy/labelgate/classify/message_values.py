"""What walking a protobuf reply may cost (``messages``): what is left of a reply's
``max_values`` (``MessageValues``), and what each step and each scanned text count for.

Apart from the walk since two walks count the same way on one budget: the classifier's
(``messages``) and ``split_values``' walk of a held message.

The walk runs in Python, a step per value, on the gateway's event loop: given ``max_values``,
it counts every present field, repeated element and map entry it comes to (folded messages'
too) before looking at them, and the steps that cost more than a value for more (reading a
field as characters, a map, a folded message: ``FIXED_STEP_VALUES``, ``MAP_STEP_VALUES``),
and refuses a reply holding more (``MESSAGE_TOO_MANY_VALUES``), so no reply costs more than
that many steps, however it is shaped. Scanning counts too: the bytes of every text, before
it is scanned (``TEXT_BYTES_PER_VALUE``, more for text read again decoded), and every
detection the scan finds, before any is looked at (``DETECTION_VALUES``): one string of
megabytes holding a million e-mail addresses is a few values to the walk, and seconds of
Python after the scan.
"""

from __future__ import annotations

from labelgate.classify import reasons
from labelgate.classify.jsonpaths import may_escape
from labelgate.errors import UpstreamError

MESSAGE_TOO_MANY_VALUES = reasons.MESSAGE_TOO_MANY_VALUES

# What the steps a reply pays for per field, whatever its size, count for against ``max_values``
# (a value costs 1-4 µs): reading a field as characters (a map's values: each order) and
# walking messages folded apart (a map's message values, an Any's contents) are 20-50 µs
# of Python and numpy each; scanning a map's keys and values apart, about 10 µs.
FIXED_STEP_VALUES = 32
MAP_STEP_VALUES = 8
# What scanning costs against ``max_values`` (measured on the native scan; a value above
# costs 1.5-3 µs). A text's bytes: a value per TEXT_BYTES_PER_VALUE, the rest riding on the
# value its field or element counts (the short texts of an ordinary reply add nothing).
# Plain ASCII scans at 1-9 ns a byte, a text dense with values at up to 60 (the scan hands
# over each hit, 0.2-0.4 µs, before any can be counted): no text the bound admits takes
# much more than the walk it stands for. A text not ASCII, or holding escapes or character
# references, is read again decoded and folded, at 10-115 ns a byte: its bytes weigh
# DECODED_TEXT_WEIGHT times as much. And each detection counts DETECTION_VALUES, charged as
# the scan hands them over, before any is looked at (``DetectorSet.counting``): each costs
# 2-8 µs of Python after the scan (handed out, merged, labelled, its span recorded). IPv6
# candidates are confirmed in Python (``ipaddress``), about 4 µs each found or not, and each
# holds two colons at least: a text's colons count a value per COLONS_PER_VALUE (12.7 MB of
# ``1::2::3`` passed the byte charge and cost 6 s: review, seventh round).
TEXT_BYTES_PER_VALUE = 128
DECODED_TEXT_WEIGHT = 4
DETECTION_VALUES = 2
COLONS_PER_VALUE = 2


class MessageValues:
    """What is left of a reply's ``max_values``, shared by every walker of the reply (and
    taken by ``split_values``' walk of a held message, which counts as this walk does)."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.left = limit

    def take_text(self, text: bytes) -> None:
        """``text`` is to be scanned: its bytes, weighed, a value per ``TEXT_BYTES_PER_VALUE``
        (the rest ride on the value its field counts), and its colons (``COLONS_PER_VALUE``),
        taken before the scan, so a text of megabytes is refused before any of it is read."""
        if self.left is None or len(text) * DECODED_TEXT_WEIGHT < TEXT_BYTES_PER_VALUE:
            return
        plain = text.isascii() and not may_escape(text)
        weighed = (len(text) if plain else len(text) * DECODED_TEXT_WEIGHT) // TEXT_BYTES_PER_VALUE
        self.take(weighed + text.count(b":") // COLONS_PER_VALUE)

    def found(self, detections: int) -> None:
        """A scan found ``detections`` (``DetectorSet.counting``): taken before any is handed out."""
        self.take(detections * DETECTION_VALUES)

    def take(self, count: int) -> None:
        if self.left is None:
            return
        self.left -= count
        if self.left < 0:
            raise UpstreamError(
                MESSAGE_TOO_MANY_VALUES,
                f"the upstream's reply holds more than {self.limit} values (limits.max_message_values)",
            )
