"""A bundle tarball naming one file twice is refused, as OPA refuses it (review: the last copy
was kept, so a signed bundle with a second, unsigned copy of a module read as the copy the
signature covered while OPA refused the bundle, and one with the copy last failed only on its
signature; OPA and labelgate must not read one bundle two ways)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from labelgate.bundle.build import build_bundle, read_tarball
from labelgate.bundle.signing import Signer
from labelgate.errors import InvalidInput
from labelgate.policy.bundle_client import read_bundle
from labelgate.policy.source import BundleKey
from tests.bundle.helpers import KeyPair

MODULE = "t/p.rego"
SIGNED = b"package t\n\nallow := false\n"
OTHER = b"package t\n\nallow := true\n"


def tarball(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@pytest.mark.parametrize("name", [MODULE, "/" + MODULE])  # a leading / is dropped, as OPA drops it
@pytest.mark.parametrize("first", [True, False])
def test_a_file_named_twice_is_refused(name: str, first: bool) -> None:
    members = [(MODULE, SIGNED), (name, OTHER)]
    with pytest.raises(InvalidInput) as refused:
        read_tarball(tarball(members if first else members[::-1]))
    assert refused.value.reason == "BUNDLE_FILE_INVALID"
    assert f"{MODULE} twice" in refused.value.message


@pytest.mark.parametrize("where", ["before the signed copy", "last"])
def test_a_signed_bundle_with_a_second_copy_of_a_module_is_refused(rsa_keys: KeyPair, where: str) -> None:
    signed = list(build_bundle([(MODULE, SIGNED)], Signer.from_pem(rsa_keys.private_pem)).files)
    extra = (MODULE, OTHER)
    members = [*signed[:2], extra, *signed[2:]] if where != "last" else [*signed, extra]
    with pytest.raises(InvalidInput) as refused:
        read_bundle(tarball(members), verify=BundleKey(rsa_keys.public_pem), origin="test")
    assert refused.value.reason == "BUNDLE_FILE_INVALID"


def test_a_folder_named_twice_is_no_file_named_twice() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for _ in range(2):
            folder = tarfile.TarInfo("t")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        module = tarfile.TarInfo(MODULE)
        module.size = len(SIGNED)
        tar.addfile(module, io.BytesIO(SIGNED))
    assert read_tarball(gzip.compress(raw.getvalue())) == {MODULE: SIGNED}
