"""The OAuth2 / SMART on FHIR authorization server (Authlib), framework-neutral.

``OAuthService`` is what the web layer calls: it takes a plain ``HttpRequest`` (the
method, the public URI, headers and the already-read query and form) and returns an
``OAuthResponse`` or a ``ConsentView``.  Nothing here imports the web framework, so
the same code answers the live server, the in-process tests and the benchmarks.

Tokens:

* access tokens come from ``TokenService`` (HS256 JWTs, at most 15 minutes);
* refresh tokens are opaque (``pgr_`` + 256 random bits), stored as SHA-256, issued
  only when ``offline_access`` or ``online_access`` was granted, rotated on every
  use, and bounded by an absolute family lifetime that rotation never extends (12
  hours: no longer than an AAL2 session may last without re-authentication).  With
  ``online_access`` alone the family is bound to the console session that approved
  it: once that session is signed out, revoked or past its 12 hours (the user is
  "offline"), a refresh is refused and the family revoked;
* id_tokens (``openid``) are RS256 JWTs signed by ``IdTokenSigner``.

Refusals are generic: the client sees the OAuth error code with a fixed
description, the audit ledger gets the real reason.  Every issue, refresh,
revocation, consent decision, reuse and refused assertion is an audit event; no
event carries a token, code, verifier or assertion.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint  # type: ignore[import-untyped]
from authlib.oauth2.rfc7662 import IntrospectionEndpoint  # type: ignore[import-untyped]

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.errors import AuthenticationError, IdentityError

from . import oauth_scopes as sc
from .accounts import Account, Accounts, UnknownAccount
from .clients import Client, ClientRegistry
from .oauth_assertion import METHOD as PRIVATE_KEY_JWT
from .oauth_http import (
    AUTHORIZE_PATH,
    INTROSPECT_PATH,
    JWKS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    FormRequest,
    HttpRequest,
    OAuthResponse,
    genericise,
)
from .oauth_keys import IdTokenSigner
from .oauth_server import AccessRef, RefreshRef, Server
from .oauth_store import MAX_SECRET_CHARS, AuthorizationCode, OAuthStore, RefreshToken
from .sessions import SessionStore
from .tokens import MAX_LIFETIME, IssuedToken, TokenService

if TYPE_CHECKING:
    from phiguard.system import System

REFRESH_LIFETIME = dt.timedelta(hours=12)
ID_TOKEN_LIFETIME = dt.timedelta(minutes=5)
MAX_PARAM_CHARS = 2048  # any single OAuth parameter
MAX_STATE = 512
MAX_NONCE = 256
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
PURPOSE = "HOPERAT"


class OAuthError(IdentityError):
    """An OAuth operation outside the protocol endpoints was refused (CLI, tooling)."""


class PatientRequired(OAuthError):
    """The consent form asked for a launch patient and got none, or a malformed id."""


@dataclass(frozen=True)
class Consent:
    """What the signed-in user approved: the code grant's ``grant_user``."""

    user_id: str
    scope: str
    patient: str | None
    session: str | None = None
    """The handle of the console session that approved (for ``online_access``)."""


@dataclass(frozen=True)
class ConsentView:
    """What the consent page shows (and posts back)."""

    client: Client
    account: Account
    scopes: tuple[str, ...]
    redirect_uri: str
    needs_patient: bool


class BadAuthorization(Exception):
    """An authorization request that cannot even be redirected back (unknown client,
    unregistered redirect URI): the user sees an error page, the app learns nothing."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


# -- the service ------------------------------------------------------------------------


class OAuthService:
    """Authorization, token, revocation and introspection endpoints, and their events."""

    def __init__(
        self,
        *,
        tokens: TokenService,
        clients: ClientRegistry,
        accounts: Accounts,
        store: OAuthStore,
        signer: IdTokenSigner,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        fhir_base: str,
        refresh_lifetime: dt.timedelta = REFRESH_LIFETIME,
        signed_in: Callable[[str], bool] | None = None,
    ) -> None:
        self.tokens = tokens
        self.signed_in = signed_in
        """Whether the console session with this handle is still signed in."""
        self.clients = clients
        self.accounts = accounts
        self.store = store
        self.signer = signer
        self.audit = audit
        self.clock = clock
        self.issuer = issuer.rstrip("/")
        self.fhir_base = fhir_base.rstrip("/")
        self.token_endpoint = self.issuer + TOKEN_PATH
        self.refresh_lifetime = refresh_lifetime
        self.server = Server(self)

    @classmethod
    def from_system(
        cls, system: System, *, accounts: Accounts | None = None, tokens: TokenService | None = None
    ) -> OAuthService:
        base = system.settings.public_base
        return cls(
            tokens=tokens or TokenService.from_system(system),
            clients=ClientRegistry.from_system(system),
            accounts=accounts or Accounts.from_system(system),
            store=OAuthStore(system.engine),
            signer=IdTokenSigner(system.engine, system.keyring, system.clock),
            audit=system.vault.audit,
            clock=system.clock,
            issuer=base,
            fhir_base=f"{base}/fhir",
            signed_in=SessionStore(system.engine, system.clock).signed_in,
        )

    # -- discovery -----------------------------------------------------------------------
    def smart_configuration(self) -> dict[str, Any]:
        """SMART App Launch 2 discovery (``/.well-known/smart-configuration``)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "authorization_endpoint": self.issuer + AUTHORIZE_PATH,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.issuer + REVOKE_PATH,
            "introspection_endpoint": self.issuer + INTROSPECT_PATH,
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "scopes_supported": list(sc.SUPPORTED),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [PRIVATE_KEY_JWT, "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "capabilities": [
                "launch-standalone",
                "client-public",
                "client-confidential-asymmetric",
                "context-standalone-patient",
                "permission-offline",
                "permission-online",
                "permission-patient",
                "permission-user",
                "permission-v1",
                "permission-v2",
                "sso-openid-connect",
            ],
        }

    def jwks(self) -> dict[str, Any]:
        return self.signer.jwks()

    # -- authorization endpoint ----------------------------------------------------------
    def consent_view(self, http: HttpRequest, user_id: str) -> ConsentView | OAuthResponse:
        """Validate an authorization request for a signed-in user.

        Returns what the consent page shows, or a redirect carrying an OAuth error
        (once the client and redirect URI are known to be genuine); raises
        ``BadAuthorization`` when the request cannot be redirected at all.
        """
        grant = self._consent_grant(http, user_id)
        if isinstance(grant, OAuthResponse):
            return grant
        account = self._account(user_id)
        scopes = self._user_scopes(grant, account)
        if not scopes:
            return self._redirect_error(grant, InvalidScopeError())
        return ConsentView(
            client=grant.request.client,
            account=account,
            scopes=tuple(scopes),
            redirect_uri=grant.redirect_uri,
            needs_patient=sc.LAUNCH_PATIENT in scopes,
        )

    def decide(
        self,
        http: HttpRequest,
        user_id: str,
        *,
        approve: bool,
        patient: str | None,
        session: str | None = None,
    ) -> OAuthResponse:
        """The user's answer on the consent page: a redirect back to the app."""
        grant = self._consent_grant(http, user_id)
        if isinstance(grant, OAuthResponse):
            return grant
        account = self._account(user_id)
        client: Client = grant.request.client
        if not approve:
            self._event(
                "oauth-consent-deny", f"user/{user_id}", http, outcome="denied",
                client_id=client.client_id,
            )  # fmt: skip
            return self._redirect_error(grant, AccessDeniedError())
        scopes = self._user_scopes(grant, account)
        if not scopes:
            return self._redirect_error(grant, InvalidScopeError())
        launch = None
        if sc.LAUNCH_PATIENT in scopes:
            launch = (patient or "").strip()
            if FHIR_ID.fullmatch(launch) is None:
                raise PatientRequired("a patient id is 1 to 64 letters, digits, '-' or '.'")
        consent = Consent(user_id=user_id, scope=sc.join(scopes), patient=launch, session=session)
        response: OAuthResponse = self.server.create_authorization_response(
            request=grant.request, grant_user=consent, grant=grant
        )
        self._event(
            "oauth-consent-grant",
            f"user/{user_id}",
            http,
            patient_ids=(launch,) if launch else (),
            client_id=client.client_id,
            scope=consent.scope,
        )
        return response

    def _consent_grant(self, http: HttpRequest, user_id: str) -> Any:
        request = self.server.create_oauth2_request(http)
        try:
            self._check_authorize_params(request)
            return self.server.get_consent_grant(request=request, end_user=user_id)
        except OAuth2Error as error:
            self.refused(request, error)
            if error.redirect_uri:
                error.state = request.payload.state
                genericise(error)
                return self.server.handle_response(*error(None))
            raise BadAuthorization(str(error.error)) from None

    def _check_authorize_params(self, request: OAuth2Request) -> None:
        data = request.payload.data
        if any(len(v) > MAX_PARAM_CHARS for v in data.values()):
            raise InvalidRequestError("parameter too long")
        if len(data.get("state", "")) > MAX_STATE or len(data.get("nonce", "")) > MAX_NONCE:
            raise InvalidRequestError("state or nonce too long")
        datalist = request.payload.datalist
        for name in ("code_challenge", "code_challenge_method", "nonce", "aud"):
            if len(datalist.get(name, [])) > 1:
                raise InvalidRequestError(f"multiple {name}")
        aud = data.get("aud")
        if aud is not None and aud.rstrip("/") != self.fhir_base:
            # SMART: the app names the FHIR server it means; a token for another is refused.
            raise InvalidRequestError("aud does not name this FHIR server")

    def _redirect_error(self, grant: Any, error: OAuth2Error) -> OAuthResponse:
        error.redirect_uri = grant.redirect_uri
        error.state = grant.request.payload.state
        genericise(error)
        response: OAuthResponse = self.server.handle_response(*error(None))
        return response

    def _user_scopes(self, grant: Any, account: Account) -> list[str]:
        """Requested, within the client's ceiling (Authlib did that), within the roles'."""
        within_client = sc.split(grant.request.scope)
        return sc.narrow(within_client, sc.role_ceiling(account.roles))

    def _account(self, user_id: str) -> Account:
        try:
            account = self.accounts.get(user_id)
        except (UnknownAccount, IdentityError):
            raise AuthenticationError() from None
        if account.status != "active":
            raise AuthenticationError()
        return account

    # -- token endpoint ------------------------------------------------------------------
    def token(self, http: HttpRequest) -> OAuthResponse:
        if any(len(v) > 8192 for _, v in http.form):
            return self._plain_error(http, InvalidRequestError("parameter too long"))
        response: OAuthResponse = self.server.create_token_response(http)
        return response

    def revoke(self, http: HttpRequest) -> OAuthResponse:
        response: OAuthResponse = self.server.create_endpoint_response(
            RevocationEndpoint.ENDPOINT_NAME, http
        )
        return response

    def introspect(self, http: HttpRequest) -> OAuthResponse:
        response: OAuthResponse = self.server.create_endpoint_response(
            IntrospectionEndpoint.ENDPOINT_NAME, http
        )
        if isinstance(response.body, dict) and response.body.get("active") is False:
            response.body = {"active": False}
        return response

    def _plain_error(self, http: HttpRequest, error: OAuth2Error) -> OAuthResponse:
        request = self.server.create_oauth2_request(http)
        response: OAuthResponse = self.server.handle_error_response(request, error)
        return response

    def check_scope_param(self, scope: str | None) -> None:
        try:
            asked = sc.split(scope)
        except sc.ScopeError:
            raise InvalidScopeError() from None
        if not asked:
            raise InvalidScopeError()

    def exchange_code(
        self, request: FormRequest, client: Client, code: AuthorizationCode
    ) -> dict[str, Any]:
        """Tokens for a consumed code, if the user may still have them."""
        account = self._live_account(code.user_id, code.auth_time)
        scopes = sc.narrow(code.scope.split(), sc.role_ceiling(account.roles))
        scopes = sc.narrow(scopes, client.scopes)
        if not scopes:
            raise InvalidScopeError()
        body, issued, family = self._user_tokens(
            client,
            account,
            scopes,
            code.patient,
            family_id=None,
            family_expires=None,
            session=code.session_handle,
        )
        if sc.OPENID in scopes:
            body["id_token"] = self._id_token(account, client, code, scopes)
        self.store.link_code(code.code_hash, family, issued.claims.jti, issued.claims.expires_at)
        self._event(
            "oauth-token-issue",
            f"user/{account.user_id}",
            request.http,
            patient_ids=(code.patient,) if code.patient else (),
            client_id=client.client_id,
            grant_type="authorization_code",
            scope=sc.join(scopes),
            jti=issued.claims.jti,
            refresh_family=family,
        )
        return body

    def refresh(self, request: FormRequest, client: Client, found: RefreshToken) -> dict[str, Any]:
        """Rotate ``found`` and issue new tokens; reuse and dead accounts end the family."""
        now = self.clock.now()
        try:
            account = self._live_account(found.user_id, found.issued_at)
        except InvalidGrantError:
            self.store.revoke_family(found.family_id, now)
            raise
        if found.session_handle is not None and (
            self.signed_in is None or not self.signed_in(found.session_handle)
        ):
            # online_access: the user signed out (or the session ended) since.
            self.store.revoke_family(found.family_id, now)
            raise InvalidGrantError(description="user-offline")
        if not self.store.rotate(found.token_hash, now):
            self.refresh_reused(request, found)  # a concurrent use won the race
            raise InvalidGrantError(description="refresh-token-race")
        asked = sc.split(request.payload.scope) if request.payload.scope else found.scope.split()
        scopes = sc.narrow(asked, found.scope.split())
        scopes = sc.narrow(scopes, client.scopes)
        scopes = sc.narrow(scopes, sc.role_ceiling(account.roles))
        if not scopes:
            raise InvalidScopeError()
        body, issued, _ = self._user_tokens(
            client,
            account,
            scopes,
            found.patient,
            family_id=found.family_id,
            family_expires=found.expires_at,
            session=found.session_handle,
        )
        self._event(
            "oauth-token-refresh",
            f"user/{account.user_id}",
            request.http,
            patient_ids=(found.patient,) if found.patient else (),
            client_id=client.client_id,
            scope=sc.join(scopes),
            jti=issued.claims.jti,
            refresh_family=found.family_id,
        )
        return body

    def issue_backend(self, request: FormRequest, client: Client) -> dict[str, Any]:
        asked = sc.split(request.payload.scope)
        scopes = [
            s
            for s in sc.narrow(asked, client.scopes)
            if (r := sc.parse_resource(s)) is not None and r.context == "system"
        ]
        if not scopes:
            raise InvalidScopeError()
        issued = self.tokens.issue(
            kind="client", subject=client.client_id, client_id=client.client_id, scopes=scopes
        )
        self._event(
            "oauth-token-issue",
            f"client/{client.client_id}",
            request.http,
            client_id=client.client_id,
            grant_type="client_credentials",
            scope=sc.join(scopes),
            jti=issued.claims.jti,
        )
        return _token_body(issued, scopes, None)

    def issue_for_user(
        self,
        user_id: str,
        scopes: list[str],
        *,
        by: str,
        lifetime: dt.timedelta = MAX_LIFETIME,
        source: str = "cli",
    ) -> IssuedToken:
        """A user token minted by an operator (``phiguard token issue``): no refresh, no
        client; the user must be active, and the scopes within what their roles allow."""
        if not dt.timedelta(0) < lifetime <= MAX_LIFETIME:
            raise OAuthError("a token lives at most 15 minutes")
        try:
            asked = sc.split(" ".join(scopes))
        except sc.ScopeError as exc:
            raise OAuthError(f"scope refused: {exc}") from None
        if not sc.user_scopes(asked):
            raise OAuthError("a user token takes patient/ or user/ scopes, not system/")
        try:
            account = self.accounts.get(user_id)
        except UnknownAccount:
            raise OAuthError(f"there is no account {user_id}") from None
        if account.status != "active":
            raise OAuthError(f"account {user_id} is {account.status}: no token is issued")
        granted = sc.narrow(asked or ["user/*.rs"], sc.role_ceiling(account.roles))
        granted = [s for s in granted if sc.parse_resource(s) is not None]
        if not granted:
            raise OAuthError("none of the requested scopes is within the user's roles")
        issued = self.tokens.issue(
            kind="user",
            subject=user_id,
            client_id="phiguard-cli",
            scopes=granted,
            fhir_user=_fhir_user_ref(account),
            lifetime=lifetime,
        )
        self._event(
            "oauth-token-issue",
            by,
            HttpRequest("CLI", "", {}, source=source),
            account=user_id,
            client_id="phiguard-cli",
            grant_type="operator",
            scope=sc.join(granted),
            jti=issued.claims.jti,
            expires_in=issued.expires_in,
        )
        return issued

    def _live_account(self, user_id: str, issued_at: dt.datetime) -> Account:
        try:
            account = self.accounts.get(user_id)
        except (UnknownAccount, IdentityError):
            raise InvalidGrantError(description="unknown-account") from None
        if account.status != "active":
            raise InvalidGrantError(description=f"account-{account.status}")
        if self.accounts.is_revoked(user_id, issued_at):
            raise InvalidGrantError(description="account-revoked-since")
        return account

    def _user_tokens(
        self,
        client: Client,
        account: Account,
        scopes: list[str],
        patient: str | None,
        *,
        family_id: str | None,
        family_expires: dt.datetime | None,
        session: str | None = None,
    ) -> tuple[dict[str, Any], IssuedToken, str | None]:
        issued = self.tokens.issue(
            kind="user",
            subject=account.user_id,
            client_id=client.client_id,
            scopes=scopes,
            patient=patient,
            fhir_user=_fhir_user_ref(account),
        )
        refresh: str | None = None
        family: str | None = None
        if sc.OFFLINE in scopes or sc.ONLINE in scopes:
            now = self.clock.now()
            refresh, family = self.store.new_refresh(
                family_id=family_id,
                client_id=client.client_id,
                user_id=account.user_id,
                scope=sc.join(scopes),
                patient=patient,
                now=now,
                expires_at=family_expires or now + self.refresh_lifetime,
                access_jti=issued.claims.jti,
                access_expires=issued.claims.expires_at,
                # offline_access outlives the session; online_access alone does not.
                session_handle=None if sc.OFFLINE in scopes else session,
            )
        body = _token_body(issued, scopes, refresh)
        if patient:
            body["patient"] = patient
            body["need_patient_banner"] = True
        return body, issued, family

    def _id_token(
        self, account: Account, client: Client, code: AuthorizationCode, scopes: list[str]
    ) -> str:
        now = self.clock.now()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": account.user_id,
            "aud": client.client_id,
            "iat": int(now.timestamp()),
            "exp": int((now + ID_TOKEN_LIFETIME).timestamp()),
            "auth_time": code.get_auth_time(),
        }
        if code.nonce:
            claims["nonce"] = code.nonce
        if sc.FHIR_USER in scopes and account.practitioner_id:
            claims["fhirUser"] = f"{self.fhir_base}/Practitioner/{account.practitioner_id}"
        return self.signer.sign(claims)

    # -- reuse ---------------------------------------------------------------------------
    def code_reused(self, request: FormRequest, code: AuthorizationCode) -> None:
        self.store.revoke_code_grant(code.code_hash, self.clock.now())
        self._event(
            "oauth-code-reuse",
            f"client/{code.client_id}",
            request.http,
            outcome="denied",
            user=code.user_id,
        )

    def refresh_reused(self, request: FormRequest, found: RefreshToken) -> None:
        revoked = self.store.revoke_family(found.family_id, self.clock.now())
        self._event(
            "oauth-refresh-reuse",
            f"user/{found.user_id}",
            request.http,
            outcome="denied",
            client_id=found.client_id,
            refresh_family=found.family_id,
            refresh_tokens_revoked=revoked,
        )

    # -- revocation and introspection ----------------------------------------------------
    def lookup(self, token: str) -> AccessRef | RefreshRef | None:
        if not token or len(token) > 8192:
            return None
        if token.count(".") == 2:
            try:
                claims = self.tokens.verify(token)
            except AuthenticationError:
                return None
            try:
                self.tokens.live_principal(claims)
                live = True
            except AuthenticationError:
                live = False
            return AccessRef(claims, live)
        if len(token) > MAX_SECRET_CHARS:
            return None
        found = self.store.find_refresh(token)
        if found is None:
            return None
        live = (
            not found.revoked
            and found.rotated_at is None
            and found.expires_at > self.clock.now()
            and self.clients.active(found.client_id) is not None
        )
        if live:
            try:
                self._live_account(found.user_id, found.issued_at)
            except InvalidGrantError:
                live = False
        return RefreshRef(found, live)

    def revoke_found(self, found: AccessRef | RefreshRef, request: FormRequest) -> None:
        if isinstance(found, AccessRef):
            c = found.claims
            self.tokens.revoke(c)
            self._event(
                "oauth-token-revoke",
                f"{c.kind}/{c.subject}",
                request.http,
                client_id=c.client_id,
                token_type="access_token",  # noqa: S106 - a type name
                jti=c.jti,
            )
            return
        t = found.token
        self.store.revoke_family(t.family_id, self.clock.now())
        self._event(
            "oauth-token-revoke",
            f"user/{t.user_id}",
            request.http,
            client_id=t.client_id,
            token_type="refresh_token",  # noqa: S106 - a type name
            refresh_family=t.family_id,
        )

    def describe(self, found: AccessRef | RefreshRef) -> dict[str, Any]:
        if isinstance(found, AccessRef):
            c = found.claims
            body: dict[str, Any] = {
                "active": True,
                "token_type": "Bearer",
                "scope": " ".join(sorted(c.scopes)),
                "client_id": c.client_id,
                "sub": c.subject,
                "iss": self.issuer,
                "aud": self.fhir_base,
                "exp": int(c.expires_at.timestamp()),
                "iat": int(c.issued_at.timestamp()),
                "jti": c.jti,
            }
            if c.patient:
                body["patient"] = c.patient
            if c.fhir_user:
                body["fhirUser"] = c.fhir_user
            return body
        t = found.token
        body = {
            "active": True,
            "token_type": "refresh_token",
            "scope": t.scope,
            "client_id": t.client_id,
            "sub": t.user_id,
            "iss": self.issuer,
            "exp": int(t.expires_at.timestamp()),
            "iat": int(t.issued_at.timestamp()),
        }
        if t.patient:
            body["patient"] = t.patient
        return body

    # -- events --------------------------------------------------------------------------
    def refused(self, request: Any, error: OAuth2Error) -> None:
        """Record a refused OAuth request: the real reason, never a secret."""
        http: HttpRequest | None = getattr(request, "http", None)
        payload = getattr(request, "payload", None)
        data = payload.data if payload is not None else {}
        client = getattr(request, "client", None)
        self._event(
            "oauth-request-refuse",
            f"client/{client.client_id}" if client is not None else "anonymous/oauth-client",
            http,
            outcome="denied",
            endpoint=(http.uri.split("?", 1)[0].rsplit("/", 1)[-1] if http else ""),
            error=str(error.error),
            reason=str(error.description or "")[:200],
            grant_type=str(data.get("grant_type") or "")[:64],
            client_id=str(data.get("client_id") or "")[:64],
        )

    def assertion_refused(self, request: OAuth2Request, client_id: str, reason: str) -> None:
        self._event(
            "oauth-assertion-refuse",
            f"client/{client_id}" if client_id else "anonymous/oauth-client",
            getattr(request, "http", None),
            outcome="denied",
            reason=reason,
        )

    def _event(
        self,
        action: str,
        principal: str,
        http: HttpRequest | None,
        *,
        outcome: str = "success",
        patient_ids: tuple[str, ...] = (),
        **detail: object,
    ) -> None:
        self.audit.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                principal=principal,
                purpose=PURPOSE,
                request_id=(http.request_id if http and http.request_id else secrets.token_hex(16)),
                recorded=self.clock.now(),
                source=http.source if http else "",
                patient_ids=patient_ids,
                detail={k: v for k, v in detail.items() if v is not None},
            )
        )


def _fhir_user_ref(account: Account) -> str | None:
    return f"Practitioner/{account.practitioner_id}" if account.practitioner_id else None


def _token_body(issued: IssuedToken, scopes: list[str], refresh: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": sc.join(scopes),
    }
    if refresh:
        body["refresh_token"] = refresh
    return body


__all__ = [
    "AUTHORIZE_PATH",
    "INTROSPECT_PATH",
    "JWKS_PATH",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "BadAuthorization",
    "Consent",
    "ConsentView",
    "HttpRequest",
    "OAuthError",
    "OAuthResponse",
    "OAuthService",
    "PatientRequired",
]
