"""Pkcs11Hsm against a real (throwaway) SoftHSM2 token."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phiguard.crypto.envelope import KEY_LEN, NONCE_LEN
from phiguard.crypto.hsm import TAG_LEN, Pkcs11Hsm
from phiguard.crypto.providers import KeyProvider, WrappedKey
from phiguard.errors import KeyProviderError
from tests.support import softhsm as softhsm_support
from tests.support.softhsm import SoftHsmToken, softhsm_tokens

pytestmark = pytest.mark.softhsm

MAIN, SPARE = "phiguard-test", "phiguard-test-spare"


@pytest.fixture(scope="session")
def softhsm_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[SoftHsmToken, SoftHsmToken]:
    """Both tokens are made in one call, before SoftHSM2 is first loaded."""
    main, spare = softhsm_tokens(tmp_path_factory.mktemp("softhsm"), (MAIN, SPARE))
    return main, spare


@pytest.fixture(scope="session")
def softhsm(softhsm_pair: tuple[SoftHsmToken, SoftHsmToken]) -> SoftHsmToken:
    """The shared token: tests isolate with a key label prefix of their own."""
    return softhsm_pair[0]


@pytest.fixture(scope="session")
def spare_token(softhsm_pair: tuple[SoftHsmToken, SoftHsmToken]) -> SoftHsmToken:
    """A token nothing keeps a session open on (so a login there really hits C_Login)."""
    return softhsm_pair[1]


@pytest.fixture
def prefix() -> str:
    return f"test-kek-{secrets.token_hex(6)}"


@pytest.fixture
def hsm(softhsm: SoftHsmToken, prefix: str) -> Iterator[Pkcs11Hsm]:
    provider = Pkcs11Hsm.create(softhsm.library, softhsm.label, softhsm.pin, prefix)
    yield provider
    provider.close()


def _key() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def _flip(blob: bytes, index: int) -> bytes:
    out = bytearray(blob)
    out[index] ^= 0x01
    return bytes(out)


# -- wrapping --------------------------------------------------------------------------


def test_round_trip(hsm: Pkcs11Hsm) -> None:
    key = _key()
    wrapped = hsm.wrap(key, b"tenant|Patient/1|1")
    assert wrapped.kek_version == 1
    assert len(wrapped.blob) == NONCE_LEN + KEY_LEN + TAG_LEN
    assert key not in wrapped.blob
    assert hsm.unwrap(wrapped, b"tenant|Patient/1|1") == key
    again = hsm.wrap(key, b"tenant|Patient/1|1")
    assert again.blob[:NONCE_LEN] != wrapped.blob[:NONCE_LEN], "IV must be fresh per wrap"
    assert hsm.unwrap(again, b"tenant|Patient/1|1") == key


def test_satisfies_the_key_provider_protocol(hsm: Pkcs11Hsm) -> None:
    provider: KeyProvider = hsm
    assert provider.name == "pkcs11"
    assert provider.versions() == [1]
    assert provider.current_version() == 1


@pytest.mark.parametrize("other", [b"tenant|Patient/2|1", b"tenant|Patient/1|2", b""])
def test_wrong_associated_data_fails(hsm: Pkcs11Hsm, other: bytes) -> None:
    wrapped = hsm.wrap(_key(), b"tenant|Patient/1|1")
    with pytest.raises(KeyProviderError, match="did not open"):
        hsm.unwrap(wrapped, other)


def test_kek_version_is_bound(hsm: Pkcs11Hsm) -> None:
    wrapped = hsm.wrap(_key(), b"row")
    hsm.rotate()
    # Same blob, claimed under the other KEK: must not open (different key and AAD).
    with pytest.raises(KeyProviderError):
        hsm.unwrap(WrappedKey(2, wrapped.blob), b"row")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: _flip(b, 0), id="iv"),
        pytest.param(lambda b: _flip(b, NONCE_LEN + 3), id="ciphertext"),
        pytest.param(lambda b: _flip(b, len(b) - 1), id="tag"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b + b"\x00", id="extended"),
        pytest.param(lambda b: b[: NONCE_LEN + TAG_LEN - 1], id="too-short"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_tampered_blob_fails_and_session_survives(hsm: Pkcs11Hsm, tamper: object) -> None:
    key = _key()
    wrapped = hsm.wrap(key, b"row")
    assert callable(tamper)
    bad = WrappedKey(wrapped.kek_version, tamper(wrapped.blob))
    with pytest.raises(KeyProviderError) as info:
        hsm.unwrap(bad, b"row")
    assert str(info.value) == "a wrapped data key did not open under its KEK"
    # A failed C_Decrypt must not leave an operation active on the shared session.
    assert hsm.unwrap(wrapped, b"row") == key


def test_unknown_version_fails(hsm: Pkcs11Hsm) -> None:
    wrapped = hsm.wrap(_key(), b"row")
    with pytest.raises(KeyProviderError, match="no KEK version 7"):
        hsm.unwrap(WrappedKey(7, wrapped.blob), b"row")


# -- versions and rotation ---------------------------------------------------------------


def test_rotate_keeps_old_versions_opening(hsm: Pkcs11Hsm, softhsm: SoftHsmToken) -> None:
    key1 = _key()
    old = hsm.wrap(key1, b"row-1")
    assert hsm.rotate() == 2
    assert hsm.versions() == [1, 2]
    assert hsm.current_version() == 2
    key2 = _key()
    new = hsm.wrap(key2, b"row-2")
    assert new.kek_version == 2
    assert hsm.unwrap(old, b"row-1") == key1
    assert hsm.unwrap(new, b"row-2") == key2
    assert hsm.describe()["kek_versions"] == "1,2"
    assert hsm.describe()["current"] == "2"


def test_fresh_provider_sees_every_version(
    hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str
) -> None:
    key1, key2 = _key(), _key()
    old = hsm.wrap(key1, b"a")
    hsm.rotate()
    new = hsm.wrap(key2, b"b")
    with Pkcs11Hsm(softhsm.library, softhsm.label, softhsm.pin, prefix) as fresh:
        assert fresh.versions() == [1, 2]
        assert fresh.current_version() == 2
        assert fresh.unwrap(old, b"a") == key1
        assert fresh.unwrap(new, b"b") == key2
    # Closing the second provider must not log the first one out (logins are per process).
    assert hsm.unwrap(old, b"a") == key1
    assert hsm.wrap(key1, b"c").kek_version == 2


_CHILD = """
import os, sys
from phiguard.crypto.hsm import Pkcs11Hsm
from phiguard.crypto.providers import WrappedKey
version, blob = sys.stdin.read().split()
with Pkcs11Hsm(os.environ["T_LIB"], os.environ["T_TOKEN"], os.environ["T_PIN"],
               os.environ["T_PREFIX"]) as hsm:
    print(",".join(map(str, hsm.versions())))
    print(hsm.unwrap(WrappedKey(int(version), bytes.fromhex(blob)), b"persisted").hex())
"""


def test_versions_persist_on_the_token_across_processes(
    hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str
) -> None:
    key = _key()
    wrapped = hsm.wrap(key, b"persisted")
    hsm.rotate()
    env = {
        **os.environ,
        "SOFTHSM2_CONF": str(softhsm.conf),
        "T_LIB": softhsm.library,
        "T_TOKEN": softhsm.label,
        "T_PIN": softhsm.pin,  # via the environment: never on argv
        "T_PREFIX": prefix,
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=f"{wrapped.kek_version} {wrapped.blob.hex()}",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1,2", key.hex()]


def test_rotation_by_another_provider_is_picked_up_on_unwrap(
    hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str
) -> None:
    with Pkcs11Hsm(softhsm.library, softhsm.label, softhsm.pin, prefix) as other:
        assert other.rotate() == 2
        key = _key()
        wrapped = other.wrap(key, b"row")
    assert hsm.versions() == [1]  # not yet seen...
    assert hsm.unwrap(wrapped, b"row") == key  # ...but an unknown version rescans
    assert hsm.versions() == [1, 2]
    assert hsm.rotate() == 3  # rotate rescans too, never reusing a version


def test_prefixes_are_isolated(hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str) -> None:
    with Pkcs11Hsm.create(softhsm.library, softhsm.label, softhsm.pin, prefix + "-x") as other:
        other.rotate()
        assert other.versions() == [1, 2]
        wrapped = other.wrap(_key(), b"row")
    assert hsm.versions() == [1]
    with pytest.raises(KeyProviderError):
        hsm.unwrap(WrappedKey(1, wrapped.blob), b"row")  # v1 of another prefix


# -- the KEK stays on the token -----------------------------------------------------------


def test_kek_is_sensitive_and_not_extractable(
    hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str
) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import AttributeSensitive, KeyUnextractable

    # A session without its own login: the process is already logged in through `hsm`
    # (PKCS#11 logins are per application), so the private KEK is visible here.
    token = pkcs11.lib(softhsm.library).get_token(token_label=softhsm.label)
    session = token.open(rw=True)
    try:
        kek = session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=f"{prefix}-v1"
        )
        assert kek[Attribute.TOKEN] is True
        assert kek[Attribute.PRIVATE] is True
        assert kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.ALWAYS_SENSITIVE] is True
        assert kek[Attribute.NEVER_EXTRACTABLE] is True
        assert kek[Attribute.LOCAL] is True  # generated on the token, not imported
        assert kek[Attribute.VALUE_LEN] == 32
        with pytest.raises(AttributeSensitive):
            kek[Attribute.VALUE]
        # Nor can it be wrapped out under a key the attacker controls.
        carrier = session.generate_key(KeyType.AES, 256, store=False)
        with pytest.raises(KeyUnextractable):
            carrier.wrap_key(kek)
    finally:
        session.close()
    assert hsm.wrap(_key(), b"still works").kek_version == 1


# -- opening errors --------------------------------------------------------------------


def test_wrong_pin_on_fresh_login(spare_token: SoftHsmToken) -> None:
    t = spare_token
    wrong = t.pin + "0"
    with pytest.raises(KeyProviderError, match="wrong PIN") as info:
        Pkcs11Hsm.create(t.library, t.label, wrong)
    assert wrong not in str(info.value) and t.pin not in str(info.value)
    # The right PIN still works afterwards (the failure left no half-open login).
    with Pkcs11Hsm.create(t.library, t.label, t.pin, f"kek-{secrets.token_hex(4)}") as ok:
        assert ok.versions() == [1]


def test_wrong_pin_while_the_token_is_logged_in(hsm: Pkcs11Hsm, softhsm: SoftHsmToken) -> None:
    # The token would answer CKR_USER_ALREADY_LOGGED_IN without looking at the PIN.
    with pytest.raises(KeyProviderError, match="wrong PIN"):
        Pkcs11Hsm(softhsm.library, softhsm.label, softhsm.pin + "0", hsm.key_label_prefix)
    assert hsm.wrap(_key(), b"row").kek_version == 1


def test_unknown_token_label(softhsm: SoftHsmToken) -> None:
    with pytest.raises(KeyProviderError, match="no PKCS#11 token labelled 'no-such-token'"):
        Pkcs11Hsm(softhsm.library, "no-such-token", softhsm.pin)


def test_missing_library(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="PKCS#11 library not found"):
        Pkcs11Hsm(str(tmp_path / "libnothing.so"), "t", "1234")


def test_library_that_is_not_pkcs11(tmp_path: Path) -> None:
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"not an ELF file")
    with pytest.raises(KeyProviderError, match="could not be loaded"):
        Pkcs11Hsm(str(fake), "t", "1234")


def test_errors_are_distinct(softhsm: SoftHsmToken, spare_token: SoftHsmToken) -> None:
    messages = set()
    for args in [
        ("/nonexistent/libpkcs11.so", softhsm.label, softhsm.pin),
        (softhsm.library, "no-such-token", softhsm.pin),
        (spare_token.library, spare_token.label, "not-the-pin"),
    ]:
        with pytest.raises(KeyProviderError) as info:
            Pkcs11Hsm(*args)
        messages.add(str(info.value))
        assert "not-the-pin" not in str(info.value)
    assert len(messages) == 3


def test_token_without_kek(softhsm: SoftHsmToken, prefix: str) -> None:
    with pytest.raises(KeyProviderError, match="holds no KEK"):
        Pkcs11Hsm(softhsm.library, softhsm.label, softhsm.pin, prefix)


def test_create_refuses_an_existing_kek(hsm: Pkcs11Hsm, softhsm: SoftHsmToken) -> None:
    args = (softhsm.library, softhsm.label, softhsm.pin, hsm.key_label_prefix)
    with pytest.raises(KeyProviderError, match="already holds"):
        Pkcs11Hsm.create(*args)
    with Pkcs11Hsm.create(*args, exist_ok=True) as same:
        assert same.versions() == [1]


def test_closed_provider_refuses(softhsm: SoftHsmToken, prefix: str) -> None:
    provider = Pkcs11Hsm.create(softhsm.library, softhsm.label, softhsm.pin, prefix)
    wrapped = provider.wrap(_key(), b"row")
    provider.close()
    provider.close()  # idempotent
    with pytest.raises(KeyProviderError, match="closed"):
        provider.wrap(_key(), b"row")
    with pytest.raises(KeyProviderError):
        provider.unwrap(wrapped, b"row")


# -- describe and threads ----------------------------------------------------------------


def test_describe_never_shows_the_pin(hsm: Pkcs11Hsm, softhsm: SoftHsmToken) -> None:
    info = hsm.describe()
    assert info["provider"] == "pkcs11"
    assert info["library"] == softhsm.library
    assert info["token"] == softhsm.label
    assert info["kek_versions"] == "1"
    assert info["current"] == "1"
    assert all(softhsm.pin not in value for value in info.values())
    assert softhsm.pin not in repr(vars(hsm))


def test_concurrent_wraps_and_unwraps(hsm: Pkcs11Hsm, softhsm: SoftHsmToken, prefix: str) -> None:
    errors: list[BaseException] = []
    with Pkcs11Hsm(softhsm.library, softhsm.label, softhsm.pin, prefix) as twin:

        def work(provider: Pkcs11Hsm, n: int) -> None:
            try:
                for i in range(100):
                    key, row = _key(), f"{n}/{i}".encode()
                    assert provider.unwrap(provider.wrap(key, row), row) == key
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=work, args=(hsm if n % 2 else twin, n)) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


# -- the helper's skip/fail rule -----------------------------------------------------------


def test_missing_softhsm_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        softhsm_support.unavailable("SoftHSM2 is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        softhsm_support.unavailable("SoftHSM2 is not installed")
    monkeypatch.delenv("PHIGUARD_TEST_SOFTHSM_LIB", raising=False)
    assert softhsm_support.find_library(("/nonexistent/libsofthsm2.so",)) is None
