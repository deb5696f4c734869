"""Render recorded sessions for a terminal (rich): the list, a summary, and the replay timeline.

The replay shows each call as it happened: time, method, model, who called, the decision
(outcome, reason, per-phase results), the masked fields, what was asked (names and
shapes), and the response as the viewer's replay decision allows (``viewing.py`` has
already masked it, or left it out), decoded. Inference responses become a table (one
column per output tensor, one row per element); columns masked for the viewer are marked.

Every recorded string (what a caller, a token or an upstream chose: names, ids, reasons,
values) reaches the terminal through ``_text``: its unprintable characters as escapes
(``untrusted_text.shown``: no control sequence, C1 control, OSC or bidi override is obeyed)
and its Rich markup escaped (a name such as ``col[/]`` is shown, not parsed).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from google.protobuf import text_format
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate.errors import InvalidInput
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs
from labelgate.recording.entries import MARKER_MEANING, decode_message
from labelgate.recording.store import SessionInfo
from labelgate.untrusted_text import shown

OUTCOME_STYLE = {
    "allow": "green",
    "mask": "yellow",
    "deny": "bold red",
    "approval_required": "magenta",
    "error": "bold red",
}
_NARROW_FLOATS = {"FP32": np.float32, "FP16": np.float16}
_TENSOR_OF_PATH = re.compile(r"^outputs\.([^.\[{]+)")


def _text(value: object) -> str:
    """Recorded text as Rich markup that shows it as it is: unprintable characters as escapes,
    markup escaped."""
    return escape(shown(str(value)))


def _plain(value: object) -> str:
    """Recorded text for a ``Text`` (no markup): unprintable characters as escapes."""
    return shown(str(value))


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def sessions_table(sessions: list[SessionInfo]) -> Table:
    table = Table(title=f"{len(sessions)} recorded session(s)", title_justify="left")
    for column in ("session", "started", "last", "calls", "size", "truncated"):
        table.add_column(column, overflow="fold", justify="right" if column in ("calls", "size") else "left")
    for info in sessions:
        table.add_row(
            _text(info.session_id),
            _text(info.started),
            _text(info.last),
            str(info.calls),
            human_bytes(info.bytes),
            "[bold red]yes[/]" if info.truncated else "no",
        )
    return table


def calls_table(session_id: str, entries: list[dict[str, Any]]) -> Table:
    """``sessions show``: one row per call."""
    table = Table(title=f"session {_text(session_id)}", title_justify="left")
    for column in ("#", "time", "method", "model", "subject", "decision", "masked", "response", "shown"):
        table.add_column(column, overflow="fold")
    number = 0
    for entry in entries:
        if entry.get("kind") == "truncated":
            table.add_row(
                "", _text(entry["time"]), "[bold red]TRUNCATED[/]", "", "", "", "", _marker_text(entry), ""
            )
            continue
        if entry.get("kind") != "call":
            table.add_row("", "", "[yellow]DAMAGED[/]", "", "", "", "", _damaged_text(entry), "")
            continue
        number += 1
        decision = entry["decision"]
        response = entry.get("response")
        table.add_row(
            str(number),
            _text(entry["time"]),
            _text(_short_method(entry["method"])),
            _text(entry.get("model") or ""),
            _text((entry.get("subject") or {}).get("id", "-")),
            _outcome_text(decision),
            str(len(decision.get("masked") or [])),
            human_bytes(response["bytes"]) if response else "-",
            _text((entry.get("replay") or {}).get("outcome", "-")),
        )
    return table


def print_replay(console: Console, session_id: str, entries: list[dict[str, Any]]) -> None:
    calls = [e for e in entries if e.get("kind") == "call"]
    console.print(f"[bold]session {_text(session_id)}[/]: {len(calls)} call(s)")
    number = 0
    for entry in entries:
        if entry.get("kind") == "truncated":
            console.print(
                Panel(_marker_text(entry), title="[bold red]recording truncated[/]", border_style="red")
            )
            continue
        if entry.get("kind") != "call":
            console.print(f"[yellow]{_damaged_text(entry)}[/]")
            continue
        number += 1
        console.print(call_panel(number, entry))


def call_panel(number: int, entry: dict[str, Any]) -> Panel:
    decision = entry["decision"]
    subject = entry.get("subject")
    who = (
        f"{_text(subject['id'])} (groups: {_text(', '.join(subject['groups']) or '-')}; "
        f"{_text(subject['auth'])})"
        if subject
        else "unauthenticated"
    )
    lines: list[str | Text] = [
        f"[bold]{_text(entry['method'])}[/]  model [cyan]{_text(entry.get('model') or '-')}[/]",
        f"subject {who}   peer {_text(entry.get('peer') or '-')}   request {_text(entry['request_id'])}",
        Text.assemble(
            "decision ", _outcome_text(decision), f"   reason {_plain(decision.get('reason') or '-')}"
        ),
        f"labels {_text(', '.join(decision.get('labels') or []) or '-')}"
        f"   upstream {_text(str(entry.get('upstream_status') or '-'))}",
    ]
    for phase in decision.get("phases") or []:
        verdict = "allow" if phase["allow"] else "deny"
        lines.append(
            f"  {_text(phase['phase'])}: {verdict} ({_text(phase.get('reason') or '')}; "
            f"{_text(phase.get('engine') or '')} {_text(phase.get('revision') or '')})"
        )
    masked = decision.get("masked") or []
    if masked:
        lines.append(
            "masked "
            + ", ".join(
                f"[yellow]{_text(m['path'])}[/] ({_text(m['strategy'])}, {_text(m.get('label') or '?')})"
                for m in masked
            )
        )
    lines.append(f"request {_text(_request_text(entry.get('request') or {}))}")
    replay = entry.get("replay") or {}
    lines.append(f"shown to you: {_text(replay.get('outcome', '-'))} ({_text(replay.get('reason') or '')})")
    if replay.get("approval"):
        lines.append(
            f"[magenta]approval required[/] to see the masked values in clear: {_text(replay['approval'])}"
        )
    body: list[Any] = [line if isinstance(line, Text) else Text.from_markup(line) for line in lines]
    body.append(_response_view(entry.get("response"), replay.get("masked") or []))
    title = f"#{number}  {_text(entry['time'])}"
    return Panel(Group(*body), title=title, title_align="left", border_style=_border(decision))


def _border(decision: dict[str, Any]) -> str:
    return OUTCOME_STYLE.get(decision.get("outcome", ""), "white").replace("bold ", "")


def _outcome_text(decision: dict[str, Any]) -> Text:
    outcome = decision.get("outcome", "?")
    return Text(_plain(str(outcome).upper()), style=OUTCOME_STYLE.get(outcome, "white"))


def _marker_text(entry: dict[str, Any]) -> str:
    limit, recorded = human_bytes(entry["limit_bytes"]), human_bytes(entry["recorded_bytes"])
    request = _text(str(entry.get("request_id")))
    return f"size cap of {limit} reached after {recorded} at request {request}: {MARKER_MEANING}"


def _damaged_text(entry: dict[str, Any]) -> str:
    note, request = entry.get("note"), entry.get("request_id")
    if note:  # an entry the reader could not open, or one missing or repeated (``sealing.py``)
        return _text(f"request {request}: {note}" if request else str(note))
    line = _text(str(entry.get("line", "?")))
    return f"line {line} of the recording does not parse (a write torn by a crash): skipped"


def _short_method(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


def _request_text(summary: dict[str, Any]) -> str:
    if not summary:
        return "-"
    inputs = ", ".join(f"{i['name']} {i['datatype']} {i['shape']}" for i in summary.get("inputs", []))
    outputs = ", ".join(summary.get("outputs") or []) or "all"
    return f"inputs {inputs or '-'}; outputs asked: {outputs}"


def _response_view(stored: dict[str, Any] | None, masked: list[dict[str, Any]]) -> Any:
    if not stored:
        return Text("response: none shown", style="dim")
    heading = f"response as shown to you ({_plain(stored['type'])}, {human_bytes(stored['bytes'])})"
    message = decode_message(stored)
    if message is None:
        return Text(f"{heading}: type not known here, not decoded", style="dim")
    if isinstance(message, pb.ModelInferResponse):
        try:
            return Group(Text(heading), *tensor_tables(decode_outputs(message), masked))
        except InvalidInput as error:
            return Text(f"{heading}: outputs do not decode ({error.reason})", style="red")
    lines = text_format.MessageToString(message, as_utf8=True).split("\n")
    return Group(Text(heading), Text("\n".join(_plain(line) for line in lines)))


def tensor_tables(tensors: list[Tensor], masked: list[dict[str, Any]]) -> list[Table]:
    """One table per group of tensors with the same element count: a column each, a row per element."""
    masks: dict[str, list[str]] = {}
    for item in masked:
        if match := _TENSOR_OF_PATH.match(item["path"]):
            masks.setdefault(match.group(1), []).append(item["strategy"])
    groups: dict[int, list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(len(tensor.values), []).append(tensor)
    tables = []
    for count, members in groups.items():
        table = Table(show_lines=False)
        for tensor in members:
            header = f"{_text(tensor.name)}\n{_text(tensor.datatype)} {_text(tensor.shape)}"
            if tensor.name in masks:
                header += f"\n[yellow]masked: {_text(', '.join(sorted(set(masks[tensor.name]))))}[/]"
            table.add_column(header, overflow="fold", style="yellow" if tensor.name in masks else None)
        for row in range(count):
            table.add_row(*(_text(cell_text(tensor.values[row], tensor.datatype)) for tensor in members))
        tables.append(table)
    return tables


def cell_text(value: Any, datatype: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if datatype in _NARROW_FLOATS:
        # The shortest text that is this value at the tensor's precision: 0.0306, not 0.030600000172853470.
        return str(_NARROW_FLOATS[datatype](value))
    return str(value)
