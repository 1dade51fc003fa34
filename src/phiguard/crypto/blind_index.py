"""Blind indexes: keyed HMAC tokens that let exact-match search run on ciphertext.

Each search parameter gets its own key, derived with HKDF from one root index key
(itself a data key wrapped by the KEK), so tokens of one parameter cannot be
compared with another's ("Smith" as a family name and as a city give unrelated
tokens).  Values are normalised first (Unicode NFKD, accents stripped, case-folded,
white space collapsed), so "Müller" and "MULLER" meet.

Leakage, by design: equal values give equal tokens, so someone with the database
learns which resources share a value of a parameter (and, for low-cardinality
parameters such as gender, the frequency of each value).  See docs/blind-indexes.md.
"""

from __future__ import annotations

import hmac
import unicodedata

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_LEN = 16  # 128-bit tokens: collisions are negligible, and results are re-checked


def normalise(value: str) -> str:
    if value.isascii():
        return " ".join(value.casefold().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


class BlindIndexer:
    """Computes tokens; keeps one derived key per parameter in memory."""

    def __init__(self, root_key: bytes, tenant: str = "default") -> None:
        if len(root_key) < 32:
            raise ValueError("the blind-index root key must be at least 256 bits")
        self._root = root_key
        self._tenant = tenant
        self._keys: dict[str, bytes] = {}

    def _key(self, param: str) -> bytes:
        key = self._keys.get(param)
        if key is None:
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=f"phiguard/blind-index/v1/{self._tenant}/{param}".encode(),
            ).derive(self._root)
            self._keys[param] = key
        return key

    def token(self, param: str, value: str) -> bytes:
        """The token of one value of ``param`` (e.g. ``Patient.family``)."""
        return hmac.digest(self._key(param), normalise(value).encode("utf-8"), "sha256")[:TOKEN_LEN]

    def raw_token(self, param: str, value: str) -> bytes:
        """A token over the exact value, for codes and identifiers where case matters."""
        return hmac.digest(self._key(param), value.encode("utf-8"), "sha256")[:TOKEN_LEN]
