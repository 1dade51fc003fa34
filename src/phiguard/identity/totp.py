"""Time-based one-time passwords (RFC 6238) as the second factor of workforce log-ins.

The shared secret is 160 bits (the HMAC-SHA1 block RFC 4226 recommends) from the
injected random source, and is stored only sealed with the ``__identity__`` data key,
its associated data binding it to the tenant and user id: a copied row does not
open for another account, and a database dump or a stolen file shows no secret.

Codes are six digits over 30-second steps (what every authenticator app speaks).
Verification accepts the current step and one on either side, because phones and
servers drift; comparing all three candidates every time keeps the timing
independent of which one matched.  Each accepted code moves ``last_step`` forward
in a conditional UPDATE, so a code (or an older one) is accepted at most once even
when two log-ins race -- SP 800-63B's requirement that an OTP be used only once.
An enrolment counts only once the user has proven, with a first valid code, that
their app holds the secret.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pyotp
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from phiguard.clock import Clock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import IDENTITY_COMPARTMENT, Keyring
from phiguard.errors import EnrolmentError
from phiguard.store.engine import now_us
from phiguard.store.tables import totp_secrets

ISSUER = "phiguard"
SECRET_BYTES = 20  # 160 bits
DIGITS = 6
INTERVAL = 30
DRIFT_STEPS = 1

TotpOutcome = Literal[
    "accepted", "wrong", "replayed", "not-enrolled", "not-confirmed", "already-confirmed"
]


@dataclass(frozen=True)
class TotpEnrolment:
    """What the user's authenticator app needs, shown to the user once.

    ``repr`` leaves the secret out so that logging the object leaks nothing.
    """

    user_id: str
    secret: str = field(repr=False)  # base32, for typing in by hand
    provisioning_uri: str = field(repr=False)  # otpauth://, for the QR code


@dataclass(frozen=True)
class TotpResult:
    """Whether a code was accepted; ``outcome`` is for the audit trail, not the user.

    Callers show one message for every refusal so that an attacker cannot tell a
    wrong code from a replayed one or an account without TOTP.
    """

    accepted: bool
    outcome: TotpOutcome


class TotpStore:
    """Enrols, confirms, verifies and removes TOTP secrets in ``totp_secrets``."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        clock: Clock,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self._random_bytes = random_bytes

    def _aad(self, user_id: str) -> bytes:
        return aad("phiguard-totp", self.keyring.tenant, user_id)

    # -- enrolment ---------------------------------------------------------------------
    def enrol(self, user_id: str, *, replace: bool = False) -> TotpEnrolment:
        """Create a new secret for ``user_id``, pending confirmation.

        An unconfirmed enrolment is simply replaced (the user may have lost the QR
        code half-way).  A confirmed one is replaced only with ``replace=True``: the
        caller must have re-authenticated the user first, or a stolen session could
        move the second factor to the attacker's phone.
        """
        raw = self._random_bytes(SECRET_BYTES)
        if len(raw) != SECRET_BYTES:
            raise ValueError("the random source returned the wrong number of bytes")
        secret = base64.b32encode(raw).decode("ascii")
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(totp_secrets.c.confirmed).where(totp_secrets.c.user_id == user_id)
            ).first()
            if existing is not None and existing.confirmed and not replace:
                raise EnrolmentError("TOTP is already enrolled for this account")
            sealer = self.keyring.current_sealer(IDENTITY_COMPARTMENT, conn)
            row = {
                "sealed": sealer.seal(raw, self._aad(user_id)),
                "dek_version": sealer.key_version,
                "confirmed": False,
                "last_step": None,
                "created_at": now_us(self.clock.now()),
            }
            if existing is None:
                conn.execute(insert(totp_secrets).values(user_id=user_id, **row))
            else:
                conn.execute(
                    update(totp_secrets).where(totp_secrets.c.user_id == user_id).values(**row)
                )
        uri = _totp(secret).provisioning_uri(name=user_id, issuer_name=ISSUER)
        return TotpEnrolment(user_id=user_id, secret=secret, provisioning_uri=uri)

    def confirm(self, user_id: str, code: str) -> TotpResult:
        """Complete an enrolment with the first code the user's app shows."""
        return self._check(user_id, code, confirming=True)

    def verify(self, user_id: str, code: str) -> TotpResult:
        """Check a log-in code of a confirmed enrolment; each code works once."""
        return self._check(user_id, code, confirming=False)

    def is_enrolled(self, user_id: str) -> bool:
        """Whether ``user_id`` has a confirmed TOTP second factor."""
        with self.engine.connect() as conn:
            confirmed = conn.execute(
                select(totp_secrets.c.confirmed).where(totp_secrets.c.user_id == user_id)
            ).scalar()
        return bool(confirmed)

    def pending_secret(self, user_id: str) -> str | None:
        """The secret of an enrolment not yet confirmed (to show its QR code again).

        None once confirmed: a confirmed secret never leaves the store, so a hijacked
        session cannot copy the factor to another phone.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(totp_secrets).where(totp_secrets.c.user_id == user_id)
            ).first()
            if row is None or row.confirmed:
                return None
            return self._open(conn, user_id, bytes(row.sealed), int(row.dek_version))

    def pending_uri(self, user_id: str) -> str | None:
        """The ``otpauth://`` URI of a pending enrolment (for its QR code), or None."""
        secret = self.pending_secret(user_id)
        if secret is None:
            return None
        return _totp(secret).provisioning_uri(name=user_id, issuer_name=ISSUER)

    def remove(self, user_id: str) -> bool:
        """Delete the secret (reset by an administrator, or account deletion)."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(totp_secrets).where(totp_secrets.c.user_id == user_id))
        return bool(result.rowcount)

    # -- verification ------------------------------------------------------------------
    def _check(self, user_id: str, code: str, *, confirming: bool) -> TotpResult:
        candidate = "".join(code.split())
        with self.engine.begin() as conn:
            row = conn.execute(
                select(totp_secrets).where(totp_secrets.c.user_id == user_id)
            ).first()
            if row is None:
                return TotpResult(False, "not-enrolled")
            if bool(row.confirmed) == confirming:
                # Confirming twice, or logging in before confirming, is refused.
                return TotpResult(False, "already-confirmed" if confirming else "not-confirmed")
            secret = self._open(conn, user_id, bytes(row.sealed), int(row.dek_version))
            step = self._matching_step(secret, candidate)
            if step is None:
                return TotpResult(False, "wrong")
            last = row.last_step
            if last is not None and step <= int(last):
                return TotpResult(False, "replayed")
            values: dict[str, object] = {"last_step": step}
            if confirming:
                values["confirmed"] = True
            # Conditional on last_step so that a concurrent log-in with the same code
            # cannot also succeed: exactly one UPDATE moves the step forward.
            moved = conn.execute(
                update(totp_secrets)
                .where(
                    totp_secrets.c.user_id == user_id,
                    totp_secrets.c.confirmed == (not confirming),
                    or_(totp_secrets.c.last_step.is_(None), totp_secrets.c.last_step < step),
                )
                .values(**values)
            )
            if moved.rowcount != 1:
                return TotpResult(False, "replayed")
        return TotpResult(True, "accepted")

    def _open(self, conn: Connection, user_id: str, sealed: bytes, dek_version: int) -> str:
        sealer = self.keyring.sealer(IDENTITY_COMPARTMENT, dek_version, conn)
        raw = sealer.open(sealed, self._aad(user_id), where="totp secret")
        return base64.b32encode(raw).decode("ascii")

    def _matching_step(self, secret: str, candidate: str) -> int | None:
        """The newest step within the drift window whose code equals ``candidate``."""
        if len(candidate) != DIGITS or not candidate.isascii() or not candidate.isdigit():
            return None
        totp = _totp(secret)
        now = totp.timecode(self.clock.now())
        found: int | None = None
        for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
            # No early exit: every candidate is computed and compared.
            if hmac.compare_digest(totp.generate_otp(step), candidate):
                found = step
        return found


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL, issuer=ISSUER)
