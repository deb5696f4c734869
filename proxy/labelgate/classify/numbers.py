"""What the detectors find in numeric tensors. Pure.

A number is a value like any other: a card stored as an INT64 (``4111111111111111``), or
text sent as the bytes of a UINT8 tensor, reaches a client that reads it back as readily as
the same value in a BYTES output. So numeric tensors are scanned as JSON leaves are
(``jsonpaths.scannable``):

- Integer tensors (INT8..INT64, UINT8..UINT64) and FP64 as numbers: each element as its
  decimal digits (``str(value)``; FP64 as its integer part's digits, the card a JSON client
  parses back from ``4111111111111111.0`` and reads in ``4111111111111111.5``).
- 8-bit tensors (UINT8, INT8) also as text: their bytes, as one text, scanned as a BYTES
  element is (with JSON escapes and character references decoded and other scripts' digits
  folded too, when the bytes are UTF-8 text; decoded as UTF-16 or UTF-32 too when they read
  as such, ``other_encodings.wide_folded``).
- Wider integer tensors also as text, an element a character, as a client reads them back
  with ``chr`` (``characters``); float tensors (FP16, BF16, FP32, FP64) too, their whole
  numbers in the code-point range as characters, any other value as none
  (``float_characters``); code points that read as binary (an image's pixels 0-255) as a
  UINT8 tensor's binary bytes are (``float_character_detections``).
- Every tensor wider than 8 bits (INT16..UINT64, FP16, BF16, FP32, FP64) also as the text of
  its raw little-endian bytes, as a client reads them back with ``tobytes()``
  (``packed_detections``): an upstream may pack text into them as into a UINT8 tensor. Bytes
  that read as text are read as a UINT8 tensor's; binary data (floats, embeddings, token ids)
  raw and with its control characters dropped, the detectors that noise sets off (``8::`` is
  an IPv6 address) counting only from ``_LOOSE_SHORTEST`` bytes. Integers that are all ASCII
  code points are the text ``characters`` reads, and not read again. A PEM block opened
  there covers the reply's other outputs (``classifier._opens_unscanned``, with
  ``packed_reading``); on a stream, bytes that end in text are carried across replies
  (``carryover``).
- Float tensors (FP16, FP32, FP64) also as their values' mantissa bytes, each value's low
  bytes joined (``classify.mantissas``: a NaN's payload, a double's low 6 and 7 bytes, a
  float's 2 and 3, a half's 1), as a client reads them with ``view("<u8") & 0xffffffffffff``:
  the exponent bytes between the pieces break the text the raw bytes show. Read as the raw
  bytes are (``form_detections``), but that all but the top byte is read as written only,
  a few values' mantissas as binary, and a hit whose every value repeats one byte (a pixel
  / 255.0, a tenth) is dropped (``mantissas.repeating``).

A tensor of rank 2 or more may hold a string per row (a fixed-width character array): each
row of its last dimension is also read as a text of its own, a newline between rows
(``characters.ROW_BREAK``; for 8-bit tensors whose bytes read as text: an image's are read
raw only, and bytes that read as UTF-16 or UTF-32 are also decoded a row at a time, as
numpy's ``<U20`` viewed as bytes is), so the end of one row is not glued to the start of the
next (``card 4111111111111111`` then ``7`` reads as a 17-digit number; ``ref`` and its NUL
padding, then a card in full-width digits, reads as ``ref4111111111111111``).

Cost: of the built-in detectors only ``credit_card`` can fire on a bare run of digits (13-19
of them; an SSN, a phone number or an IP address needs separators, an IBAN letters, an
email ``@``), so without custom detectors only elements of at least 10**12 in magnitude are
candidates, picked out by numpy over the raw buffer; tensors of 32 bits or fewer cannot
hold one at all. A custom pattern may match any digits: then every element is scanned.

FP32, FP16 and BF16 are not read as digits: they cannot hold a 13-digit number exactly. Their
bytes are read as text; for 100 FP32 values that costs about 5 µs (two native scans), with
their mantissa bytes 15-20 µs more (one scan of them all). Whether bytes read as text is
told without decoding them where a lower bound says they do not (``_surely_binary``), which
paid for the mantissas of 10,000 doubles: 1.3-1.45 ms to classify before, 1.5-1.8 ms with them.

The detections name what was found for the policy; enforcement never rewrites part of a
number, it zeroes the whole tensor (``enforce.masking``). Their offsets are element
indices, not bytes (for a text hit, the elements its bytes occupy).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from labelgate.classify import characters
from labelgate.classify.detectors import BUILTIN_LABELS, Detection, DetectorSet
from labelgate.classify.float_characters import (
    FLOAT_DATATYPES,
    binary_forms,
    byte_values,
    code_points_of,
    float_values,
    reads_as_noise,
)
from labelgate.classify.folding import CONTROLS, UNFOLDABLE, may_hide
from labelgate.classify.hidden_values import hidden_by_folding, uncovered, unfoldable_spans
from labelgate.classify.json_elements import hidden_by_escapes
from labelgate.classify.jsonpaths import may_escape
from labelgate.classify.mantissas import Form, all_repeat, in_values, repeating
from labelgate.classify.mantissas import forms as mantissa_forms
from labelgate.classify.other_encodings import wide_folded
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import RAW_DTYPES

# Numeric datatypes scanned as numbers, as numpy little-endian dtypes (their raw form).
# (FP32, FP16 and BF16 cannot hold a 13-digit number exactly: their bytes alone are read.)
NUMBER_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    datatype: np.dtype(code)
    for datatype, code in RAW_DTYPES.items()
    if datatype not in ("FP16", "FP32", "BF16", "BOOL")
}
# Datatypes whose bytes may be text.
TEXT_DATATYPES: Final = frozenset({"UINT8", "INT8"})
# Wider integer datatypes whose elements may be characters (``characters``).
CHARACTER_DATATYPES: Final = frozenset({"INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64"})
# Datatypes wider than 8 bits whose raw bytes are also read as text, as an 8-bit tensor's
# are, with their element sizes: a client reads them back with ``tobytes()``.
_PACKED_SIZES: Final = {"BF16": 2} | {
    datatype: np.dtype(code).itemsize for datatype, code in RAW_DTYPES.items() if np.dtype(code).itemsize > 1
}
PACKED_DATATYPES: Final = frozenset(_PACKED_SIZES)
# Built-in detectors that find a value in a few bytes of binary data by chance (``8::`` and
# ``9:e:a:9::e9`` are IPv6 addresses, ``g1@o.GqjF`` an email; a third of 1024 softmax
# outputs as FP32 held one, and nearly all as BF16, measured): in wider numbers' raw bytes
# that are not text (``_reads_as_text``) a value of theirs counts from ``_LOOSE_SHORTEST``
# bytes on (``first.last@corp.com``, a full IPv6 address). The others need a structure
# noise does not make (digits that pass Luhn, an SSN's separators, an IBAN's check digits).
_LOOSE: Final = frozenset({"ip_address", "email"})
_LOOSE_SHORTEST: Final = 16
# Floats' mantissa bytes (``mantissas``) are read as text from this many bytes on
# (``form_reads_as_text``); below, raw and without control characters, which find a plain
# value (an SSN is 11 bytes) and fail nothing closed.
_MANTISSA_TEXT_FROM: Final = 16
# Byte -> whether folding drops it as a control character (``CONTROLS``).
_CONTROL_BYTES: Final = np.array([byte in CONTROLS for byte in range(256)])
# The built-in detectors that can fire on a bare run of ASCII digits (``patterns``).
DIGIT_RUN_DETECTORS: Final = frozenset({"credit_card"})
# The smallest magnitude such a built-in can find: a card has at least 13 digits.
SMALLEST_DETECTABLE: Final = 10**12
# Whole FP64 values from this magnitude on are not read as digits (``jsonpaths.scannable``).
LARGEST_READ: Final = 2.0**64

_WIDE: Final = frozenset({"INT64", "UINT64", "FP64"})  # the only ones that can reach it
_BUILTIN_NAMES: Final = frozenset(BUILTIN_LABELS)
# Byte -> 0xFF when its top bit is set, else 0: the byte a sign bit extends to.
_SIGN_BYTE: Final = bytes(0xFF if byte & 0x80 else 0 for byte in range(256))
# An FP64's high byte -> 1 when the value may reach 2**33 (or is not finite), else 0.
_FP64_LARGE: Final = bytes(1 if byte & 0x7F >= 0x42 else 0 for byte in range(256))
_UNSIGNED: Final = {size: np.dtype(f"<u{size}") for size in (1, 2, 4, 8)}


def scans(datatype: str) -> bool:
    """Whether tensors of ``datatype`` are scanned here."""
    return datatype in NUMBER_DTYPES or datatype in PACKED_DATATYPES


def numeric_detections(tensor: Tensor, detectors: DetectorSet) -> dict[int, list[Detection]]:
    """What ``detectors`` find in a numeric tensor, by the index of the first element a
    detection covers (offsets are element indices). Empty for a datatype not scanned."""
    datatype = tensor.datatype
    dtype = NUMBER_DTYPES.get(datatype)
    if not detectors or not scans(datatype):
        return {}
    raw = tensor.raw_form()
    found: dict[int, list[Detection]] = {}
    names = detectors.names
    custom = not _BUILTIN_NAMES.issuperset(names)
    if (
        dtype is not None
        and tensor.size
        and (custom or (datatype in _WIDE and not DIGIT_RUN_DETECTORS.isdisjoint(names)))
    ):
        size = tensor.size * dtype.itemsize
        if custom or raw is None or len(raw) != size or not _raw_all_small(datatype, raw):
            array = _array(raw, tensor, dtype)
            if custom or not _all_small(array):
                texts, indices = _number_texts(array, everything=custom)
                for position, hits in detectors.scan_each(texts).items():
                    index = indices[position]
                    found[index] = [Detection(hit.detector, hit.label, index, index + 1) for hit in hits]
    width = tensor.shape[-1] if len(tensor.shape) > 1 else 0  # a row's elements (module docstring)
    if datatype in TEXT_DATATYPES:
        text = raw if raw is not None else _bytes_of(tensor.values)
        for hit in _byte_text_detections(text, width, detectors):
            found.setdefault(hit.start, []).append(hit)
    elif datatype in CHARACTER_DATATYPES and dtype is not None and tensor.size:
        usable = raw if raw is not None and len(raw) == tensor.size * dtype.itemsize else None
        for hit in character_detections(_array(raw, tensor, dtype), detectors, usable, width):
            found.setdefault(hit.start, []).append(hit)
    elif datatype in FLOAT_DATATYPES and tensor.size:
        for hit in float_character_detections(tensor, detectors, width):
            found.setdefault(hit.start, []).append(hit)
    if datatype in PACKED_DATATYPES and tensor.size:
        for hit in packed_detections(tensor, detectors, width):
            if hit not in found.get(hit.start, ()):
                found.setdefault(hit.start, []).append(hit)
    return dict(sorted(found.items())) if len(found) > 1 else found


def packed_detections(tensor: Tensor, detectors: DetectorSet, width: int = 0) -> list[Detection]:
    """What ``detectors`` find in the raw little-endian bytes of a tensor of a
    ``PACKED_DATATYPES`` datatype read as one text, as an 8-bit tensor's are, and in a float
    tensor's mantissa bytes (``classify.mantissas``), offsets mapped
    to the elements each hit's bytes touch. ``width``: the length of a row in elements (0:
    no rows). Values with no raw form (nothing the decoder makes) fail closed: every
    detector spans the tensor whole."""
    itemsize = _PACKED_SIZES[tensor.datatype]
    text = _packed_bytes(tensor, itemsize)
    if text is None:
        return unfoldable_spans(tensor.size, detectors)
    if tensor.datatype in CHARACTER_DATATYPES and _characters_only(text, itemsize):
        return []  # ASCII code points and NULs: the text ``characters`` reads
    forms = [Form(text, itemsize, whole=True), *mantissa_forms(tensor.datatype, text)]
    return form_detections(forms, detectors, width)


def form_detections(forms: list[Form], detectors: DetectorSet, width: int = 0) -> list[Detection]:
    """What ``detectors`` find in numbers' bytes read in ``forms`` (a tensor's raw bytes,
    floats' mantissa bytes: ``mantissas``), offsets values. Bytes that read as text
    (``form_reads_as_text``) are read as an 8-bit tensor's are; binary ones (floats,
    embeddings, token ids) all in one scan (``binary_form_detections``). A hit in mantissa
    bytes every value of which repeats one byte (``mantissas.repeating``: a pixel / 255.0, a
    tenth) is dropped. ``width``: a row's values (0: no rows)."""
    hits: list[Detection] = []
    binary: list[Form] = []
    for form in forms:
        if form_reads_as_text(form):
            found = _byte_text_detections(form.data, _row_bytes(form, width), detectors)
            hits += [_in_values(hit, form.per_value) for hit in _not_repeating(form, found)]
        else:
            binary.append(form)
    if binary:
        for form, found in zip(binary, binary_form_detections(binary, detectors, width), strict=True):
            hits += [_in_values(hit, form.per_value) for hit in found]
    return list(dict.fromkeys(hits))


def form_reads_as_text(form: Form) -> bool:
    """Whether the bytes of ``form`` are read as text (``_reads_as_text``). Mantissa bytes
    (``mantissas``) only from ``_MANTISSA_TEXT_FROM`` bytes on (a few floats' low bytes often
    read as text, and a backspace or an ESC there fails them closed: about one tensor of 2-5
    random FP32 values in 500, measured),
    and all but a float's top bytes (not ``whole``) only when they also hold no NUL."""
    if form.values and len(form.data) < _MANTISSA_TEXT_FROM:
        return False
    return (form.whole or b"\0" not in form.data) and _reads_as_text(form.data)


def binary_form_detections(
    forms: list[Form], detectors: DetectorSet, width: int = 0
) -> list[list[Detection]]:
    """What ``detectors`` find in each of ``forms`` read as binary data (floats, embeddings,
    token ids), in one scan, offsets bytes: text in it is read raw and (``whole`` forms) with
    its control characters (NULs) dropped, as an 8-bit tensor's is, and a row of ``width``
    values at a time; not decoded otherwise (what UTF-16 or a legacy encoding makes of noise
    costs much and finds nothing). ``ip_address`` and ``email`` count from
    ``_LOOSE_SHORTEST`` bytes on (``_kept``); a value only the form without control
    characters shows spans the form whole; one in mantissa bytes that repeat is dropped
    (``form_detections``)."""
    texts: list[bytes] = []
    for form in forms:
        data, row = form.data, _row_bytes(form, width)
        shown = data.translate(None, CONTROLS) if form.whole else data
        rowed = 1 < row < len(data) and len(data) % row == 0
        # Bytes without control characters scanned only where there were some to drop.
        texts += [data, b"" if shown == data else shown, _rows(data, row) if rowed else b""]
    found = detectors.scan_each(texts)
    if not found:
        return [[] for _ in forms]  # the usual answer
    results: list[list[Detection]] = []
    for number, form in enumerate(forms):
        row = _row_bytes(form, width)
        hits = _kept(found.get(3 * number, []))
        hits += [characters.unrowed(hit, row, 1) for hit in _kept(found.get(3 * number + 2, []))]
        shown_hits = _kept(found.get(3 * number + 1, []))
        if form.values and (hits or shown_hits):
            hits = _not_repeating(form, hits)
            shown_hits = _not_repeating(form, shown_hits, _shown_offsets(form.data) if shown_hits else None)
        named = uncovered(shown_hits, hits, len(form.data), None)
        hits += [Detection(name, label, 0, len(form.data)) for name, label in sorted(named.items())]
        results.append(list(dict.fromkeys(hits)))
    return results


def _row_bytes(form: Form, width: int) -> int:
    """The bytes of a row of ``width`` values in ``form``; 0 (no rows) for mantissa bytes: text
    there is put on purpose, not a fixed-width column's, and their rows cost as much to scan
    again as the rest of their reading (an FP32 [100, 768] output classified in 7.4 ms with
    them, 5.8 without, 3.4 before mantissas were read)."""
    return 0 if form.values else width * form.per_value


def _not_repeating(form: Form, hits: list[Detection], offsets: Any = None) -> list[Detection]:
    """``hits`` (offsets bytes of ``form``'s data, or of its bytes without control characters,
    whose offsets in the data are ``offsets``) but those every value of which repeats one
    byte (``mantissas.repeating``)."""
    repeats = repeating(form) if hits else None
    if repeats is None:
        return hits
    kept = []
    for hit in hits:
        start, end = (
            (hit.start, hit.end) if offsets is None else (offsets[hit.start], offsets[hit.end - 1] + 1)
        )
        if not all_repeat(repeats, int(start), int(end), form.per_value):
            kept.append(hit)
    return kept


def _shown_offsets(data: bytes) -> np.ndarray[Any, Any]:
    """Where each byte of ``data`` without its control characters (``CONTROLS``) is in ``data``."""
    return np.flatnonzero(~_CONTROL_BYTES[np.frombuffer(data, dtype=np.uint8)])


def _in_values(hit: Detection, per_value: int) -> Detection:
    """``hit`` (offsets bytes) with offsets the values its bytes touch."""
    if per_value == 1:
        return hit
    start, end = in_values(hit.start, hit.end, per_value)
    return hit._replace(start=start, end=end)


def packed_reading(tensor: Tensor) -> tuple[bytes, bool] | None:
    """The raw bytes of a ``PACKED_DATATYPES`` tensor as ``packed_detections`` reads them,
    and whether they read as text (then read as an 8-bit tensor's, in every form; else raw
    and without control characters only); None when it reads none: values that are no
    numbers (failed closed there), or integers that are all ASCII code points (``characters``'
    text). For a reading of one's own (a PEM marker: ``classifier._opens_unscanned``)."""
    if tensor.datatype not in PACKED_DATATYPES or not tensor.size:
        return None
    itemsize = _PACKED_SIZES[tensor.datatype]
    text = _packed_bytes(tensor, itemsize)
    if text is None or (tensor.datatype in CHARACTER_DATATYPES and _characters_only(text, itemsize)):
        return None
    return text, _reads_as_text(text)


def packed_item_size(datatype: str) -> int:
    """The bytes of one element of a ``PACKED_DATATYPES`` datatype."""
    return _PACKED_SIZES[datatype]


def packed_bytes(tensor: Tensor, last: int | None = None) -> bytes | None:
    """The raw little-endian bytes of a ``PACKED_DATATYPES`` tensor's elements, as a client
    gets them (``_packed_bytes``), or of its ``last`` elements only (no more is read); None
    for values that are no numbers."""
    itemsize = _PACKED_SIZES[tensor.datatype]
    raw = tensor.raw_form()
    if raw is not None and len(raw) == tensor.size * itemsize:
        return raw if last is None or last >= tensor.size else raw[len(raw) - last * itemsize :]
    if last is not None and last < tensor.size:
        tensor = Tensor(tensor.name, tensor.datatype, [last], tensor.values[tensor.size - last :])
    return _packed_bytes(tensor, itemsize)


def packed_values(data: bytes, datatype: str) -> list[Any]:
    """The values of a ``PACKED_DATATYPES`` datatype whose raw little-endian bytes are
    ``data`` (whole elements), as the decoder builds them (BF16: a float32's upper half)."""
    if datatype == "BF16":
        values: list[Any] = (np.frombuffer(data, dtype="<u2").astype("<u4") << 16).view("<f4").tolist()
        return values
    values = np.frombuffer(data, dtype=np.dtype(RAW_DTYPES[datatype])).tolist()
    return values


def _characters_only(data: bytes, itemsize: int) -> bool:
    """Whether every element of integers' raw bytes ``data`` is an ASCII code point: their
    bytes are then ``characters``' text with NULs between, which it reads (and folds) a
    character an element. Two C-level passes; no numpy."""
    low = data[::itemsize]
    return data.isascii() and len(data) - data.count(0) == len(low) - low.count(0)


def _reads_as_text(data: bytes) -> bool:
    """Whether the raw bytes of wider numbers read as text (``_mostly_utf8``) once their NULs
    (the high bytes of small integers, UTF-16 or UTF-32 code units) are dropped. Floats'
    bytes are told without decoding them where ``_surely_binary`` can (80 KB of doubles
    decode in about 1.3 ms, the bound takes 0.2)."""
    text = data.translate(None, b"\0")
    return bool(text) and not _surely_binary(text) and _mostly_utf8(text)


def _surely_binary(text: bytes) -> bool:
    """Whether ``text`` (bytes without NULs) is not mostly UTF-8 (more than one in ``_STRAY``
    of its first ``_SAMPLE`` bytes decodes to a replacement character), told by a lower bound
    on those characters: bytes UTF-8 never holds, and continuation bytes right after an ASCII
    one (each one such character; the decoded text is no longer than the bytes). False: not
    known (then ``_mostly_utf8`` decodes them)."""
    if len(text) < _BOUND_FROM:
        return False
    head = np.frombuffer(text[:_SAMPLE], dtype=np.uint8)
    lone = ((head[1:] & 0xC0) == 0x80) & (head[:-1] < 0x80)
    replaced = int(np.count_nonzero(_NEVER_UTF8[head])) + int(np.count_nonzero(lone))
    return replaced * _STRAY > len(head)


def _kept(hits: list[Detection]) -> list[Detection]:
    """``hits`` but those of ``_LOOSE`` detectors shorter than ``_LOOSE_SHORTEST`` bytes."""
    return [hit for hit in hits if hit.detector not in _LOOSE or hit.end - hit.start >= _LOOSE_SHORTEST]


def _packed_bytes(tensor: Tensor, itemsize: int) -> bytes | None:
    """The bytes a client gets for ``tensor``'s elements (binary data, or JSON numbers it
    reads back into an array of the datatype), as the encoder writes them
    (``oip.tensors.tensor_to_raw``); integers it refuses taken modulo their width (as
    ``_bytes_of`` does); None for values that are no numbers."""
    raw = tensor.raw_form()
    if raw is not None and len(raw) == tensor.size * itemsize:
        return raw
    values = tensor.values
    datatype = tensor.datatype
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            if datatype == "BF16":
                # bfloat16 is the upper half of a float32 (``oip.tensors``).
                return (np.asarray(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
            dtype = np.dtype(RAW_DTYPES[datatype])
            try:
                return np.asarray(values, dtype=dtype).tobytes()
            except (OverflowError, TypeError, ValueError):
                if dtype.kind == "f":
                    return None
                bits = (1 << (8 * itemsize)) - 1
                return b"".join([(int(value) & bits).to_bytes(itemsize, "little") for value in values])
    except (OverflowError, TypeError, ValueError):
        return None


def _byte_text_detections(text: bytes, width: int, detectors: DetectorSet) -> list[Detection]:
    """What ``detectors`` find in bytes read as one text (``_text_detections``), and in each
    row of ``width`` bytes (0: no rows) read as a text of its own (module docstring); offsets
    are bytes."""
    utf8 = _is_utf8(text)
    mostly = utf8 or _mostly_utf8(text)
    hits = _text_detections(text, detectors, utf8, mostly)
    if 1 < width < len(text) and len(text) % width == 0:
        if mostly:
            # Byte rows: a newline byte between them would misalign UTF-16 or UTF-32 text.
            rows = _text_detections(_rows(text, width), detectors, wide=False)
            hits += [characters.unrowed(hit, width, 1) for hit in rows]
        hits += _wide_row_detections(text, width, detectors, hits)
    return list(dict.fromkeys(hits))


def character_detections(
    array: np.ndarray[Any, Any], detectors: DetectorSet, raw: bytes | None = None, width: int = 0
) -> list[Detection]:
    """What ``detectors`` find in integers read as text, a character an element, as a client
    reads them back with ``chr`` (``characters.detections``; offsets are elements): a wider
    integer tensor's elements, a message's repeated integer field (``messages``). With a custom
    detector the text is scanned as a BYTES element is (``_text_detections``). ``raw``: the
    array's little-endian bytes, when at hand; ``width``: the length of a row (0: no rows)."""
    exact = lambda text: _text_detections(text, detectors)  # noqa: E731
    return characters.detections(array, detectors, exact, raw, width)


def float_character_detections(tensor: Tensor, detectors: DetectorSet, width: int = 0) -> list[Detection]:
    """What ``detectors`` find in a float tensor's whole numbers read as code points, any
    other value as no character (``float_characters``), as a wider integer tensor's elements
    are (``character_detections``; offsets are elements); none, after one vectorized check,
    for a tensor holding no whole number in the code-point range (embeddings, scores). Code
    points that read as binary (``_float_binary``: an image's pixels) are read as a UINT8
    tensor's binary bytes are (``_binary_character_detections``)."""
    points = _float_code_points(tensor)
    if points is None:
        return []
    data = byte_values(points)
    if not _float_binary(points, data):
        return character_detections(points, detectors, None, width)
    return _binary_character_detections(points, data, detectors, width)


def _float_binary(points: np.ndarray[Any, Any], data: bytes | None) -> bool:
    """Whether a float tensor's code points are binary, not text: by the rule bytes are told
    by (``float_characters.reads_as_noise``), or, when each is a byte (``data``: pixels
    0-255), those bytes are not text as a UINT8 tensor's are told (``_mostly_utf8``), so no
    text reading fails closed pixels that pass as UINT8."""
    return reads_as_noise(points) or (data is not None and not _mostly_utf8(data))


def _binary_character_detections(
    points: np.ndarray[Any, Any], data: bytes | None, detectors: DetectorSet, width: int
) -> list[Detection]:
    """What ``detectors`` find in binary code points (``_float_binary``), read as a UINT8
    tensor's binary bytes are (``_text_detections``; ``float_characters.binary_forms``): as
    written, a row at a time too, and with their C0 controls dropped; code points that are
    each a byte (``data``) in the encodings such bytes are read in too (``wide_folded``, and
    a row at a time). Also with their C1 controls dropped (``chr`` makes them, bytes do not),
    where a value of a ``_LOOSE`` detector counts from ``_LOOSE_SHORTEST`` elements, as in
    other numbers' binary bytes (pixels that dropping them joins make ``8::``). A value only a
    form without controls or a decode shows spans every element."""
    written, shown, unshown = binary_forms(points)
    rowed = 1 < width < len(written) and len(written) % width == 0
    found = detectors.scan_each([written, shown, unshown, _rows(written, width) if rowed else b""])
    hits = [*found.get(0, []), *(characters.unrowed(hit, width, 1) for hit in found.get(3, []))]
    more = [*found.get(1, []), *_kept(found.get(2, []))]
    if data is not None:
        decoded = wide_folded(data)
        if decoded is UNFOLDABLE:
            more += unfoldable_spans(len(data), detectors)
        elif decoded is not None:
            more += detectors.scan_each([decoded]).get(0, [])
        if rowed:
            hits += _wide_row_detections(data, width, detectors, hits)
    named = uncovered(more, hits, len(written), None)
    hits += [Detection(name, label, 0, len(written)) for name, label in sorted(named.items())]
    return list(dict.fromkeys(hits))


def holds_float_characters(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a float tensor some value of which is read as a character
    (``float_characters``): one vectorized check, False for embeddings and scores."""
    return tensor.datatype in FLOAT_DATATYPES and _float_code_points(tensor) is not None


def _float_code_points(tensor: Tensor) -> np.ndarray[Any, Any] | None:
    values = float_values(tensor)
    return None if values is None or not len(values) else code_points_of(values)


def character_forms(tensor: Tensor, needle: bytes) -> tuple[bytes, ...]:
    """A wider integer tensor's elements (a float tensor's whole numbers, ``float_characters``)
    read as characters, as written and folded (``characters.text_forms``), for a reading of
    one's own (a PEM marker); none when they cannot spell ``needle`` (ASCII) in either form.
    Small numbers (ASCII code points, the usual ids and counts) are asked without building the
    forms: their forms only drop what is written (control characters, what a backspace steps
    over) or move it, a cursor movement read as a space, so ``needle`` needs each of its other
    bytes written as often as it holds them (ids 0..99 hold every capital once: PRIVATE KEY
    has two E); without a backspace or an escape they fold only by the control characters
    they drop."""
    if tensor.datatype in FLOAT_DATATYPES:
        points = _float_code_points(tensor)
        if points is None:
            return ()
        if _float_binary(points, byte_values(points)):
            return binary_forms(points)  # read as binary (``float_character_detections``)
        return characters.text_forms(points)
    array = _array(tensor.raw_form(), tensor, NUMBER_DTYPES[tensor.datatype])
    if array.dtype != object and len(array):
        unsigned = array.view(_UNSIGNED[array.dtype.itemsize])
        if unsigned.max() < 0x80:
            text = unsigned.astype(np.uint8).tobytes()
            if any(text.count(byte) < needle.count(byte) for byte in set(needle) - {ord(" ")}):
                return ()
            if b"\x08" not in text and b"\x1b" not in text and needle not in text.translate(None, CONTROLS):
                return ()
    return characters.text_forms(array)


def _array(raw: bytes | None, tensor: Tensor, dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    if raw is not None and len(raw) == tensor.size * dtype.itemsize:
        return np.frombuffer(raw, dtype=dtype)
    built = tensor.values
    try:
        return np.asarray(built, dtype=dtype)
    except (OverflowError, TypeError, ValueError):
        # Values the datatype cannot hold (never from the decoder): read as Python objects,
        # so nothing is dropped.
        return np.asarray(built, dtype=object)


def _raw_all_small(datatype: str, raw: bytes) -> bool:
    """``_all_small`` read off a little-endian raw buffer's high bytes, without numpy (a
    third of its cost on a 100-row column). True only when every element is within 2**39
    in magnitude (FP64: 2**33); False means look closer, not that one is large."""
    if datatype == "FP64":
        # The high byte is the sign and the exponent's top 7 bits: 0x42 is 2**33.
        return b"\x01" not in raw[7::8].translate(_FP64_LARGE)
    # In [-2**39, 2**39): bits 39-63 all equal (two's complement), i.e. bytes 5-7
    # are bit 39 (byte 4's top bit) repeated; unsigned, they are also zero.
    high = raw[7::8]
    if not raw[4::8].translate(_SIGN_BYTE) == raw[5::8] == raw[6::8] == high:
        return False
    return datatype == "INT64" or b"\xff" not in high


def _all_small(array: np.ndarray[Any, Any]) -> bool:
    """Whether every element is below ``SMALLEST_DETECTABLE`` in magnitude: one reduction,
    the usual answer for ordinary numbers (``_number_texts`` picks out the others)."""
    kind = array.dtype.kind
    if kind == "u":
        return bool(array.max() < SMALLEST_DETECTABLE)
    if kind == "i":
        # abs() of the type's minimum wraps to itself; read as unsigned it is 2**63.
        return bool(np.abs(array).view(_UNSIGNED[array.dtype.itemsize]).max() < SMALLEST_DETECTABLE)
    if kind == "f":
        return bool(np.abs(array).max() < SMALLEST_DETECTABLE)  # False with a NaN: then look
    return False


def _bytes_of(values: list[Any]) -> bytes:
    """An 8-bit tensor's bytes from its values (any out of range, which encoding refuses,
    taken modulo 256)."""
    try:
        return (np.asarray(values, dtype=np.int64) & 0xFF).astype(np.uint8).tobytes()
    except (OverflowError, TypeError, ValueError):
        return bytes(int(value) & 0xFF for value in values)


def _number_texts(array: np.ndarray[Any, Any], everything: bool) -> tuple[list[bytes], list[int]]:
    """The decimal digits of the elements worth scanning, and their indices."""
    if array.dtype.kind == "f":
        # A value's integer part is read as a number's digits (``jsonpaths.scannable``).
        with np.errstate(invalid="ignore"):
            # Past 2**64 no card or account number is left, and the digits of 1e308 are 309
            # bytes: an 8 MB reply of it cost 440 MB (found by review).
            wanted = np.isfinite(array) & (np.abs(array) < LARGEST_READ)
        if not everything:
            wanted &= np.abs(array) >= SMALLEST_DETECTABLE
    elif everything:
        wanted = np.ones(array.shape, dtype=bool)
    elif array.dtype.kind == "u":
        wanted = array >= SMALLEST_DETECTABLE
    else:
        # Both comparisons, not abs(): abs() of the type's minimum wraps to itself.
        wanted = (array >= SMALLEST_DETECTABLE) | (array <= -SMALLEST_DETECTABLE)
    indices = np.flatnonzero(wanted).tolist()
    if not indices:
        return [], []
    picked = array[indices].tolist()
    texts = [str(int(value)).encode("ascii") for value in picked]  # int(): the integer part
    return texts, indices


def _text_detections(
    text: bytes,
    detectors: DetectorSet,
    utf8: bool | None = None,
    mostly: bool | None = None,
    wide: bool = True,
) -> list[Detection]:
    """What the detectors find in ``text`` read as a BYTES element is: raw, with JSON
    escapes and character references decoded, and folded (a value found only those ways
    spans all of it).

    Bytes that are not UTF-8 are an image's, UTF-16 or UTF-32 text, or text with a few stray
    bytes (a byte of another encoding). Their control characters are dropped as folding
    drops them (UTF-16 text of ASCII is its bytes with NULs between), and bytes that read
    as UTF-16 or UTF-32 (``other_encodings.wide_folded``) are decoded so and folded.
    Text that is UTF-8 but for at most one byte in ``_STRAY`` of its first ``_SAMPLE`` bytes
    is then read as a decoder replacing the stray bytes reads it: escapes decoded, other
    scripts' digits folded. An image's bytes are not (read as text they cost about 20 ms per
    150 kB for nothing); its raw scan still finds ASCII text in it. ``utf8``, ``mostly``:
    whether ``text`` is UTF-8, and UTF-8 but for stray bytes (``_mostly_utf8``), when known;
    ``wide``: whether to read it as UTF-16 or UTF-32 too."""
    found = detectors.scan_each([text])
    if not (_is_utf8(text) if utf8 is None else utf8):
        hits = found.get(0, [])
        shown = text.translate(None, CONTROLS)
        more = list(detectors.scan_each([shown]).get(0, ())) if shown != text else []
        decoded = wide_folded(text) if wide else None
        if decoded is UNFOLDABLE:
            more += unfoldable_spans(len(text), detectors)
        elif decoded is not None:
            more += detectors.scan_each([decoded]).get(0, ())
        if _mostly_utf8(text) if mostly is None else mostly:
            replaced = text.decode("utf-8", "replace").encode("utf-8")
            more += _text_detections(replaced, detectors, wide=wide)
        # Offsets into another form: a value there that no raw detection of its detector
        # covers whole spans the whole text. Where each value is, not which detectors the raw
        # scan named: a decoy SSN as written must not stand in for one only a form shows.
        named = uncovered(more, hits, len(text), None)
        hits += [Detection(name, label, 0, len(text)) for name, label in sorted(named.items())]
        return hits
    if may_escape(text):
        for position, hits in hidden_by_escapes([text], detectors).items():
            found.setdefault(position, []).extend(hits)
    if may_hide(text):
        for position, hits in hidden_by_folding([text], detectors, found, wide).items():
            found.setdefault(position, []).extend(hits)
    return found.get(0, [])


# Bytes that are not UTF-8 read as text when at most one in ``_STRAY`` of the first
# ``_SAMPLE`` does not decode (``_text_detections``).
_STRAY: Final = 8
_SAMPLE: Final = 65_536
# Bytes no UTF-8 sequence holds (each decodes to a replacement character of its own)
# (``_surely_binary``).
_NEVER_UTF8: Final = np.zeros(256, dtype=bool)
_NEVER_UTF8[[0xC0, 0xC1, *range(0xF5, 0x100)]] = True
# Below this many bytes, decoding to tell costs less than the bound's numpy calls: binary
# doubles' bytes decode in 3.0 µs at 800 bytes against the bound's 6.4, 7.9 against 10.8 at
# 2,400, and 24 against 15 at 4,000 (text decodes in under 1.1 µs at 8,000).
_BOUND_FROM: Final = 2_048


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _mostly_utf8(data: bytes) -> bool:
    """At most one byte in ``_STRAY`` of the first ``_SAMPLE`` is not UTF-8 (``_text_detections``)."""
    sample = data[:_SAMPLE].decode("utf-8", "replace")
    return sample.count("\ufffd") * _STRAY <= len(sample)


def _wide_row_detections(
    text: bytes, width: int, detectors: DetectorSet, hits: list[Detection]
) -> list[Detection]:
    """What ``detectors`` find in the rows of ``text`` (of ``width`` bytes) decoded each on its
    own as the UTF-16 or UTF-32 ``text`` reads as (``other_encodings.wide_folded``), that ``hits``
    do not cover (``hidden_values.uncovered``): each spans the whole text (decoded offsets do not
    index it). One search for a NUL for bytes without one or a byte order mark."""
    decoded = wide_folded(text, width)
    if decoded is None:
        return []
    more = (
        unfoldable_spans(len(text), detectors)
        if decoded is UNFOLDABLE
        else detectors.scan_each([decoded]).get(0, [])
    )
    found = uncovered(more, hits, len(text), None)
    return [Detection(name, label, 0, len(text)) for name, label in sorted(found.items())]


def _rows(text: bytes, width: int) -> bytes:
    """``text`` with a newline after each row of ``width`` bytes but the last
    (``characters.ROW_BREAK``)."""
    rows = np.frombuffer(text, dtype=np.uint8).reshape(-1, width)
    breaks = np.full((len(rows), 1), characters.ROW_BREAK, dtype=np.uint8)
    return np.hstack([rows, breaks]).tobytes()[:-1]
