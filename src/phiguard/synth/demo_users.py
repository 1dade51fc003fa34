"""Sign-in accounts for the demo: an administrator and staff of the synthetic hospital.

Every run of ``phiguard demo`` gives each demo account a fresh random password and a
fresh TOTP secret (printed once), so nothing guessable is ever baked in.  The staff
accounts carry the user id, role, department and Practitioner link of a synthetic
staff member, so the access policy treats them exactly like that person.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field

import pyotp

from phiguard.identity.accounts import Accounts, UnknownAccount
from phiguard.system import System

from .model import Hospital

ADMIN_ID = "admin"


@dataclass(frozen=True)
class DemoLogin:
    user_id: str
    roles: tuple[str, ...]
    password: str = field(repr=False)
    totp_secret: str = field(repr=False)
    practitioner_id: str | None = None

    def code(self) -> str:
        """The current six-digit code (what the authenticator app would show)."""
        return pyotp.TOTP(self.totp_secret).now()


def _passphrase() -> str:
    return secrets.token_urlsafe(15)  # 120 bits, 20 characters


def provision(system: System, hospital: Hospital, *, by: str = "system/demo") -> list[DemoLogin]:
    """Create (or refresh) the demo accounts; returns their one-time credentials."""
    accounts = Accounts.from_system(system)
    dept = {d.id: d.name for d in hospital.departments}
    wanted: list[tuple[str, str, tuple[str, ...], str | None, str | None]] = [
        (ADMIN_ID, "Demo Administrator", ("security_admin", "privacy_officer"), None, None)
    ]
    for role in ("physician", "nurse", "registration", "billing"):
        member = next(
            (s for s in hospital.staff if s.role == role and s.termination_date is None), None
        )
        if member is not None:
            wanted.append(
                (
                    member.user_id,
                    f"{member.given_name} {member.family_name}",
                    (role,),
                    dept.get(member.department_id),
                    member.practitioner_id,
                )
            )
    logins: list[DemoLogin] = []
    for user_id, name, roles, department, practitioner in wanted:
        password = _passphrase()
        try:
            accounts.get(user_id)
        except UnknownAccount:
            accounts.add(
                user_id,
                name,
                f"{user_id}@demo.invalid",
                roles,
                password,
                by=by,
                department=department,
                practitioner_id=practitioner,
            )
        else:
            accounts.reset_password(user_id, password, by=by)
            accounts.reset_mfa(user_id, by=by)
        enrolment = accounts.totp.enrol(user_id, replace=True)
        # Confirmed with the previous step's code (inside the drift window), so the
        # code the user's app shows right now is still unused and signs them in.
        previous = system.clock.now() - dt.timedelta(seconds=30)
        if not accounts.totp.confirm(user_id, pyotp.TOTP(enrolment.secret).at(previous)).accepted:
            raise RuntimeError("the demo TOTP enrolment did not confirm")
        logins.append(DemoLogin(user_id, roles, password, enrolment.secret, practitioner))
    return logins
