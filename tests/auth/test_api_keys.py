"""API keys: stored as hashes, looked up in constant time, refused with stable reasons."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import pytest
import yaml

from labelgate.auth import ApiKeyStore, hash_api_key, mint_api_key, new_key_entry, reasons
from labelgate.auth import api_keys as api_keys_module
from labelgate.errors import ConfigError, Unauthenticated


@pytest.fixture
def minted() -> list[tuple[str, dict]]:
    return [new_key_entry("ci-pipeline", ["analysts"]), new_key_entry("batch", ["b", "a", "a"])]


@pytest.fixture
def keys_file(tmp_path: Path, minted) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry for _, entry in minted]}))
    return path


def test_minted_keys_are_long_random_and_recognisable() -> None:
    keys = {mint_api_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(key.startswith("lgk_") and len(key) == 47 for key in keys)


def test_the_file_holds_only_hashes(keys_file: Path, minted) -> None:
    text = keys_file.read_text()
    for key, entry in minted:
        assert key not in text
        assert entry["sha256"] == hash_api_key(key) and entry["sha256"] in text


def test_hash_is_plain_sha256_hex() -> None:
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_known_key_gives_its_subject(keys_file: Path, minted) -> None:
    store = ApiKeyStore.load(keys_file)
    subject = store.verify(minted[1][0])
    assert (subject.name, subject.groups, subject.auth) == ("batch", ("a", "b"), "api_key")
    assert dict(subject.attributes) == {"key_id": "batch"}
    assert store.verify(minted[0][0]).name == "ci-pipeline"


def test_a_json_keys_file_works_too(tmp_path: Path, minted) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [entry for _, entry in minted]}))
    assert ApiKeyStore.load(path).verify(minted[0][0]).name == "ci-pipeline"


def test_an_unknown_key_is_refused_without_echoing_it(keys_file: Path) -> None:
    key = mint_api_key()
    with pytest.raises(Unauthenticated) as caught:
        ApiKeyStore.load(keys_file).verify(key)
    assert caught.value.reason == reasons.API_KEY_UNKNOWN
    assert key not in str(caught.value)


def test_the_hash_itself_is_not_a_key(keys_file: Path, minted) -> None:
    with pytest.raises(Unauthenticated) as caught:
        ApiKeyStore.load(keys_file).verify(minted[0][1]["sha256"])
    assert caught.value.reason == reasons.API_KEY_UNKNOWN


@pytest.mark.parametrize("key", ["short", "x" * 513, "lgk_" + "é" * 40, "lgk_" + "a" * 40 + "\n"])
def test_malformed_keys_are_refused(keys_file: Path, key: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        ApiKeyStore.load(keys_file).verify(key)
    assert caught.value.reason == reasons.API_KEY_MALFORMED


def test_no_keys_file_means_no_key_is_valid() -> None:
    with pytest.raises(Unauthenticated) as caught:
        ApiKeyStore.load(None).verify(mint_api_key())
    assert caught.value.reason == reasons.API_KEY_UNKNOWN


def test_lookup_compares_every_entry_with_compare_digest(keys_file: Path, minted, monkeypatch) -> None:
    """Constant time: the first entry matches, yet every entry is still compared, and only with
    ``hmac.compare_digest`` (no ``==`` that stops at the first differing byte)."""
    calls = []
    real_compare = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(api_keys_module.hmac, "compare_digest", recording)
    store = ApiKeyStore.load(keys_file)
    assert store.verify(minted[0][0]).name == "ci-pipeline"
    assert len(calls) == len(store) == 2
    calls.clear()
    with pytest.raises(Unauthenticated):
        store.verify(mint_api_key())
    assert len(calls) == 2


def test_a_bad_keys_file_lists_every_problem(tmp_path: Path) -> None:
    good = hash_api_key(mint_api_key())
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"id": "a", "sha256": "NOT-HEX", "groups": []},
                    {"id": "", "sha256": good},
                    {"id": "c", "sha256": good, "extra": 1},
                ]
            }
        )
    )
    with pytest.raises(ConfigError) as caught:
        ApiKeyStore.load(path)
    message = caught.value.message
    assert "keys.0.sha256" in message and "keys.1.id" in message and "keys.2.extra" in message


def test_duplicate_ids_and_hashes_are_refused(tmp_path: Path) -> None:
    digest = hash_api_key(mint_api_key())
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"id": "a", "sha256": digest}, {"id": "a", "sha256": digest}]}))
    with pytest.raises(ConfigError) as caught:
        ApiKeyStore.load(path)
    assert "duplicate ids ['a']" in caught.value.message and "share one hash" in caught.value.message


@pytest.mark.parametrize("name", [" analysts", "approvers\u3000", "a\x1fb", ""])
def test_a_group_name_a_subject_cannot_hold_is_refused_at_load(tmp_path: Path, name: str) -> None:
    """Refused at start, not trimmed (another group) nor left to fail every call with the key."""
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump({"keys": [{"id": "ci", "sha256": hash_api_key(mint_api_key()), "groups": [name]}]})
    )
    with pytest.raises(ConfigError) as caught:
        ApiKeyStore.load(path)
    assert caught.value.reason == reasons.AUTH_CONFIG_INVALID and "ci: a group name" in caught.value.message


def test_an_unreadable_keys_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [unclosed")
    with pytest.raises(ConfigError, match="cannot read"):
        ApiKeyStore.load(path)
