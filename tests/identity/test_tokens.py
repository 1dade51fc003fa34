"""Access tokens: only genuine, current, unrevoked tokens of a live account pass."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import Engine

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.errors import AuthenticationError
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.tokens import TokenService
from phiguard.records.vault import Vault
from tests.identity.test_accounts import PASSWORD, make_accounts

ISSUER = "https://phiguard.test"
AUDIENCE = "https://phiguard.test/fhir"


@pytest.fixture
def engine(vault: Vault) -> Engine:
    return vault.engine


@pytest.fixture
def keyring(vault: Vault) -> Keyring:
    return vault.keyring


@pytest.fixture
def service(engine: Engine, keyring: Keyring, clock: FixedClock) -> TokenService:
    return TokenService(engine, keyring, clock, issuer=ISSUER, audience=AUDIENCE)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
    )


def test_issued_token_verifies_with_its_claims(service: TokenService) -> None:
    issued = service.issue(
        kind="user",
        subject="nurse01",
        client_id="app",
        scopes=["user/Patient.rs", "openid"],
        patient="p1",
        fhir_user="Practitioner/pr1",
    )
    claims = service.verify(issued.token)
    assert claims.subject == "nurse01"
    assert claims.kind == "user"
    assert claims.scopes == {"user/Patient.rs", "openid"}
    assert claims.patient == "p1"
    assert claims.fhir_user == "Practitioner/pr1"
    assert issued.expires_in == 900
    assert issued.token not in repr(issued)


def test_lifetime_is_capped_at_fifteen_minutes(
    engine: Engine, keyring: Keyring, clock: FixedClock, service: TokenService
) -> None:
    with pytest.raises(ValueError, match="15 minutes"):
        TokenService(
            engine,
            keyring,
            clock,
            issuer=ISSUER,
            audience=AUDIENCE,
            lifetime=dt.timedelta(minutes=16),
        )
    issued = service.issue(
        kind="user", subject="u", client_id="c", scopes=[], lifetime=dt.timedelta(hours=8)
    )
    assert issued.expires_in == 900


def test_expired_token_is_refused(service: TokenService, clock: FixedClock) -> None:
    issued = service.issue(kind="user", subject="u", client_id="c", scopes=[])
    clock.advance(minutes=14, seconds=59)
    service.verify(issued.token)
    clock.advance(seconds=1)
    with pytest.raises(AuthenticationError):
        service.verify(issued.token)


def test_forged_tokens_are_refused(service: TokenService) -> None:
    genuine = service.issue(kind="user", subject="u", client_id="c", scopes=["user/*.rs"]).token
    header, payload = _parts(genuine)
    sig = genuine.rsplit(".", 1)[1]

    # A changed claim under the old signature.
    escalated = {**payload, "sub": "admin"}
    forged_claims = f"{_b64(header)}.{_b64(escalated)}.{sig}"
    # alg=none with no signature.
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{_b64(payload)}."
    # Signed with a key of the attacker's choosing.
    attacker = jwt.encode(header, payload, OctKey.generate_key(256), algorithms=["HS256"])
    # A kid that names no key.
    wrong_kid = f"{_b64({**header, 'kid': '999'})}.{_b64(payload)}.{sig}"
    for bad in (forged_claims, unsigned, attacker, wrong_kid, "", "a.b", "x" * 5000):
        with pytest.raises(AuthenticationError):
            service.verify(bad)


def test_token_for_another_audience_or_issuer_is_refused(
    engine: Engine, keyring: Keyring, clock: FixedClock, service: TokenService
) -> None:
    other_aud = TokenService(
        engine, keyring, clock, issuer=ISSUER, audience="https://elsewhere/fhir"
    ).issue(kind="user", subject="u", client_id="c", scopes=[])
    other_iss = TokenService(
        engine, keyring, clock, issuer="https://evil", audience=AUDIENCE
    ).issue(kind="user", subject="u", client_id="c", scopes=[])
    for issued in (other_aud, other_iss):
        with pytest.raises(AuthenticationError):
            service.verify(issued.token)


def test_live_principal_follows_the_account(
    engine: Engine,
    keyring: Keyring,
    clock: FixedClock,
    hashing: PasswordHashing,
    service: TokenService,
) -> None:
    accounts = make_accounts(engine, keyring, clock, ListAuditSink(), hashing)
    accounts.add("nurse01", "N. Nurse", "n@example.org", ["nurse"], PASSWORD, by="user/admin")
    issued = service.issue(kind="user", subject="nurse01", client_id="c", scopes=["user/*.rs"])
    principal = service.live_principal(service.verify(issued.token))
    assert principal.kind == "user"
    assert principal.roles == {"nurse"}
    assert principal.scopes == {"user/*.rs"}

    clock.advance(seconds=1)
    accounts.terminate("nurse01", by="user/admin")
    claims = service.verify(issued.token)  # the signature is still fine ...
    with pytest.raises(AuthenticationError):  # ... but the account is gone
        service.live_principal(claims)


def test_unknown_user_and_revoked_token_are_refused(
    engine: Engine,
    keyring: Keyring,
    clock: FixedClock,
    hashing: PasswordHashing,
    service: TokenService,
) -> None:
    ghost = service.issue(kind="user", subject="ghost", client_id="c", scopes=[])
    with pytest.raises(AuthenticationError):
        service.live_principal(service.verify(ghost.token))

    accounts = make_accounts(engine, keyring, clock, ListAuditSink(), hashing)
    accounts.add("doc01", "D. Doc", "d@example.org", ["physician"], PASSWORD, by="user/admin")
    first = service.issue(kind="user", subject="doc01", client_id="c", scopes=[])
    second = service.issue(kind="user", subject="doc01", client_id="c", scopes=[])
    service.revoke(first.claims)
    service.revoke(first.claims)  # idempotent
    with pytest.raises(AuthenticationError):
        service.live_principal(service.verify(first.token))
    assert service.live_principal(service.verify(second.token)).id == "doc01"


def test_unregistered_client_token_is_refused(service: TokenService) -> None:
    issued = service.issue(kind="client", subject="nobody", client_id="nobody", scopes=[])
    with pytest.raises(AuthenticationError):
        service.live_principal(service.verify(issued.token))


def test_tokens_survive_identity_key_rotation_until_expiry(
    engine: Engine, keyring: Keyring, service: TokenService
) -> None:
    before = service.issue(kind="user", subject="u", client_id="c", scopes=[])
    with engine.begin() as conn:
        keyring.begin_rotation("__identity__", conn)
    after = service.issue(kind="user", subject="u", client_id="c", scopes=[])
    assert _parts(before.token)[0]["kid"] != _parts(after.token)[0]["kid"]
    assert service.verify(before.token).subject == "u"
    assert service.verify(after.token).subject == "u"
