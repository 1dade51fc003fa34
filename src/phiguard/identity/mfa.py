"""The second factor of a log-in, as one service: enrol, verify, recover, audited.

``TotpStore`` and ``RecoveryCodes`` know how to keep a secret; this module decides
what a log-in does with them.  A second-factor attempt goes through the same
throttle as a password (a stolen password must not buy unlimited guesses at six
digits: 100 wrong codes lock the account just as 100 wrong passwords do), every
attempt is a security event with its real outcome for the investigator, and the
caller gets only "accepted" or "refused".

A code of six digits is tried as TOTP; anything else as a recovery code, which is
consumed when it matches.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from phiguard.audit.events import AuditEvent
from phiguard.errors import EnrolmentError

from .accounts import PURPOSE, Accounts
from .recovery import GeneratedCodes
from .totp import TotpEnrolment


@dataclass(frozen=True)
class MfaOutcome:
    accepted: bool
    method: str  # totp | recovery-code | none
    recovery_codes_left: int | None = None


class SecondFactor:
    """Second-factor operations for the console and the API (one per process)."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def _event(
        self,
        action: str,
        outcome: str,
        user_id: str,
        address: str,
        request_id: str,
        **detail: object,
    ) -> None:
        self.accounts.audit.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                principal=f"user/{user_id}",
                purpose=PURPOSE,
                request_id=request_id or secrets.token_hex(16),
                recorded=self.accounts.clock.now(),
                source=address,
                detail=dict(detail),
            )
        )

    def verify(self, user_id: str, code: str, address: str, *, request_id: str = "") -> MfaOutcome:
        """Check a second-factor code for a user whose password was just accepted."""
        code = code.strip().replace(" ", "")
        throttle = self.accounts.throttle
        decision = throttle.check(user_id, address)
        if not decision.allowed:
            self._event(
                "mfa-failure", "denied", user_id, address, request_id, reason=decision.reason
            )
            return MfaOutcome(False, "none")
        if len(code) > 64:
            code = ""
        if len(code) == 6 and code.isdigit():
            result = self.accounts.totp.verify(user_id, code)
            if result.accepted:
                throttle.record_success(user_id, address)
                self._event("mfa-success", "success", user_id, address, request_id, method="totp")
                return MfaOutcome(True, "totp")
            reason: str = result.outcome
            method = "totp"
        else:
            used = self.accounts.recovery.use(user_id, code) if code else None
            if used is not None and used.accepted:
                throttle.record_success(user_id, address)
                self._event(
                    "mfa-success",
                    "success",
                    user_id,
                    address,
                    request_id,
                    method="recovery-code",
                    remaining=used.remaining,
                )
                return MfaOutcome(True, "recovery-code", used.remaining)
            reason = "wrong-recovery-code"
            method = "recovery-code"
        throttle.record_failure(user_id, address, request_id=request_id)
        self._event(
            "mfa-failure", "denied", user_id, address, request_id, method=method, reason=reason
        )
        return MfaOutcome(False, method)

    # -- enrolment ---------------------------------------------------------------------
    def begin_totp(self, user_id: str, *, replace: bool = False) -> TotpEnrolment:
        """A new, unconfirmed TOTP secret (``replace`` only after re-authentication)."""
        return self.accounts.totp.enrol(user_id, replace=replace)

    def confirm_totp(
        self, user_id: str, code: str, address: str, *, request_id: str = ""
    ) -> GeneratedCodes | None:
        """Confirm an enrolment with the app's first code; returns fresh recovery codes.

        None when the code is wrong (counted by the throttle like any failed factor).
        """
        result = self.accounts.totp.confirm(user_id, code.strip().replace(" ", "")[:16])
        if not result.accepted:
            self.accounts.throttle.record_failure(user_id, address, request_id=request_id)
            self._event(
                "mfa-enrol-failure", "denied", user_id, address, request_id, reason=result.outcome
            )
            return None
        self.accounts.throttle.record_success(user_id, address)  # the sign-in is complete
        codes = self.accounts.recovery.generate(user_id)
        self._event(
            "mfa-enrolled",
            "success",
            user_id,
            address,
            request_id,
            method="totp",
            recovery_codes=len(codes.codes),
        )
        return codes

    def new_recovery_codes(
        self, user_id: str, address: str, *, request_id: str = ""
    ) -> GeneratedCodes:
        """Replace the user's recovery codes (the caller has re-authenticated them)."""
        if not self.accounts.totp.is_enrolled(user_id):
            raise EnrolmentError("enrol an authenticator app before creating recovery codes")
        codes = self.accounts.recovery.generate(user_id)
        self._event(
            "mfa-recovery-codes-replaced",
            "success",
            user_id,
            address,
            request_id,
            count=len(codes.codes),
        )
        return codes
