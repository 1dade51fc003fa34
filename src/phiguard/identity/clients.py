"""The registry of OAuth2 applications (``oauth_clients``).

Two kinds, and nothing in between:

* ``public`` -- a browser or mobile SMART app acting for a signed-in member of staff.
  It holds no secret (it could not keep one), so it must use PKCE, and its
  redirect URIs must be registered exactly: https, or http on a loopback address
  (RFC 8252 native apps), or a private-use scheme such as ``org.example.app:/cb``.
* ``backend`` -- a service with no user (SMART Backend Services).  It proves who it
  is with a JWT signed by a private key whose public half is registered here (JWKS,
  RS384 or ES384).  Its token carries the client's own registered roles.

There are no client secrets at all: a shared secret is one more thing to leak from a
database or a config file, and asymmetric keys cost the client nothing more.

``scopes`` is the ceiling of what the app may ever be granted (see
``oauth_scopes``).  ``purposes`` are the purposes of use (HL7 PurposeOfUse) its
requests may declare in ``X-Purpose-Of-Use``, the first being what a request
without the header acts for: by default TREAT for a user's app and HOPERAT for a
backend service, so a clinical app cannot quietly act for payment or research.
The emergency purposes (BTG, ETREAT) are never registered: break-the-glass is a
person's declaration.  A user's app may carry them for its user (they count only
with that person's own running grant); a backend service never can.

Revoking a client ends it at once: its refresh tokens, the access tokens issued
with them and its unused codes are revoked in the same transaction, and tokens it
obtained as a backend fail ``live_principal``.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import ipaddress
import json
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.errors import IdentityError
from phiguard.roles import ROLES
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import (
    oauth_clients,
    oauth_codes,
    oauth_refresh_tokens,
    oauth_revoked_tokens,
)

from . import oauth_scopes as sc

if TYPE_CHECKING:
    from phiguard.system import System

Kind = Literal["public", "backend"]

APP_PURPOSES: tuple[str, ...] = ("TREAT", "HPAYMT", "HOPERAT", "HRESCH", "PUBHLTH")
"""Purposes of use an application may be registered for (never BTG or ETREAT)."""
DEFAULT_PURPOSES: dict[str, tuple[str, ...]] = {"public": ("TREAT",), "backend": ("HOPERAT",)}
EMERGENCY_PURPOSES: tuple[str, ...] = ("ETREAT", "BTG")
KINDS: tuple[Kind, ...] = ("public", "backend")

CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_NAME = 200
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI = 512
MAX_JWKS_BYTES = 16_384
MAX_KEYS = 10
MIN_RSA_BITS = 2048
ASSERTION_ALGORITHMS = ("RS384", "ES384")
PURPOSE = "HOPERAT"

DEFAULT_PUBLIC_SCOPES = (
    sc.OPENID,
    sc.FHIR_USER,
    sc.LAUNCH_PATIENT,
    sc.OFFLINE,
    "patient/*.rs",
    "user/*.rs",
)
DEFAULT_BACKEND_SCOPES = ("system/*.rs",)


class ClientError(IdentityError):
    """A client registration was refused (the message says why), or names no client."""


class UnknownClient(ClientError):
    """No registered client has this id."""


@dataclass(frozen=True)
class Client:
    """A registered application.  Also the client model Authlib's grants consult."""

    client_id: str
    tenant: str
    name: str
    kind: Kind
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    jwks: dict[str, Any] | None
    roles: tuple[str, ...]
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None
    purposes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def key_ids(self) -> tuple[str, ...]:
        keys = (self.jwks or {}).get("keys", [])
        return tuple(str(k.get("kid", "-")) for k in keys)

    # -- Authlib ClientMixin ---------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # SMART apps always name their redirect_uri

    def get_allowed_scope(self, scope: str | None) -> str | None:
        try:
            asked = sc.split(scope)
        except sc.ScopeError:
            return None
        allowed = sc.narrow(asked, self.scopes)
        return sc.join(allowed) if allowed else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.kind == "public" and redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # phiguard issues no client secrets

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.kind == "public":
            return method == "none"
        return method == "private_key_jwt"

    def check_response_type(self, response_type: str) -> bool:
        return self.kind == "public" and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if self.kind == "public":
            return grant_type in ("authorization_code", "refresh_token")
        return grant_type == "client_credentials"


class ClientRegistry:
    """Registers, lists and revokes applications; every change is audited."""

    def __init__(
        self, engine: Engine, clock: Clock, audit: AuditSink, *, tenant: str = "default"
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.tenant = tenant

    @classmethod
    def from_system(cls, system: System) -> ClientRegistry:
        return cls(system.engine, system.clock, system.vault.audit, tenant=system.settings.tenant)

    # -- reading -----------------------------------------------------------------------
    def get(self, client_id: str) -> Client:
        """The client ``client_id`` (revoked or not), or ``UnknownClient``."""
        client = self.find(client_id)
        if client is None:
            raise UnknownClient(f"there is no client {client_id[:64]}")
        return client

    def find(self, client_id: str) -> Client | None:
        if not isinstance(client_id, str) or CLIENT_ID.fullmatch(client_id) is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_clients).where(
                    oauth_clients.c.client_id == client_id, oauth_clients.c.tenant == self.tenant
                )
            ).first()
        return None if row is None else _client(row)

    def active(self, client_id: str) -> Client | None:
        """The client if it exists and is not revoked; what the OAuth endpoints see."""
        client = self.find(client_id)
        return client if client is not None and client.active else None

    def list(self, *, include_revoked: bool = True) -> builtins.list[Client]:
        stmt = (
            select(oauth_clients)
            .where(oauth_clients.c.tenant == self.tenant)
            .order_by(oauth_clients.c.created_at, oauth_clients.c.client_id)
        )
        if not include_revoked:
            stmt = stmt.where(oauth_clients.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_client(row) for row in conn.execute(stmt)]

    # -- changes -----------------------------------------------------------------------
    def add(
        self,
        name: str,
        kind: str,
        *,
        by: str,
        redirect_uris: Iterable[str] = (),
        scopes: Iterable[str] = (),
        jwks: str | dict[str, Any] | None = None,
        roles: Iterable[str] = (),
        purposes: Iterable[str] = (),
        source: str = "",
    ) -> Client:
        """Register an application; ``ClientError`` names the first thing that is wrong."""
        label = _name(name)
        if kind not in KINDS:
            raise ClientError("the client kind must be public or backend")
        purpose_list = _purposes(kind, purposes)
        uris = _redirect_uris(redirect_uris)
        scope_list = _scopes(kind, scopes)
        key_set = _jwks(jwks) if jwks is not None else None
        role_list = sorted({r.strip() for r in roles if r.strip()})
        for role in role_list:
            if role not in ROLES:
                raise ClientError(f"unknown role {role!r}; allowed roles: {', '.join(ROLES)}")
        if kind == "public":
            if not uris:
                raise ClientError("a public client needs at least one --redirect-uri")
            if key_set is not None:
                raise ClientError("a public client has no keys (it uses PKCE): drop --jwks")
            if role_list:
                raise ClientError("a public client acts with its user's roles: drop --role")
        else:
            if uris:
                raise ClientError("a backend client has no redirect URIs")
            if key_set is None:
                raise ClientError("a backend client needs --jwks (its public keys)")
            if not role_list:
                raise ClientError(f"a backend client needs at least one --role: {', '.join(ROLES)}")
        client_id = secrets.token_urlsafe(16)
        now = self.clock.now()
        with self.engine.begin() as conn:
            conn.execute(
                insert(oauth_clients).values(
                    client_id=client_id,
                    tenant=self.tenant,
                    name=label,
                    kind=kind,
                    redirect_uris=json.dumps(uris),
                    scopes=sc.join(scope_list),
                    jwks=None if key_set is None else json.dumps(key_set),
                    roles=" ".join(role_list),
                    purposes=" ".join(purpose_list),
                    created_at=now_us(now),
                    created_by=by,
                    revoked_at=None,
                )
            )
            self._record(
                conn,
                "oauth-client-add",
                by,
                now,
                source,
                client_id=client_id,
                kind=kind,
                scopes=scope_list,
                redirect_uris=uris,
                roles=role_list,
                purposes=purpose_list,
                key_ids=[str(k.get("kid", "-")) for k in (key_set or {}).get("keys", [])],
            )
        return self.get(client_id)

    def revoke(self, client_id: str, *, by: str, source: str = "") -> Client:
        """Revoke a client and everything it holds: refresh tokens, their access tokens,
        unused codes.  Revoking a revoked client is refused (nothing to do)."""
        client = self.get(client_id)
        now = self.clock.now()
        at = now_us(now)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(oauth_clients)
                .where(
                    oauth_clients.c.client_id == client.client_id,
                    oauth_clients.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
            if changed.rowcount != 1:
                raise ClientError(f"client {client.client_id} is already revoked")
            families = conn.execute(
                update(oauth_refresh_tokens)
                .where(
                    oauth_refresh_tokens.c.client_id == client.client_id,
                    oauth_refresh_tokens.c.revoked.is_(False),
                )
                .values(revoked=True)
            ).rowcount
            revoke_access_tokens(
                conn,
                select(
                    oauth_refresh_tokens.c.access_jti, oauth_refresh_tokens.c.access_expires_at
                ).where(
                    oauth_refresh_tokens.c.client_id == client.client_id,
                    oauth_refresh_tokens.c.access_expires_at > at,
                ),
            )
            conn.execute(
                update(oauth_codes)
                .where(oauth_codes.c.client_id == client.client_id, oauth_codes.c.used.is_(False))
                .values(used=True)
            )
            self._record(
                conn,
                "oauth-client-revoke",
                by,
                now,
                source,
                client_id=client.client_id,
                refresh_tokens_revoked=int(families or 0),
            )
        return self.get(client.client_id)

    def _record(
        self,
        conn: Connection,
        action: str,
        principal: str,
        now: dt.datetime,
        source: str,
        **detail: object,
    ) -> None:
        if not principal.strip():
            raise ClientError("the acting principal (by) must be named")
        self.audit.record(
            AuditEvent(
                action=action,
                outcome="success",
                principal=principal,
                purpose=PURPOSE,
                request_id=secrets.token_hex(16),
                recorded=now,
                source=source,
                detail=dict(detail),
            ),
            conn,
        )


def revoke_access_tokens(conn: Connection, rows: Any) -> int:
    """Add the (jti, expires_at) pairs selected by ``rows`` to the revoked-token list.

    Concurrent revocations of the same token (reuse detected by two requests at once)
    must not fail each other, so an id already listed is skipped by the database
    (``ON CONFLICT DO NOTHING``), not by a read first.
    """
    values = [
        {"jti": jti, "expires_at": expires_at}
        for jti, expires_at in conn.execute(rows).all()
        if jti is not None
    ]
    if not values:
        return 0
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = conn.execute(
        insert_(oauth_revoked_tokens).values(values).on_conflict_do_nothing(index_elements=["jti"])
    )
    return int(result.rowcount or 0)


# -- validation --------------------------------------------------------------------------


def _name(value: str) -> str:
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise ClientError("the client name must not be empty")
    if len(text) > MAX_NAME:
        raise ClientError(f"the client name is longer than {MAX_NAME} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise ClientError("the client name contains control characters")
    return text


def check_redirect_uri(uri: str) -> str:
    """A redirect URI that may be registered, or ``ClientError`` saying why not."""
    if len(uri) > MAX_REDIRECT_URI:
        raise ClientError(f"a redirect URI is longer than {MAX_REDIRECT_URI} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        raise ClientError("a redirect URI contains spaces or control characters")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ClientError("a redirect URI is not a valid URI") from None
    if parts.fragment or "#" in uri:
        raise ClientError("a redirect URI must not contain a fragment")
    scheme = parts.scheme.lower()
    if scheme == "https":
        if not parts.hostname:
            raise ClientError("an https redirect URI needs a host")
        return uri
    if scheme == "http":
        if parts.hostname and _loopback(parts.hostname):
            return uri
        raise ClientError("plain http redirect URIs are allowed for loopback addresses only")
    if "." in scheme and re.fullmatch(r"[a-z][a-z0-9.+-]*", scheme) and not parts.netloc:
        return uri  # private-use scheme of a native app (RFC 8252 section 7.1)
    raise ClientError(
        "a redirect URI must be https, http on a loopback address, "
        "or a reverse-domain private-use scheme"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redirect_uris(values: Iterable[str]) -> list[str]:
    uris: list[str] = []
    for value in values:
        uri = check_redirect_uri(value.strip())
        if uri not in uris:
            uris.append(uri)
    if len(uris) > MAX_REDIRECT_URIS:
        raise ClientError(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    return uris


def _scopes(kind: str, values: Iterable[str]) -> list[str]:
    given = [s for v in values for s in v.split()]
    if not given:
        return list(DEFAULT_PUBLIC_SCOPES if kind == "public" else DEFAULT_BACKEND_SCOPES)
    try:
        scopes = sc.split(" ".join(given))
    except sc.ScopeError as exc:
        raise ClientError(f"scope refused: {exc}") from None
    for scope in scopes:
        resource = sc.parse_resource(scope)
        if kind == "backend" and (resource is None or resource.context != "system"):
            raise ClientError(f"a backend client takes system/ scopes only, not {scope}")
        if kind == "public" and resource is not None and resource.context == "system":
            raise ClientError(f"a public client acts for a user: {scope} is not allowed")
    return scopes


def _jwks(value: str | dict[str, Any]) -> dict[str, Any]:
    """Public RS384/ES384-capable keys only: RSA of at least 2048 bits, or EC P-384."""
    if isinstance(value, str):
        if len(value.encode()) > MAX_JWKS_BYTES:
            raise ClientError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        try:
            doc = json.loads(value)
        except ValueError:
            raise ClientError("the JWKS is not valid JSON") from None
    else:
        doc = value
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ClientError('the JWKS must be a JSON object with a non-empty "keys" list')
    if len(doc["keys"]) > MAX_KEYS:
        raise ClientError(f"the JWKS may hold at most {MAX_KEYS} keys")
    kept: builtins.list[dict[str, Any]] = []
    kids: set[str] = set()
    for raw in doc["keys"]:
        if not isinstance(raw, dict):
            raise ClientError("every JWKS entry must be a JSON object")
        if any(p in raw for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ClientError("the JWKS holds private key material: register public keys only")
        if raw.get("kty") == "RSA" and len(_b64decode(str(raw.get("n", "")))) * 8 < MIN_RSA_BITS:
            raise ClientError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        try:
            key = KeySet.import_key_set({"keys": [raw]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError):
            raise ClientError("a JWKS entry is not a valid public key") from None
        alg = raw.get("alg")
        if isinstance(key, RSAKey):
            if alg not in (None, "RS384"):
                raise ClientError("RSA keys are accepted for RS384 only")
        elif isinstance(key, ECKey):
            if raw.get("crv") != "P-384":
                raise ClientError("EC keys must be on curve P-384 (ES384)")
            if alg not in (None, "ES384"):
                raise ClientError("EC keys are accepted for ES384 only")
        else:
            raise ClientError("only RSA (RS384) and EC P-384 (ES384) keys are accepted")
        if raw.get("use") not in (None, "sig"):
            raise ClientError('a client key must be for signatures ("use": "sig")')
        kid = raw.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or not 0 < len(kid) <= 128:
                raise ClientError("a key id (kid) must be a string of 1 to 128 characters")
            if kid in kids:
                raise ClientError(f"the key id {kid} appears twice")
            kids.add(kid)
        public = key.as_dict(private=False)
        for field in ("kid", "alg", "use"):
            if field in raw:
                public[field] = raw[field]
        kept.append(public)
    if len(kept) > 1 and len(kids) != len(kept):
        raise ClientError("with several keys, each needs its own key id (kid)")
    return {"keys": kept}


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return b""


def _purposes(kind: str, values: Iterable[str]) -> list[str]:
    """The registered purposes in the order given (the first is the default)."""
    out: list[str] = []
    for value in values:
        code = value.strip().upper()
        if code in EMERGENCY_PURPOSES:
            raise ClientError(
                "an application is never registered for an emergency purpose (BTG, ETREAT): "
                "break-the-glass is declared by a person"
            )
        if code not in APP_PURPOSES:
            raise ClientError(
                f"unknown purpose of use {value!r}; allowed: {', '.join(APP_PURPOSES)}"
            )
        if code not in out:
            out.append(code)
    return out or list(DEFAULT_PURPOSES[kind])


def registered_purposes(kind: str, stored: str | None) -> tuple[str, ...]:
    """A client's purposes from its row (NULL: the default of its kind)."""
    found = tuple(str(stored or "").split())
    return found or DEFAULT_PURPOSES.get(kind, DEFAULT_PURPOSES["backend"])


def _client(row: Any) -> Client:
    kind: Kind = "public" if row.kind == "public" else "backend"
    return Client(
        client_id=str(row.client_id),
        tenant=str(row.tenant),
        name=str(row.name),
        kind=kind,
        redirect_uris=tuple(json.loads(row.redirect_uris or "[]")),
        scopes=tuple(str(row.scopes).split()),
        jwks=None if row.jwks is None else json.loads(row.jwks),
        roles=tuple(str(row.roles or "").split()),
        created_at=from_us(int(row.created_at)),
        created_by=str(row.created_by),
        revoked_at=None if row.revoked_at is None else from_us(int(row.revoked_at)),
        purposes=registered_purposes(kind, row.purposes),
    )
