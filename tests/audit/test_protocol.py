"""Frame parsing: whole messages out of a byte stream, however the reads split it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelgate.audit.client import _decode_reply
from labelgate.audit.protocol import HEADER, MAX_FRAME, READ_CHUNK, FrameError, FrameProtocol, decode, encode
from labelgate.audit.writer import _acknowledgement
from tests.audit.conftest import make_event


class Collecting(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.errors: list[FrameError] = []

    def message_received(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def frame_error(self, error: FrameError) -> None:
        self.errors.append(error)


def feed(protocol: FrameProtocol, data: bytes, step: int) -> None:
    """Deliver ``data`` the way the transport does: into get_buffer's view, ``step`` bytes at a time."""
    while data:
        view = protocol.get_buffer(-1)
        chunk = data[: min(step, len(view))]
        view[: len(chunk)] = chunk
        del view  # asyncio drops its view before the next get_buffer, as here
        protocol.buffer_updated(len(chunk))
        data = data[len(chunk) :]


@pytest.mark.parametrize("step", [1, 3, 7, 700, READ_CHUNK])
def test_messages_come_out_whole_however_the_reads_split_them(step: int) -> None:
    sent = [{"id": n, "op": "append", "event": make_event(reason="é" * n)} for n in range(40)]
    protocol = Collecting()
    feed(protocol, b"".join(encode(message) for message in sent), step)
    assert protocol.messages == sent and not protocol.errors


def test_a_frame_larger_than_the_read_buffer_is_received_whole() -> None:
    big = {"id": 1, "op": "append", "event": make_event(details={"names": ["n" * 1000] * 200})}
    frame = encode(big)
    assert len(frame) > 2 * READ_CHUNK
    protocol = Collecting()
    feed(protocol, frame + encode({"id": 2, "op": "stats"}), READ_CHUNK // 3)
    assert [m["id"] for m in protocol.messages] == [1, 2]
    assert protocol.messages[0] == big


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEADER.pack(10) + b"not json!!", "not JSON"),
        (HEADER.pack(2) + b"[]", "not a JSON object"),
        (HEADER.pack(MAX_FRAME + 1), "larger than"),
        # Past Python's 4,300-digit limit json.loads raises a plain ValueError: it escaped the
        # read callback into asyncio's fatal-error path instead of the protocol's refusal.
        (HEADER.pack(5007) + b'{"x":' + b"9" * 5000 + b"}", "not JSON"),
    ],
)
def test_a_broken_frame_stops_the_reading(data: bytes, message: str) -> None:
    protocol = Collecting()
    feed(protocol, data + encode({"id": 1, "op": "stats"}), 5)
    assert len(protocol.errors) == 1 and message in str(protocol.errors[0])
    assert protocol.messages == []  # nothing after a broken frame is trusted


def test_eof_inside_a_frame_is_an_error_and_between_frames_is_not() -> None:
    protocol = Collecting()
    feed(protocol, encode({"id": 1, "op": "stats"}), 100)
    assert protocol.eof_received() is False and not protocol.errors
    feed(protocol, encode({"id": 2, "op": "stats"})[:-1], 100)
    protocol.eof_received()
    assert "inside a frame" in str(protocol.errors[0])


def test_encode_refuses_what_is_not_plain_json() -> None:
    with pytest.raises(ValueError):
        encode({"x": float("nan")})
    with pytest.raises(TypeError):
        encode({"x": b"bytes"})
    assert json.loads(encode({"x": "café"})[HEADER.size :]) == {"x": "café"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":1,"op":"stats"}',
        '{"reason":"café \u2028"}'.encode(),
        b'{"a":"\xed\xa0\x80"}',  # a lone surrogate, UTF-8 encoded: json.loads takes it (surrogatepass)
        '{"a":1}'.encode("utf-16-le"),  # json.loads guesses the encoding from the first bytes
        '{"a":1}'.encode("utf-8-sig"),
        b'{"a":1} ',
        b'  {"a":1}',
    ],
)
def test_decode_reads_what_json_loads_reads(body: bytes) -> None:
    assert decode(body) == json.loads(body)


TOO_MANY_DIGITS = b"9" * 5000  # past Python's 4,300-digit limit: a plain ValueError, not a JSONDecodeError


@pytest.mark.parametrize(
    "body", [b'{"a":"\xff"}', b'{"a":1}x', b'{"a":', b'{"', b'{"a":NaN', b'{"a":' + TOO_MANY_DIGITS + b"}"]
)
def test_decode_refuses_what_json_loads_refuses(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(FrameError, match="not JSON"):
        decode(body)


class Failing(Collecting):
    """Handling the message with id 2 fails; read_done must still follow every receive."""

    def __init__(self) -> None:
        super().__init__()
        self.reads_done = 0

    def message_received(self, message: dict[str, Any]) -> None:
        if message.get("id") == 2:
            raise RuntimeError("handler failed")
        super().message_received(message)

    def read_done(self) -> None:
        self.reads_done += 1


def test_read_done_follows_each_receive_even_when_handling_fails() -> None:
    protocol = Failing()
    frames = b"".join(encode({"id": n, "op": "stats"}) for n in (1, 2, 3))
    with pytest.raises(RuntimeError, match="handler failed"):
        feed(protocol, frames, len(frames))
    assert protocol.reads_done == 1 and [m["id"] for m in protocol.messages] == [1]
    feed(protocol, encode({"id": 4, "op": "stats"})[:3], 100)  # half a header: no message yet
    assert protocol.reads_done == 2


@pytest.mark.parametrize(
    "body",
    [
        _acknowledgement(7, 12, "ab" * 32)[HEADER.size :],
        _acknowledgement(123456789012345678, 1, "0" * 64)[HEADER.size :],
        _acknowledgement(1234567890123456789, 1, "0" * 64)[HEADER.size :],  # beyond the shortcut's digits
        _acknowledgement("x", 1, "0" * 64)[HEADER.size :],
        b'{"id":0,"ok":true,"seq":1,"hash":"' + b"0" * 64 + b'"}',
        b'{"id":1,"ok":true,"seq":1,"hash":"' + b"A" * 64 + b'"}',
        b'{"id":1,"ok":false,"reason":"AUDIT_EVENT_INVALID","message":"m"}',
        b'{"id":1,"ok":true,"stats":{"records":3}}',
    ],
)
def test_the_client_reads_replies_as_json_loads_does(body: bytes) -> None:
    assert _decode_reply(body) == json.loads(body)
    assert type(_decode_reply(body)["id"]) is type(json.loads(body)["id"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"id":01,"ok":true,"seq":1,"hash":"' + b"0" * 64 + b'"}',
        b'{"id":1,"ok":tru',
        b'{"id":1,"ok":true,"seq":' + b"9" * 5000 + b',"hash":"' + b"0" * 64 + b'"}',
    ],
)
def test_the_client_refuses_replies_json_loads_refuses(body: bytes) -> None:
    with pytest.raises(FrameError):
        _decode_reply(body)
