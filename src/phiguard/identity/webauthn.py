"""WebAuthn (passkeys and security keys) as a phishing-resistant second factor.

The ceremonies are py_webauthn's; this module keeps the credentials in
``webauthn_credentials`` and turns every refusal into a phiguard error.  Each ceremony
is two calls: ``*_options`` returns the JSON for ``navigator.credentials.create()`` or
``.get()`` and the challenge the library drew (the caller keeps it in the session,
server side), and ``verify_*`` checks the browser's answer against that challenge,
this relying party's id and origin.  User verification (PIN or biometric on the
authenticator) is required in both ceremonies, so the key alone is not enough.

A user may hold several credentials (a laptop passkey and a spare key).  Registration
excludes the ones already held; authentication allows only the user's own, and an
assertion by another user's credential is refused even if its signature is good.

Authenticators that keep a signature counter increase it on every use.  A counter
that did not increase (new <= stored, unless both are zero, which is what
counter-less passkeys send) means two authenticators share one private key -- a
cloned key.  The credential is then flagged, the log-in refused, and ``CloneSuspected``
raised so the caller can raise an alert; a flagged credential stays refused until it
is removed and the user registers a new one.  The counter check is phiguard's own,
made only after the signature verified, so that no forged assertion can flag (and so
lock out) somebody's credential.

The WebAuthn user handle is the phiguard user id (UTF-8); authenticators may show it
and store it, so user ids must not carry more than the account name already shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Engine, delete, func, insert, select, update
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from phiguard.clock import Clock
from phiguard.errors import EnrolmentError, IdentityError
from phiguard.store.engine import now_us
from phiguard.store.tables import webauthn_credentials

TIMEOUT_MS = 120_000
NAME_MAX = 200

RefusalReason = Literal[
    "invalid-response",  # the library refused it: challenge, origin, rp id, signature...
    "unknown-credential",  # no such credential, or it belongs to another user
    "flagged",  # the credential was flagged as a possible clone earlier
    "clone-suspected",  # the signature counter went backwards just now
    "raced",  # a concurrent log-in with the same credential moved the counter first
]


class WebAuthnError(IdentityError):
    """Base of the WebAuthn errors."""


class WebAuthnVerificationError(WebAuthnError):
    """An authenticator's response was refused.

    ``reason`` is for the audit trail, not the user: show one message for every
    refusal.  The message names no key material and no user data.
    """

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"WebAuthn response refused: {reason}{': ' + detail if detail else ''}")
        self.reason: RefusalReason = reason
        self.detail = detail


class CloneSuspected(WebAuthnVerificationError):
    """The signature counter did not increase: two authenticators hold one key.

    The credential is now flagged and refused; raise a security alert.  ``result``
    carries the credential id and the counter received, ``stored_sign_count`` the
    counter the database held.
    """

    def __init__(self, result: AuthenticationResult, stored_sign_count: int) -> None:
        super().__init__(
            "clone-suspected",
            f"sign count {result.sign_count} not above stored {stored_sign_count}",
        )
        self.result = result
        self.stored_sign_count = stored_sign_count


@dataclass(frozen=True)
class Credential:
    """A registered credential (the public key is public; ``repr`` leaves it out)."""

    credential_id: str  # base64url
    user_id: str
    name: str
    public_key: bytes = field(repr=False)
    sign_count: int
    transports: tuple[str, ...]
    created_at: int  # microseconds since the epoch, like every phiguard timestamp
    last_used_at: int | None
    flagged_clone: bool


@dataclass(frozen=True)
class AuthenticationResult:
    """A verified assertion; ``clone_suspected`` is only ever true inside ``CloneSuspected``."""

    credential_id: str
    sign_count: int
    clone_suspected: bool = False


class WebAuthnService:
    """Registers and verifies WebAuthn credentials for one relying party."""

    def __init__(
        self, engine: Engine, clock: Clock, *, rp_id: str, rp_name: str, origin: str
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rp_id = rp_id
        self.rp_name = rp_name
        self.origin = origin

    # -- registration ------------------------------------------------------------------
    def registration_options(self, user_id: str, display_name: str) -> tuple[str, bytes]:
        """Options JSON for ``navigator.credentials.create()`` and its challenge."""
        existing = self.credentials(user_id)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_name=user_id,
            user_id=_user_handle(user_id),
            user_display_name=display_name,
            timeout=TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[_descriptor(c) for c in existing],
        )
        return options_to_json(options), options.challenge

    def verify_registration(
        self, user_id: str, response_json: str, *, expected_challenge: bytes, name: str
    ) -> Credential:
        """Check the answer to ``registration_options`` and store the new credential."""
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise EnrolmentError(f"a credential name needs 1 to {NAME_MAX} characters")
        try:
            verified = verify_registration_response(
                credential=response_json,
                expected_challenge=expected_challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
            transports = _registration_transports(response_json)
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise WebAuthnVerificationError("invalid-response", str(exc)) from exc
        credential = Credential(
            credential_id=bytes_to_base64url(verified.credential_id),
            user_id=user_id,
            name=name,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            created_at=now_us(self.clock.now()),
            last_used_at=None,
            flagged_clone=False,
        )
        with self.engine.begin() as conn:
            taken = conn.execute(
                select(webauthn_credentials.c.user_id).where(
                    webauthn_credentials.c.credential_id == credential.credential_id
                )
            ).first()
            if taken is not None:
                raise EnrolmentError("this credential is already registered")
            conn.execute(
                insert(webauthn_credentials).values(
                    credential_id=credential.credential_id,
                    user_id=user_id,
                    public_key=credential.public_key,
                    sign_count=credential.sign_count,
                    transports=json.dumps(list(transports)),
                    name=name,
                    created_at=credential.created_at,
                    last_used_at=None,
                    flagged_clone=False,
                )
            )
        return credential

    # -- authentication ----------------------------------------------------------------
    def authentication_options(self, user_id: str) -> tuple[str, bytes]:
        """Options JSON for ``navigator.credentials.get()`` and its challenge.

        ``allowCredentials`` lists the user's usable (unflagged) credentials; a user
        with none gets ``EnrolmentError``.
        """
        usable = [c for c in self.credentials(user_id) if not c.flagged_clone]
        if not usable:
            raise EnrolmentError("no usable WebAuthn credential is registered for this account")
        options = generate_authentication_options(
            rp_id=self.rp_id,
            timeout=TIMEOUT_MS,
            allow_credentials=[_descriptor(c) for c in usable],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return options_to_json(options), options.challenge

    def verify_authentication(
        self, user_id: str, response_json: str, *, expected_challenge: bytes
    ) -> AuthenticationResult:
        """Check an assertion by one of ``user_id``'s credentials.

        Raises ``WebAuthnVerificationError`` on any refusal and its subclass
        ``CloneSuspected`` when the signature counter went backwards (the credential
        is flagged before the error is raised).
        """
        try:
            parsed = parse_authentication_credential_json(response_json)
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise WebAuthnVerificationError("invalid-response", str(exc)) from exc
        with self.engine.connect() as conn:
            row = conn.execute(
                select(webauthn_credentials).where(
                    webauthn_credentials.c.credential_id == parsed.id,
                    webauthn_credentials.c.user_id == user_id,
                )
            ).first()
        if row is None:
            raise WebAuthnVerificationError("unknown-credential")
        if row.flagged_clone:
            raise WebAuthnVerificationError("flagged")
        handle = parsed.response.user_handle
        if handle is not None and handle != _user_handle(user_id):
            raise WebAuthnVerificationError("unknown-credential", "user handle mismatch")
        stored = int(row.sign_count)
        try:
            # The counter is checked below, after the signature, by phiguard itself:
            # passing 0 keeps the library from refusing before we can flag the clone.
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=expected_challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=bytes(row.public_key),
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
            raise WebAuthnVerificationError("invalid-response", str(exc)) from exc
        new = int(verified.new_sign_count)
        credential_id = str(row.credential_id)
        if (new > 0 or stored > 0) and new <= stored:
            with self.engine.begin() as conn:
                conn.execute(
                    update(webauthn_credentials)
                    .where(webauthn_credentials.c.credential_id == credential_id)
                    .values(flagged_clone=True)
                )
            raise CloneSuspected(
                AuthenticationResult(credential_id, new, clone_suspected=True), stored
            )
        with self.engine.begin() as conn:
            # Conditional on the counter read above: of two concurrent log-ins with one
            # credential, only one moves it.
            moved = conn.execute(
                update(webauthn_credentials)
                .where(
                    webauthn_credentials.c.credential_id == credential_id,
                    webauthn_credentials.c.sign_count == stored,
                    webauthn_credentials.c.flagged_clone.is_(False),
                )
                .values(sign_count=new, last_used_at=now_us(self.clock.now()))
            )
            if moved.rowcount != 1:
                raise WebAuthnVerificationError("raced")
        return AuthenticationResult(credential_id, new)

    # -- management --------------------------------------------------------------------
    def credentials(self, user_id: str) -> list[Credential]:
        """Every credential of ``user_id``, oldest first (flagged ones included)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(webauthn_credentials)
                .where(webauthn_credentials.c.user_id == user_id)
                .order_by(webauthn_credentials.c.created_at, webauthn_credentials.c.credential_id)
            ).all()
        return [
            Credential(
                credential_id=str(r.credential_id),
                user_id=str(r.user_id),
                name=str(r.name),
                public_key=bytes(r.public_key),
                sign_count=int(r.sign_count),
                transports=tuple(json.loads(r.transports)),
                created_at=int(r.created_at),
                last_used_at=None if r.last_used_at is None else int(r.last_used_at),
                flagged_clone=bool(r.flagged_clone),
            )
            for r in rows
        ]

    def remove(self, user_id: str, credential_id: str) -> bool:
        """Delete one credential of ``user_id`` (lost key, or a flagged clone)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(webauthn_credentials).where(
                    webauthn_credentials.c.credential_id == credential_id,
                    webauthn_credentials.c.user_id == user_id,
                )
            )
        return bool(result.rowcount)


def registered(engine: Engine, user_id: str) -> int:
    """How many credentials ``user_id`` holds (flagged ones included), whatever the
    relying party: a second factor the account has, even where it cannot be used."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(webauthn_credentials.c.user_id == user_id)
            ).scalar_one()
        )


def remove_all(engine: Engine, user_id: str) -> int:
    """Delete every credential of ``user_id`` (an MFA reset); how many were removed."""
    with engine.begin() as conn:
        result = conn.execute(
            delete(webauthn_credentials).where(webauthn_credentials.c.user_id == user_id)
        )
    return int(result.rowcount or 0)


def _user_handle(user_id: str) -> bytes:
    return user_id.encode("utf-8")


def _descriptor(credential: Credential) -> PublicKeyCredentialDescriptor:
    transports = [
        AuthenticatorTransport(t)
        for t in credential.transports
        if t in AuthenticatorTransport._value2member_map_
    ]
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(credential.credential_id), transports=transports or None
    )


def _registration_transports(response_json: str) -> tuple[str, ...]:
    """The transports the browser reported (only the ones WebAuthn defines)."""
    data = json.loads(response_json)
    response = data.get("response") if isinstance(data, dict) else None
    raw = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(raw, list):
        return ()
    known = AuthenticatorTransport._value2member_map_
    return tuple(dict.fromkeys(t for t in raw if isinstance(t, str) and t in known))
