"""Data-key rotation (re-seal every version) and crypto-shredding, in process.

Crashes are injected at each step of a rotation (after the new key, after some
batches, after every row but before the old key is destroyed); a second call must
finish the job from wherever the first stopped.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from phiguard.crypto.keyring import INDEX_COMPARTMENT, SHARED
from phiguard.crypto.providers import LocalKeyFile
from phiguard.errors import AccessDenied, KeyShreddedError, NotFound, RecordsError
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import ListAuditSink
from phiguard.records.maintenance import rotate_compartment, shred_patient
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store.tables import data_keys, resource_heads, resources, search_tokens

P1 = "Patient/m1"


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def _obs(pid: str, value: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value},
    }


def _fill(repo: Repository) -> None:
    for pid in ("m1", "m2"):
        repo.create(_patient(f"Fam{pid}"), rid=pid)
        repo.update("Patient", pid, _patient(f"Renamed{pid}"))
        for i in range(4):
            repo.create(_obs(pid, i), rid=f"{pid}-o{i}")
        repo.update("Observation", f"{pid}-o0", {**_obs(pid, 99), "id": f"{pid}-o0"})
        repo.delete("Observation", f"{pid}-o3")
    repo.create({"resourceType": "Organization", "name": "Clinic"}, rid="org")


def _rows(vault: Vault, compartment: str | None = None) -> dict[tuple[str, str, int], Any]:
    stmt = select(resources)
    if compartment is not None:
        stmt = stmt.where(resources.c.compartment == compartment)
    with vault.engine.connect() as conn:
        return {(r.rtype, r.rid, int(r.version)): r for r in conn.execute(stmt).all()}


def _keys(vault: Vault, compartment: str) -> dict[int, Any]:
    with vault.engine.connect() as conn:
        rows = conn.execute(select(data_keys).where(data_keys.c.compartment == compartment))
        return {int(r.version): r for r in rows}


def _read_all(repo: Repository, rows: dict[tuple[str, str, int], Any]) -> None:
    for (rtype, rid, version), row in rows.items():
        if row.body is not None:
            stored = repo.vread(rtype, rid, version)
            assert stored.resource is not None and stored.resource["id"] == rid


def _assert_rotated(vault: Vault, repo: Repository, before: dict[Any, Any], new: int) -> None:
    after = _rows(vault, P1)
    sealed = [k for k, r in before.items() if r.body is not None]
    assert len(sealed) == 7  # patient x2, obs-0 x2, obs-1, obs-2, obs-3 (+ its deletion)
    for key in sealed:
        assert after[key].dek_version == new
        assert after[key].body != before[key].body
        assert after[key].last_updated == before[key].last_updated
    for key, row in before.items():
        if row.body is None:
            assert after[key].body is None and after[key].dek_version == 0
    keys = _keys(vault, P1)
    for version, row in keys.items():
        if version < new:
            assert row.state == "destroyed" and row.wrapped is None
    assert keys[new].state == "active" and keys[new].wrapped is not None
    vault.keyring.forget()
    _read_all(repo, after)


def test_rotation_reseals_every_version_and_destroys_the_old_key(
    vault: Vault, repo: Repository
) -> None:
    _fill(repo)
    before, others = _rows(vault, P1), _rows(vault, "Patient/m2")
    progress: list[tuple[int, int]] = []
    result = rotate_compartment(vault, P1, batch=3, progress=lambda d, t: progress.append((d, t)))
    assert (result.new_version, result.resealed, result.destroyed_versions) == (2, 7, (1,))
    assert progress == [(3, 7), (6, 7), (7, 7)]
    _assert_rotated(vault, repo, before, 2)
    assert _rows(vault, "Patient/m2") == others, "other patients are untouched"
    assert repo.search("Patient", [("family", "Renamedm1")]).total == 1

    # New writes use the new key; a second rotation moves everything again.
    repo.update("Patient", "m1", _patient("Third"))
    assert _rows(vault, P1)[("Patient", "m1", 3)].dek_version == 2
    before = _rows(vault, P1)
    assert rotate_compartment(vault, P1).new_version == 3
    assert {r.dek_version for r in _rows(vault, P1).values() if r.body} == {3}
    assert {v: r.state for v, r in _keys(vault, P1).items()} == {
        1: "destroyed",
        2: "destroyed",
        3: "active",
    }
    assert repo.read("Patient", "m1").resource["name"][0]["family"] == "Third"  # type: ignore[index]


class Crash(Exception):
    pass


def _crash_at(when: str) -> Any:
    def progress(done: int, total: int) -> None:
        if when == "first batch" or (when == "last batch" and done == total):
            raise Crash

    return progress


@pytest.mark.parametrize("when", ["after the new key", "first batch", "last batch"])
def test_rotation_resumes_after_a_crash_at_any_step(
    vault: Vault, repo: Repository, when: str
) -> None:
    _fill(repo)
    if when == "after the new key":
        with vault.engine.begin() as conn:
            vault.keyring.begin_rotation(P1, conn)
    else:
        with pytest.raises(Crash):
            rotate_compartment(vault, P1, batch=3, progress=_crash_at(when))
    keys = _keys(vault, P1)
    assert (keys[1].state, keys[2].state) == ("retired", "active")
    assert vault.keyring.compartments_in_rotation() == [P1]
    # Mid-rotation, everything still reads and new writes take the new key.
    vault.keyring.forget()
    _read_all(repo, _rows(vault, P1))
    repo.create(_obs("m1", 7), rid="m1-mid")
    assert _rows(vault, P1)[("Observation", "m1-mid", 1)].dek_version == 2

    result = rotate_compartment(vault, P1, batch=3)
    assert result.new_version == 2, "the resumed run continues with the key already made"
    assert result.destroyed_versions == (1,)
    after = _rows(vault, P1)
    assert {r.dek_version for r in after.values() if r.body} == {2}
    assert vault.keyring.compartments_in_rotation() == []
    keys = _keys(vault, P1)
    assert keys[1].state == "destroyed" and keys[1].wrapped is None
    _read_all(repo, after)


def test_rotation_of_the_shared_compartment(vault: Vault, repo: Repository) -> None:
    _fill(repo)
    result = rotate_compartment(vault, SHARED)
    assert (result.new_version, result.resealed) == (2, 1)
    assert repo.read("Organization", "org").resource is not None


def test_reserved_and_shredded_compartments_are_not_rotated(vault: Vault, repo: Repository) -> None:
    _fill(repo)
    with pytest.raises(RecordsError):
        rotate_compartment(vault, INDEX_COMPARTMENT)
    shred_patient(vault, system_context(), "m2")
    with pytest.raises(KeyShreddedError):
        rotate_compartment(vault, "Patient/m2")
    assert {r.state for r in _keys(vault, "Patient/m2").values()} == {"shredded"}


def test_rotation_after_a_kek_rotation_wraps_the_new_key_with_the_new_kek(
    vault: Vault, repo: Repository, keyfile: LocalKeyFile
) -> None:
    _fill(repo)
    keyfile.rotate()
    rotate_compartment(vault, P1)
    keys = _keys(vault, P1)
    assert keys[2].kek_version == 2
    vault.keyring.forget()
    _read_all(repo, _rows(vault, P1))


# -- shredding --------------------------------------------------------------------------------


def test_shred_result_tokens_heads_and_audit(
    vault: Vault, repo: Repository, audit_sink: ListAuditSink
) -> None:
    _fill(repo)
    result = shred_patient(vault, system_context(), "m1")
    assert (result.patient_id, result.keys_destroyed, result.records, result.versions) == (
        "m1",
        1,
        5,
        8,
    )
    with vault.engine.connect() as conn:
        heads = conn.execute(
            select(resource_heads.c.rid, resource_heads.c.deleted).where(
                resource_heads.c.compartment == P1
            )
        ).all()
        tokens = set(conn.execute(select(search_tokens.c.rid)).scalars())
    assert heads and all(h.deleted for h in heads)
    assert not tokens & {h.rid for h in heads}
    assert {"m2", "m2-o0"} <= tokens
    event = [e for e in audit_sink.events if e.action == "shred"][-1]
    assert (event.outcome, event.resource_id, event.patient_ids) == ("success", "m1", ("m1",))
    assert event.detail == {"keys": 1, "records": 5, "versions": 8}


def test_shred_is_refused_without_permission_and_for_unknown_patients(
    vault: Vault, repo: Repository
) -> None:
    _fill(repo)
    clinician = AccessContext(principal=Principal(id="dr", kind="user"), purpose="TREAT")
    with pytest.raises(AccessDenied):
        shred_patient(vault, clinician, "m1")
    assert {r.state for r in _keys(vault, P1).values()} == {"active"}
    assert repo.read("Patient", "m1").resource is not None
    with pytest.raises(NotFound):
        shred_patient(vault, system_context(), "nobody")
    assert _keys(vault, "Patient/nobody") == {}
