"""Key maintenance that must touch sealed records: data-key rotation and shredding.

Both live here, beside the repository, because only the records layer knows how a
record's associated data is built; the keyring only hands out keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update

from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import RESERVED, patient_compartment
from phiguard.errors import AccessDenied, KeyShreddedError, NotFound, RecordsError
from phiguard.store.tables import resource_heads, resources, search_tokens

from .context import AccessContext
from .hooks import AccessRequest, AuditEvent
from .vault import Vault

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RotationResult:
    compartment: str
    new_version: int
    resealed: int
    destroyed_versions: tuple[int, ...]


def rotate_compartment(
    vault: Vault, compartment: str, *, batch: int = 500, progress: Progress | None = None
) -> RotationResult:
    """Re-seal every version of every record of ``compartment`` under a new data key.

    Resumable and crash-safe: each batch commits on its own and each row names the
    key version it is sealed under, so a second call finishes what an interrupted one
    began (it continues with the key created by the first) and only then destroys the
    retired keys.
    """
    if compartment in RESERVED:
        raise RecordsError(f"{compartment} is not a record compartment and cannot be rotated")
    keyring = vault.keyring
    with vault.engine.begin() as conn:
        if keyring.is_shredded(compartment, conn):
            raise KeyShreddedError(f"the data key of {compartment} was destroyed")
        if keyring.retired_versions(compartment, conn):
            new_version = keyring.current_sealer(compartment, conn).key_version
        else:
            new_version, _ = keyring.begin_rotation(compartment, conn)
    r = resources.c
    stale = (
        (r.tenant == vault.tenant)
        & (r.compartment == compartment)
        & (r.dek_version != new_version)
        & r.body.is_not(None)
    )
    with vault.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).where(stale)).scalar_one())
    done = 0
    while True:
        with vault.engine.begin() as conn:
            rows = conn.execute(
                select(r.rtype, r.rid, r.version, r.dek_version, r.body).where(stale).limit(batch)
            ).all()
            if not rows:
                break
            new = keyring.sealer(compartment, new_version, conn)
            for row in rows:
                assoc = aad(vault.tenant, row.rtype, row.rid, row.version, compartment)
                old = keyring.sealer(compartment, int(row.dek_version), conn)
                plain = old.open(bytes(row.body), assoc, f"{row.rtype}/{row.rid}")
                conn.execute(
                    update(resources)
                    .where(
                        r.tenant == vault.tenant,
                        r.rtype == row.rtype,
                        r.rid == row.rid,
                        r.version == row.version,
                    )
                    .values(dek_version=new_version, body=new.seal(plain, assoc))
                )
            done += len(rows)
        if progress:
            progress(done, total)
    with vault.engine.begin() as conn:
        retired = keyring.retired_versions(compartment, conn)
        keyring.destroy_retired(compartment, retired, conn)
    return RotationResult(compartment, new_version, done, tuple(retired))


@dataclass(frozen=True)
class ShredResult:
    patient_id: str
    keys_destroyed: int
    records: int
    versions: int


def shred_patient(vault: Vault, ctx: AccessContext, patient_id: str) -> ShredResult:
    """Destroy the patient's data keys: every version of every record about them
    becomes unreadable wherever the database's rows went (backups taken earlier hold
    the wrapped key until they expire: docs/operations.md)."""
    compartment = patient_compartment(patient_id)
    decision = vault.policy.decide(ctx, AccessRequest("shred", "Patient", patient_id, compartment))
    if not decision.allowed:
        raise AccessDenied(reasons=list(decision.reasons))
    h = resource_heads.c
    with vault.engine.begin() as conn:
        records = int(
            conn.execute(
                select(func.count()).where(h.tenant == vault.tenant, h.compartment == compartment)
            ).scalar_one()
        )
        if records == 0:
            raise NotFound(f"Patient/{patient_id} has no records")
        versions = int(
            conn.execute(
                select(func.count()).where(
                    resources.c.tenant == vault.tenant, resources.c.compartment == compartment
                )
            ).scalar_one()
        )
        destroyed = vault.keyring.shred(compartment, conn)
        ids = select(h.rid).where(h.tenant == vault.tenant, h.compartment == compartment)
        conn.execute(
            delete(search_tokens).where(
                search_tokens.c.tenant == vault.tenant, search_tokens.c.rid.in_(ids)
            )
        )
        conn.execute(
            update(resource_heads)
            .where(h.tenant == vault.tenant, h.compartment == compartment)
            .values(deleted=True)
        )
        for observer in vault.observers:
            # Derived data (the access index's row) goes in the same transaction, so
            # other processes see the patient's facts gone at their next re-check.
            dropped = getattr(observer, "shredded", None)
            if dropped is not None:
                dropped(conn, patient_id)
        vault.audit.record(
            AuditEvent(
                action="shred",
                outcome="success",
                principal=ctx.principal.reference,
                purpose=ctx.purpose,
                request_id=ctx.request_id,
                recorded=vault.clock.now(),
                resource_type="Patient",
                resource_id=patient_id,
                patient_ids=(patient_id,),
                source=ctx.source,
                detail={"keys": destroyed, "records": records, "versions": versions},
            ),
            conn,
        )
    vault.keyring.forget(compartment)
    return ShredResult(patient_id, destroyed, records, versions)
