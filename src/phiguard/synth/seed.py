"""Loading the synthetic hospital into a vault, through the same path as any import.

Units of resources are committed with journal rows, so seeding twice with the same
seed and size is a no-op and an interrupted seeding resumes.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from phiguard.fhir.importer import Importer, ImportReport, Unit
from phiguard.records.context import system_context
from phiguard.records.vault import Vault

UNIT = 500


def seed_hospital(
    vault: Vault,
    *,
    seed: int,
    patients: int,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    from . import generate_hospital, to_fhir

    hospital = generate_hospital(seed=seed, patients=patients)
    source = hashlib.sha256(f"synth:{seed}:{patients}".encode()).hexdigest()
    # The hospital Organization, then one resource per record (two per staff member:
    # Practitioner and PractitionerRole), as ``to_fhir`` yields them.
    total = (
        1
        + len(hospital.staff)
        + sum(
            len(x)
            for x in (
                hospital.departments,
                hospital.staff,
                hospital.patients,
                hospital.encounters,
                hospital.appointments,
                hospital.care_teams,
                hospital.conditions,
                hospital.observations,
            )
        )
    )

    def units() -> Iterator[Unit]:
        stream = iter(to_fhir(hospital))
        for index in itertools.count():
            chunk: list[dict[str, Any]] = list(itertools.islice(stream, UNIT))
            if not chunk:
                return
            entries = [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in chunk
            ]
            yield Unit(
                source,
                index,
                Path(f"synthetic-hospital-{seed}"),
                {"resourceType": "Bundle", "type": "transaction", "entry": entries},
            )

    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, max(total, done))

    repo = vault.repository(system_context(purpose="HOPERAT", source="seed"))
    return Importer(repo, progress=step).run(units(), total=total)
