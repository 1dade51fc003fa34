"""A small hand-built hospital for detector and explanation tests.

Every test starts from ``World()``: a few staff with weeks of ordinary, explained
day-time work (so habits and baselines exist), patients placed deliberately
(the physician's own record, a relative at her address, a neighbour on her street,
a colleague who is a patient, a VIP), and helpers to add the accesses a test is about.
Names and addresses here are invented test data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.frames import ACCESS, AUTH, CARE, PATIENTS, STAFF, Dataset
from phiguard.monitor.scan import Alert, ScanResult, scan

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
EVERYTHING = DetectionConfig(alert_threshold=10.0, report_threshold=10.0)
"""Every candidate becomes an alert: detector tests look at single signals."""


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=day, hours=hour, minutes=minute)


class World:
    def __init__(self, *, routine_days: int = 28) -> None:
        self.staff_rows: list[dict[str, Any]] = []
        self.patient_rows: list[dict[str, Any]] = []
        self.care_rows: list[dict[str, Any]] = []
        self.access_rows: list[dict[str, Any]] = []
        self.auth_rows: list[dict[str, Any]] = []
        self.routine_days = routine_days
        self.add_staff(
            "u-doc", "Rivera", "physician", "Cardiology", "12 Oak St", "00010", patient_id="p-self"
        )
        self.add_staff(
            "u-nurse", "Okafor", "nurse", "Cardiology", "3 Pine Ave", "00030", patient_id="p-cow"
        )
        self.add_staff("u-ed", "Lindqvist", "nurse", "Emergency", "40 Elm Rd", "00020")
        self.add_staff("u-ed2", "Moreau", "nurse", "Emergency", "41 Elm Rd", "00020")
        self.add_staff("u-bill", "Tanaka", "billing", "Billing", "7 Ash Ct", "00040")
        self.add_staff("u-reg", "Haddad", "registration", "Registration", "9 Ash Ct", "00040")
        self.add_staff("u-night", "Novak", "nurse", "Emergency", "5 Birch Ln", "00050")
        self.add_staff(
            "u-gone",
            "Silva",
            "nurse",
            "Cardiology",
            "8 Birch Ln",
            "00050",
            terminated=dt.date(2025, 3, 20),
        )
        self.add_patient("p-self", "Rivera", "12 Oak St", "00010", mrn="MRN0000100")
        self.add_patient("p-fam", "Rivera", "12 Oak St", "00010", mrn="MRN0000101")
        self.add_patient("p-house", "Chen", "12 Oak St.", "00010", mrn="MRN0000102")
        self.add_patient("p-neigh", "Park", "18 Oak St", "00010", mrn="MRN0000103")
        self.add_patient("p-cow", "Okafor", "3 Pine Ave", "00030", mrn="MRN0000104")
        self.add_patient("p-vip", "Starr", "1 Hill Rd", "00060", mrn="MRN0000105", vip=True)
        self.add_patient("p-name", "Rivera", "77 Far Way", "00070", mrn="MRN0000106")
        for i in range(60):
            self.add_patient(
                f"p-{i:03d}",
                f"Family{i}",
                f"{i} Main St",
                f"{100 + i:05d}",
                mrn=f"MRN{200 + i:07d}",
            )
        for i in range(40):
            self.add_patient(
                f"p-run-{i:02d}", f"Run{i}", f"{i} Long Rd", "00300", mrn=f"MRN{5000 + i:07d}"
            )
        for user, hours in (
            ("u-doc", (8, 17)),
            ("u-nurse", (8, 17)),
            ("u-ed", (8, 17)),
            ("u-ed2", (8, 17)),
            ("u-night", (22, 6)),
            ("u-gone", (8, 17)),
        ):
            self.routine(user, hours)

    # -- building -----------------------------------------------------------------
    def add_staff(
        self,
        user_id: str,
        family: str,
        role: str,
        department: str,
        address: str,
        postal: str,
        *,
        patient_id: str | None = None,
        terminated: dt.date | None = None,
    ) -> None:
        self.staff_rows.append(
            {
                "user_id": user_id,
                "family_name": family,
                "given_name": "Test",
                "role": role,
                "department": department,
                "address": address,
                "postal_code": postal,
                "hire_date": dt.date(2015, 1, 1),
                "termination_date": terminated,
                "patient_id": patient_id,
            }
        )

    def add_patient(
        self,
        patient_id: str,
        family: str,
        address: str,
        postal: str,
        *,
        mrn: str,
        vip: bool = False,
    ) -> None:
        self.patient_rows.append(
            {
                "patient_id": patient_id,
                "mrn": mrn,
                "family_name": family,
                "given_name": "Pat",
                "birth_date": dt.date(1980, 5, 5),
                "address": address,
                "postal_code": postal,
                "vip": vip,
            }
        )

    def care(
        self,
        patient: str,
        user: str | None,
        department: str | None,
        start: dt.datetime,
        end: dt.datetime | None,
        kind: str = "encounter",
    ) -> None:
        self.care_rows.append(
            {
                "patient_id": patient,
                "user_id": user,
                "department": department,
                "start": start,
                "end": end,
                "kind": kind,
            }
        )

    def access(
        self,
        user: str,
        patient: str,
        when: dt.datetime,
        rtype: str = "Patient",
        action: str = "view",
        workstation: str | None = None,
    ) -> None:
        self.access_rows.append(
            {
                "timestamp": when,
                "user_id": user,
                "patient_id": patient,
                "action": action,
                "resource_type": rtype,
                "workstation": workstation or f"ws-{user}",
            }
        )

    def auth(
        self,
        user: str,
        when: dt.datetime,
        outcome: str,
        source: str = "10.0.0.1",
        secret: str | None = None,
    ) -> None:
        self.auth_rows.append(
            {
                "timestamp": when,
                "user_id": user,
                "source": source,
                "outcome": outcome,
                "secret_hash": secret,
            }
        )

    def routine(self, user: str, hours: tuple[int, int], per_day: int = 5) -> None:
        """Explained work on every day of the routine, spread over the user's hours."""
        start, end = hours
        span = (end - start) % 24 or 24
        row = next(r for r in self.staff_rows if r["user_id"] == user)
        department, left = row["department"], row["termination_date"]
        for day in range(self.routine_days):
            if left is not None and at(day, 0).date() >= left:
                break
            for k in range(per_day):
                patient = f"r-{user}-{day}-{k}"
                self.add_patient(
                    patient, "Routine", f"{k} Work St", "09999", mrn=f"RX-{user}-{day}-{k}"
                )
                when = at(day, start) + dt.timedelta(hours=span * (k + 0.5) / per_day)
                self.care(
                    patient,
                    user,
                    department,
                    when - dt.timedelta(hours=1),
                    when + dt.timedelta(hours=1),
                )
                self.access(user, patient, when)
                self.access(user, patient, when + dt.timedelta(minutes=3), "Observation")

    def dataset(self) -> Dataset:
        return Dataset.of(
            access=pl.DataFrame(self.access_rows, schema=ACCESS).sort("timestamp"),
            staff=pl.DataFrame(self.staff_rows, schema=STAFF),
            patients=pl.DataFrame(self.patient_rows, schema=PATIENTS),
            care=pl.DataFrame(self.care_rows, schema=CARE),
            auth=pl.DataFrame(self.auth_rows, schema=AUTH),
        )

    def scan(self, config: DetectionConfig = EVERYTHING, **kw: Any) -> ScanResult:
        return scan(self.dataset(), config=config, **kw)


def alerts_of(result: ScanResult, detector: str, user: str | None = None) -> list[Alert]:
    return [
        a for a in result.alerts if a.detector == detector and (user is None or a.user_id == user)
    ]
