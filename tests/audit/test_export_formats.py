"""RFC 5424 messages and RFC 6587 framing, read back by an independent strict parser."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from labelgate.audit.export.formats import (
    check_sd_id,
    json_line,
    octet_counted,
    syslog_message,
)
from tests.audit.conftest import make_event

_HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>[!-~]{1,255}) (?P<app>[!-~]{1,48}) "
    rb"(?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
)


@dataclass
class SyslogMessage:
    pri: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: bytes

    def document(self) -> dict[str, Any]:
        return json.loads(self.msg)


def parse_rfc5424(data: bytes) -> SyslogMessage:
    """A strict RFC 5424 parser (header, structured data with escapes, MSG); raises on anything else."""
    match = _HEADER.match(data)
    if match is None:
        raise ValueError(f"not an RFC 5424 header: {data[:80]!r}")
    rest = data[match.end() :].decode("utf-8")
    sd: dict[str, dict[str, str]] = {}
    if rest.startswith("-"):
        rest = rest[1:]
    else:
        while rest.startswith("["):
            end_id = min(i for i in (rest.find(" "), rest.find("]")) if i > 0)
            sd_id, rest = rest[1:end_id], rest[end_id:]
            params: dict[str, str] = {}
            while rest.startswith(" "):
                name, _, rest = rest[1:].partition('="')
                if not re.fullmatch(r"[!-~]{1,32}", name) or any(c in name for c in '= ]"'):
                    raise ValueError(f"bad PARAM-NAME {name!r}")
                value, index = [], 0
                while rest[index] != '"':
                    if rest[index] == "\\" and rest[index + 1] in '"\\]':
                        index += 1
                    elif rest[index] == "]":
                        raise ValueError("unescaped ] in PARAM-VALUE")
                    value.append(rest[index])
                    index += 1
                params[name], rest = "".join(value), rest[index + 1 :]
            if not rest.startswith("]"):
                raise ValueError(f"SD-ELEMENT not closed: {rest[:40]!r}")
            sd[sd_id], rest = params, rest[1:]
        if not sd:
            raise ValueError("no STRUCTURED-DATA")
    if rest and not rest.startswith(" "):
        raise ValueError("no space before MSG")
    header = {k: v.decode() for k, v in match.groupdict().items()}
    return SyslogMessage(
        pri=int(header["pri"]),
        timestamp=header["timestamp"],
        hostname=header["hostname"],
        app=header["app"],
        procid=header["procid"],
        msgid=header["msgid"],
        sd=sd,
        msg=rest[1:].encode("utf-8"),
    )


def split_octet_counted(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete RFC 6587 octet-counted frames in ``buffer``, and what is left over."""
    frames = []
    while True:
        space = buffer.find(b" ")
        if space < 0:
            return frames, buffer
        length = buffer[:space]
        if not length.isdigit() or length.startswith(b"0"):
            raise ValueError(f"not an octet count: {length[:20]!r}")
        end = space + 1 + int(length)
        if len(buffer) < end:
            return frames, buffer
        frames.append(buffer[space + 1 : end])
        buffer = buffer[end:]


def document(**overrides: Any) -> dict[str, Any]:
    return {**make_event(**overrides), "seq": 7, "hash": "ab" * 32}


def test_message_carries_header_structured_data_and_the_record_as_json() -> None:
    record = document(decision="mask", time="2026-03-04T05:06:07.089Z")
    message = parse_rfc5424(syslog_message(record, hostname="gw-1"))
    assert message.pri == 13 * 8 + 5  # log audit, notice
    assert (message.timestamp, message.hostname, message.app, message.procid, message.msgid) == (
        "2026-03-04T05:06:07.089Z",
        "gw-1",
        "labelgate",
        "-",
        "mask",
    )
    params = message.sd["labelgate@32473"]
    assert params["event_id"] == record["event_id"]
    assert (params["seq"], params["hash"], params["subject"]) == ("7", "ab" * 32, "alice")
    assert message.document() == record
    assert message.msg.isascii()


def test_structured_data_values_are_escaped_and_utf8_survives() -> None:
    tricky = 'a "quoted" \\ back]slash] café'
    raw = syslog_message(document(reason=tricky), hostname="gw", sd_id="audit@99999")
    message = parse_rfc5424(raw)
    assert message.sd["audit@99999"]["reason"] == tricky
    assert message.document()["reason"] == tricky
    framed = octet_counted(raw)
    frames, rest = split_octet_counted(framed + framed[:10])
    assert frames == [raw] and rest == framed[:10]
    assert int(framed.split(b" ", 1)[0]) == len(raw) > len(raw.decode())  # LEN counts bytes


@pytest.mark.parametrize(
    ("decision", "severity"),
    [("allow", 6), ("mask", 5), ("approval_held", 5), ("deny", 4), ("approval_expired", 4), ("error", 3)],
)
def test_severity_follows_the_decision(decision: str, severity: int) -> None:
    message = parse_rfc5424(syslog_message(document(decision=decision), hostname="h", facility=10))
    assert message.pri == 10 * 8 + severity
    assert message.msgid == decision


def test_an_oversized_datagram_is_replaced_by_a_compact_message_not_cut() -> None:
    record = document(reason="x" * 3000)
    raw = syslog_message(record, hostname="h", max_bytes=1024)
    assert len(raw) <= 1024
    body = parse_rfc5424(raw).document()
    assert body == {
        "event_id": record["event_id"],
        "seq": 7,
        "hash": "ab" * 32,
        "decision": "mask",
        "truncated": True,
    }
    assert len(syslog_message(record, hostname="h", max_bytes=8192)) > 3000


def test_bad_time_and_hostname_become_nil_values() -> None:
    message = parse_rfc5424(syslog_message(document(time="yesterday"), hostname=" \t"))
    assert (message.timestamp, message.hostname) == ("-", "-")


def test_sd_id_is_checked() -> None:
    assert check_sd_id("labelgate@32473") == "labelgate@32473"
    for bad in ("", "has space@1", 'q"@1', "x" * 33, "a=b"):
        with pytest.raises(ValueError):
            check_sd_id(bad)


def test_json_line_is_one_ascii_line() -> None:
    line = json_line(document(reason="line\nbreak é"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line)["reason"] == "line\nbreak é"


# Characters a receiver that reads syslog by line (syslog-ng network(), Logstash and Fluent Bit
# tcp inputs, a UDP receiver splitting on LF) or by Unicode line (U+2028/U+2029, NEL) would
# take for the end of a record; the rest of the C0 and C1 controls and DEL for good measure.
LINE_BREAKERS = [
    "\n",
    "\r",
    "\r\n",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x9b",
]
FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@pytest.mark.parametrize("breaker", LINE_BREAKERS)
def test_caller_text_with_control_characters_cannot_forge_a_second_syslog_record(breaker: str) -> None:
    forged = (
        f'x"]{breaker}<110>1 2026-01-01T00:00:00.000Z gw labelgate - allow [labelgate@32473 decision="allow"]'
    )
    record = document(
        model="resnet" + forged,
        reason=f"a{breaker}b",
        subject={"id": f"eve{breaker}", "groups": [], "auth": "jwt"},
        request_id=f"r{breaker}",
        decision="deny",
    )
    raw = syslog_message(record, hostname="gw")
    text = raw.decode("utf-8")
    assert not FORBIDDEN.search(text), text
    message = parse_rfc5424(raw)
    params = message.sd["labelgate@32473"]
    escaped = f"\\u{ord(breaker[-1]):04x}"
    assert params["reason"].startswith("a\\u") and params["reason"].endswith(f"{escaped}b")
    assert params["subject"].startswith("eve\\u") and params["decision"] == "deny"
    assert message.document() == record  # the JSON body keeps the exact values


def test_json_lines_carry_no_raw_control_character_and_keep_exact_values() -> None:
    record = document(model="a\x7fb\u2028c\x85d\x00")
    line = json_line(record)
    assert not FORBIDDEN.search(line[:-1].decode("ascii"))
    assert json.loads(line) == record


def test_a_time_or_sd_id_followed_by_a_newline_is_refused() -> None:
    message = parse_rfc5424(syslog_message(document(time="2026-01-01T00:00:00.000Z\n"), hostname="h"))
    assert message.timestamp == "-"
    with pytest.raises(ValueError):
        check_sd_id("labelgate@32473\n")
