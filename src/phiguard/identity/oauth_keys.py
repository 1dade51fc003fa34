"""The RSA key that signs OpenID Connect id_tokens, sealed at rest.

Access tokens are HMAC-signed because only phiguard verifies them; an id_token is
verified by the app, so it needs a public key (RS256, the algorithm every OpenID
client supports).  The private key is generated once, sealed with the
``__identity__`` data key through the keyring (so the KEK -- key file or HSM --
guards it like every other key) and opened into memory when first needed.  The
public half is served at ``/.well-known/jwks.json``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import Engine, insert, select

from phiguard.clock import Clock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import IDENTITY_COMPARTMENT, Keyring
from phiguard.store.engine import now_us
from phiguard.store.tables import oauth_signing_keys

ID_TOKEN_ALGORITHM = "RS256"  # noqa: S105 - an algorithm name
RSA_BITS = 2048


class IdTokenSigner:
    """Signs id_tokens with the active key; lists every stored public key."""

    def __init__(self, engine: Engine, keyring: Keyring, clock: Clock) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self._key: RSAKey | None = None
        self._kid = ""
        self._lock = threading.Lock()

    def _active(self) -> tuple[str, RSAKey]:
        with self._lock:
            if self._key is None:
                self._kid, self._key = self._load_or_create()
            return self._kid, self._key

    def _load_or_create(self) -> tuple[str, RSAKey]:
        with self.engine.begin() as conn:
            row = conn.execute(
                select(oauth_signing_keys)
                .where(oauth_signing_keys.c.active.is_(True))
                .order_by(oauth_signing_keys.c.created_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                sealer = self.keyring.sealer(IDENTITY_COMPARTMENT, int(row.dek_version), conn)
                raw = sealer.open(bytes(row.sealed), aad("oauth-id-token-key", row.kid))
                return str(row.kid), RSAKey.import_key(json.loads(raw))
            key = RSAKey.generate_key(RSA_BITS)
            kid = key.thumbprint()
            sealer = self.keyring.current_sealer(IDENTITY_COMPARTMENT, conn)
            private = json.dumps(key.as_dict(private=True)).encode()
            public = {**key.as_dict(private=False), "kid": kid, "alg": ID_TOKEN_ALGORITHM}
            public["use"] = "sig"
            conn.execute(
                insert(oauth_signing_keys).values(
                    kid=kid,
                    public_jwk=json.dumps(public),
                    sealed=sealer.seal(private, aad("oauth-id-token-key", kid)),
                    dek_version=sealer.key_version,
                    created_at=now_us(self.clock.now()),
                    active=True,
                )
            )
        return kid, key

    def jwks(self) -> dict[str, Any]:
        """Every stored public key (the active one is created on first use)."""
        self._active()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(oauth_signing_keys.c.public_jwk).order_by(oauth_signing_keys.c.created_at)
            ).scalars()
            return {"keys": [json.loads(r) for r in rows]}

    def sign(self, claims: dict[str, Any]) -> str:
        kid, key = self._active()
        header = {"alg": ID_TOKEN_ALGORITHM, "typ": "JWT", "kid": kid}
        return jwt.encode(header, claims, key, algorithms=[ID_TOKEN_ALGORITHM])
