"""Authlib's authorization server bound to phiguard: grants, endpoints, client auth.

The revocation and introspection endpoints see tokens through two small wrappers
(an access token's verified claims, a stored refresh token) and leave every
decision about them to ``OAuthService``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    InvalidRequestError,
    OAuth2Error,
    OAuth2Request,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint  # type: ignore[import-untyped]
from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped]

from .clients import Client
from .oauth_assertion import METHOD as PRIVATE_KEY_JWT
from .oauth_assertion import ClientAssertionAuth
from .oauth_grants import BackendGrant, CodeGrant, RotatingRefreshGrant, S256Challenge
from .oauth_http import AUTHORIZE_PATH, FormRequest, HttpRequest, OAuthResponse, genericise
from .oauth_store import RefreshToken
from .tokens import TokenClaims

if TYPE_CHECKING:
    from .oauth import OAuthService


@dataclass
class AccessRef:
    claims: TokenClaims
    live: bool

    def check_client(self, client: Any) -> bool:
        return bool(self.claims.client_id == client.client_id)

    def is_expired(self) -> bool:
        return False  # verify() already refused expired tokens

    def is_revoked(self) -> bool:
        return not self.live


@dataclass
class RefreshRef:
    token: RefreshToken
    live: bool

    def check_client(self, client: Any) -> bool:
        return self.token.check_client(client)

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return not self.live


class _Lookup:
    """What revocation and introspection share: the service, a bounded ``token``
    parameter, and finding the token it names."""

    server: Any

    @property
    def service(self) -> OAuthService:
        return self.server.service  # type: ignore[no-any-return]

    def check_params(self, request: Any, client: Any) -> None:
        token = request.form.get("token")
        if not token or len(token) > 8192:
            raise InvalidRequestError()

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return self.service.lookup(token_string)


class _Revocation(_Lookup, RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["none", PRIVATE_KEY_JWT]

    def authenticate_token(self, request: Any, client: Any) -> Any:
        self.check_params(request, client)
        found = self.service.lookup(request.form["token"])
        if found is None or not found.check_client(client):
            return None  # RFC 7009: answer 200 all the same, and change nothing
        return found

    def revoke_token(self, token: Any, request: Any) -> None:
        self.service.revoke_found(token, request)


class _Introspection(_Lookup, IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = [PRIVATE_KEY_JWT]

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        return bool(client.kind == "backend")

    def introspect_token(self, token: Any) -> dict[str, Any]:
        return self.service.describe(token)


class Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib's authorization server bound to phiguard's service."""

    def __init__(self, service: OAuthService) -> None:
        super().__init__(scopes_supported=None)
        self.service = service
        self.register_grant(CodeGrant, [S256Challenge()])
        self.register_grant(RotatingRefreshGrant)
        self.register_grant(BackendGrant)
        self.register_endpoint(_Revocation)
        self.register_endpoint(_Introspection)
        self.register_client_auth_method(
            PRIVATE_KEY_JWT,
            ClientAssertionAuth(
                service.store, service.clock, service.token_endpoint, service.assertion_refused
            ),
        )

    def query_client(self, client_id: str) -> Client | None:
        return self.service.clients.active(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        return None  # tokens are stored as they are minted

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        http: HttpRequest = request
        return FormRequest(http, from_query=http.uri.split("?", 1)[0].endswith(AUTHORIZE_PATH))

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("phiguard takes no JSON OAuth requests")

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def handle_error_response(self, request: Any, error: OAuth2Error) -> OAuthResponse:
        self.service.refused(request, error)
        genericise(error)
        return self.handle_response(*error(None))

    def validate_requested_scope(self, scope: str | None) -> None:
        self.service.check_scope_param(scope)
