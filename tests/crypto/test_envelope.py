"""Sealer tokens: AES-256-GCM with an authenticated header and one opaque error.

The record-level tests go through the real repository and tamper at the database
level, because that is where an attacker with the database file works.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select, update

from phiguard.crypto.envelope import FORMAT_V1, OVERHEAD, Sealer, aad, new_key, token_key_version
from phiguard.errors import DecryptionError
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store.tables import resources

KEY = bytes(range(32))
AAD = aad("default", "Observation", "obs-1", 1, "Patient/p1")
PLAIN = b'{"resourceType":"Observation","note":"canary-envelope"}'


def _sealer(version: int = 1, key: bytes = KEY) -> Sealer:
    return Sealer(key, version)


def _token() -> bytes:
    return _sealer().seal(PLAIN, AAD)


def _assert_opaque(exc: DecryptionError, where: str = "") -> None:
    """Every failure is the same error with the same message: no oracle for the cause."""
    assert type(exc) is DecryptionError
    assert str(exc) == "ciphertext could not be opened" + (f": {where}" if where else "")
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


def test_round_trip_and_layout() -> None:
    sealer = _sealer(7)
    token = sealer.seal(PLAIN, AAD)
    assert sealer.open(token, AAD) == PLAIN
    assert len(token) == len(PLAIN) + OVERHEAD
    assert token[0] == FORMAT_V1
    assert token_key_version(token) == 7
    assert b"canary-envelope" not in token
    # A fresh nonce every time: the same plaintext never gives the same token.
    assert sealer.seal(PLAIN, AAD) != token
    assert sealer.open(sealer.seal(b"", AAD), AAD) == b""


def test_keys_are_random_and_256_bit() -> None:
    a, b = new_key(), new_key()
    assert len(a) == len(b) == 32 and a != b
    with pytest.raises(ValueError):
        Sealer(b"\0" * 16, 1)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_flipped_byte_fails_with_the_one_opaque_error(data: st.DataObject) -> None:
    token = _token()
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    tampered = bytearray(token)
    tampered[position] ^= mask
    with pytest.raises(DecryptionError) as info:
        _sealer().open(bytes(tampered), AAD, "Observation/obs-1")
    _assert_opaque(info.value, "Observation/obs-1")


def test_every_single_position_is_covered() -> None:
    """Not left to chance: each byte of one token, flipped in its low bit, fails."""
    token = _token()
    for position in range(len(token)):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            _sealer().open(bytes(tampered), AAD)


@hsettings(max_examples=100, deadline=None)
@given(cut=st.integers(0, len(PLAIN) + OVERHEAD - 1))
def test_truncated_token_fails(cut: int) -> None:
    with pytest.raises(DecryptionError) as info:
        _sealer().open(_token()[:cut], AAD)
    _assert_opaque(info.value)


def test_appended_bytes_fail() -> None:
    with pytest.raises(DecryptionError):
        _sealer().open(_token() + b"\0", AAD)


@pytest.mark.parametrize(
    "other",
    [
        aad("default", "Observation", "obs-2", 1, "Patient/p1"),  # another resource
        aad("default", "Observation", "obs-1", 2, "Patient/p1"),  # another version
        aad("default", "Observation", "obs-1", 1, "Patient/p2"),  # another patient
        aad("other", "Observation", "obs-1", 1, "Patient/p1"),  # another tenant
        aad("default", "Condition", "obs-1", 1, "Patient/p1"),  # another type
        b"",
    ],
)
def test_wrong_associated_data_fails(other: bytes) -> None:
    with pytest.raises(DecryptionError) as info:
        _sealer().open(_token(), other)
    _assert_opaque(info.value)


def test_aad_encoding_is_unambiguous() -> None:
    """Length prefixes: moving a separator between parts changes the associated data."""
    assert aad("ab", "c") != aad("a", "bc")
    assert aad("a/b") != aad("a", "b")
    assert aad(1) == aad("1") == aad(b"1")


def test_wrong_key_fails() -> None:
    with pytest.raises(DecryptionError):
        Sealer(new_key(), 1).open(_token(), AAD)


def test_token_claiming_another_key_version_fails() -> None:
    token = _token()
    # The opener holds version 2 of this very key: the header does not match it.
    with pytest.raises(DecryptionError):
        _sealer(2).open(token, AAD)
    # Rewriting the header to claim version 2 does not help: the header is authenticated.
    relabelled = struct.pack(">BI", FORMAT_V1, 2) + token[5:]
    assert token_key_version(relabelled) == 2
    with pytest.raises(DecryptionError) as info:
        _sealer(2).open(relabelled, AAD)
    _assert_opaque(info.value)


def test_unknown_format_byte_fails() -> None:
    token = bytearray(_token())
    token[0] = 0x02
    with pytest.raises(DecryptionError):
        _sealer().open(bytes(token), AAD)
    with pytest.raises(DecryptionError):
        token_key_version(bytes(token))


def test_derived_keys_are_separate_per_purpose() -> None:
    sealer = _sealer()
    assert sealer.derive(b"a") != sealer.derive(b"b")
    assert sealer.derive(b"a") == _sealer(9).derive(b"a")
    assert KEY not in (sealer.derive(b"a"), sealer.derive(b"b"))


# -- the real associated data of records, tampered in the database ------------------------


def _patient(pid: str, family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def _obs(pid: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{pid}"},
    }


def _body(vault: Vault, rtype: str, rid: str, version: int = 1) -> bytes:
    with vault.engine.connect() as conn:
        body = conn.execute(
            select(resources.c.body).where(
                resources.c.rtype == rtype, resources.c.rid == rid, resources.c.version == version
            )
        ).scalar_one()
    return bytes(body)


def _set_body(vault: Vault, rtype: str, rid: str, body: bytes, version: int = 1) -> None:
    with vault.engine.begin() as conn:
        conn.execute(
            update(resources)
            .where(
                resources.c.rtype == rtype, resources.c.rid == rid, resources.c.version == version
            )
            .values(body=body)
        )


def test_body_swapped_between_rows_of_one_patient_is_refused(
    vault: Vault, repo: Repository
) -> None:
    """Same patient, same data key: only the associated data tells the rows apart."""
    repo.create(_patient("swap-p", "Swapfamily"), rid="swap-p")
    a = repo.create(_obs("swap-p", "canary-a"), rid="obs-a")
    b = repo.create(_obs("swap-p", "canary-b"), rid="obs-b")
    assert a.resource and b.resource
    _set_body(vault, "Observation", "obs-b", _body(vault, "Observation", "obs-a"))
    vault.keyring.forget()
    with pytest.raises(DecryptionError) as info:
        repo.read("Observation", "obs-b")
    _assert_opaque(info.value, "Observation/obs-b/_history/1")
    assert "canary" not in str(info.value)
    # The row the ciphertext came from still opens.
    assert repo.read("Observation", "obs-a").resource == a.resource


def test_body_moved_to_another_version_is_refused(vault: Vault, repo: Repository) -> None:
    repo.create(_patient("ver-p", "Versionfamily"), rid="ver-p")
    repo.update("Patient", "ver-p", _patient("ver-p", "Secondname"))
    _set_body(vault, "Patient", "ver-p", _body(vault, "Patient", "ver-p", 1), version=2)
    with pytest.raises(DecryptionError) as info:
        repo.read("Patient", "ver-p")
    assert info.value.where == "Patient/ver-p/_history/2"
    assert repo.vread("Patient", "ver-p", 1).resource is not None


def test_body_moved_to_another_patient_is_refused(vault: Vault, repo: Repository) -> None:
    """Different patients: the copied token names a key version the row's patient also has."""
    repo.create(_patient("mv-1", "Firstfamily"), rid="mv-1")
    repo.create(_patient("mv-2", "Secondfamily"), rid="mv-2")
    _set_body(vault, "Patient", "mv-2", _body(vault, "Patient", "mv-1"))
    with pytest.raises(DecryptionError) as info:
        repo.read("Patient", "mv-2")
    assert info.value.where == "Patient/mv-2/_history/1"


def test_tampered_stored_body_is_refused(vault: Vault, repo: Repository) -> None:
    repo.create(_patient("tp-1", "Tamperfamily"), rid="tp-1")
    body = bytearray(_body(vault, "Patient", "tp-1"))
    body[-1] ^= 0x80
    _set_body(vault, "Patient", "tp-1", bytes(body))
    with pytest.raises(DecryptionError):
        repo.read("Patient", "tp-1")
