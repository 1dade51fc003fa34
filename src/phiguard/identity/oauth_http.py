"""The OAuth endpoints' plain request and response, and what every refusal says.

``HttpRequest`` is what the web adapter hands over (method, the public URI, headers,
the already-read query and form); ``FormRequest`` presents it to Authlib.  Nothing
here knows the web framework.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Payload, OAuth2Request  # type: ignore[import-untyped]

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
REVOKE_PATH = "/oauth/revoke"
INTROSPECT_PATH = "/oauth/introspect"
JWKS_PATH = "/.well-known/jwks.json"

GENERIC = {
    "invalid_request": "the request is invalid",
    "invalid_client": "client authentication failed",
    "invalid_grant": "the grant is invalid, expired or revoked",
    "unauthorized_client": "the client may not use this grant",
    "unsupported_grant_type": "unsupported grant type",
    "unsupported_response_type": "unsupported response type",
    "invalid_scope": "the requested scope is invalid",
    "access_denied": "the request was denied",
    "unsupported_token_type": "unsupported token type",
}


# -- the framework-neutral request and response ----------------------------------------


@dataclass
class HttpRequest:
    """One HTTP request as the web adapter read it (body already limited and parsed).

    Headers, query and form carry cookies, bearer tokens, codes, verifiers, refresh
    tokens and assertions, so ``repr`` leaves them out (and the URI, whose query
    holds the authorization request): a request object that ends up in a log line
    or a debugger's trace shows no secret.
    """

    method: str
    uri: str = field(repr=False)  # the public base URL + path + query: never the Host header
    headers: dict[str, str] = field(repr=False)
    query: list[tuple[str, str]] = field(default_factory=list, repr=False)
    form: list[tuple[str, str]] = field(default_factory=list, repr=False)
    source: str = ""
    request_id: str = ""


@dataclass
class OAuthResponse:
    """What an endpoint answers; the body (tokens) and headers (a ``Location`` with the
    code) are left out of ``repr``."""

    status: int
    body: dict[str, Any] | str = field(repr=False)
    headers: list[tuple[str, str]] = field(repr=False)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._data: dict[str, str] = {}
        for key, value in items:
            self._data.setdefault(key, value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._items:
            values[key].append(value)
        return values


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """An ``OAuth2Request`` over an ``HttpRequest``.  The authorization endpoint reads
    its parameters from the query (the consent form posts back to the same URL); the
    token, revocation and introspection endpoints from the form body only."""

    def __init__(self, http: HttpRequest, *, from_query: bool) -> None:
        super().__init__(method=http.method, uri=http.uri, headers=http.headers)
        self.http = http
        self.payload = _Payload(http.query if from_query else http.form)
        self._args = dict(reversed(http.query))
        self._form = dict(reversed(http.form))

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


def genericise(error: OAuth2Error) -> None:
    error.description = GENERIC.get(str(error.error), "the request was refused")
    error.uri = None
    if error.error == "invalid_client":
        error.status_code = 401  # one status for every failed client authentication
