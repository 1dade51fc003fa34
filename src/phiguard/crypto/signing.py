"""Ed25519 signing keys for checkpoints, kept sealed at rest.

The private key exists in the clear only in memory; at rest it is sealed with a
data key from the keyring (so the KEK, file or HSM, guards it like every other
key).  Public keys are exported as raw 32-byte values, base64, for witnesses and
the stand-alone proof verifier.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .envelope import Sealer


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_raw).hexdigest()[:16]

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def seal(self, sealer: Sealer, associated: bytes) -> bytes:
        raw = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return sealer.seal(raw, associated)

    @classmethod
    def open(cls, sealer: Sealer, token: bytes, associated: bytes) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(sealer.open(token, associated)))


def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
