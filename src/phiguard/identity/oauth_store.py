"""What the authorization server remembers: codes, refresh-token families, used assertions.

Only SHA-256 digests of codes and refresh tokens are stored (each has 256 bits of
entropy, so a plain hash is enough and a dump of the table opens nothing).  Every
"use once" rule is one conditional UPDATE or one primary-key INSERT, so two
requests racing with the same code, refresh token or assertion cannot both win.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import oauth_assertions, oauth_codes, oauth_refresh_tokens

from .clients import revoke_access_tokens

CODE_LIFETIME = dt.timedelta(seconds=60)
MAX_SECRET_CHARS = 128  # a presented code or refresh token longer than this is refused


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AuthorizationCode:
    """A stored code, as the Authlib grant and the PKCE extension read it."""

    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str
    nonce: str | None
    patient: str | None
    auth_time: dt.datetime
    expires_at: dt.datetime
    used: bool
    session_handle: str | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())


@dataclass(frozen=True)
class RefreshToken:
    """A stored refresh token (never the token itself)."""

    token_hash: str
    family_id: str
    client_id: str
    user_id: str
    scope: str
    patient: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime
    rotated_at: dt.datetime | None
    revoked: bool
    session_handle: str | None = None

    def get_scope(self) -> str:
        return self.scope

    def check_client(self, client: Any) -> bool:
        return bool(client.client_id == self.client_id)


class OAuthStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- codes -------------------------------------------------------------------------
    def save_code(
        self,
        code: str,
        *,
        client_id: str,
        user_id: str,
        redirect_uri: str,
        scope: str,
        code_challenge: str,
        code_challenge_method: str,
        nonce: str | None,
        patient: str | None,
        now: dt.datetime,
        session_handle: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(oauth_codes).values(
                    session_handle=session_handle,
                    code_hash=digest(code),
                    client_id=client_id,
                    user_id=user_id,
                    redirect_uri=redirect_uri,
                    scope=scope,
                    code_challenge=code_challenge,
                    code_challenge_method=code_challenge_method,
                    nonce=nonce,
                    patient=patient,
                    auth_time=now_us(now),
                    expires_at=now_us(now + CODE_LIFETIME),
                    used=False,
                )
            )
            # Codes live a minute: sweep the long dead ones while we are here.
            conn.execute(
                delete(oauth_codes).where(
                    oauth_codes.c.expires_at < now_us(now - dt.timedelta(hours=1))
                )
            )

    def find_code(self, code: str, client_id: str) -> AuthorizationCode | None:
        if not code or len(code) > MAX_SECRET_CHARS:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_codes).where(
                    oauth_codes.c.code_hash == digest(code),
                    oauth_codes.c.client_id == client_id,
                )
            ).first()
        if row is None:
            return None
        return AuthorizationCode(
            code_hash=str(row.code_hash),
            client_id=str(row.client_id),
            user_id=str(row.user_id),
            redirect_uri=str(row.redirect_uri),
            scope=str(row.scope),
            code_challenge=str(row.code_challenge),
            code_challenge_method=str(row.code_challenge_method),
            nonce=row.nonce,
            patient=row.patient,
            session_handle=row.session_handle,
            auth_time=from_us(int(row.auth_time)),
            expires_at=from_us(int(row.expires_at)),
            used=bool(row.used),
        )

    def consume_code(self, code_hash: str, now: dt.datetime) -> bool:
        """Mark a live, unused code used; False if another request got there first."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(oauth_codes)
                .where(
                    oauth_codes.c.code_hash == code_hash,
                    oauth_codes.c.used.is_(False),
                    oauth_codes.c.expires_at > now_us(now),
                )
                .values(used=True)
            )
        return changed.rowcount == 1

    def link_code(
        self, code_hash: str, family_id: str | None, access_jti: str, access_expires: dt.datetime
    ) -> None:
        """Remember what a code was exchanged for, for reuse detection."""
        with self.engine.begin() as conn:
            conn.execute(
                update(oauth_codes)
                .where(oauth_codes.c.code_hash == code_hash)
                .values(
                    family_id=family_id,
                    access_jti=access_jti,
                    access_expires_at=now_us(access_expires),
                )
            )

    def revoke_code_grant(self, code_hash: str, now: dt.datetime) -> None:
        """A used code came back: revoke the tokens it was exchanged for (RFC 6749 4.1.2)."""
        at = now_us(now)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(oauth_codes.c.family_id).where(oauth_codes.c.code_hash == code_hash)
            ).first()
            revoke_access_tokens(
                conn,
                select(oauth_codes.c.access_jti, oauth_codes.c.access_expires_at).where(
                    oauth_codes.c.code_hash == code_hash,
                    oauth_codes.c.access_expires_at > at,
                ),
            )
            if row is not None and row.family_id is not None:
                self._revoke_family(conn, str(row.family_id), at)

    # -- refresh tokens ----------------------------------------------------------------
    def new_refresh(
        self,
        *,
        family_id: str | None,
        client_id: str,
        user_id: str,
        scope: str,
        patient: str | None,
        now: dt.datetime,
        expires_at: dt.datetime,
        access_jti: str,
        access_expires: dt.datetime,
        session_handle: str | None = None,
    ) -> tuple[str, str]:
        """A new refresh token (returned once) in ``family_id`` (a new family if None)."""
        token = new_secret("pgr_")
        family = family_id or secrets.token_hex(16)
        with self.engine.begin() as conn:
            conn.execute(
                insert(oauth_refresh_tokens).values(
                    token_hash=digest(token),
                    family_id=family,
                    client_id=client_id,
                    user_id=user_id,
                    scope=scope,
                    patient=patient,
                    issued_at=now_us(now),
                    expires_at=now_us(expires_at),
                    rotated_at=None,
                    revoked=False,
                    access_jti=access_jti,
                    access_expires_at=now_us(access_expires),
                    session_handle=session_handle,
                )
            )
            # Families past their absolute lifetime can never be used again: sweep them
            # (a day late, so a reuse just after expiry still finds its family).
            conn.execute(
                delete(oauth_refresh_tokens).where(
                    oauth_refresh_tokens.c.expires_at < now_us(now - dt.timedelta(days=1))
                )
            )
        return token, family

    def find_refresh(self, token: str) -> RefreshToken | None:
        if not token or len(token) > MAX_SECRET_CHARS:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(oauth_refresh_tokens).where(
                    oauth_refresh_tokens.c.token_hash == digest(token)
                )
            ).first()
        if row is None:
            return None
        return RefreshToken(
            token_hash=str(row.token_hash),
            family_id=str(row.family_id),
            client_id=str(row.client_id),
            user_id=str(row.user_id),
            scope=str(row.scope),
            patient=row.patient,
            issued_at=from_us(int(row.issued_at)),
            expires_at=from_us(int(row.expires_at)),
            rotated_at=None if row.rotated_at is None else from_us(int(row.rotated_at)),
            revoked=bool(row.revoked),
            session_handle=row.session_handle,
        )

    def rotate(self, token_hash: str, now: dt.datetime) -> bool:
        """Retire a live refresh token; False if it was already rotated or revoked."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(oauth_refresh_tokens)
                .where(
                    oauth_refresh_tokens.c.token_hash == token_hash,
                    oauth_refresh_tokens.c.rotated_at.is_(None),
                    oauth_refresh_tokens.c.revoked.is_(False),
                )
                .values(rotated_at=now_us(now))
            )
        return changed.rowcount == 1

    def revoke_family(self, family_id: str, now: dt.datetime) -> int:
        """Revoke every refresh token of a family and the access tokens issued with them."""
        with self.engine.begin() as conn:
            return self._revoke_family(conn, family_id, now_us(now))

    def _revoke_family(self, conn: Connection, family_id: str, at: int) -> int:
        revoke_access_tokens(
            conn,
            select(
                oauth_refresh_tokens.c.access_jti, oauth_refresh_tokens.c.access_expires_at
            ).where(
                oauth_refresh_tokens.c.family_id == family_id,
                oauth_refresh_tokens.c.access_expires_at > at,
            ),
        )
        changed = conn.execute(
            update(oauth_refresh_tokens)
            .where(
                oauth_refresh_tokens.c.family_id == family_id,
                oauth_refresh_tokens.c.revoked.is_(False),
            )
            .values(revoked=True)
        )
        return int(changed.rowcount or 0)

    # -- client assertions -------------------------------------------------------------
    def use_assertion(self, client_id: str, jti: str, expires_at: int, now: dt.datetime) -> bool:
        """Record an assertion id; False if this client used it before (a replay)."""
        key = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(oauth_assertions).where(oauth_assertions.c.expires_at < now_us(now))
                )
                conn.execute(
                    insert(oauth_assertions).values(key=key, expires_at=expires_at * 1_000_000)
                )
        except IntegrityError:
            return False
        return True
