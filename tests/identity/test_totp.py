"""TOTP enrolment and verification: drift window, replay, sealing at rest."""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select, update

from phiguard.clock import FixedClock
from phiguard.crypto.keyring import IDENTITY_COMPARTMENT, RESERVED
from phiguard.errors import DecryptionError, EnrolmentError
from phiguard.identity.totp import TotpEnrolment, TotpStore
from phiguard.records.vault import Vault
from phiguard.store.tables import data_keys, totp_secrets


@pytest.fixture
def store(vault: Vault, clock: FixedClock) -> TotpStore:
    return TotpStore(vault.engine, vault.keyring, clock)


def code(secret: str, when: dt.datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def enrolled(store: TotpStore, clock: FixedClock, user: str = "alice") -> TotpEnrolment:
    enrolment = store.enrol(user)
    assert store.confirm(user, code(enrolment.secret, clock.now())).accepted
    clock.advance(minutes=5)  # later log-ins use later steps than the confirmation
    return enrolment


def database_bytes(vault: Vault) -> bytes:
    db = Path(str(vault.engine.url.database))
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())


def test_identity_compartment_is_reserved() -> None:
    assert IDENTITY_COMPARTMENT == "__identity__" and IDENTITY_COMPARTMENT in RESERVED


def test_enrolment_gives_a_160_bit_secret_and_provisioning_uri(store: TotpStore) -> None:
    enrolment = store.enrol("alice")
    assert len(base64.b32decode(enrolment.secret)) == 20
    uri = urllib.parse.urlparse(enrolment.provisioning_uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(uri.path) == "/phiguard:alice"
    query = urllib.parse.parse_qs(uri.query)
    assert query["secret"] == [enrolment.secret] and query["issuer"] == ["phiguard"]
    assert enrolment.secret not in repr(enrolment)
    assert store.enrol("bob").secret != enrolment.secret


def test_rfc6238_reference_vector(vault: Vault) -> None:
    """RFC 6238 appendix B, SHA-1 secret "12345678901234567890": T=59 s gives 94287082
    (8 digits), so 287082 with 6; T=1111111109 gives 07081804."""
    clock = FixedClock(dt.datetime.fromtimestamp(59, dt.UTC))
    store = TotpStore(vault.engine, vault.keyring, clock, random_bytes=lambda n: b"1234567890" * 2)
    store.enrol("rfc")
    assert store.confirm("rfc", "287082").accepted
    clock.set(dt.datetime.fromtimestamp(1111111109, dt.UTC))
    assert store.verify("rfc", "081 804").accepted  # spaces as apps display them


def test_enrolment_needs_confirmation_by_a_valid_code(store: TotpStore, clock: FixedClock) -> None:
    enrolment = store.enrol("alice")
    now_code = code(enrolment.secret, clock.now())
    assert not store.is_enrolled("alice")
    assert store.verify("alice", now_code).outcome == "not-confirmed"
    assert store.confirm("alice", "000000" if now_code != "000000" else "111111").outcome == "wrong"
    assert not store.is_enrolled("alice")
    assert store.confirm("alice", now_code).accepted
    assert store.is_enrolled("alice")
    assert store.confirm("alice", now_code).outcome == "already-confirmed"
    # The confirming code was used: it cannot also log in.
    assert store.verify("alice", now_code).outcome == "replayed"


def test_drift_of_one_step_accepted(store: TotpStore, clock: FixedClock) -> None:
    enrolment = enrolled(store, clock)
    now = clock.now()
    assert store.verify("alice", code(enrolment.secret, now - dt.timedelta(seconds=30))).accepted
    assert store.verify("alice", code(enrolment.secret, now)).accepted
    assert store.verify("alice", code(enrolment.secret, now + dt.timedelta(seconds=30))).accepted


@pytest.mark.parametrize("offset", [-90, 90])
def test_drift_of_three_steps_refused(store: TotpStore, clock: FixedClock, offset: int) -> None:
    enrolment = enrolled(store, clock)
    stale = code(enrolment.secret, clock.now() + dt.timedelta(seconds=offset))
    if stale in {
        code(enrolment.secret, clock.now() + dt.timedelta(seconds=s)) for s in (-30, 0, 30)
    }:
        pytest.skip("one-in-a-million code collision")
    result = store.verify("alice", stale)
    assert not result.accepted and result.outcome == "wrong"


def test_each_code_accepted_once(store: TotpStore, clock: FixedClock) -> None:
    enrolment = enrolled(store, clock)
    current = code(enrolment.secret, clock.now())
    assert store.verify("alice", current).accepted
    assert store.verify("alice", current).outcome == "replayed"
    # An older code still inside the drift window is refused too.
    older = code(enrolment.secret, clock.now() - dt.timedelta(seconds=30))
    assert store.verify("alice", older).outcome == "replayed"
    # The next step's code works.
    clock.advance(seconds=30)
    assert store.verify("alice", code(enrolment.secret, clock.now())).accepted


def test_wrong_and_malformed_codes_refused(store: TotpStore, clock: FixedClock) -> None:
    enrolment = enrolled(store, clock)
    right = code(enrolment.secret, clock.now())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for bad in (
        wrong,
        right[:5],
        right + "0",
        "abcdef",
        "",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
    ):
        result = store.verify("alice", bad)
        assert not result.accepted and result.outcome == "wrong", bad
    assert store.verify("nobody", right).outcome == "not-enrolled"
    assert store.verify("alice", right).accepted  # the failures did not consume it


def test_secret_is_sealed_at_rest(store: TotpStore, clock: FixedClock, vault: Vault) -> None:
    enrolment = enrolled(store, clock)
    raw = base64.b32decode(enrolment.secret)
    stored = database_bytes(vault)
    assert stored  # the scan did read the database (and its WAL)
    assert enrolment.secret.encode() not in stored
    assert raw not in stored
    with vault.engine.connect() as conn:
        row = conn.execute(select(totp_secrets)).one()
        key = conn.execute(
            select(data_keys.c.version).where(data_keys.c.compartment == IDENTITY_COMPARTMENT)
        ).scalar_one()
    assert row.dek_version == key and bytes(row.sealed) != raw and row.confirmed


def test_sealed_secret_is_bound_to_its_user(
    store: TotpStore, clock: FixedClock, vault: Vault
) -> None:
    alice = enrolled(store, clock, "alice")
    store.enrol("mallory")
    with vault.engine.begin() as conn:
        sealed = conn.execute(
            select(totp_secrets.c.sealed).where(totp_secrets.c.user_id == "alice")
        ).scalar_one()
        conn.execute(
            update(totp_secrets)
            .where(totp_secrets.c.user_id == "mallory")
            .values(sealed=sealed, confirmed=True)
        )
    with pytest.raises(DecryptionError):
        store.verify("mallory", code(alice.secret, clock.now()))


def test_confirmed_enrolment_replaced_only_on_purpose(store: TotpStore, clock: FixedClock) -> None:
    old = enrolled(store, clock)
    with pytest.raises(EnrolmentError):
        store.enrol("alice")
    new = store.enrol("alice", replace=True)
    assert not store.is_enrolled("alice")  # the new secret needs its own confirmation
    assert store.confirm("alice", code(old.secret, clock.now())).outcome == "wrong"
    assert store.confirm("alice", code(new.secret, clock.now())).accepted


def test_unconfirmed_enrolment_can_be_restarted(store: TotpStore, clock: FixedClock) -> None:
    first = store.enrol("alice")
    second = store.enrol("alice")
    assert first.secret != second.secret
    assert store.confirm("alice", code(first.secret, clock.now())).outcome == "wrong"
    assert store.confirm("alice", code(second.secret, clock.now())).accepted


def test_remove(store: TotpStore, clock: FixedClock) -> None:
    enrolment = enrolled(store, clock)
    assert store.remove("alice")
    assert not store.remove("alice")
    assert not store.is_enrolled("alice")
    assert store.verify("alice", code(enrolment.secret, clock.now())).outcome == "not-enrolled"
