"""Flat CSV export of who is who and who cares for whom.

Monitoring evaluation joins audit events against these tables (staff addresses and
surnames for family/neighbour detection, care relationships for "no reason to look"),
so the column sets are a fixed contract: change them only together with the readers.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Final

from phiguard.synth.model import Hospital

STAFF_COLUMNS: Final = (
    "user_id",
    "family_name",
    "given_name",
    "role",
    "department",
    "address",
    "postal_code",
    "hire_date",
    "termination_date",
    "patient_id",
)
PATIENT_COLUMNS: Final = (
    "patient_id",
    "mrn",
    "family_name",
    "given_name",
    "birth_date",
    "address",
    "postal_code",
    "vip",
)
CARE_COLUMNS: Final = ("patient_id", "user_id", "department", "start", "end", "kind")


def write_roster_csv(hospital: Hospital, directory: str | os.PathLike[str]) -> list[Path]:
    """Write ``staff.csv``, ``patients.csv`` and ``care.csv``; return their paths.

    Departments are written by name, dates as ISO 8601, absent values as empty cells
    and ``vip`` as ``true``/``false``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    dept = {d.id: d.name for d in hospital.departments}
    staff_path, patients_path, care_path = (
        out / "staff.csv",
        out / "patients.csv",
        out / "care.csv",
    )

    with staff_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(STAFF_COLUMNS)
        writer.writerows(
            (
                s.user_id,
                s.family_name,
                s.given_name,
                s.role,
                dept[s.department_id],
                s.address,
                s.postal_code,
                s.hire_date.isoformat(),
                s.termination_date.isoformat() if s.termination_date else "",
                s.patient_id or "",
            )
            for s in hospital.staff
        )

    with patients_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PATIENT_COLUMNS)
        writer.writerows(
            (
                p.patient_id,
                p.mrn,
                p.family_name,
                p.given_name,
                p.birth_date.isoformat(),
                p.address,
                p.postal_code,
                "true" if p.vip else "false",
            )
            for p in hospital.patients
        )

    with care_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CARE_COLUMNS)
        for e in hospital.encounters:
            start, end, name = e.start.isoformat(), e.end.isoformat(), dept[e.department_id]
            writer.writerows(
                (e.patient_id, user_id, name, start, end, "encounter") for user_id in e.user_ids
            )
        writer.writerows(
            (
                a.patient_id,
                a.user_id,
                dept[a.department_id],
                a.start.isoformat(),
                a.end.isoformat(),
                "appointment",
            )
            for a in hospital.appointments
        )
        for t in hospital.care_teams:
            start, end = t.start.isoformat(), t.end.isoformat() if t.end else ""
            name = dept[t.department_id]
            writer.writerows(
                (t.patient_id, user_id, name, start, end, "care_team") for user_id in t.user_ids
            )
    return [staff_path, patients_path, care_path]
