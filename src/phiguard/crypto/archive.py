"""Backup archives encrypted to a recovery public key.

A fresh AES-256 file key encrypts the archive as a stream of AES-GCM chunks (nonce
= random prefix || chunk counter; the last chunk is marked in its associated data,
so truncation and reordering are detected).  The file key is wrapped with RSA-OAEP
(SHA-256) to the recovery public key: the host that writes backups never holds a
key that can read them.

Layout: MAGIC | u32 header length | header JSON | chunks (u32 length | ciphertext).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phiguard.errors import BackupError

MAGIC = b"PHIGUARD-BACKUP\x01"
CHUNK = 1 << 20
MIN_RSA_BITS = 3072
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def generate_recovery_keypair(passphrase: str, bits: int = 4096) -> tuple[bytes, bytes]:
    """(public PEM, private PEM encrypted under ``passphrase``)."""
    if bits < MIN_RSA_BITS:
        raise BackupError(f"recovery keys must have at least {MIN_RSA_BITS} bits")
    if not passphrase:
        raise BackupError("the recovery private key needs a passphrase")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    return pub, priv


def _public(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BackupError("the recovery public key is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_RSA_BITS:
        raise BackupError(f"the recovery key must be RSA with at least {MIN_RSA_BITS} bits")
    return key


def _private(pem: bytes, passphrase: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, passphrase.encode() or None)
    except (ValueError, TypeError):
        raise BackupError(
            "the recovery private key did not open (wrong key or passphrase)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BackupError("the recovery private key is not an RSA key")
    return key


def fingerprint(pub: rsa.RSAPublicKey) -> str:
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _chunk_aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, 1 if final else 0)


class ArchiveWriter:
    """Streams plaintext into an encrypted archive; ``close`` writes the final chunk."""

    def __init__(self, out: IO[bytes], public_pem: bytes, meta: dict[str, Any]) -> None:
        pub = _public(public_pem)
        file_key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(file_key)
        self._prefix = os.urandom(4)
        header = {
            "format": 1,
            "cipher": "AES-256-GCM, 1 MiB chunks",
            "wrap": "RSA-OAEP-SHA256",
            "recipient": fingerprint(pub),
            "wrapped_key": base64.b64encode(pub.encrypt(file_key, _OAEP)).decode(),
            "nonce_prefix": base64.b64encode(self._prefix).decode(),
            **meta,
        }
        raw = json.dumps(header, sort_keys=True).encode()
        self._digest = hashlib.sha256(raw).digest()
        self.recipient = header["recipient"]
        self._out = out
        self._buf = bytearray()
        self._index = 0
        out.write(MAGIC + struct.pack(">I", len(raw)) + raw)

    def _emit(self, data: bytes, final: bool) -> None:
        nonce = self._prefix + struct.pack(">Q", self._index)
        sealed = self._aead.encrypt(nonce, data, _chunk_aad(self._digest, self._index, final))
        self._out.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) > CHUNK:
            self._emit(bytes(self._buf[:CHUNK]), False)
            del self._buf[:CHUNK]

    def close(self) -> None:
        self._emit(bytes(self._buf), True)
        self._buf.clear()


def read_header(src: IO[bytes]) -> dict[str, Any]:
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a phiguard backup archive")
    # A file cut inside the length field must be a BackupError too, not a struct.error.
    length_raw = src.read(4)
    if len(length_raw) != 4:
        raise BackupError("the backup is truncated")
    (length,) = struct.unpack(">I", length_raw)
    if not 0 < length < 1 << 20:
        raise BackupError("the backup header is damaged")
    raw = src.read(length)
    try:
        header: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise BackupError("the backup header is damaged") from None
    if not isinstance(header, dict):
        raise BackupError("the backup header is damaged")
    header["_digest"] = hashlib.sha256(raw).digest()
    return header


def read_archive(src: IO[bytes], private_pem: bytes, passphrase: str) -> Iterator[bytes]:
    """Plaintext chunks of an archive; ``BackupError`` on any damage or a missing end."""
    header = read_header(src)
    key = _private(private_pem, passphrase)
    if fingerprint(key.public_key()) != header.get("recipient"):
        raise BackupError("this backup was encrypted to a different recovery key")
    try:
        file_key = key.decrypt(base64.b64decode(header["wrapped_key"]), _OAEP)
        prefix = base64.b64decode(header["nonce_prefix"])
    except (ValueError, KeyError, TypeError):
        raise BackupError("the backup's file key did not open") from None
    # The header is only authenticated by the first chunk, and anyone holding the
    # public key can wrap a file key: odd sizes must fail as BackupError, not ValueError.
    if len(file_key) != 32 or len(prefix) != 4:
        raise BackupError("the backup's file key did not open")
    aead = AESGCM(file_key)
    digest: bytes = header["_digest"]
    index = 0
    while True:
        size_raw = src.read(4)
        if len(size_raw) != 4:
            raise BackupError("the backup is truncated")
        (size,) = struct.unpack(">I", size_raw)
        sealed = src.read(size)
        if len(sealed) != size:
            raise BackupError("the backup is truncated")
        nonce = prefix + struct.pack(">Q", index)
        for final in (False, True):
            try:
                data = aead.decrypt(nonce, sealed, _chunk_aad(digest, index, final))
            except InvalidTag:
                continue
            yield data
            if final:
                if src.read(1):
                    raise BackupError("the backup has data after its end")
                return
            break
        else:
            raise BackupError(f"backup chunk {index} is damaged")
        index += 1
