"""Tamper tests: every kind of meddling with a log the real writer wrote is detected and located."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labelgate.audit import AuditClient
from labelgate.audit.checkpoints import CheckpointSigner, generate_keypair, load_private_key, load_public_key
from labelgate.audit.records import GENESIS, canonical_json, make_line, record_hash
from labelgate.audit.verify import verify_log
from labelgate.errors import ConfigError
from tests.audit.conftest import make_event, writer_process

RECORDS = 60  # checkpoints every 10 records: #1 at seq 10 ... #6 at seq 60


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(log dir, signing key, public key): 60 records written one by one by a real writer."""
    base = tmp_path_factory.mktemp("sealed")
    private_path, public_path, _ = generate_keypair(base / "keys")
    sock, log_dir = base / "w.sock", base / "log"

    async def fill() -> None:
        async with AuditClient(sock) as client:
            for n in range(RECORDS):
                await client.append(make_event(request_id=f"request-{n + 1}"))

    with writer_process(sock, log_dir, "--signing-key", str(private_path), "--checkpoint-every", "10"):
        asyncio.run(fill())
    (log_dir / ".lock").unlink()
    return log_dir, private_path, public_path


@pytest.fixture
def log(sealed: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    """A fresh copy of the sealed log to tamper with."""
    return Path(shutil.copytree(sealed[0], tmp_path / "log"))


@pytest.fixture
def key(sealed: tuple[Path, Path, Path]):
    return load_public_key(sealed[2])


def segment(log: Path) -> Path:
    (path,) = log.glob("audit-*.jsonl")
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, new: list[bytes]) -> None:
    path.write_bytes(b"".join(new))


def test_an_untouched_log_verifies(log: Path, key) -> None:
    report = verify_log(log, key)
    assert report.ok, report.problems
    assert (report.records, report.checkpoints) == (RECORDS, 6)
    assert report.last_verified is not None
    assert (report.last_verified.number, report.last_verified.seq) == (6, RECORDS)


def test_every_single_byte_edit_is_detected_at_its_line(log: Path, key) -> None:
    path = segment(log)
    original = lines(path)
    size = len(original[24])
    # Every byte of the chain fields at the end (hash, prev, seq, braces, newline) and a
    # spread of bytes through the event: ~250 edits, each verified from scratch.
    offsets = sorted({*range(0, size - 160, 7), *range(size - 160, size)})
    missed = []
    for offset in offsets:
        line = bytearray(original[24])
        line[offset] ^= 0x01  # a digit, hex letter, quote, brace or the newline: each flipped once
        write_lines(path, [*original[:24], bytes(line), *original[25:]])
        report = verify_log(log, key)
        problem = report.record_problem
        if (
            problem is None
            or problem.line != 25
            or report.last_verified is None
            or report.last_verified.seq != 20
        ):
            missed.append((offset, chr(original[24][offset]), problem))
    assert missed == []


def test_an_edited_value_is_a_hash_mismatch(log: Path, key) -> None:
    path = segment(log)
    content = lines(path)
    content[24] = content[24].replace(b'"decision":"mask"', b'"decision":"deny"')
    write_lines(path, content)
    problem = verify_log(log, key).record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("hash_mismatch", 25, 25)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"model":"customer-profile"', b'"model":"\\ud800"'),  # a lone surrogate: no UTF-8 form
        (b'"latency_ms":1.25', b'"latency_ms":1e400'),  # parses to inf: no canonical form
        (b'"subject":{', b'"subject":{"\\udc80":1,'),
    ],
)
def test_text_or_a_number_no_record_can_hold_is_a_malformed_line_not_a_crash(
    log: Path, key, old: bytes, new: bytes
) -> None:
    """Re-encoding such a line raised (UnicodeEncodeError, or ValueError for inf) out of
    ``verify``: a traceback instead of the edited line's location."""
    path = segment(log)
    content = lines(path)
    assert old in content[24]
    content[24] = content[24].replace(old, new)
    write_lines(path, content)
    report = verify_log(log, key)
    problem = report.record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("malformed", 25, 25)
    assert report.records == 24 and report.last_verified is not None and report.last_verified.seq == 20


def test_a_number_past_the_digit_limit_is_a_malformed_line_not_a_crash(log: Path, key) -> None:
    """json.loads raises a plain ValueError past 4,300 digits: ``audit verify`` ended in an
    internal error instead of locating the edited line, or the edited checkpoint."""
    path = segment(log)
    content = lines(path)
    content[24] = content[24].replace(b'"latency_ms":1.25', b'"latency_ms":' + b"9" * 5000)
    write_lines(path, content)
    report = verify_log(log, key)
    problem = report.record_problem
    assert problem is not None and (problem.kind, problem.line) == ("malformed", 25)
    assert report.records == 24
    checkpoints = log / "checkpoints.jsonl"
    write_lines(checkpoints, [*lines(checkpoints), b'{"seq":' + b"9" * 5000 + b"}\n"])
    problem = verify_log(log, key).checkpoint_problem
    assert problem is not None and (problem.kind, problem.line) == ("checkpoint_malformed", 7)


def test_a_deleted_record_is_located(log: Path, key) -> None:
    path = segment(log)
    content = lines(path)
    del content[29]
    write_lines(path, content)
    report = verify_log(log, key)
    problem = report.record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("sequence", 30, 31)
    assert "records 30..30 are missing" in problem.message
    assert report.last_verified is not None and report.last_verified.seq == 20


def test_an_inserted_copy_is_located(log: Path, key) -> None:
    path = segment(log)
    content = lines(path)
    content.insert(20, content[9])
    write_lines(path, content)
    problem = verify_log(log, key).record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("sequence", 21, 10)


def test_an_inserted_record_with_a_valid_hash_is_located(log: Path, key) -> None:
    # The forger knows the algorithm: seq 21, prev = hash of 20, hash recomputed.
    path = segment(log)
    content = lines(path)
    prev = json.loads(content[19])["hash"]
    forged, _ = make_line(21, prev, make_event(decision="allow", reason="nothing to see"))
    content.insert(20, forged)
    write_lines(path, content)
    problem = verify_log(log, key).record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("sequence", 22, 21)


def test_two_swapped_records_are_located(log: Path, key) -> None:
    path = segment(log)
    content = lines(path)
    content[29], content[30] = content[30], content[29]
    write_lines(path, content)
    problem = verify_log(log, key).record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("sequence", 30, 31)


def test_a_replaced_record_breaks_the_link(log: Path, key) -> None:
    path = segment(log)
    content = lines(path)
    content[29], _ = make_line(30, "ab" * 32, make_event())
    write_lines(path, content)
    problem = verify_log(log, key).record_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("broken_link", 30, 30)


@pytest.mark.parametrize("keep", [55, 50, 0])
def test_a_truncated_tail_is_detected_by_the_checkpoints(log: Path, key, keep: int) -> None:
    path = segment(log)
    write_lines(path, lines(path)[:keep])
    report = verify_log(log, key)
    assert report.record_problem is None  # what is left is a valid chain...
    problem = report.checkpoint_problem
    assert problem is not None and problem.kind == "truncated"  # ...but shorter than signed
    assert problem.seq == keep + 1
    assert f"log ends at seq {keep}" in problem.message
    last = report.last_verified
    assert (last.seq if last else 0) == keep // 10 * 10


def test_a_rewritten_chain_is_caught_at_the_next_checkpoint(log: Path, key) -> None:
    # Edit record 25 and recompute every hash after it: the chain links again, the
    # checkpoint signed at seq 30 does not.
    path = segment(log)
    content = lines(path)
    prev = json.loads(content[23])["hash"]
    for index in range(24, RECORDS):
        record = json.loads(content[index])
        if index == 24:
            record["event"]["decision"] = "allow"
        content[index], prev = make_line(record["seq"], prev, record["event"])
    write_lines(path, content)
    report = verify_log(log, key)
    assert report.record_problem is None
    problem = report.checkpoint_problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == ("checkpoint_mismatch", 30, 30)
    assert report.last_verified is not None and report.last_verified.seq == 20


def test_an_edited_checkpoint_count_fails_its_signature(log: Path, key) -> None:
    checkpoints = log / "checkpoints.jsonl"
    content = lines(checkpoints)
    last = json.loads(content[5])
    last["seq"] = 55
    content[5] = canonical_json(last) + b"\n"
    write_lines(checkpoints, content)
    report = verify_log(log, key)
    problem = report.checkpoint_problem
    assert problem is not None
    assert (problem.kind, problem.file.name, problem.line) == ("checkpoint_signature", "checkpoints.jsonl", 6)
    assert "forged or edited" in problem.message
    # Even without the public key the edited count no longer matches the chain.
    unsigned = verify_log(log, None).checkpoint_problem
    assert unsigned is not None and unsigned.kind == "checkpoint_mismatch"


def test_a_checkpoint_forged_with_another_key_is_refused(log: Path, key, tmp_path: Path) -> None:
    # Cut the last 5 records and replace the last checkpoint by one that vouches for 55.
    path = segment(log)
    kept = lines(path)[:55]
    write_lines(path, kept)
    checkpoints = log / "checkpoints.jsonl"
    forged = CheckpointSigner(Ed25519PrivateKey.generate()).checkpoint(
        55, json.loads(kept[-1])["hash"], "2026-01-01T00:00:00Z"
    )
    write_lines(checkpoints, [*lines(checkpoints)[:5], canonical_json(forged) + b"\n"])
    report = verify_log(log, key)
    problem = report.checkpoint_problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("checkpoint_signature", 6)
    assert "not by the given public key" in problem.message
    assert report.last_verified is not None and report.last_verified.number == 5


def test_a_checkpoint_with_the_right_key_id_but_a_made_up_signature_is_refused(
    log: Path, key, sealed: tuple[Path, Path, Path]
) -> None:
    checkpoints = log / "checkpoints.jsonl"
    content = lines(checkpoints)
    fake = json.loads(content[2])
    signer = CheckpointSigner(load_private_key(sealed[1]))
    fake["signature"] = signer.checkpoint(1, "00" * 32, "x")["signature"]
    content[2] = canonical_json(fake) + b"\n"
    write_lines(checkpoints, content)
    problem = verify_log(log, key).checkpoint_problem
    assert problem is not None and (problem.kind, problem.line) == ("checkpoint_signature", 3)


def test_removing_the_checkpoints_is_detected_when_a_key_is_given(log: Path, key) -> None:
    (log / "checkpoints.jsonl").unlink()
    report = verify_log(log, key)
    assert report.checkpoint_problem is not None and report.checkpoint_problem.kind == "no_checkpoint"
    assert verify_log(log, None).ok  # without a key there is nothing to demand


def test_without_a_key_the_report_says_signatures_were_not_checked(log: Path) -> None:
    report = verify_log(log, None)
    assert report.ok and not report.signatures_checked
    assert any("NOT checked" in note for note in report.notes)


def test_a_single_segment_file_is_verified_against_its_directory(log: Path, key) -> None:
    assert verify_log(segment(log), key).ok
    path = segment(log)
    write_lines(path, lines(path)[:45])
    problem = verify_log(path, key).checkpoint_problem
    assert problem is not None and problem.kind == "truncated"


def test_missing_paths_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        verify_log(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="no audit log"):
        verify_log(tmp_path)


def cut(log: Path, records: int, checkpoints: int) -> None:
    """Cut the log after ``records`` records and its checkpoints after ``checkpoints``: a cut
    tail that leaves a complete-looking, validly signed log."""
    path = segment(log)
    write_lines(path, lines(path)[:records])
    write_lines(log / "checkpoints.jsonl", lines(log / "checkpoints.jsonl")[:checkpoints])


def test_a_tail_cut_with_its_checkpoints_is_found_against_an_outside_anchor(log: Path, key) -> None:
    head_60 = json.loads(lines(segment(log))[59])["hash"]
    head_30 = json.loads(lines(segment(log))[29])["hash"]
    cut(log, 30, 3)
    assert verify_log(log, key).ok  # nothing on this host tells the cut...
    for anchor in ({"expect_seq": 60}, {"expect_head": head_60}, {"expect_seq": 60, "expect_head": head_60}):
        report = verify_log(log, key, **anchor)  # ...a copy kept elsewhere does
        assert not report.ok, anchor
        (problem,) = report.problems
        assert problem.kind == "anchor", anchor
    assert "records 31..60" in verify_log(log, key, expect_seq=60).problems[0].message
    assert verify_log(log, key, expect_seq=30, expect_head=head_30).ok
    assert verify_log(log, key, expect_head=head_30).ok
    # The right count with another head: the chain up to the anchor was rewritten.
    wrong = verify_log(log, key, expect_seq=30, expect_head=head_60)
    assert [p.kind for p in wrong.problems] == ["anchor"] and "rewritten" in wrong.problems[0].message


def test_records_no_signed_checkpoint_covers_are_counted(log: Path, key) -> None:
    assert verify_log(log, key).uncovered == 0
    path = segment(log)
    last = json.loads(lines(path)[-1])
    appended, _ = make_line(RECORDS + 1, last["hash"], {**last["event"], "note": "approved by ciso"})
    write_lines(path, [*lines(path), appended])
    report = verify_log(log, key)
    assert report.ok and report.uncovered == 1  # a valid chain, but nothing signed vouches for seq 61
    cut(log, 25, 2)
    assert verify_log(log, key).uncovered == 5
    (log / "checkpoints.jsonl").unlink()
    assert verify_log(log, None).uncovered == 25


# -- one segment verified on its own -----------------------------------------------------------
# 30 records in segments of 6 (audit-1, -7, -13, -19, -25), a checkpoint every 5 records: the
# reviewer's layout. A segment given alone is checked against its name, the next segment's
# name and every checkpoint that falls inside it.


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(log dir, public key): 30 records in 5 segments of 6, checkpoints at 5, 10, ... 30."""
    base = tmp_path_factory.mktemp("segmented")
    private_path, public_path, _ = generate_keypair(base / "keys")
    sock, log_dir = base / "w.sock", base / "log"
    events = [make_event(request_id=f"request-{n:02d}") for n in range(1, 31)]
    size = len(make_line(10, "0" * 64, events[9])[0])  # every line within a byte of this
    every = ("--checkpoint-every", "5", "--max-segment-bytes", str(5 * size + size // 2))

    async def fill() -> None:
        async with AuditClient(sock) as client:
            for event in events:
                await client.append(event)

    with writer_process(sock, log_dir, "--signing-key", str(private_path), *every):
        asyncio.run(fill())
    (log_dir / ".lock").unlink()
    firsts = [int(path.name[6:18]) for path in sorted(log_dir.glob("audit-*.jsonl"))]
    assert firsts == [1, 7, 13, 19, 25]
    checkpoints = [json.loads(line)["seq"] for line in lines(log_dir / "checkpoints.jsonl")]
    assert checkpoints == [5, 10, 15, 20, 25, 30]
    return log_dir, public_path


@pytest.fixture
def segments(segmented: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(segmented[0], tmp_path / "log"))


@pytest.fixture
def segments_key(segmented: tuple[Path, Path]):
    return load_public_key(segmented[1])


def named(log: Path, first: int) -> Path:
    return log / f"audit-{first:012d}.jsonl"


def test_every_untouched_segment_verifies_alone(segments: Path, segments_key) -> None:
    for first in (1, 7, 13, 19, 25):
        report = verify_log(named(segments, first), segments_key)
        assert report.ok, (first, report.problems)
        assert (report.first_seq, report.last_seq) == (first, first + 5)


def test_a_segment_alone_with_its_first_record_cut_is_tampered(segments: Path, segments_key) -> None:
    # It verified "OK, NOT ALL SIGNED": the walk started wherever the file did.
    path = named(segments, 1)
    write_lines(path, lines(path)[1:])
    report = verify_log(path, segments_key)
    assert not report.ok
    problem = report.record_problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("segment_name", path, 1)
    assert verify_log(segments, segments_key).record_problem == problem  # as the folder walk says


def test_a_segment_alone_with_the_records_of_a_checkpoint_cut_from_its_start_is_tampered(
    segments: Path, segments_key
) -> None:
    path = named(segments, 7)
    write_lines(path, lines(path)[4:])  # records 7..10 gone, and with them checkpoint 10's record
    report = verify_log(path, segments_key)
    assert not report.ok
    problem = report.record_problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("segment_name", path, 1)
    assert "seq 7" in problem.message and "11" in problem.message


def test_a_segment_alone_with_the_records_of_a_checkpoint_cut_from_its_tail_is_tampered(
    segments: Path, segments_key
) -> None:
    # Checkpoint 15 lies inside this segment (13..18): the later segment does not excuse it.
    path = named(segments, 13)
    write_lines(path, lines(path)[:2])  # records 15..18 gone
    report = verify_log(path, segments_key)
    assert not report.ok
    problem = report.checkpoint_problem
    assert problem is not None and (problem.kind, problem.file, problem.seq) == ("truncated", path, 15)
    assert "records 15..18" in problem.message
    assert "3 checkpoint(s) cover later segments and were not checked" in report.notes  # 20, 25, 30


def test_a_segment_alone_cut_short_of_the_next_one_is_tampered_without_a_checkpoint_in_the_cut(
    segments: Path, segments_key
) -> None:
    path = named(segments, 13)
    write_lines(path, lines(path)[:4])  # 13..16 kept (checkpoint 15 still matches), 17..18 gone
    report = verify_log(path, segments_key)
    assert not report.ok
    (problem,) = report.problems
    assert (problem.kind, problem.file, problem.seq) == ("truncated", path, 17)
    assert "records 17..18" in problem.message and named(segments, 19).name in problem.message


@pytest.mark.parametrize("decoy", ["empty", "unchained"])
def test_a_file_dropped_beside_a_segment_alone_does_not_vouch_for_its_cut_tail(
    segments: Path, segments_key, decoy: str
) -> None:
    """Review of the single-segment fix (eighth round): a segment's tail cut, and a file named
    where the cut began dropped beside it, had the checkpoints inside the cut waved off as
    covering later segments. An empty file is no segment; one whose first record does not
    continue this segment's chain does not bound it."""
    path = named(segments, 13)
    kept = lines(path)[:2]  # 13..14 kept, 15..18 (checkpoint 15 among them) gone
    write_lines(path, kept)
    beside = named(segments, 15)
    if decoy == "empty":
        write_lines(beside, [])
    else:  # a well-formed record 15 of another chain
        event = {"kind": "call", "request_id": "decoy"}
        digest = record_hash(15, GENESIS, event)
        record = {"seq": 15, "prev": GENESIS, "hash": digest, "event": event}
        write_lines(beside, [canonical_json(record) + b"\n"])
    report = verify_log(path, segments_key)
    assert not report.ok, report.notes
    (problem,) = report.problems
    assert problem.kind in ("truncated", "broken_link") and problem.seq == 15


def test_an_emptied_segment_alone_is_tampered(segments: Path, segments_key) -> None:
    path = named(segments, 19)
    write_lines(path, [])
    report = verify_log(path, segments_key)
    assert not report.ok and report.checkpoint_problem is not None
    assert (report.checkpoint_problem.kind, report.checkpoint_problem.seq) == ("truncated", 19)


def test_the_last_segment_alone_cut_at_its_tail_is_tampered(segments: Path, segments_key) -> None:
    path = named(segments, 25)
    write_lines(path, lines(path)[:4])
    problem = verify_log(path, segments_key).checkpoint_problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 29)


def test_an_anchor_inside_a_segment_given_alone_is_checked(segments: Path, segments_key) -> None:
    path = named(segments, 13)
    assert verify_log(path, segments_key, expect_seq=16).ok
    later = verify_log(path, segments_key, expect_seq=22)
    assert later.ok and any("later segment" in note for note in later.notes)
    write_lines(path, lines(path)[:2])
    report = verify_log(path, segments_key, expect_seq=16)
    assert report.anchor_problem is not None and report.anchor_problem.seq == 15


def _append(sock: Path, log_dir: Path, count: int, *writer_args: str) -> None:
    async def fill() -> None:
        async with AuditClient(sock) as client:
            for n in range(count):
                await client.append(make_event(request_id=f"request-{n + 1}"))

    with writer_process(sock, log_dir, "--checkpoint-every", "5", *writer_args):
        asyncio.run(fill())


def test_a_key_given_to_a_running_log_vouches_from_its_first_checkpoint(tmp_path: Path) -> None:
    # An operator adds a signing key (or a new one) to a writer whose log already holds
    # checkpoints: those are unsigned (or another key's), the later ones are the key's.
    first_private, _, _ = generate_keypair(tmp_path / "first")
    private, public, _ = generate_keypair(tmp_path / "keys")
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    _append(sock, log_dir, 10)
    _append(sock, log_dir, 10, "--signing-key", str(first_private))
    _append(sock, log_dir, 10, "--signing-key", str(private))
    report = verify_log(log_dir, load_public_key(public))
    assert report.ok, report.problems
    assert report.records == 30 and report.last_verified is not None and report.last_verified.seq == 30
    note = "4 checkpoint(s) before the first one this key signed (up to seq 20)"
    assert any(note in line for line in report.notes)


def test_checkpoints_after_the_keys_first_must_all_be_its_own(tmp_path: Path) -> None:
    private, public, _ = generate_keypair(tmp_path / "keys")
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    _append(sock, log_dir, 10, "--signing-key", str(private))
    _append(sock, log_dir, 10)  # the key dropped: unsigned checkpoints after signed ones
    problem = verify_log(log_dir, load_public_key(public)).checkpoint_problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("checkpoint_signature", 3, 15)
    assert problem.message == "checkpoint is unsigned"


def test_a_log_the_key_signed_nothing_of_is_refused_at_its_first_checkpoint(tmp_path: Path) -> None:
    _, public, _ = generate_keypair(tmp_path / "keys")
    sock, log_dir = tmp_path / "w.sock", tmp_path / "log"
    _append(sock, log_dir, 10)
    report = verify_log(log_dir, load_public_key(public))
    problem = report.checkpoint_problem
    assert problem is not None and (problem.kind, problem.line, problem.seq) == ("checkpoint_signature", 1, 5)
    assert not report.ok
