"""Masks (``mask`` items of the policy result) and what each strategy does to a value.

``redact``   the value becomes ``params.replacement`` (default ``[REDACTED]``)
``partial``  every character but the last ``params.keep_last`` (default 4) becomes ``*``;
             a value no longer than ``keep_last`` is starred entirely, never shown whole,
             and so is text that also reads as UTF-16 or UTF-32 (``other_encodings.reads_wide``:
             there "the last characters" of its UTF-8 reading may be any number of
             characters). Characters count as they read folded (``folding.read_length``:
             ``⓫`` two, a control character one, a zero-width space none), and as
             the UTF-16 digits their bytes may be (``_partial_text``). Text only: a JSON number, boolean
             or null becomes JSON ``null`` (``false`` starred would still read ``*alse``,
             a number its magnitude)
``hash``     ``hmac:`` + hex HMAC-SHA256 of the value's UTF-8 bytes with the gateway key:
             the same value always gives the same text, so joins still work
``null``     the type's zero value: empty bytes / string, 0, 0.0, false, JSON null

A strategy that cannot apply to a type (anything but ``null`` on a numeric tensor's number;
``partial`` on anything in JSON but a string) becomes ``null``. ``partial`` keeps the length of
text, and its last characters: on short or enumerated values (``yes``/``no``, ``M``/``F``) it
shows the value; mask those with ``redact`` or ``null``.
"""

from __future__ import annotations

import hashlib
import hmac
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from labelgate.classify import jsonpaths
from labelgate.classify.catalog import compile_glob, is_glob
from labelgate.classify.folding import read_length
from labelgate.classify.other_encodings import may_be_digit_high, reads_wide
from labelgate.enforce import reasons
from labelgate.errors import ConfigError, PolicyUnavailable
from labelgate.oip import native
from labelgate.policy.contract import DecidedMask

MASK_INVALID = reasons.MASK_INVALID
HASH_KEY_INVALID = reasons.HASH_KEY_INVALID
# Most protective first: when several masks name one path, the first of these wins. The pack
# ranks them the same way (``mask_permissiveness`` in rego/labelgate/tables/data.json); the
# enforcer never reads the policy's data, so the order is written here too
# (``tests/enforce/test_strategies.py`` checks that both agree).
STRATEGIES = ("null", "redact", "hash", "partial")
DEFAULT_REPLACEMENT = "[REDACTED]"
DEFAULT_KEEP_LAST = 4
HASH_PREFIX = "hmac:"
# An HMAC key shorter than this makes hashed SSNs and card numbers easy to brute-force.
MIN_HASH_KEY_BYTES = 16
_PARAMS = frozenset({"keep_last", "replacement"})
# Glob lookups remembered per MaskIndex (see ``MaskIndex.lookup``).
GLOB_MEMO_SIZE = 4096


@dataclass(frozen=True)
class Mask:
    path: str
    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            # The contract validator rejects such results first; reaching here means a bug
            # upstream, and the answer must still be a deny rather than unmasked data.
            raise PolicyUnavailable(MASK_INVALID, f"mask {self.path!r}: {problem}")

    @classmethod
    def coerce(cls, value: Mask | DecidedMask | Mapping[str, Any]) -> Mask:
        """A ``Mask`` from a policy decision's mask, a result item (a dict), or the mask itself."""
        if isinstance(value, Mask):
            return value
        if isinstance(value, DecidedMask):
            value = value.to_json()
        if type(value) is not dict and not isinstance(value, Mapping):  # skip the ABC check for dicts
            raise PolicyUnavailable(MASK_INVALID, f"a mask must be an object, got {type(value).__name__}")
        return cls(value.get("path"), value.get("strategy"), value.get("params") or {})  # type: ignore[arg-type]

    # Cached: read for every masked value, and a mask never changes (params included: the
    # policy's result is not edited after the decision).
    @cached_property
    def keep_last(self) -> int:
        return int(self.params.get("keep_last", DEFAULT_KEEP_LAST))

    @cached_property
    def replacement(self) -> str:
        return str(self.params.get("replacement", DEFAULT_REPLACEMENT))

    @cached_property
    def _strength(self) -> tuple[int, int, str]:
        return (strategy_rank(self.strategy), self.keep_last, self.replacement)

    def strength(self) -> tuple[int, int, str]:
        """Sort key: lower is more protective."""
        return self._strength


def _problem(mask: Mask) -> str | None:
    if not isinstance(mask.path, str) or not mask.path:
        return "path must be a non-empty string"
    if mask.strategy not in STRATEGIES:
        return f"unknown strategy {mask.strategy!r}; expected one of {list(STRATEGIES)}"
    if type(mask.params) is not dict and not isinstance(mask.params, Mapping):
        return "params must be an object"
    unknown = set(mask.params) - _PARAMS
    if unknown:
        return f"unknown params {sorted(unknown)}; expected some of {sorted(_PARAMS)}"
    keep_last = mask.params.get("keep_last", DEFAULT_KEEP_LAST)
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        return "params.keep_last must be an integer >= 0"
    if not isinstance(mask.params.get("replacement", DEFAULT_REPLACEMENT), str):
        return "params.replacement must be a string"
    return None


def strategy_rank(strategy: str) -> int:
    """A strategy's place in ``STRATEGIES`` (lower is more protective); one it does not know
    ranks before all of them (fail closed; ``Mask`` refuses such masks anyway)."""
    return STRATEGIES.index(strategy) if strategy in STRATEGIES else -1


def covers(outer: Mask, inner: Mask) -> bool:
    """Whether a value masked whole by ``outer`` shows no more of a part of it than ``inner``
    masking that part would. ``null``, ``redact`` and ``hash`` keep no character of the value,
    whatever their params; ``partial`` keeps its last ``keep_last``, which may be those of the
    part, so it covers a ``partial`` part only keeping none, or keeping as many: a part masked
    ``partial`` keeping more is starred whole when it is no longer than that (``_partial_text``),
    and the whole's last characters would be its (an AWS key masked ``partial 20`` showed
    ``...MPLE`` under ``partial 4``, found by review). Left: a part no longer than an equal
    ``keep_last`` (no built-in detector finds a value that short)."""
    outer_rank, inner_rank = strategy_rank(outer.strategy), strategy_rank(inner.strategy)
    if outer_rank != inner_rank:
        return outer_rank < inner_rank
    return outer.strategy != "partial" or outer.keep_last in (0, inner.keep_last)


def covering(outer: Mask, inner: Iterable[Mask | None]) -> Mask:
    """The mask for a value ``outer`` masks whole that holds parts ``inner`` masks (spans of
    text, nodes of a JSON element, spans in a message field). A whole-value mask applies to
    the parts too, so if it shows more of one than that part's own mask allows (``partial``
    keeping the last characters of a secret found inside), the most protective of the parts'
    masks masks the value whole instead; otherwise ``outer`` alone covers them all. When that
    is a ``partial`` too (no partial of the whole covers a partial part), the value is redacted."""
    if outer.strategy == "null":
        return outer  # nothing is left to show
    parts = [mask for mask in inner if mask is not None]
    if all(covers(outer, part) for part in parts):
        return outer
    strongest = min(parts, key=Mask.strength)
    # A part's partial on the whole would show the whole's last characters: never chosen.
    keeps_nothing = strongest.strategy != "partial" or strongest.keep_last == 0
    if keeps_nothing and all(covers(strongest, part) for part in parts):
        return strongest
    return Mask(outer.path, "redact", {})


def strongest(masks: Iterable[Mask]) -> dict[str, Mask]:
    """One mask per path: the most protective of those naming it."""
    chosen: dict[str, Mask] = {}
    for mask in masks:
        current = chosen.get(mask.path)
        if current is None or mask.strength() < current.strength():
            chosen[mask.path] = mask
    return chosen


class Masker:
    """Applies strategies to values; holds the HMAC key."""

    def __init__(self, hash_key: bytes, masks: Iterable[Mask] = ()) -> None:
        if any(mask.strategy == "hash" for mask in masks) and len(hash_key) < MIN_HASH_KEY_BYTES:
            raise ConfigError(
                HASH_KEY_INVALID,
                f"the hash mask strategy needs a key of at least {MIN_HASH_KEY_BYTES} bytes",
            )
        self._key = hash_key
        self._keyed: hmac.HMAC | None = None

    def digest(self, data: bytes) -> str:
        # The keyed HMAC state is made once and copied per value: saves deriving the key
        # pads again for every element.
        if self._keyed is None:
            self._keyed = hmac.new(self._key, digestmod=hashlib.sha256)
        state = self._keyed.copy()
        state.update(data)
        return HASH_PREFIX + state.hexdigest()

    def text(self, value: str, mask: Mask) -> str:
        """A masked string (``null`` gives the empty string)."""
        if mask.strategy == "null":
            return ""
        if mask.strategy == "redact":
            return mask.replacement
        if mask.strategy == "hash":
            return self.digest(value.encode("utf-8", "surrogatepass"))
        return _partial(value, mask.keep_last)

    def raw(self, value: bytes, mask: Mask) -> bytes:
        """Masked bytes: a whole BYTES element or a span of one (``null`` gives ``b""``)."""
        if mask.strategy == "null":
            return b""
        if mask.strategy == "redact":
            return mask.replacement.encode("utf-8")
        if mask.strategy == "hash":
            return self.digest(value).encode("ascii")
        return _partial_bytes(value, mask.keep_last)

    def raw_all(self, values: list[bytes], mask: Mask) -> list[bytes]:
        """``[raw(value, mask) for value in values]``, with the per-mask work done once."""
        if mask.strategy == "null":
            return [b""] * len(values)
        if mask.strategy == "redact":
            return [mask.replacement.encode("utf-8")] * len(values)  # bytes are immutable: share
        if mask.strategy == "hash":
            return [self.digest(value).encode("ascii") for value in values]
        keep_last = mask.keep_last
        return [_partial_bytes(value, keep_last) for value in values]

    def json_value(self, value: Any, mask: Mask) -> Any:
        """A masked JSON value (any type) inside an element."""
        if mask.strategy == "null" or value is None:
            return None
        if mask.strategy == "redact":
            return mask.replacement
        if mask.strategy == "hash":
            data = (
                value.encode("utf-8", "surrogatepass")
                if isinstance(value, str)
                else jsonpaths.canonical(value)
            )
            return self.digest(data)
        if not isinstance(value, str):
            # Characters of text only: starred, a boolean still reads as itself (``*alse``),
            # a number shows its magnitude; an object or array has no characters.
            return None
        return _partial(value, mask.keep_last)


def _partial_bytes(value: bytes, keep_last: int) -> bytes:
    """``partial`` on bytes, counting characters of the UTF-8 text (``_partial``)."""
    if value.isascii():  # one byte per character: star the bytes directly
        hidden = len(value) - keep_last
        if hidden <= 0 or reads_wide(value):  # a NUL first: most values never decode
            return b"*" * len(value)
        return b"*" * hidden + value[hidden:]
    if reads_wide(value):
        return _starred(value)
    # Undecodable bytes survive as surrogates and are starred like any character.
    return _partial_text(value.decode("utf-8", "surrogateescape"), keep_last).encode(
        "utf-8", "surrogateescape"
    )


def _starred(value: bytes) -> bytes:
    """``value`` starred whole: a star per character of its UTF-8 text (undecodable bytes one
    each), as ``_partial`` stars a value no longer than ``keep_last``."""
    if value.isascii():
        return b"*" * len(value)
    return b"*" * len(value.decode("utf-8", "surrogateescape"))


def _partial(value: str, keep_last: int) -> str:
    """``partial`` on text: ``_partial_text``, or every character starred when the text (as
    UTF-8) also reads as UTF-16 or UTF-32 (``other_encodings.reads_wide``). Read so, a character
    ``read_length`` counts as none (``\\x11\\x18``, two control characters) is one that counts
    (a Mongolian digit), so no count of the UTF-8 text bounds what its last characters show."""
    if ("\x00" in value or not value.isascii()) and reads_wide(value.encode("utf-8", "surrogatepass")):
        return "*" * len(value)
    return _partial_text(value, keep_last)


def _partial_text(value: str, keep_last: int) -> str:
    """``value`` starred but for its last characters, as many as read as at most ``keep_last``
    characters once folded (``folding.read_length``): a value found only folded may hold two
    digits in one character (``⑪``, ``⓫``), and keeping four of those would show eight.

    Read as UTF-16 (a client decoding the element so), each kept character is the high byte
    of at most one code unit that is a digit: a control character is half a Mongolian digit
    (``\\x11\\x18``), so it counts as one; so does a character folding reads as none whose
    bytes may be such a high byte (``other_encodings.may_be_digit_high``: U+05A8, a Hebrew
    accent, is ``\\xd6\\xa8``, Saurashtra six in UTF-16-LE). A zero-width space still counts as
    none. So no reading of what is kept shows more than ``keep_last`` digits (but ``⅒``,
    U+2152: ``R!`` in UTF-16-LE, three digits in two ASCII characters)."""
    if value.isascii():
        kept = min(keep_last, len(value))
    else:
        kept, reads = len(value), 0
        for position, char in enumerate(reversed(value)):
            reads += read_length(char) or may_be_digit_high(char.encode("utf-8"))
            if reads > keep_last:
                kept = position
                break
    if kept >= len(value):
        return "*" * len(value)
    return "*" * (len(value) - kept) + (value[len(value) - kept :] if kept else "")


def zero_of(datatype: str) -> Any:
    """The zero value of a numeric tensor datatype."""
    if datatype == "BOOL":
        return False
    if datatype.startswith(("FP", "BF")):
        return 0.0
    return 0


def replace_spans(data: bytes, spans: Iterable[tuple[int, int, Mask]], masker: Masker) -> bytes | None:
    """``data`` with each ``[start, end)`` masked, or None when a span does not fit.

    The text is rebuilt from the original offsets in one pass, so a replacement of a
    different length never shifts a later span. Overlapping spans merge (the most
    protective mask wins) so no byte of either escapes. In ``data`` that reads as UTF-16 or
    UTF-32 (``other_encodings.reads_wide``) a ``partial`` span is starred whole, whatever it holds:
    read so, its kept bytes would be other characters than the ones counted.
    """
    if type(spans) is not list:
        spans = list(spans)
    if len(spans) == 1:  # the usual case: nothing to sort or merge
        start, end, mask = spans[0]
        if start < 0 or end > len(data) or start >= end:
            return None
        wide = mask.strategy == "partial" and reads_wide(data)
        if mask.strategy == "partial" and not wide:
            # None: not ASCII, the element may read as UTF-16 or UTF-32 (a NUL), or off.
            starred = native.partial_span(data, start, end, mask.keep_last)
            if starred is not None:
                return starred
        return data[:start] + _masked_span(data[start:end], mask, masker, wide) + data[end:]
    wide = any(mask.strategy == "partial" for _, _, mask in spans) and reads_wide(data)
    merged: list[list[Any]] = []
    for start, end, mask in sorted(spans, key=lambda span: (span[0], span[1])):
        if start < 0 or end > len(data) or start >= end:
            return None
        if merged and start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            if mask.strength() < last[2].strength():
                last[2] = mask
        else:
            merged.append([start, end, mask])
    pieces, position = [], 0
    for start, end, mask in merged:
        pieces += [data[position:start], _masked_span(data[start:end], mask, masker, wide)]
        position = end
    pieces.append(data[position:])
    return b"".join(pieces)


def _masked_span(value: bytes, mask: Mask, masker: Masker, wide: bool) -> bytes:
    """``masker.raw(value, mask)`` for a span of ``replace_spans``'s data; starred whole under
    ``partial`` when that data reads as UTF-16 or UTF-32 (``wide``)."""
    if wide and mask.strategy == "partial":
        return _starred(value)
    return masker.raw(value, mask)


class MaskIndex:
    """Masks by path: exact paths, plus ``*``/``?`` globs (catalog glob rules) so that a
    policy writing ``outputs.*`` masks everything rather than nothing."""

    def __init__(self, masks: Iterable[Mask]) -> None:
        exact: list[Mask] = []
        globbed: list[Mask] = []
        for mask in masks:
            (globbed if is_glob(mask.path) else exact).append(mask)
        self._exact = strongest(exact)
        self._globs = [(compile_glob(path), mask) for path, mask in strongest(globbed).items()]
        self._sorted_exact = sorted(self._exact)
        self._glob_memo: dict[str, Mask | None] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._globs)

    def lookup(self, path: str) -> Mask | None:
        """The most protective mask naming ``path``, if any."""
        exact = self._exact.get(path)
        if not self._globs:
            return exact
        # JSON elements repeat their paths element after element, and an index lives as long
        # as its decision (``enforce.compiled``): match the globs once per path.
        memo = self._glob_memo
        if path in memo:
            return memo[path]
        found = [mask for regex, mask in self._globs if regex.fullmatch(path)]
        if exact is not None:
            found.append(exact)
        chosen = min(found, key=Mask.strength) if found else None
        if len(memo) >= GLOB_MEMO_SIZE:  # paths come from data: bounded
            memo.clear()
        memo[path] = chosen
        return chosen

    def may_name(self, path: str) -> bool:
        """Whether some mask may name ``path`` or a path that extends it (globs: assume yes)."""
        if self._globs:
            return True
        # Exact paths starting with ``path`` sort right at or after it: look at that one.
        position = bisect_left(self._sorted_exact, path)
        return position < len(self._sorted_exact) and self._sorted_exact[position].startswith(path)

    def any_under(self, prefix: str) -> bool:
        """Whether some mask may name a path starting with ``prefix`` (globs: assume yes)."""
        return self.may_name(prefix)
