"""Backup archive stream: AES-GCM chunks under a file key wrapped to an RSA recovery key."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import struct
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from phiguard.crypto import archive
from phiguard.crypto.archive import (
    MAGIC,
    ArchiveWriter,
    generate_recovery_keypair,
    read_archive,
    read_header,
)
from phiguard.errors import BackupError

PASS = "archive test passphrase"
CANARY = b"Canary-Archive-Zanzibar"


@pytest.fixture(scope="module", autouse=True)
def _cheap_private_key_loads() -> Iterator[None]:
    """Loading an encrypted RSA PEM costs ~0.1 s; hundreds of tamper cases load the
    same one, so cache it (the loader itself is exercised by the key tests below)."""
    real = archive._private
    archive._private = functools.cache(real)  # type: ignore[assignment]
    yield
    archive._private = real  # type: ignore[assignment]


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_recovery_keypair(PASS, bits=3072)


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return generate_recovery_keypair(PASS, bits=3072)


@pytest.fixture(scope="module")
def payload() -> bytes:
    rng = os.urandom(300)
    return (CANARY + b" " + rng) * 3


def _write(public: bytes, data: bytes, chunk: int = 100) -> bytes:
    out = io.BytesIO()
    saved = archive.CHUNK
    archive.CHUNK = chunk  # small chunks: many of them, so reordering can be tested
    try:
        writer = ArchiveWriter(out, public, {"created": "2026-01-01T00:00:00Z"})
        writer.write(data[: len(data) // 2])
        writer.write(data[len(data) // 2 :])
        writer.close()
    finally:
        archive.CHUNK = saved
    return out.getvalue()


def _read(blob: bytes, private: bytes, passphrase: str = PASS) -> bytes:
    return b"".join(read_archive(io.BytesIO(blob), private, passphrase))


@pytest.fixture(scope="module")
def sealed(keys: tuple[bytes, bytes], payload: bytes) -> bytes:
    return _write(keys[0], payload)


def _chunks_offset(blob: bytes) -> int:
    (length,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    return len(MAGIC) + 4 + length


def _split(blob: bytes) -> tuple[bytes, list[bytes]]:
    start = _chunks_offset(blob)
    head, rest, chunks = blob[:start], blob[start:], []
    while rest:
        (size,) = struct.unpack(">I", rest[:4])
        chunks.append(rest[: 4 + size])
        rest = rest[4 + size :]
    return head, chunks


def test_round_trip(keys: tuple[bytes, bytes], sealed: bytes, payload: bytes) -> None:
    assert _read(sealed, keys[1]) == payload
    assert len(_split(sealed)[1]) > 5
    header = read_header(io.BytesIO(sealed))
    assert header["wrap"] == "RSA-OAEP-SHA256"
    assert header["recipient"].startswith("sha256:")


def test_empty_payload_round_trips(keys: tuple[bytes, bytes]) -> None:
    assert _read(_write(keys[0], b""), keys[1]) == b""


def test_payload_is_not_in_the_archive(sealed: bytes, payload: bytes) -> None:
    assert CANARY not in sealed
    for i in range(0, len(payload) - 32, 32):
        assert payload[i : i + 32] not in sealed


def test_private_key_is_passphrase_protected(keys: tuple[bytes, bytes]) -> None:
    assert b"ENCRYPTED PRIVATE KEY" in keys[1]
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(keys[1], None)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_flipped_byte_fails(
    data: st.DataObject, keys: tuple[bytes, bytes], sealed: bytes
) -> None:
    position = data.draw(st.integers(0, len(sealed) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    tampered = bytearray(sealed)
    tampered[position] ^= mask
    with pytest.raises(BackupError):
        _read(bytes(tampered), keys[1])


def test_every_region_is_covered(keys: tuple[bytes, bytes], sealed: bytes) -> None:
    """One flip in each structural part: magic, header length, header, chunk sizes,
    chunk bodies, the final chunk's tag."""
    start = _chunks_offset(sealed)
    positions = [0, len(MAGIC), len(MAGIC) + 3, len(MAGIC) + 10, start - 2, start, start + 3]
    positions += [start + 4, start + 20, len(sealed) - 17, len(sealed) - 1]
    for position in positions:
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(BackupError):
            _read(bytes(tampered), keys[1])


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_truncation_fails(
    data: st.DataObject, keys: tuple[bytes, bytes], sealed: bytes
) -> None:
    cut = data.draw(st.integers(0, len(sealed) - 1), label="cut")
    with pytest.raises(BackupError):
        _read(sealed[:cut], keys[1])


def test_truncation_at_every_chunk_boundary_fails(keys: tuple[bytes, bytes], sealed: bytes) -> None:
    head, chunks = _split(sealed)
    for n in range(len(chunks)):
        with pytest.raises(BackupError):
            _read(head + b"".join(chunks[:n]), keys[1])


def test_short_reads_inside_the_header_length_fail(
    keys: tuple[bytes, bytes], sealed: bytes
) -> None:
    for cut in range(len(MAGIC), len(MAGIC) + 5):
        with pytest.raises(BackupError):
            _read(sealed[:cut], keys[1])


def test_reordered_dropped_or_duplicated_chunks_fail(
    keys: tuple[bytes, bytes], sealed: bytes
) -> None:
    head, chunks = _split(sealed)
    variants = [
        chunks[1:2] + chunks[:1] + chunks[2:],  # swapped
        chunks[:2] + chunks[3:],  # one dropped from the middle
        chunks[:3] + chunks[2:],  # one repeated
        chunks + chunks[-1:],  # the final chunk twice
    ]
    for variant in variants:
        with pytest.raises(BackupError):
            _read(head + b"".join(variant), keys[1])


def test_trailing_data_fails(keys: tuple[bytes, bytes], sealed: bytes) -> None:
    with pytest.raises(BackupError, match="after its end"):
        _read(sealed + b"\0", keys[1])


def test_chunks_of_another_archive_do_not_splice(
    keys: tuple[bytes, bytes], sealed: bytes, payload: bytes
) -> None:
    other = _write(keys[0], payload)
    head_a, chunks_a = _split(sealed)
    _head_b, chunks_b = _split(other)
    with pytest.raises(BackupError):
        _read(head_a + chunks_a[0] + b"".join(chunks_b[1:]), keys[1])


def test_another_recovery_key_cannot_read(other_keys: tuple[bytes, bytes], sealed: bytes) -> None:
    with pytest.raises(BackupError, match="different recovery key"):
        _read(sealed, other_keys[1])


def test_wrong_passphrase_cannot_read(keys: tuple[bytes, bytes], sealed: bytes) -> None:
    with pytest.raises(BackupError, match="wrong key or passphrase"):
        _read(sealed, keys[1], "not the passphrase")
    with pytest.raises(BackupError):
        _read(sealed, keys[1], "")


def test_not_an_archive(keys: tuple[bytes, bytes]) -> None:
    for blob in (b"", b"PK\x03\x04 zip file", MAGIC[:-1] + b"\x02"):
        with pytest.raises(BackupError):
            _read(blob, keys[1])


def _pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_weak_recovery_keys_are_refused() -> None:
    with pytest.raises(BackupError, match="3072"):
        generate_recovery_keypair(PASS, bits=2048)
    with pytest.raises(BackupError, match="passphrase"):
        generate_recovery_keypair("", bits=3072)
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    curve = ec.generate_private_key(ec.SECP256R1()).public_key()
    for pem in (_pem(small), _pem(curve), b"not a key"):
        out = io.BytesIO()
        with pytest.raises(BackupError):
            ArchiveWriter(out, pem, {})
        assert out.getvalue() == b"", "nothing may be written to a refused key"


def _forged(public: bytes, **fields: object) -> bytes:
    """An archive header anyone holding the public key could write."""
    pub = serialization.load_pem_public_key(public)
    assert isinstance(pub, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    header: dict[str, object] = {
        "format": 1,
        "recipient": archive.fingerprint(pub),
        "wrapped_key": base64.b64encode(pub.encrypt(os.urandom(32), oaep)).decode(),
        "nonce_prefix": base64.b64encode(os.urandom(4)).decode(),
    }
    header.update(fields)
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + struct.pack(">I", 20) + os.urandom(20)


def test_forged_headers_fail_as_backup_errors(keys: tuple[bytes, bytes]) -> None:
    """The header is authenticated only through the chunks, so a hostile header must
    still end in BackupError (one CLI line), whatever its fields hold."""
    pub = serialization.load_pem_public_key(keys[0])
    assert isinstance(pub, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    short_key = base64.b64encode(pub.encrypt(b"short", oaep)).decode()
    for fields in (
        {},
        {"wrapped_key": short_key},
        {"nonce_prefix": base64.b64encode(b"x").decode()},
        {"nonce_prefix": ""},
        {"wrapped_key": 12345},
        {"wrapped_key": None},
        {"nonce_prefix": ["a"]},
        {"wrapped_key": "!!not base64!!"},
    ):
        with pytest.raises(BackupError):
            _read(_forged(keys[0], **fields), keys[1])
    for body in (b"[1, 2]", b"42", b'"text"'):
        blob = MAGIC + struct.pack(">I", len(body)) + body
        with pytest.raises(BackupError):
            _read(blob, keys[1])
