"""Versioned AES-256-GCM sealing, Fernet-style: a tiny API with one opaque error.

Token layout (format 1)::

    0x01 | key_version (4 bytes, big-endian) | nonce (12 bytes) | ciphertext || tag (16 bytes)

The header is authenticated together with the caller's associated data, so neither
the key version nor the place a ciphertext belongs to (tenant, resource type, id,
version) can be changed without the token failing to open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from phiguard.errors import DecryptionError

FORMAT_V1 = 0x01
_HEADER = struct.Struct(">BI")
NONCE_LEN = 12
KEY_LEN = 32
OVERHEAD = _HEADER.size + NONCE_LEN + 16


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def aad(*parts: str | int | bytes) -> bytes:
    """Canonical, unambiguous encoding of associated-data parts (length-prefixed)."""
    out = bytearray()
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


class Sealer:
    """Seals and opens with one key; cheap to keep around (AESGCM context is reused)."""

    __slots__ = ("_aead", "_key", "key_version")

    def __init__(self, key: bytes, key_version: int) -> None:
        if len(key) != KEY_LEN:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._aead = AESGCM(key)
        self._key = key
        self.key_version = key_version

    def derive(self, purpose: bytes) -> bytes:
        """A separate 256-bit key for ``purpose`` (HKDF), so one key never serves two uses."""
        return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=purpose).derive(
            self._key
        )

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        header = _HEADER.pack(FORMAT_V1, self.key_version)
        nonce = os.urandom(NONCE_LEN)
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + associated)

    def open(self, token: bytes, associated: bytes, where: str = "") -> bytes:
        if len(token) < OVERHEAD:
            raise DecryptionError(where)
        fmt, version = _HEADER.unpack_from(token)
        if fmt != FORMAT_V1 or version != self.key_version:
            raise DecryptionError(where)
        header = token[: _HEADER.size]
        nonce = token[_HEADER.size : _HEADER.size + NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, token[_HEADER.size + NONCE_LEN :], header + associated)
        except InvalidTag:
            raise DecryptionError(where) from None


def token_key_version(token: bytes, where: str = "") -> int:
    """The key version a token claims (unauthenticated until it opens)."""
    if len(token) < OVERHEAD or token[0] != FORMAT_V1:
        raise DecryptionError(where)
    return int(_HEADER.unpack_from(token)[1])
