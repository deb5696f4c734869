"""``labelgate audit verify``: recompute the chain and check every checkpoint.

What each kind of tampering looks like to the walk:

- an edited byte: the line no longer parses, is not in canonical form, or its contents no
  longer match its hash (``malformed`` / ``not_canonical`` / ``hash_mismatch``);
- a deleted, inserted or reordered record: a seq other than the next one, or a ``prev``
  that is not the previous record's hash (``sequence`` / ``broken_link``);
- a rewritten chain (every hash recomputed after an edit): the record at a checkpoint's
  seq no longer has the signed head (``checkpoint_mismatch``);
- a truncated tail: a checkpoint covers more records than the log holds (``truncated``);
- one segment given alone: its name says which record it starts with (record 1 links to
  ``GENESIS``), the next segment's name where it must end, and every checkpoint between the
  two must match one of its records; records cut from either end are ``segment_name`` or
  ``truncated``. Only the chain before it and after it goes unchecked;
- a forged or edited checkpoint: its signature fails or was made with another key
  (``checkpoint_signature``). Without ``--public-key`` signatures are not checked, only
  counts and heads, and the report says so. Checkpoints before the first one the key signed
  (a writer given its key, or a new key, after it started) are not checked and the report
  counts them; from that checkpoint on, each one must be the key's.

What the log and its checkpoints cannot show on their own, because both lie on the same host
and whoever can cut one can cut the other:

- a tail cut together with the checkpoints that cover it: what is left is a shorter log that
  verifies. Only a copy kept elsewhere tells: ``--expect-seq N`` / ``--expect-head HASH``
  (the ``seq`` and ``hash`` of the latest record a SIEM received from the forwarder) fail the
  check (``anchor``) when the log does not reach record N, or holds no record with that hash
  (record N's, when both are given);
- records after the last checkpoint: a valid chain, but nothing signed vouches for them (they
  may have been appended by the writer's own user, and records after them cut). The report
  counts them (``uncovered``) and does not call them plain OK; the writer's checkpoint
  interval bounds how many there are in normal operation.

The walk stops at the first bad record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from labelgate.audit import reasons
from labelgate.audit.checkpoints import CHECKPOINT_KEYS, check_signature, signed_by
from labelgate.audit.records import GENESIS, RECORD_KEYS, canonical_json, is_hex_digest, record_hash
from labelgate.audit.store import CHECKPOINTS_NAME, SEGMENT_PATTERN, list_segments, parse_record, segment_name
from labelgate.errors import ConfigError
from labelgate.reasons import OPTION_INVALID


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
    # Where the walk starts: seq 1 for a folder, the seq a single segment's name says.
    start_seq: int = 1
    # For a single segment: the seq the next segment's name says it starts with (this one
    # must end just before it); None for a folder or the last segment.
    next_seq: int | None = None
    # The ``prev`` of that segment's first record: it must be this one's last record's hash.
    next_prev: str | None = None
    first_seq: int | None = None
    last_seq: int = 0
    head: str = GENESIS
    record_problem: Problem | None = None
    checkpoint_problem: Problem | None = None
    checkpoints: int = 0
    last_verified: CheckpointRef | None = None
    anchor_problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Problem]:
        found = (self.record_problem, self.checkpoint_problem, self.anchor_problem)
        return [p for p in found if p is not None]

    @property
    def uncovered(self) -> int:
        """Verified records after the last verified checkpoint (every one, without one)."""
        if not self.records:
            return 0
        covered = self.last_verified.seq if self.last_verified else (self.first_seq or 1) - 1
        return max(0, self.last_seq - covered)


@dataclass(frozen=True)
class Anchor:
    """What a copy kept off this host says the log held: record ``seq``, and/or a record whose
    chain hash is ``head`` (record ``seq``'s, when both are given)."""

    seq: int | None = None
    head: str | None = None


@dataclass
class _AnchorSeen:
    hash_at_seq: str | None = None  # the hash of record ``anchor.seq``, once walked
    seq_of_head: int | None = None  # the seq of the record whose hash is ``anchor.head``


def verify_log(
    path: Path,
    public_key: Ed25519PublicKey | None = None,
    *,
    expect_seq: int | None = None,
    expect_head: str | None = None,
) -> VerifyReport:
    """Verify a log directory, or one segment file (then checked against its directory's
    checkpoints); with ``expect_seq``/``expect_head``, also that it reaches that anchor."""
    path = Path(path)
    if expect_seq is not None and expect_seq < 1:
        raise ConfigError(OPTION_INVALID, f"--expect-seq {expect_seq}: a seq counts from 1")
    if expect_head is not None and not is_hex_digest(expect_head):
        raise ConfigError(OPTION_INVALID, "--expect-head: a record hash is 64 lowercase hex digits")
    anchor = Anchor(expect_seq, expect_head) if expect_seq is not None or expect_head is not None else None
    if path.is_dir():
        files, checkpoints_file, start_seq = [p for _, p in list_segments(path)], path / CHECKPOINTS_NAME, 1
        if not files and not checkpoints_file.exists():
            raise ConfigError(
                reasons.AUDIT_LOG_MISSING, f"{path} holds no audit log (no audit-*.jsonl files)"
            )
    elif path.is_file():
        # Decided by the name alone, never by the contents: whoever rewrites a segment's first
        # line must still get TAMPERED. The writer names every segment it makes this way, and a
        # segment renamed out of the pattern drops out of its folder's walk (which then fails).
        name_seq = _name_seq(path)
        if name_seq is None:
            raise ConfigError(
                reasons.AUDIT_LOG_MISSING,
                f"{path} is not an audit log: its segments are named audit-<12-digit seq>.jsonl "
                "(give one, or the folder that holds them)",
            )
        files, checkpoints_file, start_seq = [path], path.parent / CHECKPOINTS_NAME, name_seq
    else:
        raise ConfigError(reasons.AUDIT_LOG_MISSING, f"{path} does not exist")
    report = VerifyReport(
        target=path,
        files=files,
        checkpoints_file=checkpoints_file if checkpoints_file.exists() else None,
        signatures_checked=public_key is not None,
        start_seq=start_seq,
    )
    if path.is_file():
        report.next_seq, report.next_prev = _next_segment(path)
    checkpoints = _load_checkpoints(report, public_key)
    seen = _AnchorSeen()
    _walk_chain(report, {c.seq: c for c in checkpoints}, anchor, seen)
    if report.record_problem is None:
        _check_tail(report, checkpoints)
        _check_segment_end(report)
    if anchor is not None:
        _check_anchor(report, anchor, seen, path)
    elif public_key is not None and report.records:
        report.notes.append(
            "a tail cut together with its checkpoints leaves a log that verifies: check that it reaches "
            "a copy kept elsewhere (--expect-seq/--expect-head, from the SIEM's latest record)"
        )
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
    """The checkpoints up to the first bad one (which becomes the report's checkpoint problem).

    With ``public_key``, checkpoints before the first one that key signed may be unsigned or
    signed by another key: a log whose writer was given its key (or a new one) later. They are
    not loaded, only counted in a note: the first checkpoint the key signed vouches for every
    record before it through the chain. From that one on, each must carry the key's signature.
    """
    path = report.checkpoints_file
    if path is None:
        return []
    loaded: list[CheckpointRef] = []
    earlier: list[tuple[Problem, int]] = []  # (why each is not the key's, its seq), until one is
    last_seq = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            report.checkpoints += 1
            checkpoint, why = _parse_checkpoint(raw)
            kind = "checkpoint_malformed"
            if checkpoint is not None and report.checkpoints > 1 and checkpoint["seq"] <= last_seq:
                kind = "checkpoint_order"
                why = f"covers {checkpoint['seq']} records, not more than checkpoint #{number - 1}"
            if checkpoint is not None and why is None and public_key is not None:
                kind, why = "checkpoint_signature", check_signature(checkpoint, public_key)
                if why is not None and not loaded and not signed_by(checkpoint, public_key):
                    earlier.append((Problem(kind, why, path, number, checkpoint["seq"]), checkpoint["seq"]))
                    last_seq = checkpoint["seq"]
                    continue
            if why is not None:
                seq = checkpoint["seq"] if checkpoint else None
                report.checkpoint_problem = Problem(kind, why, path, number, seq)
                break
            assert checkpoint is not None
            seq, head, time, kid = (checkpoint[k] for k in ("seq", "head", "time", "key_id"))
            loaded.append(CheckpointRef(number, seq, head, time, kid))
            last_seq = seq
    if earlier and not loaded:
        report.checkpoint_problem = earlier[0][0]  # the key signed none of them
    elif earlier and loaded:
        report.notes.append(
            f"{len(earlier)} checkpoint(s) before the first one this key signed (up to seq "
            f"{earlier[-1][1]}) are unsigned or signed by another key: not checked; checkpoint "
            f"#{loaded[0].number} vouches for the records before it"
        )
    return loaded


def _parse_checkpoint(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    if not raw.endswith(b"\n"):
        return None, "incomplete final checkpoint line"
    try:
        checkpoint = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "checkpoint line is not JSON"
    except ValueError:  # an integer past Python's digit limit (sys.get_int_max_str_digits)
        return None, "checkpoint line holds a number longer than any checkpoint's: edited?"
    except RecursionError:
        return None, "checkpoint line is nested too deeply"
    if not isinstance(checkpoint, dict) or set(checkpoint) != CHECKPOINT_KEYS:
        return None, f"a checkpoint has exactly the fields {', '.join(sorted(CHECKPOINT_KEYS))}"
    seq = checkpoint["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not is_hex_digest(checkpoint["head"]):
        return None, "checkpoint seq or head is not valid"
    if not isinstance(checkpoint["time"], str):
        return None, "checkpoint time is not a string"
    if checkpoint["key_id"] is not None and not isinstance(checkpoint["key_id"], str):
        # A writer writes a key id or null (no signing key); anything else was put there.
        return None, "checkpoint key_id is neither a string nor null"
    return checkpoint, None


def _walk_chain(
    report: VerifyReport,
    checkpoints: dict[int, CheckpointRef],
    anchor: Anchor | None = None,
    seen: _AnchorSeen | None = None,
) -> None:
    # A single segment starts where its name says, and only the first one links to GENESIS:
    # the prev of a later segment's first record is the earlier segment's, not checked here.
    expected_seq: int | None = report.start_seq
    head = GENESIS if report.start_seq == 1 else None
    for path in report.files:
        name_seq = _name_seq(path)
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if number == 1 and name_seq is not None:
                    # A renamed segment, or one whose first records were cut, is a sign of
                    # meddling even when the chain still links.
                    first = _peek_seq(raw)
                    if first is not None and first != name_seq:
                        why = f"file name says seq {name_seq} but its first record is {first}"
                        if first > name_seq:
                            cut = f"records {name_seq}..{first - 1}"
                            why += f": {cut} were cut from its start (or the file was renamed)"
                        report.record_problem = Problem("segment_name", why, path, 1)
                        return
                problem, record = _check_line(raw, expected_seq, head)
                if problem is not None:
                    kind, message = problem
                    seq = record["seq"] if record else None
                    report.record_problem = Problem(kind, message, path, number, seq)
                    return
                assert record is not None
                if report.first_seq is None and record["seq"] != 1:
                    report.notes.append(
                        f"verified from seq {record['seq']}: the segments before it were not checked "
                        "(nor the link to them)"
                    )
                if report.first_seq is None:
                    report.first_seq = record["seq"]
                head, expected_seq = record["hash"], record["seq"] + 1
                report.records += 1
                report.last_seq, report.head = record["seq"], head
                _match_checkpoint(report, checkpoints.get(record["seq"]), path, number)
                if anchor is not None and seen is not None:
                    if record["seq"] == anchor.seq:
                        seen.hash_at_seq = head
                    if head == anchor.head and seen.seq_of_head is None:
                        seen.seq_of_head = record["seq"]


def _check_line(
    raw: bytes, expected_seq: int | None, head: str | None
) -> tuple[tuple[str, str] | None, dict[str, Any] | None]:
    if not raw.endswith(b"\n"):
        return ("torn_line", "incomplete final line (crash residue? the writer cuts it on restart)"), None
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return ("malformed", f"line is not JSON ({error}): edited?"), None
    except ValueError:  # an integer past Python's digit limit (sys.get_int_max_str_digits)
        return ("malformed", "line holds a number longer than any record's: edited?"), None
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


def _ends_at(report: VerifyReport) -> int:
    """The seq of the last verified record (the one before the start, when there is none)."""
    return report.last_seq if report.records else report.start_seq - 1


def _check_segment_end(report: VerifyReport) -> None:
    """A single segment ends just before the next one starts: the writer starts a segment only
    once the one before it holds every record up to it. (A cut no checkpoint falls in.)"""
    following, ends_at = report.next_seq, _ends_at(report)
    if following is None:
        return
    path, next_name = report.files[0], segment_name(following)
    if ends_at == following - 1:
        # The next segment must continue this one's chain, or a file dropped beside this one
        # (named where this one's cut tail began) would vouch for the cut: review, eighth round.
        if report.next_prev != report.head:
            why = (
                f"the next segment, {next_name}, does not continue this one's chain: its first "
                f"record's prev is not the hash of seq {ends_at} here"
            )
            report.record_problem = Problem("broken_link", why, path, None, following)
        return
    if ends_at < following - 1:
        if report.checkpoint_problem is None:  # else that already says what is missing
            why = (
                f"it ends at seq {ends_at} but the next segment, {next_name}, starts at seq {following}: "
                f"records {ends_at + 1}..{following - 1} were cut from its tail"
            )
            report.checkpoint_problem = Problem("truncated", why, path, None, ends_at + 1)
    else:
        why = f"it runs to seq {ends_at} but the next segment, {next_name}, starts at seq {following}"
        report.record_problem = Problem("segment_name", why, path, None, following)


def _check_tail(report: VerifyReport, checkpoints: list[CheckpointRef]) -> None:
    ends_at = _ends_at(report)
    beyond = [c for c in checkpoints if c.seq > ends_at]
    if report.next_seq is not None:
        # Those past the next segment's start vouch for records this file does not hold.
        later = [c for c in beyond if c.seq >= report.next_seq]
        beyond = [c for c in beyond if c.seq < report.next_seq]
        if later:
            report.notes.append(f"{len(later)} checkpoint(s) cover later segments and were not checked")
    if not beyond or report.checkpoint_problem is not None:
        return
    first = beyond[0]
    last_file = report.files[-1] if report.files else report.target
    removed = report.next_seq - 1 if report.next_seq is not None else first.seq
    report.checkpoint_problem = Problem(
        "truncated",
        f"checkpoint #{first.number} ({first.time}) covers {first.seq} records but the log ends at seq "
        f"{ends_at}: records {ends_at + 1}..{removed} were removed",
        last_file,
        None,
        ends_at + 1,
    )


def _check_anchor(report: VerifyReport, anchor: Anchor, seen: _AnchorSeen, target: Path) -> None:
    """Whether the verified chain reaches what a copy kept elsewhere says it held."""
    if report.record_problem is not None:
        report.notes.append("the anchor was not checked: the chain breaks before it could be reached")
        return
    last_file = report.files[-1] if report.files else target
    ends_at = _ends_at(report)
    if anchor.seq is not None and anchor.seq < report.start_seq:
        report.notes.append(f"the anchor's record {anchor.seq} is in an earlier segment: not checked")
        return
    if anchor.seq is not None and anchor.seq > ends_at:
        if report.next_seq is not None and anchor.seq >= report.next_seq:
            report.notes.append(f"the anchor's record {anchor.seq} is in a later segment: not checked")
            return
        why = (
            f"the log ends at seq {ends_at}, but a copy kept elsewhere holds record {anchor.seq}: "
            f"records {ends_at + 1}..{anchor.seq} were removed (with their checkpoints)"
        )
        report.anchor_problem = Problem("anchor", why, last_file, None, ends_at + 1)
    elif anchor.seq is not None and anchor.head is not None and seen.hash_at_seq != anchor.head:
        why = (
            f"record {anchor.seq} has hash {seen.hash_at_seq}, not {anchor.head} as the copy kept elsewhere: "
            "the chain up to it was rewritten"
        )
        report.anchor_problem = Problem("anchor", why, last_file, None, anchor.seq)
    elif anchor.seq is None and anchor.head is not None and seen.seq_of_head is None:
        why = (
            f"no record has the hash {anchor.head} of the copy kept elsewhere: the log was cut before it "
            "(with its checkpoints), or rewritten"
        )
        report.anchor_problem = Problem("anchor", why, last_file)


def _name_seq(path: Path) -> int | None:
    match = SEGMENT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def _peek_seq(raw: bytes) -> int | None:
    try:
        seq = json.loads(raw).get("seq")
    except (ValueError, AttributeError, RecursionError):
        return None
    return seq if isinstance(seq, int) else None


def _next_segment(path: Path) -> tuple[int | None, str | None]:
    """(the seq, the ``prev``) of the first record of the segment after ``path``: the first
    later file whose first line is a record of the seq its name says; (None, None) for the last
    segment. A file that is not such a segment (empty, or a decoy dropped beside this one:
    review, eighth round) says nothing about where this one ends; one that is must continue
    this one's chain (``_check_segment_end``)."""
    own = _name_seq(path)
    if own is None:
        return None, None
    for first, later in list_segments(path.parent):
        if first <= own:
            continue
        try:
            with later.open("rb") as lines:
                record = parse_record(lines.readline().rstrip(b"\n"))
        except OSError:
            continue
        if record is not None and record["seq"] == first:
            return first, record["prev"]
    return None, None
