"""Short-lived OAuth2 access tokens for the FHIR API: issued, verified, revoked.

An access token is a JWT (RFC 9068 profile) signed with HMAC-SHA256 under a key
derived from the ``__identity__`` data key.  A symmetric key suits us: phiguard is
the only party that verifies its own tokens (other parties use introspection), and
an HMAC check costs a fraction of a public-key verification on every request.  The
header names the data-key version (``kid``), so a rotated identity key keeps
verifying tokens issued under the previous one until they expire.

Verification accepts exactly one algorithm, so ``alg=none`` and algorithm-confusion
tokens fail like any forgery; it checks issuer, audience, expiry and not-before with
no leeway beyond a few seconds of clock skew.  Every refusal is the same
``AuthenticationError``.  Whether the token has been revoked (by id, or because its
user was suspended or terminated after it was issued) is a separate, per-request
look-up (``live_principal``): a signature alone never outlives a termination.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from phiguard.clock import Clock
from phiguard.crypto.keyring import IDENTITY_COMPARTMENT, Keyring
from phiguard.errors import AuthenticationError
from phiguard.records.context import Principal
from phiguard.store.engine import now_us
from phiguard.store.tables import oauth_clients, oauth_revoked_tokens, revocations, users

from .clients import EMERGENCY_PURPOSES, registered_purposes

if TYPE_CHECKING:
    from phiguard.system import System

MAX_LIFETIME = dt.timedelta(minutes=15)
DEFAULT_LIFETIME = MAX_LIFETIME
CLOCK_SKEW_S = 5
MAX_TOKEN_CHARS = 4096
ALGORITHM = "HS256"
_KEY_PURPOSE = b"phiguard/oauth-access-token"


@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says.  ``kind`` is ``user`` or ``client``."""

    jti: str
    kind: str
    subject: str  # user id, or client id for a backend service
    client_id: str
    scopes: frozenset[str]
    issued_at: dt.datetime
    expires_at: dt.datetime
    patient: str | None = None  # SMART launch context
    fhir_user: str | None = None  # e.g. Practitioner/abc


@dataclass(frozen=True)
class IssuedToken:
    """A freshly minted token; the string is left out of ``repr``."""

    token: str
    claims: TokenClaims

    def __repr__(self) -> str:
        return f"IssuedToken(jti={self.claims.jti!r}, subject={self.claims.subject!r})"

    @property
    def expires_in(self) -> int:
        return int((self.claims.expires_at - self.claims.issued_at).total_seconds())


class TokenService:
    """Issues and verifies access tokens for one issuer and one FHIR audience."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        clock: Clock,
        *,
        issuer: str,
        audience: str,
        lifetime: dt.timedelta = DEFAULT_LIFETIME,
    ) -> None:
        if not dt.timedelta(0) < lifetime <= MAX_LIFETIME:
            raise ValueError("access tokens live at most 15 minutes")
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self._keys: dict[int, OctKey] = {}

    @classmethod
    def from_system(cls, system: System) -> TokenService:
        """The service for this home: issuer is the public base URL, audience its FHIR base."""
        base = system.settings.public_base
        return cls(
            system.engine, system.keyring, system.clock, issuer=base, audience=f"{base}/fhir"
        )

    # -- keys --------------------------------------------------------------------------
    def _current_key(self) -> tuple[int, OctKey]:
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(IDENTITY_COMPARTMENT, conn)
        version = sealer.key_version
        if version not in self._keys:
            self._keys[version] = OctKey.import_key(sealer.derive(_KEY_PURPOSE))
        return version, self._keys[version]

    def _key(self, version: int) -> OctKey:
        key = self._keys.get(version)
        if key is None:
            try:
                sealer = self.keyring.sealer(IDENTITY_COMPARTMENT, version)
            except Exception:  # unknown or destroyed version: the token is void
                raise AuthenticationError() from None
            key = self._keys[version] = OctKey.import_key(sealer.derive(_KEY_PURPOSE))
        return key

    # -- issuing -----------------------------------------------------------------------
    def issue(
        self,
        *,
        kind: str,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        patient: str | None = None,
        fhir_user: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> IssuedToken:
        """Mint a token; the lifetime is capped at the service's (at most 15 minutes)."""
        if kind not in ("user", "client"):
            raise ValueError("token kind must be user or client")
        life = min(lifetime or self.lifetime, self.lifetime)
        now = self.clock.now().replace(microsecond=0)
        jti = secrets.token_hex(16)
        scope_set = frozenset(s for s in scopes if s)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "client_id": client_id,
            "kind": kind,
            "scope": " ".join(sorted(scope_set)),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + life).timestamp()),
            "jti": jti,
        }
        if patient:
            payload["patient"] = patient
        if fhir_user:
            payload["fhirUser"] = fhir_user
        version, key = self._current_key()
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": str(version)}
        token = jwt.encode(header, payload, key, algorithms=[ALGORITHM])
        claims = TokenClaims(
            jti=jti,
            kind=kind,
            subject=subject,
            client_id=client_id,
            scopes=scope_set,
            issued_at=now,
            expires_at=now + life,
            patient=patient,
            fhir_user=fhir_user,
        )
        return IssuedToken(token, claims)

    # -- verifying ---------------------------------------------------------------------
    def verify(self, token: str) -> TokenClaims:
        """The claims of a genuine, current token for this audience; else one error."""
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AuthenticationError()
        try:
            header = _header(token)
            kid = header.get("kid")
            if header.get("alg") != ALGORITHM or not isinstance(kid, str) or not kid.isdigit():
                raise AuthenticationError()
            decoded = jwt.decode(token, self._key(int(kid)), algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError, KeyError):
            raise AuthenticationError() from None
        c = decoded.claims
        now = self.clock.now().timestamp()
        try:
            exp, iat, nbf = int(c["exp"]), int(c["iat"]), int(c["nbf"] if "nbf" in c else c["iat"])
            ok = (
                c.get("iss") == self.issuer
                and c.get("aud") == self.audience
                and c.get("kind") in ("user", "client")
                and isinstance(c.get("sub"), str)
                and isinstance(c.get("jti"), str)
                and isinstance(c.get("scope", ""), str)
                and now < exp
                and nbf <= now + CLOCK_SKEW_S
                and exp - iat <= MAX_LIFETIME.total_seconds()
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise AuthenticationError()
        patient = c.get("patient")
        fhir_user = c.get("fhirUser")
        return TokenClaims(
            jti=str(c["jti"]),
            kind=str(c["kind"]),
            subject=str(c["sub"]),
            client_id=str(c.get("client_id", "")),
            scopes=frozenset(str(c.get("scope", "")).split()),
            issued_at=dt.datetime.fromtimestamp(iat, dt.UTC),
            expires_at=dt.datetime.fromtimestamp(exp, dt.UTC),
            patient=patient if isinstance(patient, str) else None,
            fhir_user=fhir_user if isinstance(fhir_user, str) else None,
        )

    # -- revocation --------------------------------------------------------------------
    def revoke(self, claims: TokenClaims) -> None:
        """Void one access token before it expires (RFC 7009)."""
        # Insert-or-nothing in one statement: two requests revoking the same token at
        # once (a retried revocation) must both succeed, on SQLite and PostgreSQL.
        row = {"jti": claims.jti, "expires_at": now_us(claims.expires_at)}
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                stmt: Any = pg_insert(oauth_revoked_tokens).values(**row).on_conflict_do_nothing()
            else:
                stmt = sqlite_insert(oauth_revoked_tokens).values(**row).on_conflict_do_nothing()
            conn.execute(stmt)

    def purge(self) -> int:
        """Forget revocations of tokens that have expired anyway."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(oauth_revoked_tokens).where(
                    oauth_revoked_tokens.c.expires_at < now_us(self.clock.now())
                )
            )
        return int(result.rowcount)

    def live_principal(self, claims: TokenClaims) -> Principal:
        """The caller behind verified ``claims``, if nothing has voided the token since.

        One round trip answers: is the token revoked by id; for a user, is the account
        active and was it not revoked (suspension, termination, password change, MFA
        reset) after the token was issued, and is the app it was issued to not
        revoked; for a backend client, is the client still registered.
        ``AuthenticationError`` otherwise.
        """
        issued_us = now_us(claims.issued_at)
        revoked_jti = (
            select(oauth_revoked_tokens.c.jti)
            .where(oauth_revoked_tokens.c.jti == claims.jti)
            .scalar_subquery()
        )
        with self.engine.connect() as conn:
            if claims.kind == "user":
                cutoff = (
                    select(revocations.c.revoked_before)
                    .where(revocations.c.user_id == claims.subject)
                    .scalar_subquery()
                )
                # The app the user let act for them: once revoked, none of its tokens
                # works, not only those issued with a refresh token (which the
                # revocation lists by id).  Operator tokens name no registered client.
                app = oauth_clients.c

                def of_app(column: Any) -> Any:
                    return select(column).where(app.client_id == claims.client_id).scalar_subquery()

                row = conn.execute(
                    select(
                        users.c.status,
                        users.c.roles,
                        users.c.display_name,
                        cutoff.label("cutoff"),
                        revoked_jti.label("revoked"),
                        of_app(app.revoked_at).label("client_revoked"),
                        of_app(app.kind).label("client_kind"),
                        of_app(app.purposes).label("client_purposes"),
                    ).where(users.c.user_id == claims.subject)
                ).first()
                if (
                    row is None
                    or row.status != "active"
                    or row.revoked is not None
                    or row.client_revoked is not None
                    or (row.cutoff is not None and issued_us < int(row.cutoff))
                ):
                    raise AuthenticationError()
                roles = frozenset(json.loads(row.roles)) if row.roles else frozenset()
                return Principal(
                    id=claims.subject,
                    kind="user",
                    display=str(row.display_name),
                    roles=roles,
                    scopes=claims.scopes,
                    # A token an operator issued names no registered app: no limit.
                    # An app acting for a person also carries that person's emergency
                    # purposes; only the person's own running grant makes them count.
                    purposes=None
                    if row.client_kind is None
                    else registered_purposes(str(row.client_kind), row.client_purposes)
                    + EMERGENCY_PURPOSES,
                )
            client = conn.execute(
                select(
                    oauth_clients.c.revoked_at,
                    oauth_clients.c.roles,
                    oauth_clients.c.name,
                    oauth_clients.c.kind,
                    oauth_clients.c.purposes,
                    revoked_jti.label("revoked"),
                ).where(oauth_clients.c.client_id == claims.subject)
            ).first()
        if client is None or client.revoked_at is not None or client.revoked is not None:
            raise AuthenticationError()
        return Principal(
            id=claims.subject,
            kind="client",
            display=str(client.name),
            roles=frozenset(str(client.roles).split()),
            scopes=claims.scopes,
            purposes=registered_purposes(str(client.kind), client.purposes),
        )


def _header(token: str) -> dict[str, Any]:
    part = token.split(".", 1)[0]
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("header")
    return header
