"""``private_key_jwt`` client authentication (RFC 7523, SMART Backend Services).

Written here rather than taken from Authlib's ``JWTBearerClientAssertion`` because
every rule is ours to state: only RS384 and ES384 (never ``none``, never HMAC with a
public key as secret); the key comes from the client's registered JWKS by ``kid``;
``aud`` must be exactly our token endpoint; ``exp`` must lie in the future and at
most five minutes ahead (so a stolen assertion is worth little and the replay table
stays small); ``iss`` and ``sub`` are the client id; ``jti`` is single-use.  Every
refusal is the same ``invalid_client``; the real reason goes to the audit ledger.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError, OAuth2Request  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from phiguard.clock import Clock

from .clients import ASSERTION_ALGORITHMS, Client
from .oauth_store import OAuthStore

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METHOD = "private_key_jwt"
MAX_ASSERTION_CHARS = 8192
MAX_AHEAD_S = 300
SKEW_S = 5
MAX_JTI = 256

Refused = Callable[[OAuth2Request, str, str], None]


class ClientAssertionAuth:
    """The ``private_key_jwt`` method for Authlib's client authentication registry."""

    def __init__(
        self, store: OAuthStore, clock: Clock, token_endpoint: str, on_refused: Refused
    ) -> None:
        self.store = store
        self.clock = clock
        self.token_endpoint = token_endpoint
        self.on_refused = on_refused

    def __call__(
        self, query_client: Callable[[str], Client | None], request: OAuth2Request
    ) -> Client | None:
        form = request.form
        assertion = form.get("client_assertion")
        if not assertion and not form.get("client_assertion_type"):
            return None  # not this method: let the next one try
        client_hint = str(form.get("client_id") or "")[:64]
        try:
            return self._verify(query_client, form, str(assertion or ""))
        except _Refusal as refusal:
            self.on_refused(request, refusal.client_id or client_hint, refusal.reason)
            raise InvalidClientError(description="client authentication failed") from None

    def _verify(
        self, query_client: Callable[[str], Client | None], form: Any, assertion: str
    ) -> Client:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _Refusal("wrong-assertion-type")
        if not assertion or len(assertion) > MAX_ASSERTION_CHARS or assertion.count(".") != 2:
            raise _Refusal("malformed-assertion")
        try:
            header = _segment(assertion, 0)
            unverified = _segment(assertion, 1)
        except ValueError:
            raise _Refusal("malformed-assertion") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise _Refusal("algorithm-not-allowed")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise _Refusal("missing-issuer")
        client_id = client_id[:64]
        given = form.get("client_id")
        if given is not None and given != client_id:
            raise _Refusal("client-id-mismatch", client_id)
        client = query_client(client_id)
        if client is None or client.kind != "backend" or not client.jwks:
            raise _Refusal("unknown-or-revoked-client", client_id)
        key = _pick_key(client.jwks, header.get("kid"), str(alg))
        if key is None:
            raise _Refusal("no-matching-key", client_id)
        try:
            claims = jwt.decode(assertion, key, algorithms=[str(alg)]).claims
        except (JoseError, ValueError, TypeError):
            raise _Refusal("bad-signature", client_id) from None
        now = int(self.clock.now().timestamp())
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.token_endpoint not in auds or len(auds) != 1:
            raise _Refusal("wrong-audience", client_id)
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise _Refusal("issuer-subject-mismatch", client_id)
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise _Refusal("missing-expiry", client_id)
        if exp <= now:
            raise _Refusal("expired", client_id)
        if exp > now + MAX_AHEAD_S + SKEW_S:
            raise _Refusal("expiry-too-far-ahead", client_id)
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, int) or value > now + SKEW_S):
                raise _Refusal(f"{name}-in-future", client_id)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
            raise _Refusal("missing-jti", client_id)
        if not self.store.use_assertion(client_id, jti, exp, self.clock.now()):
            raise _Refusal("replayed-jti", client_id)
        return client


class _Refusal(Exception):
    def __init__(self, reason: str, client_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_id = client_id


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _pick_key(jwks: dict[str, Any], kid: object, alg: str) -> RSAKey | ECKey | None:
    """The registered key named by ``kid`` (or the only key) that fits ``alg``."""
    wanted = RSAKey if alg == "RS384" else ECKey
    candidates = []
    for raw in jwks.get("keys", []):
        if kid is not None and raw.get("kid") != kid:
            continue
        if raw.get("alg") not in (None, alg):
            continue
        key = KeySet.import_key_set({"keys": [raw]}).keys[0]
        if isinstance(key, wanted):
            candidates.append(key)
    if len(candidates) != 1:
        return None  # none, or ambiguous without a kid
    return candidates[0]
