"""Reading a bundle tarball is bounded before its signature is checked (``read_tarball``).

Anyone who can answer the bundle URL chooses the tarball, and the gateway reads it before it
checks the signature: a few hundred KiB of gzip must not cost it GiB of memory. The bounds are
checked where tarfile would spend the memory: the decompressed stream is counted, a GNU
long-name or pax header is judged by its declared size before it is read, headers are not
kept, and members that no bundle holds are refused.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from labelgate.bundle.build import (
    MAX_EXTENDED_HEADER_BYTES,
    MAX_EXTENDED_RUN,
    MAX_MEMBERS,
    read_tarball,
    write_tarball,
)
from labelgate.errors import InvalidInput

MODULE = b"package labelgate.decision\n\nresult := {}\n"
BLOCK = 512


def _gzip(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def _header(name: str, kind: bytes, size: int, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padded(content: bytes) -> bytes:
    return content + b"\0" * (-len(content) % BLOCK)


def _end() -> bytes:
    return b"\0" * (2 * BLOCK)


def _refusal(tarball: bytes, **limits: int) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        read_tarball(tarball, **limits)
    return refused.value


def test_a_long_name_header_of_megabytes_is_refused_by_its_declared_size() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a" * (4 * 2**20) + ".rego")  # a GNU `L` header of 4 MiB
        info.size = len(MODULE)
        tar.addfile(info, io.BytesIO(MODULE))
    refused = _refusal(_gzip(raw.getvalue()))
    assert refused.reason == "BUNDLE_TOO_LARGE"
    assert f"long-name or pax header of {4 * 2**20 + 6} bytes" in refused.message


def test_the_long_name_is_refused_before_it_is_read() -> None:
    """The header announces 4 MiB the stream does not hold: reading them would be a truncated
    tarball (BUNDLE_UNREADABLE); the refusal comes from the header alone."""
    raw = _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 4 * 2**20) + _end()
    refused = _refusal(_gzip(raw))
    assert refused.reason == "BUNDLE_TOO_LARGE"
    assert "long-name or pax header" in refused.message


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_within_the_bound_read(fmt: int) -> None:
    name = "labelgate/" + "d" * 300 + "/x.rego"  # a pax `x` or GNU `L` header of a few hundred bytes
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(MODULE)
        tar.addfile(info, io.BytesIO(MODULE))
    assert read_tarball(_gzip(raw.getvalue())) == {name: MODULE}


def test_a_pax_header_above_the_bound_is_refused() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x.rego")
        info.size = len(MODULE)
        info.pax_headers = {"comment": "c" * (MAX_EXTENDED_HEADER_BYTES + 1)}
        tar.addfile(info, io.BytesIO(MODULE))
    refused = _refusal(_gzip(raw.getvalue()))
    assert refused.reason == "BUNDLE_TOO_LARGE" and "pax header" in refused.message


def test_a_run_of_extended_headers_is_refused() -> None:
    """Each pax header is small; tarfile reads a run of them recursively, so the run is bounded."""
    raw = b"".join(_header("././@PaxHeader", tarfile.XHDTYPE, 0) for _ in range(MAX_EXTENDED_RUN + 1))
    raw += _header("x.rego", tarfile.REGTYPE, len(MODULE)) + _padded(MODULE) + _end()
    refused = _refusal(_gzip(raw))
    assert refused.reason == "BUNDLE_FILE_INVALID"
    assert f"more than {MAX_EXTENDED_RUN} tar long-name or pax headers in a row" in refused.message


def test_a_tarball_of_too_many_members_is_refused() -> None:
    raw = b"".join(_header(f"m{index}/", tarfile.DIRTYPE, 0) for index in range(MAX_MEMBERS + 1)) + _end()
    refused = _refusal(_gzip(raw))
    assert refused.reason == "BUNDLE_TOO_LARGE"
    assert f"more than {MAX_MEMBERS} members" in refused.message


def test_every_decompressed_byte_counts_not_only_the_files_declared_sizes() -> None:
    """Five files of 3 bytes are 15 bytes of content and 5 KiB of tar: the stream is what is bounded."""
    tarball = write_tarball([(f"f{index}.rego", b"abc") for index in range(5)])
    assert read_tarball(tarball, max_bytes=20 * 1024) == {f"f{index}.rego": b"abc" for index in range(5)}
    refused = _refusal(tarball, max_bytes=2048)
    assert refused.reason == "BUNDLE_TOO_LARGE"
    assert "unpacks to more than 2048 bytes" in refused.message


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.SYMTYPE, "a symbolic link"),
        (tarfile.LNKTYPE, "a hard link"),
        (tarfile.CHRTYPE, "a character device"),
        (tarfile.FIFOTYPE, "a FIFO"),
        (tarfile.GNUTYPE_SPARSE, "a sparse file"),
        (b"Z", "of tar type b'Z'"),
    ],
)
def test_members_no_bundle_holds_are_refused_by_name(kind: bytes, what: str) -> None:
    raw = _header("x.rego", tarfile.REGTYPE, len(MODULE)) + _padded(MODULE)
    raw += _header("labelgate/data.json", kind, 0, linkname="/etc/passwd") + _end()
    refused = _refusal(_gzip(raw))
    assert refused.reason == "BUNDLE_FILE_INVALID"
    assert f"'labelgate/data.json' is {what}: a bundle holds regular files only" in refused.message


def test_folders_are_skipped_and_files_read() -> None:
    raw = _header("labelgate/", tarfile.DIRTYPE, 0)
    raw += _header("labelgate/x.rego", tarfile.REGTYPE, len(MODULE)) + _padded(MODULE) + _end()
    assert read_tarball(_gzip(raw)) == {"labelgate/x.rego": MODULE}


@pytest.mark.parametrize("tarball", [b"not a tarball", _gzip(b"not a tar"), _gzip(b"x" * 600)[:40]])
def test_what_does_not_read_is_unreadable(tarball: bytes) -> None:
    assert _refusal(tarball).reason == "BUNDLE_UNREADABLE"


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n"
    size = len(body) + 1
    while len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return f"{size}{body}".encode()


@pytest.mark.parametrize(
    ("pax", "data"),
    [
        # GNU sparse 1.0: tarfile reads the map from the member's data, as long as it says
        # (found by review: a 64 KiB tarball grew the process by 3 GB)
        ({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}, b"200000\n" + b"0\n" * 4096),
        ({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}, b"zz\n"),  # a malformed map
        ({"GNU.sparse.map": "0,1,2,3"}, b""),  # sparse 0.1
        ({"GNU.sparse.size": "10", "GNU.sparse.offset": "0", "GNU.sparse.numbytes": "1"}, b""),  # 0.0
    ],
)
def test_a_sparse_file_announced_by_a_pax_header_is_refused_before_its_map_is_read(
    pax: dict[str, str], data: bytes
) -> None:
    records = b"".join(_pax_record(key, value) for key, value in pax.items())
    raw = (
        _header("././@PaxHeader", tarfile.XHDTYPE, len(records))
        + _padded(records)
        + _header("policy.rego", tarfile.REGTYPE, 0)
        + _padded(data)
        + _end()
    )
    refused = _refusal(_gzip(raw))
    assert refused.reason == "BUNDLE_FILE_INVALID" and "sparse" in refused.message


def test_more_than_one_pax_global_header_is_refused() -> None:
    # tarfile copies every global header into each later member: many cost quadratic CPU
    # (found by review: a 2.4 MiB tarball took 69 s to read before its signature was checked).
    record = _pax_record("comment", "x" * 64)
    one_global = _header("pax_global_header", tarfile.XGLTYPE, len(record)) + _padded(record)
    member = _header("policy.rego", tarfile.REGTYPE, len(MODULE)) + _padded(MODULE)
    assert read_tarball(_gzip(one_global + member + _end())) == {"policy.rego": MODULE}
    refused = _refusal(_gzip((one_global + member) * 2 + _end()))
    assert refused.reason == "BUNDLE_FILE_INVALID" and "global header" in refused.message
