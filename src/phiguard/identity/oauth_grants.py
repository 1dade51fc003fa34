"""The OAuth2 grants phiguard offers, as Authlib grant classes.

* authorization code + PKCE (S256 only) for public SMART apps, acting for a
  signed-in member of staff;
* refresh tokens, rotated on every use, with reuse detection;
* client credentials with ``private_key_jwt`` for backend services.

Authlib parses requests, authenticates clients and checks the protocol rules
(redirect URI, response type, PKCE); the grants below hold phiguard's own rules and
hand token minting to ``OAuthService`` (``oauth.py``), which records every outcome.
The single-use rules (codes, refresh tokens) are enforced by conditional UPDATEs in
``OAuthStore`` *after* every other check has passed, so a request that fails a
check consumes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge  # type: ignore[import-untyped]

from . import oauth_scopes as sc
from .oauth_store import MAX_SECRET_CHARS, AuthorizationCode, RefreshToken

if TYPE_CHECKING:
    from .oauth import Consent, OAuthService


def _s256_matches(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return hmac.compare_digest(computed.encode(), challenge.encode())


class S256Challenge(CodeChallenge):  # type: ignore[misc]
    """PKCE is required of every authorization request, and only S256 is accepted:
    ``plain`` gives no protection once the request itself has leaked."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS = {"S256": _s256_matches}

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("code_challenge is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    AUTHORIZATION_CODE_LENGTH = 43

    @property
    def service(self) -> OAuthService:
        return self.server.service  # type: ignore[no-any-return]

    def validate_requested_scope(self) -> None:
        self.service.check_scope_param(self.request.payload.scope)

    def save_authorization_code(self, code: str, request: Any) -> None:
        consent: Consent = request.user
        data = request.payload.data
        self.service.store.save_code(
            code,
            client_id=request.client.client_id,
            user_id=consent.user_id,
            redirect_uri=request.payload.redirect_uri,
            scope=consent.scope,
            code_challenge=str(data.get("code_challenge")),
            code_challenge_method="S256",
            nonce=_bounded(data.get("nonce"), 256),
            patient=consent.patient,
            now=self.service.clock.now(),
            session_handle=consent.session,
        )

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        if not isinstance(code, str) or len(code) > MAX_SECRET_CHARS:
            return None
        found = self.service.store.find_code(code, client.client_id)
        if found is None:
            return None
        if found.used:
            self.service.code_reused(self.request, found)
            return None
        if found.expires_at <= self.service.clock.now():
            return None
        return found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        return None  # consumed in create_token_response, atomically

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Any:
        return None  # not used: create_token_response is phiguard's own

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        code: AuthorizationCode = self.request.authorization_code
        if not self.service.store.consume_code(code.code_hash, self.service.clock.now()):
            # Lost a race with another exchange of the same code: treat as reuse.
            self.service.code_reused(self.request, code)
            raise InvalidGrantError()
        token = self.service.exchange_code(self.request, self.request.client, code)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class RotatingRefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    @property
    def service(self) -> OAuthService:
        return self.server.service  # type: ignore[no-any-return]

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError()
        self.request.client = client
        presented = self.request.form.get("refresh_token")
        if not isinstance(presented, str) or not presented:
            raise InvalidRequestError("refresh_token is required")
        found = self.service.store.find_refresh(presented)
        if found is None or not found.check_client(client):
            raise InvalidGrantError()
        if found.rotated_at is not None and not found.revoked:
            self.service.refresh_reused(self.request, found)
            raise InvalidGrantError()
        if found.revoked or found.expires_at <= self.service.clock.now():
            raise InvalidGrantError()
        scope = self.request.payload.scope
        if scope:
            self.service.check_scope_param(scope)
            asked = sc.split(scope)
            if not asked or sc.narrow(asked, found.scope.split()) != asked:
                raise InvalidScopeError()  # a refresh may keep or drop scopes, never add
        self.request.refresh_token = found

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        found: RefreshToken = self.request.refresh_token
        token = self.service.refresh(self.request, self.request.client, found)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class BackendGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    @property
    def service(self) -> OAuthService:
        return self.server.service  # type: ignore[no-any-return]

    def validate_requested_scope(self) -> None:
        self.service.check_scope_param(self.request.payload.scope)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.service.issue_backend(self.request, self.request.client)
        return 200, token, self.TOKEN_RESPONSE_HEADER


def _bounded(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if len(value) > limit:
        raise InvalidRequestError("parameter too long")
    return value
