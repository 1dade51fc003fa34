"""LocalKeyFile: KEKs sealed under a scrypt-derived passphrase key, in a 0600 file."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from phiguard.crypto.envelope import aad
from phiguard.crypto.providers import KEYFILE_FORMAT, LocalKeyFile, WrappedKey
from phiguard.errors import KeyProviderError, WrongPassphraseError
from tests.conftest import FAST_SCRYPT, TEST_PASSPHRASE

DEK = bytes(range(32))
ASSOC = aad("phiguard-dek", "default", "Patient/p1", 1)


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


def _open(path: Path, passphrase: str = TEST_PASSPHRASE) -> LocalKeyFile:
    return LocalKeyFile(path, passphrase)


def test_create_then_open_round_trip(keyfile: LocalKeyFile) -> None:
    wrapped = keyfile.wrap(DEK, ASSOC)
    assert wrapped.kek_version == 1
    assert DEK not in wrapped.blob
    reopened = _open(keyfile.path)
    assert reopened.versions() == [1] and reopened.current_version() == 1
    assert reopened.unwrap(wrapped, ASSOC) == DEK
    doc = _doc(keyfile.path)
    assert doc["format"] == KEYFILE_FORMAT
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == FAST_SCRYPT["n"]
    assert keyfile.describe()["provider"] == "local-file"


def test_wrapped_key_is_bound_to_its_row(keyfile: LocalKeyFile) -> None:
    wrapped = keyfile.wrap(DEK, ASSOC)
    for other in (
        aad("phiguard-dek", "default", "Patient/p2", 1),
        aad("phiguard-dek", "default", "Patient/p1", 2),
        aad("phiguard-dek", "other", "Patient/p1", 1),
    ):
        with pytest.raises(KeyProviderError):
            keyfile.unwrap(wrapped, other)
    blob = bytearray(wrapped.blob)
    blob[-1] ^= 1
    with pytest.raises(KeyProviderError):
        keyfile.unwrap(WrappedKey(1, bytes(blob)), ASSOC)


def test_wrong_passphrase_is_refused(keyfile: LocalKeyFile) -> None:
    with pytest.raises(WrongPassphraseError):
        _open(keyfile.path, TEST_PASSPHRASE + "x")
    with pytest.raises(WrongPassphraseError):
        _open(keyfile.path, TEST_PASSPHRASE.upper())


def test_rotate_keeps_old_versions_and_wraps_with_the_new(keyfile: LocalKeyFile) -> None:
    old = keyfile.wrap(DEK, ASSOC)
    assert keyfile.rotate() == 2
    assert keyfile.versions() == [1, 2] and keyfile.current_version() == 2
    new = keyfile.wrap(DEK, ASSOC)
    assert new.kek_version == 2
    assert keyfile.unwrap(old, ASSOC) == DEK
    # The rotation is on disk: another process opening the file sees both versions.
    reopened = _open(keyfile.path)
    assert reopened.versions() == [1, 2]
    assert reopened.unwrap(old, ASSOC) == reopened.unwrap(new, ASSOC) == DEK
    # A wrap claims its KEK version: presenting it as another version fails.
    with pytest.raises(KeyProviderError):
        reopened.unwrap(WrappedKey(1, new.blob), ASSOC)
    with pytest.raises(KeyProviderError):
        reopened.unwrap(WrappedKey(3, new.blob), ASSOC)
    assert keyfile.rotate() == 3
    assert _open(keyfile.path).current_version() == 3
    assert stat.S_IMODE(keyfile.path.stat().st_mode) == 0o600


def test_the_file_is_private(keyfile: LocalKeyFile) -> None:
    assert stat.S_IMODE(keyfile.path.stat().st_mode) == 0o600
    leftovers = [p.name for p in keyfile.path.parent.iterdir() if p != keyfile.path]
    assert leftovers == [], "no temporary file may stay behind"


def test_passphrase_and_keys_are_not_in_the_file(tmp_path: Path) -> None:
    passphrase = "a very distinctive passphrase 4711"
    path = tmp_path / "kek.json"
    provider = LocalKeyFile.create(path, passphrase, scrypt_params=FAST_SCRYPT)
    provider.rotate()
    raw = path.read_bytes()
    encoded = passphrase.encode()
    for form in (
        encoded,
        encoded.hex().encode(),
        base64.b64encode(encoded),
        passphrase.upper().encode(),
        passphrase.encode("utf-16-le"),
    ):
        assert form not in raw
    # Nor the KEKs themselves: only their sealed form is stored.
    for entry in _doc(path)["keks"]:
        assert len(base64.b64decode(entry["sealed"])) == 12 + 32 + 16


def test_create_refuses_to_overwrite(keyfile: LocalKeyFile) -> None:
    before = keyfile.path.read_bytes()
    with pytest.raises(KeyProviderError, match="already exists"):
        LocalKeyFile.create(keyfile.path, "another passphrase entirely", scrypt_params=FAST_SCRYPT)
    assert keyfile.path.read_bytes() == before
    assert _open(keyfile.path).versions() == [1]


def test_create_refuses_an_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError):
        LocalKeyFile.create(tmp_path / "kek.json", "", scrypt_params=FAST_SCRYPT)
    assert not (tmp_path / "kek.json").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="not found"):
        _open(tmp_path / "nothing.json")


def _flip_b64(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _tamper_sealed_byte(doc: dict[str, Any]) -> None:
    doc["keks"][0]["sealed"] = _flip_b64(doc["keks"][0]["sealed"], 20)


def _tamper_nonce(doc: dict[str, Any]) -> None:
    doc["keks"][0]["sealed"] = _flip_b64(doc["keks"][0]["sealed"], 0)


def _tamper_version(doc: dict[str, Any]) -> None:
    doc["keks"][0]["version"] = 2


def _tamper_salt(doc: dict[str, Any]) -> None:
    doc["kdf"]["salt"] = _flip_b64(doc["kdf"]["salt"], 0)


def _tamper_cost(doc: dict[str, Any]) -> None:
    doc["kdf"]["n"] = FAST_SCRYPT["n"] * 2


def _drop_kdf(doc: dict[str, Any]) -> None:
    del doc["kdf"]


def _bad_base64(doc: dict[str, Any]) -> None:
    doc["keks"][0]["sealed"] = "not base64 at all!"


def _short_sealed(doc: dict[str, Any]) -> None:
    doc["keks"][0]["sealed"] = base64.b64encode(b"short").decode()


def _no_keks(doc: dict[str, Any]) -> None:
    doc["keks"] = []


def _keks_not_a_list(doc: dict[str, Any]) -> None:
    doc["keks"] = {"version": 1}


def _wrong_format(doc: dict[str, Any]) -> None:
    doc["format"] = "phiguard-keyfile/99"


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_sealed_byte,
        _tamper_nonce,
        _tamper_version,
        _tamper_salt,
        _tamper_cost,
        _drop_kdf,
        _bad_base64,
        _short_sealed,
        _no_keks,
        _keks_not_a_list,
        _wrong_format,
    ],
)
def test_tampered_key_file_is_refused_with_a_provider_error(
    keyfile: LocalKeyFile, tamper: Any
) -> None:
    """Every kind of damage is a KeyProviderError (one CLI line), never another exception."""
    doc = _doc(keyfile.path)
    tamper(doc)
    _write(keyfile.path, doc)
    with pytest.raises(KeyProviderError):
        _open(keyfile.path)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -1])
def test_truncated_or_garbage_key_file_is_refused(keyfile: LocalKeyFile, cut: int) -> None:
    raw = keyfile.path.read_bytes()
    keyfile.path.write_bytes(raw[:cut])
    with pytest.raises(KeyProviderError):
        _open(keyfile.path)


def test_removing_a_kek_version_makes_its_wraps_fail(keyfile: LocalKeyFile) -> None:
    """Rolling the file back to fewer KEKs is noticed where it matters: at unwrap."""
    keyfile.rotate()
    wrapped = keyfile.wrap(DEK, ASSOC)
    doc = _doc(keyfile.path)
    doc["keks"] = [k for k in doc["keks"] if k["version"] == 1]
    _write(keyfile.path, doc)
    rolled_back = _open(keyfile.path)
    assert rolled_back.versions() == [1]
    with pytest.raises(KeyProviderError, match="no KEK version 2"):
        rolled_back.unwrap(wrapped, ASSOC)
