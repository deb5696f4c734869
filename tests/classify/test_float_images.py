"""Float tensors that read as binary are read as a UINT8 tensor's binary bytes are, not as
text (``float_characters.reads_as_noise``, ``numbers._float_binary``). Found by review of that
reading (``test_float_code_points``): images as floats 0-255 (un-normalised pixels:
super-resolution, style transfer, preprocessing) were read as code points, and their pixels
made terminal sequences (ESC then ``[``) that failed them closed as us_ssn, secret, iban and
credit_card, at 0.3-0.7 s an image; the same pixels as UINT8 pass. Code points are binary by
the rule bytes are told by: more than one in 32 (plus 4), NULs aside, a control character
or no character; or, when each is a byte, bytes that are not text as a UINT8 tensor's.
Below that, text is read as before: a value hidden in it by a few such characters is still
found."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from labelgate.classify import DetectorSet
from labelgate.classify.float_characters import code_points_of, reads_as_noise
from labelgate.classify.numbers import float_character_detections
from labelgate.oip.tensor import Tensor
from tests.classify.test_float_code_points import FLOATS, classified, decoded, found

SIZE = 224
# The detectors an output labelled ``internal`` (the catalog's default) is scanned for.
SCANNED = DetectorSet.default().besides(frozenset({"internal"}))
SSN = "ssn 123-45-6789"
ESC, RLO, PDF = "\x1b", "\u202e", "\u202c"
# An SSN a reader sees only as text: behind a cursor movement, in full-width digits, reversed
# in an override (shown forwards).
HIDDEN = {
    "cursor": f"ssn 123-45-0000{ESC}[4D6789",
    "full-width": "ssn " + "123-45-6789".translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    "override": f"ssn {RLO}{'123-45-6789'[::-1]}{PDF}",
}
# Characters that make code points binary past the threshold: an image's dark pixels (C0
# controls), its pixels 128-159 (C1 controls), values that are no character (a fraction).
JUNK = {"dark": 3.0, "c1": 150.0, "fraction": 0.5}


def photo(seed: int = 7) -> np.ndarray:
    """A realistic 224x224 RGB photo as whole floats 0-255 (HWC): a smooth gradient per
    channel, sensor noise, and a shadow (dark pixels: C0 controls), rounded as a resize
    rounds them. Binary by the count of its controls."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    image = np.stack([40 + 200 * x, 60 + 160 * y, 220 - 90 * (x + y)], axis=-1)
    image += rng.normal(0, 10, size=image.shape)
    image[SIZE // 2 :, : SIZE // 3] *= 0.15
    rounded: np.ndarray = np.clip(np.rint(image), 0, 255)
    return rounded


def screenshot(seed: int = 7) -> np.ndarray:
    """A realistic 224x224 RGB screenshot (HWC): a light background, a title bar, lines of
    black text anti-aliased into it (an edge from 15-70 then 70-200: ESC is 27, and ESC
    then a byte from ``0`` to ``~`` moves a terminal's cursor). Few controls: binary as
    bytes only (most are not UTF-8), as a UINT8 tensor's are."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE, SIZE, 3), 246.0) + rng.normal(0, 1.5, size=(SIZE, SIZE, 3))
    image[:24] = np.array([52, 101, 164]) + rng.normal(0, 1.5, size=(24, SIZE, 3))
    image[40:200, 16:208] -= 10
    for row in range(48, 196, 14):
        length = int(rng.integers(60, 180))
        strokes = rng.random((7, length)) < 0.2
        first = ~strokes & np.roll(strokes, 1, axis=1)
        second = ~strokes & ~first & np.roll(first, 1, axis=1)
        line = image[row : row + 7, 24 : 24 + length]
        line[strokes] = 0.0
        line[first] = rng.uniform(15, 70, (int(first.sum()), 1))
        line[second] = rng.uniform(70, 200, (int(second.sum()), 1))
    return np.clip(np.rint(image), 0, 255)


IMAGES: dict[str, Callable[[], np.ndarray]] = {"photo": photo, "screenshot": screenshot}
LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "NHWC": lambda image: image[None],
    "NCHW": lambda image: image.transpose(2, 0, 1)[None],
}


def as_tensor(array: np.ndarray, datatype: str) -> Tensor:
    return decoded(Tensor("out", datatype, list(array.shape), array.ravel().tolist()))


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("datatype", FLOATS)
def test_an_image_as_whole_floats_is_not_labelled(datatype: str, layout: str, image: str) -> None:
    """As the same pixels as UINT8 are not. (Read as binary its cost is the UINT8 reading's
    and a few scans, not a text reading's; asserted on labels only.)"""
    pixels = LAYOUTS[layout](IMAGES[image]())
    assert classified(as_tensor(pixels.astype(np.uint8), "UINT8")) == set()
    tensor = as_tensor(pixels, datatype)
    assert float_character_detections(tensor, SCANNED, tensor.shape[-1]) == []
    if (datatype, image) != ("BF16", "screenshot"):
        # Left (not this reading): BF16's raw bytes of pixels 128-255 are ASCII (``vC`` for
        # 246), read as text by ``numbers.packed_detections``, where a pixel of 155 is ESC
        # then ``C``, a cursor movement.
        assert classified(tensor) == set()


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("junk", list(JUNK))
@pytest.mark.parametrize("hidden", list(HIDDEN))
def test_a_hidden_ssn_among_junk_below_the_threshold_is_still_found(
    hidden: str, junk: str, datatype: str
) -> None:
    """Up to one junk character in 32 (plus 4), NULs aside, text is read as text: a value
    only its folded, cursor-moved or displayed reading shows is still found (or fails the
    tensor closed). One more junk character reads as binary: the price THREAT-MODEL states,
    as for bytes (past one in 32)."""
    codes = [float(ord(char)) for char in (HIDDEN[hidden] + " ") * 8]
    while not _noise([JUNK[junk], *codes]):
        codes = [JUNK[junk], *codes]
    junk_count = codes.count(JUNK[junk]) + HIDDEN[hidden].count(ESC) * 8
    assert junk_count == len(codes) // 32 + 4
    assert not _noise([0.0] * 100 + codes)  # NULs (padding) are counted apart
    assert "us_ssn" in found(as_tensor(np.asarray(codes), datatype))


def _noise(codes: list[float]) -> bool:
    points = code_points_of(np.asarray(codes))
    assert points is not None
    return reads_as_noise(points)


@pytest.mark.parametrize("image", list(IMAGES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("datatype", FLOATS)
@pytest.mark.parametrize("between", ["", "\x01", "\x85"], ids=["plain", "c0", "c1"])
def test_an_ssn_written_into_an_image_is_found(between: str, datatype: str, layout: str, image: str) -> None:
    """Binary is read as a UINT8 tensor's binary bytes are: as written and without its
    control characters; code points also without their C1 controls (``chr(0x85)`` shows
    nothing in most terminals, a byte 0x85 is no character)."""
    array = LAYOUTS[layout](IMAGES[image]())
    pixels = array.ravel().copy()
    value = f" {SSN.replace('-', f'{between}-', 1)} "  # apart from the pixels beside it
    pixels[5000 : 5000 + len(value)] = [ord(char) for char in value]
    assert "us_ssn" in classified(as_tensor(pixels.reshape(array.shape), datatype))


ORDINARY = {
    # A count per element (detections per tile): mostly ASCII codes, some controls; as UINT8
    # or INT32 the same values read as text with ESC 7 / ESC 8 (save and restore the cursor).
    "counts": np.random.default_rng(3).poisson(40, 5000).astype(np.float64),
    "keypoints": np.rint(np.random.default_rng(4).uniform(0, 640, 4000)),
    "histogram": np.sort(np.random.default_rng(5).poisson(120, 256)).astype(np.float64),
}


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("name", list(ORDINARY))
def test_whole_number_outputs_that_read_as_binary_are_not_labelled(name: str, datatype: str) -> None:
    values = ORDINARY[name]
    points = code_points_of(values)
    assert points is not None and reads_as_noise(points)
    assert classified(as_tensor(values, datatype)) == set()
