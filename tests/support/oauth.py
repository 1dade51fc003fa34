"""The client side of the OAuth tests: PKCE pairs, backend keys, signed assertions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class BackendKey:
    """A backend client's private key and the JWKS to register for it."""

    key: RSAKey | ECKey
    kid: str
    alg: str

    @classmethod
    def rsa(cls, kid: str = "k1") -> BackendKey:
        return cls(RSAKey.generate_key(2048), kid, "RS384")

    @classmethod
    def ec(cls, kid: str = "e1") -> BackendKey:
        return cls(ECKey.generate_key("P-384"), kid, "ES384")

    def jwks(self) -> str:
        public = {**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg}
        return json.dumps({"keys": [public]})

    def assertion(
        self,
        client_id: str,
        audience: str,
        now: dt.datetime,
        *,
        lifetime_s: int = 240,
        jti: str | None = None,
        alg: str | None = None,
        **extra: Any,
    ) -> str:
        claims: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": int(now.timestamp()) + lifetime_s,
            "iat": int(now.timestamp()),
            "jti": secrets.token_hex(16) if jti is None else jti,
            **extra,
        }
        header = {"alg": alg or self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=[alg or self.alg])


def unsigned(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An ``alg: none`` JWT (for refusal tests)."""

    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{b64(header or {'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
