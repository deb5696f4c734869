"""A routed token stream (``split_values: hold``) whose path holds binary beside text: in
binary an email or an IPv6 address counts only from 16 bytes (random bytes make ``8::`` and
``g1@o.Gq`` by chance), but whether the path was binary was decided over its whole joined
text, so one message of random bytes (which an upstream may add at will) made a short email
split across two messages of plain text noise too: ``mail ceo@acme`` / ``.io now`` was
refused alone and released beside 2 KiB of random bytes (review, finding 3). Binary is now
decided per message: a short value counts for nothing only where every byte of it comes from
messages whose piece is binary (``binary_pieces.Binary``)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from google.protobuf.message import Message

from labelgate.classify import reasons, straddling
from labelgate.classify.carryover import CarryOver
from labelgate.classify.detectors import DetectorSet
from labelgate.classify.split_values import SplitValues, straddled
from labelgate.errors import UpstreamError
from tests.classify.split_values_proto import Token

DETECTORS = DetectorSet.default()
RANDOM = random.Random(4).randbytes(2048)


def in_data(piece: bytes) -> Message:
    return Token(data=piece)  # type: ignore[call-arg]  # a message class built at import


def stream(messages: list[Message]) -> list[Message]:
    splitter = SplitValues(DETECTORS, CarryOver(DETECTORS, 256).cut_point)
    released = []
    for message in messages:
        released += splitter.hold(message)
    return released + splitter.flush()


SHORT = {
    "email": [b"mail ceo@acme", b".io now"],
    "ipv6": [b"host 2001:db8::", b"1 is up"],
    # Only the folded reading shows it (full-width letters).
    "folded email": ["mail ｃｅｏ@ａｃｍｅ".encode(), ".ｉｏ now".encode()],
    # Not UTF-8, but text: no control byte.
    "stray byte": [b"\xff mail ceo@acme", b".io now \xff"],
    # Control bytes, but too few for either piece to be binary on its own.
    "control bytes": [b"\x01\x02\xff mail ceo@acme", b".io now\x01\x02\xff"],
}
Arrange = Callable[[list[bytes]], list[bytes]]
BESIDE: dict[str, Arrange] = {
    "alone": lambda pieces: pieces,
    "binary after": lambda pieces: [*pieces, RANDOM],
    "binary before": lambda pieces: [RANDOM, *pieces],
    "binary around": lambda pieces: [RANDOM, *pieces, RANDOM],
    # Binary whose chunks split a character: their readings do not make the joined one, so
    # runs of messages alike are read instead (``_Binary._runs_in``).
    "split binary after": lambda pieces: [*pieces, RANDOM[:1000] + b"\xe2\x82", b"\xac" + RANDOM[1000:]],
}


@pytest.mark.parametrize("beside", BESIDE)
@pytest.mark.parametrize("value", SHORT)
def test_a_short_value_split_across_text_ends_the_stream_whatever_binary_the_path_holds(
    value: str, beside: str
) -> None:
    pieces = BESIDE[beside](SHORT[value])
    with pytest.raises(UpstreamError) as refused:
        stream([in_data(piece) for piece in pieces])
    assert refused.value.reason == reasons.STREAM_VALUE_SPLIT
    assert "(field data)" in refused.value.message


HEADER = b'{"format": "opus", "rate": 48000}'


TEXT_BESIDE: dict[str, Arrange] = {
    "binary": lambda chunks: chunks,
    "text then binary": lambda chunks: [HEADER, *chunks],
    "binary then text": lambda chunks: [*chunks, HEADER],
}


@pytest.mark.parametrize("text", TEXT_BESIDE)
@pytest.mark.parametrize("seed", [3, 4, 7, 9])
def test_random_binary_in_1_kib_chunks_leaves_whole(
    seed: int, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """256 KiB of random bytes in 1 KiB messages, alone or beside a message of text on the
    same path, leave whole at the end of the stream: their chance values (these seeds make
    some across two chunks, in readings the chunks place and in readings only runs of
    chunks place) count for nothing, as before."""
    rng = random.Random(seed)
    pieces = TEXT_BESIDE[text]([rng.randbytes(1024) for _ in range(256)])
    messages = [in_data(piece) for piece in pieces]
    assert stream(messages) == messages
    # What lets them leave: without the rule their chance values end the stream.
    monkeypatch.setattr(straddling, "_chance", lambda hit: False)
    assert straddled(DETECTORS, pieces) == "ip_address"


def test_a_chance_value_across_pieces_binary_on_their_own_counts_for_nothing() -> None:
    """What remains (THREAT-MODEL): a short email split across two messages each binary on
    its own is one binary makes by chance, as a whole one in a message of binary is."""
    rng = random.Random(5)
    pieces = [rng.randbytes(1024) + b" ceo@acme", b".io " + rng.randbytes(1024)]
    assert straddled(DETECTORS, pieces) is None
    long = [rng.randbytes(1024) + b" alice.smith@exa", b"mple.com " + rng.randbytes(1024)]
    assert straddled(DETECTORS, long) == "email", "from 16 bytes on it counts in binary too"
