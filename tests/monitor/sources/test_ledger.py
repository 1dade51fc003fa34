"""phiguard's own ledger and vault as a monitoring source, from a real home."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from argon2 import Parameters, Type

from phiguard.access.breakglass import BreakGlass
from phiguard.audit.sink import LedgerSink
from phiguard.errors import AccessDenied, AuthenticationError, NotFound
from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.monitor import frames
from phiguard.monitor.config import BREAK_THE_GLASS
from phiguard.monitor.sources import ledger as source
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest, Decision
from phiguard.records.vault import Vault
from phiguard.system import System

CHEAP = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=64, parallelism=1
)
PASSWORD = "correct horse battery staple 42"


class Everyone:
    """Lets every caller in: the point here is what the ledger records, not who may."""

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        return Decision(True, ("test: everyone",))

    def per_resource(self, ctx: AccessContext) -> bool:
        return False


class Nobody(Everyone):
    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        return Decision(False, ("test: nobody",))


def user(user_id: str, *, purpose: str = "TREAT", glass: bool = False) -> AccessContext:
    return AccessContext(
        principal=Principal(id=user_id, kind="user", roles=frozenset({"physician"})),
        purpose=purpose,
        break_glass=glass,
        source="10.0.0.7",
    )


def fill(system: System) -> dict[str, str]:
    repo = system.vault.repository(system_context())
    org = repo.create({"resourceType": "Organization", "name": "Cardiology"})
    doc = repo.create(
        {
            "resourceType": "Practitioner",
            "name": [{"use": "official", "family": "Okafor", "given": ["Ada"]}],
            "address": [{"use": "home", "line": ["7 Elm Street"], "postalCode": "12345"}],
        },
    )
    pat = repo.create(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:phiguard:mrn", "value": "MRN0042"}],
            "name": [{"family": "Okafor", "given": ["Ben"]}],
            "birthDate": "1980-02-03",
            "address": [{"line": ["7 Elm Street"], "postalCode": "12345"}],
            "meta": {"security": [{"system": "urn:phiguard:flags", "code": "vip"}]},
        },
    )
    other = repo.create({"resourceType": "Patient", "name": [{"family": "Smith"}]})
    third = repo.create({"resourceType": "Patient", "name": [{"family": "Jones"}]})
    repo.create(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pat.id}"},
            "participant": [{"individual": {"reference": f"Practitioner/{doc.id}"}}],
            "period": {"start": "2026-01-02T08:00:00Z", "end": "2026-01-02T09:00:00Z"},
            "serviceProvider": {"reference": f"Organization/{org.id}"},
        },
    )
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    accounts.add(
        "u00001",
        "Ada Okafor",
        "ada@hospital.example",
        ["physician"],
        PASSWORD,
        by="operator/test",
        department="Cardiology",
        practitioner_id=doc.id,
    )
    accounts.add(
        "u00002", "Cy Gone", "cy@hospital.example", ["nurse"], PASSWORD, by="operator/test"
    )
    accounts.terminate("u00002", by="operator/test", when=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    return {
        "patient": pat.id,
        "other": other.id,
        "third": third.id,
        "practitioner": doc.id,
        "org": org.id,
    }


@pytest.fixture
def filled(home: tuple[System, str]) -> tuple[System, dict[str, str]]:
    system, _token = home
    return system, fill(system)


def test_accesses_break_the_glass_and_logins(filled: tuple[System, dict[str, str]]) -> None:
    system, ids = filled
    start = source.ledger_size(system.ledger)
    users_vault = Vault(
        system.engine, system.keyring, policy=Everyone(), audit=LedgerSink(system.ledger)
    )
    users_vault.repository(user("u00001")).read("Patient", ids["patient"])
    # Emergency access declared through the access module, then two reads under it...
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    BreakGlass.from_system(system, accounts).declare(
        "u00001",
        ids["other"],
        "unconscious in the emergency room",
        reauthenticated=True,
        source="10.0.0.7",
    )
    for _ in range(2):
        users_vault.repository(user("u00001", purpose="BTG", glass=True)).read(
            "Patient", ids["other"]
        )
    # ...and one flagged read with no declaration (emergency access declared elsewhere).
    users_vault.repository(user("u00001", purpose="ETREAT", glass=True)).read(
        "Patient", ids["third"]
    )
    users_vault.repository(user("u00001")).everything(ids["patient"])
    # A bulk export: one ledger entry per batch, one access row per patient in it.
    for _rtype, _batch in users_vault.repository(user("u00001")).export(["Patient"]):
        pass
    # A denial disclosed nothing: it stays in the ledger but is no access row.
    nobody = Vault(system.engine, system.keyring, policy=Nobody(), audit=LedgerSink(system.ledger))
    with pytest.raises((AccessDenied, NotFound)):
        nobody.repository(user("u00003")).read("Patient", ids["patient"])
    accounts.authenticate("u00001", PASSWORD, "10.0.0.7")
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            accounts.authenticate("u00001", "wrong password entirely", "203.0.113.9")
    with pytest.raises(AuthenticationError):
        accounts.authenticate("nobody-here", "whatever it is", "203.0.113.9")
    with pytest.raises(AuthenticationError):  # terminated: refused, reason in the ledger
        accounts.authenticate("u00002", PASSWORD, "203.0.113.10")

    events = source.read_events(system.ledger, since_seq=start)
    assert events.next_seq == source.ledger_size(system.ledger)
    access = events.access
    assert access.schema == pl.Schema(frames.ACCESS)
    rows = access.select("user_id", "patient_id", "action", "resource_type").rows()
    assert ("u00001", ids["patient"], "view", "Patient") in rows
    assert ("u00001", ids["other"], "view", "Patient") in rows
    # One marker per declaration, not per read; one for the undeclared flagged read.
    assert rows.count(("u00001", ids["other"], "view", BREAK_THE_GLASS)) == 1
    assert rows.count(("u00001", ids["other"], "view", "Patient")) == 2
    assert rows.count(("u00001", ids["third"], "view", BREAK_THE_GLASS)) == 1
    assert ("u00001", ids["patient"], "export", "Patient") in rows  # $everything
    for pid in (ids["other"], ids["third"]):  # reached only by the bulk export
        assert ("u00001", pid, "export", "Patient") in rows
    assert rows.count(("u00001", ids["patient"], "view", BREAK_THE_GLASS)) == 0
    assert set(access["workstation"]) == {"10.0.0.7"}
    assert set(access["user_id"]) == {"u00001"}  # the system's own reads are not judged
    auth = events.auth
    assert auth.schema == pl.Schema(frames.AUTH)
    outcomes = auth.select("user_id", "source", "outcome").rows()
    assert outcomes[0] == ("u00001", "10.0.0.7", "success")
    assert outcomes.count(("u00001", "203.0.113.9", "failure")) == 2
    assert ("anonymous/unknown-account", "203.0.113.9", "failure") in outcomes
    assert ("u00002", "203.0.113.10", "failure") in outcomes
    assert auth["secret_hash"].null_count() == auth.height


def test_a_refusal_for_a_locked_account_is_outcome_locked() -> None:
    base = {"seq": 1, "t": 1_767_225_600_000_000, "who": "user/u1", "src": "10.0.0.1"}
    entries = [
        {**base, "action": "login-failure", "outcome": "denied", "detail": {"reason": r}}
        for r in ("wrong-password", "account-locked", "account-backoff")
    ]
    _access, auth = source.events_to_frames(entries)
    assert auth["outcome"].to_list() == ["failure", "locked", "failure"]


def test_reference_from_vault_and_users(filled: tuple[System, dict[str, str]]) -> None:
    system, ids = filled
    ref = source.reference(system.vault, system.engine)
    staff = ref.staff.sort("user_id")
    assert staff["user_id"].to_list() == ["u00001", "u00002"]
    first = staff.row(0, named=True)
    assert (first["family_name"], first["given_name"]) == ("Okafor", "Ada")
    assert (first["address"], first["postal_code"]) == ("7 Elm Street", "12345")
    assert (first["role"], first["department"]) == ("physician", "Cardiology")
    second = staff.row(1, named=True)
    assert second["family_name"] == "Gone"  # from the display name: no Practitioner
    assert second["termination_date"] == dt.date(2026, 1, 1)
    patients = ref.patients.filter(pl.col("patient_id") == ids["patient"]).row(0, named=True)
    assert patients["mrn"] == "MRN0042" and patients["vip"] is True
    assert patients["birth_date"] == dt.date(1980, 2, 3)
    (care,) = ref.care.rows(named=True)
    assert (care["patient_id"], care["user_id"], care["department"], care["kind"]) == (
        ids["patient"],
        "u00001",
        "Cardiology",
        "encounter",
    )
    assert care["start"] == dt.datetime(2026, 1, 2, 8, tzinfo=dt.UTC)
