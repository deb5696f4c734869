"""One JSON object per line, with the fields a log call passes, whichever path made its record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from labelgate import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure("info", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_fields_become_keys_and_control_sequences_are_dropped(stream: io.StringIO) -> None:
    log = logs.get_logger("labelgate.test")
    log.info("call", model="m\x1b[31mred", groups=["a", "b\x1b]0;t\x07"], code=7, reason=None, ok=True)
    log.debug("not at info")
    (line,) = _lines(stream)
    assert line["event"] == "call" and line["level"] == "info" and line["logger"] == "labelgate.test"
    assert line["model"] == "mred" and line["groups"] == ["a", "b"]
    assert line["code"] == 7 and line["reason"] is None and line["ok"] is True
    assert str(line["ts"]).endswith("Z") and len(str(line["ts"])) == len("2026-01-01T00:00:00.000Z")
    assert not {"pathname", "lineno", "funcName", "msg", "args"} & set(line)


def test_an_exception_is_logged_by_its_type_only(stream: io.StringIO) -> None:
    log = logs.get_logger("labelgate.test")
    try:
        raise ValueError("secret value 123-45-6789")
    except ValueError:
        log.exception("failed", step="decode")
    (line,) = _lines(stream)
    assert line["error_type"] == "ValueError" and line["step"] == "decode"
    assert "123-45-6789" not in stream.getvalue()


def test_records_keep_their_fields_for_other_handlers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="labelgate.test"):
        logs.get_logger("labelgate.test").info("call", peer="ipv4:127.0.0.1:1")
    (record,) = [r for r in caplog.records if r.getMessage() == "call"]
    assert record.peer == "ipv4:127.0.0.1:1"  # type: ignore[attr-defined]


def test_a_line_is_the_same_whether_or_not_it_had_control_sequences_to_drop(stream: io.StringIO) -> None:
    log = logs.get_logger("labelgate.test")
    # Plain text that spells the encoder's escape of ESC takes the careful path, unchanged.
    log.info("call", spelled="a\\u001bb", nested=[{"path": "outputs.x", "n": 1}], key_only={"k": "v"})
    log.info("call", nested=[{"path": "outputs.\x1b[31mx"}], spelled="a\\u001bb", plain="p")
    log.info("call", nested=[{"path": "outputs.x"}], spelled="ab", plain="p")
    first, second, third = _lines(stream)
    assert first["spelled"] == "a\\u001bb" and first["nested"] == [{"path": "outputs.x", "n": 1}]
    assert first["key_only"] == {"k": "v"}
    assert second["nested"] == [{"path": "outputs.x"}] and second["spelled"] == "a\\u001bb"
    assert list(second) == list(third)  # the same keys in the same order either way
    assert "\x1b" not in stream.getvalue() and "\\u001b[31m" not in stream.getvalue()


def test_a_field_named_like_a_record_attribute_is_refused_as_logging_refuses_it(stream: io.StringIO) -> None:
    log = logs.get_logger("labelgate.test")
    for name in ("name", "message", "asctime", "levelname"):
        field: dict[str, Any] = {name: "x"}
        with pytest.raises(KeyError, match="Attempt to overwrite"):
            log.info("call", **field)
    assert stream.getvalue() == ""


def test_httpx_lines_quoting_an_upstreams_status_line_are_not_logged(stream: io.StringIO) -> None:
    """httpx logs ``HTTP Request: POST ... "HTTP/1.1 200 <reason>"`` at INFO: the reason phrase
    is the upstream's text (a review planted 8 KB of SSNs and key lines in it)."""
    logs.configure("debug", stream)
    reason = b"OK ssn 123-45-6789"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, extensions={"reason_phrase": reason}))
    with httpx.Client(transport=transport) as client:
        assert client.get("http://upstream.test/v2").reason_phrase == reason.decode()
    logging.getLogger("httpx").warning("kept: %s", "a warning")
    assert "123-45-6789" not in stream.getvalue()
    assert "kept: a warning" in stream.getvalue()
