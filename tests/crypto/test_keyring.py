"""Keyring: a data key per compartment, rolled-back keys, KEK rewrap, crypto-shredding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from phiguard.clock import FixedClock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import INDEX_COMPARTMENT, SHARED, Keyring, patient_compartment
from phiguard.crypto.providers import LocalKeyFile
from phiguard.errors import (
    DecryptionError,
    Gone,
    InvalidResource,
    KeyProviderError,
    KeyShreddedError,
    NotFound,
)
from phiguard.records.context import system_context
from phiguard.records.maintenance import rotate_compartment, shred_patient
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store.engine import make_engine
from phiguard.store.tables import data_keys, resources, search_tokens
from tests.conftest import TEST_PASSPHRASE


def patient(pid: str, family: str = "Canaryfamily") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": ["Ada"]}],
        "gender": "female",
    }


def observation(pid: str, value: int = 70) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value, "unit": "/min"},
    }


def practitioner(rid: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": rid, "name": [{"family": "Doctor"}]}


def organization(rid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": rid, "name": "General Hospital"}


def add_patient(repo: Repository, pid: str, observations: int = 1) -> list[str]:
    """The patient and some observations; returns the observation ids."""
    repo.create(patient(pid), rid=pid)
    oids = [f"{pid}-obs-{i}" for i in range(observations)]
    for i, oid in enumerate(oids):
        repo.create(observation(pid, 60 + i), rid=oid)
    return oids


def key_rows(vault: Vault, compartment: str | None = None) -> list[Any]:
    stmt = select(data_keys).order_by(data_keys.c.compartment, data_keys.c.version)
    if compartment is not None:
        stmt = stmt.where(data_keys.c.compartment == compartment)
    with vault.engine.connect() as conn:
        return list(conn.execute(stmt).all())


def resource_rows(vault: Vault) -> dict[tuple[str, str, int], Any]:
    with vault.engine.connect() as conn:
        rows = conn.execute(select(resources)).all()
    return {(r.rtype, r.rid, int(r.version)): r for r in rows}


def read_everything(vault: Vault) -> int:
    """vread every stored version outside shredded compartments; returns how many opened."""
    repo = vault.repository(system_context())
    shredded = {r.compartment for r in key_rows(vault) if r.state == "shredded"}
    opened = 0
    for (rtype, rid, version), row in resource_rows(vault).items():
        if row.body is None or row.compartment in shredded:
            continue
        stored = repo.vread(rtype, rid, version)
        assert stored.resource is not None and stored.resource["id"] == rid
        opened += 1
    return opened


@pytest.fixture
def second_vault(vault: Vault, keyfile: LocalKeyFile) -> Iterator[Vault]:
    """Another "process": own engine, own key-file instance, own key cache."""
    engine = make_engine(str(vault.engine.url))
    provider = LocalKeyFile(keyfile.path, TEST_PASSPHRASE)
    yield Vault(engine, Keyring(engine, provider, clock=FixedClock()), clock=FixedClock())
    engine.dispose()


# -- one data key per compartment -----------------------------------------------------------


def test_each_patient_has_its_own_data_key_and_others_share_one(
    vault: Vault, repo: Repository
) -> None:
    add_patient(repo, "p1")
    add_patient(repo, "p2")
    repo.create(practitioner("dr-1"), rid="dr-1")
    repo.create(organization("org-1"), rid="org-1")
    rows = resource_rows(vault)
    assert rows[("Patient", "p1", 1)].compartment == "Patient/p1"
    assert rows[("Observation", "p1-obs-0", 1)].compartment == "Patient/p1"
    assert rows[("Patient", "p2", 1)].compartment == "Patient/p2"
    assert rows[("Practitioner", "dr-1", 1)].compartment == SHARED
    assert rows[("Organization", "org-1", 1)].compartment == SHARED
    compartments = [r.compartment for r in key_rows(vault)]
    assert sorted(compartments) == sorted(["Patient/p1", "Patient/p2", SHARED, INDEX_COMPARTMENT])
    keyring = vault.keyring
    keyring.forget()
    sealers = {c: keyring.sealer(c, 1) for c in compartments}
    fingerprints = {c: s.derive(b"test/fingerprint") for c, s in sealers.items()}
    assert len(set(fingerprints.values())) == len(fingerprints), "every compartment its own DEK"
    # A record of p1 does not open under p2's key, even with p1's associated data.
    row = rows[("Patient", "p1", 1)]
    assoc = aad("default", "Patient", "p1", 1, "Patient/p1")
    assert sealers["Patient/p1"].open(bytes(row.body), assoc)
    with pytest.raises(DecryptionError):
        sealers["Patient/p2"].open(bytes(row.body), assoc)
    # The wrapped form is bound to its row: p2's wrapped key moved to p1's row fails.
    p1, p2 = key_rows(vault, "Patient/p1")[0], key_rows(vault, "Patient/p2")[0]
    assert p1.wrapped != p2.wrapped
    with vault.engine.begin() as conn:
        conn.execute(
            data_keys.update()
            .where(data_keys.c.compartment == "Patient/p1")
            .values(wrapped=p2.wrapped)
        )
    keyring.forget()
    with pytest.raises(KeyProviderError):
        keyring.sealer("Patient/p1", 1)


def test_wrapped_keys_do_not_hold_the_key(vault: Vault, repo: Repository) -> None:
    add_patient(repo, "p1")
    raw_key = vault.keyring.sealer("Patient/p1", 1)._key
    for row in key_rows(vault):
        assert raw_key not in bytes(row.wrapped)
    db = Path(str(vault.engine.url.database))
    for path in db.parent.iterdir():
        assert raw_key not in path.read_bytes(), f"the raw DEK is in {path.name}"


# -- keys created in a transaction that rolls back ----------------------------------------


def _rolled_back_patient(repo: Repository, pid: str) -> None:
    with pytest.raises(RuntimeError, match="abort"), repo.atomic():
        add_patient(repo, pid, observations=2)
        raise RuntimeError("abort")


def test_a_rolled_back_key_is_never_used(
    vault: Vault, repo: Repository, keyfile: LocalKeyFile, second_vault: Vault
) -> None:
    _rolled_back_patient(repo, "rb")
    assert key_rows(vault, "Patient/rb") == []
    with pytest.raises(NotFound):
        repo.read("Patient", "rb")
    oids = add_patient(repo, "rb", observations=2)
    assert [r.version for r in key_rows(vault, "Patient/rb")] == [1]
    # This process, cache cleared...
    vault.keyring.forget()
    assert repo.read("Patient", "rb").resource is not None
    for oid in oids:
        assert repo.read("Observation", oid).resource is not None
    # ...and a new keyring that never saw the rolled-back key.
    assert read_everything(second_vault) == 3


def test_a_rolled_back_key_does_not_shadow_the_key_another_process_created(
    vault: Vault, repo: Repository, second_vault: Vault
) -> None:
    """Process A rolls back a new key for a patient; process B then creates that
    patient's real key (same version number).  A must read and write with B's key."""
    _rolled_back_patient(repo, "race")
    other = second_vault.repository(system_context())
    add_patient(other, "race", observations=1)
    assert repo.read("Patient", "race").resource is not None
    assert repo.read("Observation", "race-obs-0").resource is not None
    repo.create(observation("race", 99), rid="race-obs-from-a")
    second_vault.keyring.forget()
    assert other.read("Observation", "race-obs-from-a").resource is not None
    assert [r.version for r in key_rows(vault, "Patient/race")] == [1]


# -- KEK rotation and rewrap ----------------------------------------------------------------


def _only_version(keyfile: LocalKeyFile, version: int, dest: Path) -> LocalKeyFile:
    """A copy of the key file that holds only one KEK version (the others were retired)."""
    doc = json.loads(keyfile.path.read_bytes())
    doc["keks"] = [k for k in doc["keks"] if int(k["version"]) == version]
    dest.write_text(json.dumps(doc))
    provider = LocalKeyFile(dest, TEST_PASSPHRASE)
    assert provider.versions() == [version]
    return provider


def _vault_with(vault: Vault, provider: LocalKeyFile) -> Vault:
    return Vault(vault.engine, Keyring(vault.engine, provider, clock=FixedClock()))


def test_kek_rotation_and_rewrap_touch_only_wrapped_keys(
    vault: Vault, repo: Repository, keyfile: LocalKeyFile, tmp_path: Path
) -> None:
    for pid in ("k1", "k2", "k3"):
        add_patient(repo, pid, observations=2)
    repo.update("Patient", "k1", patient("k1", "Renamed"))
    repo.create(practitioner("dr-k"), rid="dr-k")
    add_patient(repo, "gone", observations=1)
    shred_patient(vault, system_context(), "gone")
    # k2 is mid-way through a data-key rotation: a retired key still seals its rows.
    with vault.engine.begin() as conn:
        vault.keyring.begin_rotation("Patient/k2", conn)
    bodies_before = {k: bytes(r.body) for k, r in resource_rows(vault).items() if r.body}
    keys_before = {(r.compartment, r.version): r for r in key_rows(vault)}
    live = {k for k, r in keys_before.items() if r.state in ("active", "retired")}
    assert {keys_before[k].kek_version for k in live} == {1}

    assert keyfile.rotate() == 2
    add_patient(repo, "k4")  # new keys are wrapped by the new KEK at once
    assert {r.kek_version for r in key_rows(vault, "Patient/k4")} == {2}
    v2_only = _only_version(keyfile, 2, tmp_path / "v2-only.json")
    with pytest.raises(KeyProviderError):  # before rewrap, KEK v1 is still needed
        read_everything(_vault_with(vault, v2_only))

    progress: list[tuple[int, int]] = []
    done = vault.keyring.rewrap(batch=2, progress=lambda d, t: progress.append((d, t)))
    assert done == len(live)
    assert progress[-1] == (len(live), len(live)) and len(progress) > 1

    after = resource_rows(vault)
    assert {k: bytes(r.body) for k, r in after.items() if r.body and k in bodies_before} == (
        bodies_before
    ), "rewrap must not touch a single record"
    keys_after = {(r.compartment, r.version): r for r in key_rows(vault)}
    for k, before in keys_before.items():
        row = keys_after[k]
        assert (row.state, row.created_at) == (before.state, before.created_at)
        if k in live:
            assert row.kek_version == 2 and row.wrapped != before.wrapped
        else:  # shredded and destroyed keys stay as they were: nothing to wrap
            assert row.wrapped is None and row.kek_version == before.kek_version
    status = vault.keyring.status()
    assert status.by_kek_version == {2: len(live) + 1}  # + k4's key, nothing else
    assert status.retired_deks == 1

    # A provider that no longer has KEK v1 at all reads everything.
    gone = sum(1 for k, r in after.items() if r.compartment == "Patient/gone")
    assert read_everything(_vault_with(vault, v2_only)) == len(bodies_before) + 2 - gone
    assert vault.keyring.rewrap() == 0, "a second rewrap has nothing left to do"


def test_rewrap_resumes_after_a_partial_run(
    vault: Vault, repo: Repository, keyfile: LocalKeyFile, tmp_path: Path
) -> None:
    for pid in ("r1", "r2", "r3", "r4"):
        add_patient(repo, pid)
    keyfile.rotate()

    class Stop(Exception):
        pass

    def stop_after_first(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        vault.keyring.rewrap(batch=2, progress=stop_after_first)
    assert vault.keyring.status().by_kek_version == {1: 3, 2: 2}
    assert vault.keyring.rewrap(batch=2) == 3
    v2_only = _only_version(keyfile, 2, tmp_path / "v2.json")
    assert read_everything(_vault_with(vault, v2_only)) == 8


# -- crypto-shredding -----------------------------------------------------------------------


def test_shredding_destroys_every_version_of_one_patient_only(
    vault: Vault, repo: Repository, second_vault: Vault
) -> None:
    add_patient(repo, "victim", observations=2)
    repo.update("Patient", "victim", patient("victim", "Secondname"))
    repo.update("Observation", "victim-obs-0", {**observation("victim", 71), "id": "victim-obs-0"})
    repo.delete("Observation", "victim-obs-1")
    add_patient(repo, "keeper", observations=2)
    other = second_vault.repository(system_context())
    assert other.read("Patient", "victim").resource is not None  # B caches victim's key
    before = resource_rows(vault)

    result = shred_patient(vault, system_context(), "victim")
    assert (result.records, result.versions, result.keys_destroyed) == (3, 6, 1)

    for row in key_rows(vault, "Patient/victim"):
        assert row.state == "shredded" and row.wrapped is None
    for reader in (repo, other):
        for rtype, rid in (("Patient", "victim"), ("Observation", "victim-obs-0")):
            with pytest.raises(Gone):
                reader.read(rtype, rid)
    for (rtype, rid, version), row in before.items():
        if row.compartment != "Patient/victim":
            continue
        with pytest.raises(Gone):
            repo.vread(rtype, rid, version)
    assert all(s.resource is None for s in repo.history("Patient", "victim"))
    assert repo.search("Patient", [("family", "Secondname")]).total == 0
    with vault.engine.connect() as conn:
        victim_ids = {"victim", "victim-obs-0", "victim-obs-1"}
        assert not [
            t for t in conn.execute(select(search_tokens.c.rid)).scalars() if t in victim_ids
        ]
    with pytest.raises(NotFound):
        repo.everything("victim")

    # The other patient is untouched, in both processes.
    for reader in (repo, other):
        assert reader.read("Patient", "keeper").resource is not None
        assert len(reader.everything("keeper")) == 3
    assert repo.search("Patient", [("family", "Canaryfamily")]).total == 1


def test_nothing_can_be_written_into_a_shredded_compartment(
    vault: Vault, repo: Repository, second_vault: Vault
) -> None:
    add_patient(repo, "shredded")
    other = second_vault.repository(system_context())
    other.create(observation("shredded", 80), rid="warm-cache")  # B holds the active key
    shred_patient(vault, system_context(), "shredded")
    count_before = len(resource_rows(vault))

    with pytest.raises(KeyShreddedError):
        repo.update("Patient", "shredded", patient("shredded", "Again"))
    with pytest.raises(KeyShreddedError):  # B's cached key is re-checked before sealing
        other.update("Patient", "shredded", patient("shredded", "Again"))
    with pytest.raises((KeyShreddedError, InvalidResource)):
        other.create(observation("shredded", 81))
    with pytest.raises(KeyShreddedError), vault.engine.begin() as conn:
        vault.keyring.current_sealer("Patient/shredded", conn)
    with pytest.raises(KeyShreddedError):
        rotate_compartment(vault, "Patient/shredded")
    assert len(resource_rows(vault)) == count_before
    assert {r.state for r in key_rows(vault, "Patient/shredded")} == {"shredded"}


def test_shredding_a_compartment_that_never_had_a_key_leaves_a_tombstone(vault: Vault) -> None:
    compartment = patient_compartment("never-seen")
    with vault.engine.begin() as conn:
        assert vault.keyring.shred(compartment, conn) == 0
    (row,) = key_rows(vault, compartment)
    assert row.state == "shredded" and row.wrapped is None
    with pytest.raises(KeyShreddedError), vault.engine.begin() as conn:
        vault.keyring.current_sealer(compartment, conn)
    assert vault.keyring.is_shredded(compartment)
