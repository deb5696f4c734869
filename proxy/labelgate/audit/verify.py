"""``labelgate audit verify``: recompute the chain and check every checkpoint.

What each kind of tampering looks like to the walk:

- an edited byte: the line no longer parses, is not in canonical form, or its contents no
  longer match its hash (``malformed`` / ``not_canonical`` / ``hash_mismatch``);
- a deleted, inserted or reordered record: a seq other than the next one, or a ``prev``
  that is not the previous record's hash (``sequence`` / ``broken_link``);
- a rewritten chain (every hash recomputed after an edit): the record at a checkpoint's
  seq no longer has the signed head (``checkpoint_mismatch``);
- a truncated tail: a checkpoint covers more records than the log holds (``truncated``);
- a forged or edited checkpoint: its signature fails or was made with another key
  (``checkpoint_signature``). Without ``--public-key`` signatures are not checked, only
  counts and heads, and the report says so.

Records after the last checkpoint can be cut without trace: the writer's checkpoint
interval bounds that window. The walk stops at the first bad record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from labelgate.audit import reasons
from labelgate.audit.checkpoints import CHECKPOINT_KEYS, check_signature
from labelgate.audit.records import GENESIS, RECORD_KEYS, canonical_json, is_hex_digest, record_hash
from labelgate.audit.store import CHECKPOINTS_NAME, SEGMENT_PATTERN, list_segments
from labelgate.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str
    file: Path
    line: int | None = None
    seq: int | None = None

    def where(self) -> str:
        parts = [self.file.name]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        return ", ".join(parts)


@dataclass(frozen=True)
class CheckpointRef:
    number: int  # its line in checkpoints.jsonl
    seq: int
    head: str
    time: str
    key_id: str | None


@dataclass
class VerifyReport:
    target: Path
    files: list[Path]
    checkpoints_file: Path | None
    signatures_checked: bool
    records: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    head: str = GENESIS
    record_problem: Problem | None = None
    checkpoint_problem: Problem | None = None
    checkpoints: int = 0
    last_verified: CheckpointRef | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record_problem is None and self.checkpoint_problem is None

    @property
    def problems(self) -> list[Problem]:
        return [p for p in (self.record_problem, self.checkpoint_problem) if p is not None]


def verify_log(path: Path, public_key: Ed25519PublicKey | None = None) -> VerifyReport:
    """Verify a log directory, or one segment file (then checked against its directory's checkpoints)."""
    path = Path(path)
    if path.is_dir():
        files, checkpoints_file, anchored = [p for _, p in list_segments(path)], path / CHECKPOINTS_NAME, True
        if not files and not checkpoints_file.exists():
            raise ConfigError(
                reasons.AUDIT_LOG_MISSING, f"{path} holds no audit log (no audit-*.jsonl files)"
            )
    elif path.is_file():
        files, checkpoints_file, anchored = [path], path.parent / CHECKPOINTS_NAME, False
    else:
        raise ConfigError(reasons.AUDIT_LOG_MISSING, f"{path} does not exist")
    report = VerifyReport(
        target=path,
        files=files,
        checkpoints_file=checkpoints_file if checkpoints_file.exists() else None,
        signatures_checked=public_key is not None,
    )
    checkpoints = _load_checkpoints(report, public_key)
    _walk_chain(report, anchored, {c.seq: c for c in checkpoints})
    if report.record_problem is None:
        _check_tail(report, checkpoints, path)
    if public_key is None and checkpoints:
        report.notes.append("checkpoint signatures were NOT checked: pass --public-key to check them")
    if public_key is not None and not checkpoints and report.records and report.checkpoint_problem is None:
        report.checkpoint_problem = Problem(
            "no_checkpoint",
            "no signed checkpoint: a truncated tail could not be detected",
            checkpoints_file,
        )
    return report


def _load_checkpoints(report: VerifyReport, public_key: Ed25519PublicKey | None) -> list[CheckpointRef]:
    """The checkpoints up to the first bad one (which becomes the report's checkpoint problem)."""
    path = report.checkpoints_file
    if path is None:
        return []
    loaded: list[CheckpointRef] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            report.checkpoints += 1
            checkpoint, why = _parse_checkpoint(raw)
            kind = "checkpoint_malformed"
            if checkpoint is not None and loaded and checkpoint["seq"] <= loaded[-1].seq:
                kind = "checkpoint_order"
                why = f"covers {checkpoint['seq']} records, not more than checkpoint #{loaded[-1].number}"
            if checkpoint is not None and why is None and public_key is not None:
                kind, why = "checkpoint_signature", check_signature(checkpoint, public_key)
            if why is not None:
                seq = checkpoint["seq"] if checkpoint else None
                report.checkpoint_problem = Problem(kind, why, path, number, seq)
                break
            assert checkpoint is not None
            seq, head, time, kid = (checkpoint[k] for k in ("seq", "head", "time", "key_id"))
            loaded.append(CheckpointRef(number, seq, head, time, kid))
    return loaded


def _parse_checkpoint(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.endswith(b"\n"):
        return None, "incomplete final checkpoint line"
    try:
        checkpoint = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "checkpoint line is not JSON"
    except RecursionError:
        return None, "checkpoint line is nested too deeply"
    if not isinstance(checkpoint, dict) or set(checkpoint) != CHECKPOINT_KEYS:
        return None, f"a checkpoint has exactly the fields {', '.join(sorted(CHECKPOINT_KEYS))}"
    seq = checkpoint["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not is_hex_digest(checkpoint["head"]):
        return None, "checkpoint seq or head is not valid"
    if not isinstance(checkpoint["time"], str):
        return None, "checkpoint time is not a string"
    return checkpoint, None


def _walk_chain(report: VerifyReport, anchored: bool, checkpoints: dict[int, CheckpointRef]) -> None:
    expected_seq, head = (1, GENESIS) if anchored else (None, None)
    for path in report.files:
        name_seq = _name_seq(path)
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if number == 1 and anchored and name_seq is not None:
                    # A renamed segment is a sign of meddling even when the chain still links.
                    first = _peek_seq(raw)
                    if first is not None and first != name_seq:
                        why = f"file name says seq {name_seq} but its first record is {first}"
                        report.record_problem = Problem("segment_name", why, path, 1)
                        return
                problem, record = _check_line(raw, expected_seq, head)
                if problem is not None:
                    kind, message = problem
                    seq = record["seq"] if record else None
                    report.record_problem = Problem(kind, message, path, number, seq)
                    return
                assert record is not None
                if expected_seq is None and record["seq"] != 1:
                    report.notes.append(
                        f"chain start not anchored: verified from seq {record['seq']} "
                        "(earlier segments were not checked)"
                    )
                if report.first_seq is None:
                    report.first_seq = record["seq"]
                head, expected_seq = record["hash"], record["seq"] + 1
                report.records += 1
                report.last_seq, report.head = record["seq"], head
                _match_checkpoint(report, checkpoints.get(record["seq"]), path, number)


def _check_line(
    raw: bytes, expected_seq: int | None, head: str | None
) -> tuple[tuple[str, str] | None, dict[str, Any] | None]:
    if not raw.endswith(b"\n"):
        return ("torn_line", "incomplete final line (crash residue? the writer cuts it on restart)"), None
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return ("malformed", f"line is not JSON ({error}): edited?"), None
    except RecursionError:
        return ("malformed", "line is nested too deeply: edited?"), None
    if not isinstance(record, dict) or set(record) != RECORD_KEYS:
        return ("malformed", "a record has exactly the fields event, hash, prev, seq"), None
    seq, prev, digest, event = record["seq"], record["prev"], record["hash"], record["event"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(event, dict):
        return ("malformed", "seq is not an integer or event is not an object"), None
    if not (is_hex_digest(prev) and is_hex_digest(digest)):
        return ("malformed", "prev or hash is not a SHA-256 hex digest"), record
    try:
        canonical = canonical_json(record)
        digest_of_contents = record_hash(seq, prev, event)
    except ValueError:  # a lone surrogate (UnicodeEncodeError) or a number out of range (inf)
        why = "line holds text or a number no record can hold (a lone surrogate, an infinite number): edited?"
        return ("malformed", why), record
    if canonical + b"\n" != raw:
        return ("not_canonical", "line is not in canonical form: its bytes were edited"), record
    if expected_seq is not None and seq != expected_seq:
        if seq > expected_seq:
            what = f"records {expected_seq}..{seq - 1} are missing (deleted, or moved after this one)"
        else:
            what = f"seq {seq} comes again or too early (a record was inserted, or records reordered)"
        return ("sequence", f"expected seq {expected_seq}, found {seq}: {what}"), record
    if head is not None and prev != head:
        return ("broken_link", "prev is not the hash of the record before it (inserted or replaced)"), record
    if digest_of_contents != digest:
        return ("hash_mismatch", "the record's contents do not match its hash (edited)"), record
    return None, record


def _match_checkpoint(report: VerifyReport, checkpoint: CheckpointRef | None, path: Path, line: int) -> None:
    # A bad checkpoint found while loading comes after every loaded one, so those still count;
    # after a mismatch with the chain, none does.
    mismatched = (
        report.checkpoint_problem is not None and report.checkpoint_problem.kind == "checkpoint_mismatch"
    )
    if checkpoint is None or mismatched:
        return
    if checkpoint.head != report.head:
        report.checkpoint_problem = report.checkpoint_problem or Problem(
            "checkpoint_mismatch",
            f"checkpoint #{checkpoint.number} ({checkpoint.time}) signed a different head for this record: "
            "the chain up to here was rewritten",
            path,
            line,
            checkpoint.seq,
        )
        return
    report.last_verified = checkpoint


def _check_tail(report: VerifyReport, checkpoints: list[CheckpointRef], target: Path) -> None:
    beyond = [c for c in checkpoints if c.seq > report.last_seq]
    if not beyond or report.checkpoint_problem is not None:
        return
    if target.is_file() and _has_later_segment(target):
        report.notes.append(f"{len(beyond)} checkpoint(s) cover later segments and were not checked")
        return
    first = beyond[0]
    last_file = report.files[-1] if report.files else target
    report.checkpoint_problem = Problem(
        "truncated",
        f"checkpoint #{first.number} ({first.time}) covers {first.seq} records but the log ends at seq "
        f"{report.last_seq}: records {report.last_seq + 1}..{first.seq} were removed",
        last_file,
        None,
        report.last_seq + 1,
    )


def _name_seq(path: Path) -> int | None:
    match = SEGMENT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def _peek_seq(raw: bytes) -> int | None:
    try:
        seq = json.loads(raw).get("seq")
    except (ValueError, AttributeError, RecursionError):
        return None
    return seq if isinstance(seq, int) else None


def _has_later_segment(path: Path) -> bool:
    own = _name_seq(path)
    return own is not None and any(first > own for first, _ in list_segments(path.parent))
