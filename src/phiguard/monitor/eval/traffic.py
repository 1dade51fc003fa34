"""Months of ordinary hospital access traffic over the synthetic hospital.

Every access here has a reason a real hospital would have: the encounter's staff
open the chart during the visit and for results afterwards, ward colleagues cover
without being documented, registration checks patients in, billing and coding
follow discharge, care teams look in on their patients.  Some accesses are
deliberately hard for a detector (benign look-alikes): staff treating their own
relatives or colleagues *with* a documented relationship, break-the-glass in
genuine emergencies followed by an encounter, on-call staff opening a chart before
anyone documents them, and a small share of accesses nothing explains (undocumented
consults, mis-clicks) spread over everyone, which is the noise detection lives with.

Users keep habits (a shift, a few workstations), so "unusual" has a meaning.  The
output is ``TrafficBase``: the frames plus the hospital's ground truth, to which
``scenarios`` adds the injected misuse.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from phiguard.monitor.config import BREAK_THE_GLASS
from phiguard.monitor.frames import ACCESS, AUTH, CARE, PATIENTS, STAFF
from phiguard.synth import Hospital, StaffMember
from phiguard.synth.roster import CARE_COLUMNS

US: Final = 1_000_000
HOUR: Final = 3600 * US
DAY: Final = 24 * HOUR
CLINICAL_TYPES: Final = (
    "Encounter",
    "Observation",
    "Condition",
    "MedicationRequest",
    "DocumentReference",
    "DiagnosticReport",
)
SHIFTS: Final = {"day": (7, 11), "evening": (15, 9), "night": (22, 9), "office": (8, 9)}
"""Shift name -> (start hour, length in hours)."""

Event = tuple[int, str, str, str, str, str, str | None]
"""(time in us since epoch, user, patient, action, resource type, workstation, label)."""


@dataclass(frozen=True)
class TrafficParams:
    """Knobs of the benign traffic (not of the scenarios)."""

    noise_rate: float = 0.12
    """Chance per working day of one unexplained access (undocumented consult, mis-click)."""
    colleague_rate: float = 0.5
    """Chance that a ward colleague without a documented role opens an encounter's chart."""
    relatives_treated: float = 0.35
    """Share of staff with relatives who treat one of them, documented."""
    print_rate: float = 0.1
    btg_emergencies: float = 0.05
    """Share of emergency encounters that start with break-the-glass."""


@dataclass
class User:
    member: StaffMember
    department: str
    shift: str
    workstations: tuple[str, ...]

    @property
    def user_id(self) -> str:
        return self.member.user_id


@dataclass
class TrafficBase:
    """The hospital, its users' habits and the benign events, before injection."""

    hospital: Hospital
    rng: random.Random
    users: dict[str, User]
    department_name: dict[str, str]
    """Department id to name (frames carry names)."""
    events: list[Event]
    care_rows: list[tuple[str, str | None, str | None, int, int | None, str]]
    """(patient, user, department, start us, end us or None, kind)."""
    auth_rows: list[tuple[int, str, str, str, str | None]]
    start_us: int
    days: int
    care_pairs: set[tuple[str, str]] = field(default_factory=set)
    """(user, patient) pairs with any documented relationship."""
    department_patients: dict[str, set[str]] = field(default_factory=dict)
    """Department name to patients it has care rows for."""

    def active(self, user: User, day: int) -> bool:
        date = self.hospital.start + dt.timedelta(days=day)
        return user.member.active_on(date)

    def shift_time(self, user: User, day: int) -> int:
        """A moment inside the user's shift on ``day`` (us since epoch)."""
        begin, length = SHIFTS[user.shift]
        offset = begin * HOUR + int(self.rng.random() * length * HOUR)
        return self.start_us + day * DAY + offset

    def in_shift(self, user: User, t: int) -> int:
        """``t`` if the user is on shift then, else a moment of the user's next shift:
        staff document and read charts when they work, not when the patient arrived."""
        begin, length = SHIFTS[user.shift]
        day = (t - self.start_us) // DAY
        for d in (day - 1, day, day + 1):
            lo = self.start_us + d * DAY + begin * HOUR
            if lo <= t < lo + length * HOUR:
                return t
        lo = self.start_us + day * DAY + begin * HOUR
        if lo < t:
            lo += DAY
        return lo + int(self.rng.random() * length * HOUR)

    def add(
        self,
        t: int,
        user: User,
        patient: str,
        rtype: str,
        label: str | None = None,
        action: str = "view",
        workstation: str | None = None,
    ) -> None:
        if label is None and patient == user.member.patient_id:
            return  # staff are not put on their own care; the hospital's draw may do so
        ws = workstation or user.workstations[int(self.rng.random() * len(user.workstations))]
        self.events.append((t, user.user_id, patient, action, rtype, ws, label))

    def chart(
        self,
        t: int,
        user: User,
        patient: str,
        n: int,
        label: str | None = None,
        spread: int = 20 * 60 * US,
    ) -> None:
        """``n`` accesses to one patient starting at ``t``: demographics first, then care."""
        rng = self.rng
        self.add(t, user, patient, "Patient", label)
        for _ in range(n - 1):
            t += int(rng.random() * spread / max(1, n))
            rtype = CLINICAL_TYPES[int(rng.random() * len(CLINICAL_TYPES))]
            action = "update" if rng.random() < 0.1 else "view"
            self.add(t, user, patient, rtype, label, action)

    def care(
        self,
        patient: str,
        user: str | None,
        department: str | None,
        start: int,
        end: int | None,
        kind: str,
    ) -> None:
        self.care_rows.append((patient, user, department, start, end, kind))
        if user is not None:
            self.care_pairs.add((user, patient))
        if department is not None:
            self.department_patients.setdefault(department, set()).add(patient)


def _us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * US)


def _shift(member: StaffMember, rng: random.Random) -> str:
    if member.role == "nurse":
        r = rng.random()
        return "day" if r < 0.6 else ("evening" if r < 0.85 else "night")
    if member.role == "physician":
        return "day" if rng.random() < 0.85 else "evening"
    return "office"


def build_base(hospital: Hospital, seed: int, params: TrafficParams) -> TrafficBase:
    """Benign traffic for ``hospital`` over its whole period."""
    rng = random.Random(seed * 7919 + 17)  # noqa: S311 - a simulation, not a secret
    names = {d.id: d.name for d in hospital.departments}
    codes = {d.id: d.code for d in hospital.departments}
    users: dict[str, User] = {}
    for member in hospital.staff:
        code = codes[member.department_id]
        count = 1 + int(rng.random() * 3)
        stations = tuple(
            f"ws-{code.lower()}-{1 + int(rng.random() * 40):02d}" for _ in range(count)
        )
        users[member.user_id] = User(
            member, names[member.department_id], _shift(member, rng), stations
        )
    base = TrafficBase(
        hospital=hospital,
        rng=rng,
        users=users,
        department_name=names,
        events=[],
        care_rows=[],
        auth_rows=[],
        start_us=_us(dt.datetime.combine(hospital.start, dt.time(0), tzinfo=dt.UTC)),
        days=hospital.days,
    )
    _documented_care(base)
    _lookalike_care(base, params)
    _encounter_traffic(base, params)
    _appointments_and_teams(base)
    _noise_and_logins(base, params)
    return base


def _documented_care(base: TrafficBase) -> None:
    h, names = base.hospital, base.department_name
    for e in h.encounters:
        for user in e.user_ids:
            base.care(
                e.patient_id, user, names[e.department_id], _us(e.start), _us(e.end), "encounter"
            )
    for a in h.appointments:
        base.care(
            a.patient_id, a.user_id, names[a.department_id], _us(a.start), _us(a.end), "appointment"
        )
    for team in h.care_teams:
        start = _us(dt.datetime.combine(team.start, dt.time(0), tzinfo=dt.UTC))
        end = (
            None
            if team.end is None
            else _us(dt.datetime.combine(team.end, dt.time(0), tzinfo=dt.UTC)) + DAY
        )
        for user in team.user_ids:
            base.care(team.patient_id, user, names[team.department_id], start, end, "care_team")


def _lookalike_care(base: TrafficBase, params: TrafficParams) -> None:
    """Staff who treat their relatives or colleagues, documented: must stay quiet."""
    h, rng = base.hospital, base.rng
    clinical = [u for u in base.users.values() if u.member.role in ("physician", "nurse")]
    for household in h.households:
        if not household.patient_ids:
            continue
        for user_id in household.staff_user_ids:
            user = base.users[user_id]
            if user not in clinical or rng.random() >= params.relatives_treated:
                continue
            relatives = [p for p in household.patient_ids if p != user.member.patient_id]
            if not relatives:
                continue
            patient = relatives[int(rng.random() * len(relatives))]
            day = int(rng.random() * base.days)
            if not base.active(user, day):
                continue
            t = base.shift_time(user, day)
            base.care(patient, user_id, user.department, t, t + 2 * HOUR, "encounter")
            base.chart(t + 10 * 60 * US, user, patient, 2 + int(rng.random() * 5))
    by_department: dict[str, list[User]] = {}
    for user in clinical:
        by_department.setdefault(user.department, []).append(user)
    for user in clinical:
        if user.member.patient_id is None or rng.random() >= 0.3:
            continue
        peers = [p for p in by_department.get(user.department, []) if p is not user]
        if not peers:
            continue
        doctor = peers[int(rng.random() * len(peers))]
        day = int(rng.random() * base.days)
        if not base.active(doctor, day):
            continue
        t = base.shift_time(doctor, day)
        base.care(
            user.member.patient_id, doctor.user_id, doctor.department, t, t + HOUR, "encounter"
        )
        base.chart(t + 5 * 60 * US, doctor, user.member.patient_id, 2 + int(rng.random() * 4))


def _pick(pool: list[User], base: TrafficBase, day: int) -> User | None:
    for _ in range(4):
        if not pool:
            return None
        user = pool[int(base.rng.random() * len(pool))]
        if base.active(user, day):
            return user
    return None


def _encounter_traffic(base: TrafficBase, params: TrafficParams) -> None:
    h, rng, names = base.hospital, base.rng, base.department_name
    pools: dict[tuple[str, str], list[User]] = {}
    by_role: dict[str, list[User]] = {}
    for user in base.users.values():
        pools.setdefault((user.department, user.member.role), []).append(user)
        by_role.setdefault(user.member.role, []).append(user)
    ed = h.department_by_code["ED"].name
    for e in h.encounters:
        start, end = _us(e.start), _us(e.end)
        day = (start - base.start_us) // DAY
        department = names[e.department_id]
        team = [base.users[u] for u in e.user_ids]
        if department == ed and rng.random() < params.btg_emergencies:
            # A genuine emergency: emergency access first, the encounter documented after.
            first = team[0]
            base.add(start - int(rng.random() * 40 * 60 * US), first, e.patient_id, BREAK_THE_GLASS)
        length = max(end - start, HOUR)
        stay_days = max(1, (end - start) // DAY)
        for user in team:
            for d in range(min(stay_days, 8)):
                t = base.in_shift(user, start + d * DAY + int(rng.random() * min(length, DAY)))
                base.chart(t, user, e.patient_id, 3 + int(rng.random() * 8))
            if rng.random() < 0.3:
                later = end + int((1 + rng.random() * 20) * DAY)
                day_later = (later - base.start_us) // DAY
                if day_later < base.days:
                    base.chart(base.shift_time(user, day_later), user, e.patient_id, 2)
            if rng.random() < params.print_rate:
                base.add(
                    end - int(rng.random() * HOUR),
                    user,
                    e.patient_id,
                    "DocumentReference",
                    action="print",
                )
        if rng.random() < params.colleague_rate:
            # On call or covering: a colleague of the ward, never documented on the encounter.
            pool = pools.get((department, "nurse"), []) + pools.get((department, "physician"), [])
            colleague = _pick([u for u in pool if u.user_id not in e.user_ids], base, day)
            if colleague is not None:
                t = base.in_shift(colleague, start + int(rng.random() * length))
                base.chart(t, colleague, e.patient_id, 1 + int(rng.random() * 3))
        if e.encounter_class == "inpatient":
            # Ward rounds: nurses on the ward open each inpatient's chart every day.
            ward = pools.get((department, "nurse"), [])
            for d in range(min(stay_days, 8)):
                for _ in range(2):
                    nurse = _pick(ward, base, day + d)
                    if nurse is not None and nurse.user_id not in e.user_ids:
                        t = base.shift_time(nurse, day + d)
                        if start - DAY < t < end + DAY:
                            base.chart(t, nurse, e.patient_id, 2 + int(rng.random() * 3))
        if rng.random() < 0.8:
            clerk = _pick(by_role.get("registration", []), base, day)
            if clerk is not None:
                t = start - int(rng.random() * 3 * HOUR)
                base.add(t, clerk, e.patient_id, "Patient")
                if rng.random() < 0.5:
                    base.add(t + 60 * US, clerk, e.patient_id, "Coverage", action="update")
        if rng.random() < 0.6:
            later_day = (end - base.start_us) // DAY + 1 + int(rng.random() * 30)
            biller = _pick(by_role.get("billing", []), base, min(later_day, base.days - 1))
            if biller is not None and later_day < base.days:
                t = base.shift_time(biller, later_day)
                base.add(t, biller, e.patient_id, "Encounter")
                base.add(t + 90 * US, biller, e.patient_id, "Claim", action="update")
        if e.encounter_class == "inpatient" and rng.random() < 0.9:
            later_day = (end - base.start_us) // DAY + 1 + int(rng.random() * 14)
            coder = _pick(by_role.get("him", []), base, min(later_day, base.days - 1))
            if coder is not None and later_day < base.days:
                base.chart(base.shift_time(coder, later_day), coder, e.patient_id, 3)


def _appointments_and_teams(base: TrafficBase) -> None:
    h, rng = base.hospital, base.rng
    for a in h.appointments:
        user = base.users[a.user_id]
        start = _us(a.start)
        day = (start - base.start_us) // DAY - int(rng.random() * 2)
        if 0 <= day < base.days and base.active(user, day) and rng.random() < 0.6:
            base.chart(base.shift_time(user, day), user, a.patient_id, 1 + int(rng.random() * 2))
    for team in h.care_teams:
        first = (team.start - h.start).days
        last = base.days if team.end is None else min(base.days, (team.end - h.start).days + 1)
        for user_id in team.user_ids:
            user = base.users[user_id]
            day = first + 3 + int(rng.random() * 10)
            while day < last:
                if base.active(user, day):
                    base.chart(base.shift_time(user, day), user, team.patient_id, 2)
                day += 7 + int(rng.random() * 14)


def _noise_and_logins(base: TrafficBase, params: TrafficParams) -> None:
    """Log-ins every working day, and the unexplained remainder of real traffic."""
    h, rng = base.hospital, base.rng
    patients = [p.patient_id for p in h.patients]
    for user in base.users.values():
        octets = (1 + int(rng.random() * 200), int(rng.random() * 250), 1 + int(rng.random() * 250))
        source = "10.{}.{}.{}".format(*octets)
        for day in range(base.days):
            if not base.active(user, day) or rng.random() < 2 / 7:
                continue
            t = base.shift_time(user, day)
            if rng.random() < 0.05:
                base.auth_rows.append((t - 60 * US, user.user_id, source, "failure", None))
            base.auth_rows.append((t, user.user_id, source, "success", None))
            if user.member.role in ("security_admin", "privacy_officer"):
                continue
            if rng.random() < params.noise_rate:
                patient = patients[int(rng.random() * len(patients))]
                base.chart(base.shift_time(user, day), user, patient, 1 + int(rng.random() * 2))


def frames(
    base: TrafficBase,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.Series]:
    """(access, staff, patients, care, auth, labels): access sorted by time, ``labels`` the
    injected instance id per access row (null: benign)."""
    h = base.hospital
    end_us = base.start_us + base.days * DAY
    # The hospital's own care never involves a user outside employment; traffic derived
    # from it (follow-ups, rounds) is dropped for such days, so every access by a
    # terminated user is an injected one.
    bounds = {
        user_id: (
            base.start_us + (u.member.hire_date - h.start).days * DAY,
            end_us
            if u.member.termination_date is None
            else base.start_us + (u.member.termination_date - h.start).days * DAY,
        )
        for user_id, u in base.users.items()
    }
    events = sorted(
        e
        for e in base.events
        if base.start_us <= e[0] < end_us
        and (e[6] is not None or bounds[e[1]][0] <= e[0] < bounds[e[1]][1])
    )
    columns: list[tuple[Any, ...]] = (
        list(zip(*events, strict=True)) if events else [() for _ in range(7)]
    )
    ts = pl.Series("timestamp", columns[0], dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    access = pl.DataFrame(
        {
            "timestamp": ts,
            "user_id": pl.Series(columns[1], dtype=pl.String),
            "patient_id": pl.Series(columns[2], dtype=pl.String),
            "action": pl.Series(columns[3], dtype=pl.String),
            "resource_type": pl.Series(columns[4], dtype=pl.String),
            "workstation": pl.Series(columns[5], dtype=pl.String),
        },
        schema=ACCESS,
    )
    labels = pl.Series("label", columns[6], dtype=pl.String)
    names = base.department_name
    staff = pl.DataFrame(
        {
            "user_id": [s.user_id for s in h.staff],
            "family_name": [s.family_name for s in h.staff],
            "given_name": [s.given_name for s in h.staff],
            "role": [s.role for s in h.staff],
            "department": [names[s.department_id] for s in h.staff],
            "address": [s.address for s in h.staff],
            "postal_code": [s.postal_code for s in h.staff],
            "hire_date": [s.hire_date for s in h.staff],
            "termination_date": [s.termination_date for s in h.staff],
            "patient_id": [s.patient_id for s in h.staff],
        },
        schema=STAFF,
    )
    patients = pl.DataFrame(
        {
            "patient_id": [p.patient_id for p in h.patients],
            "mrn": [p.mrn for p in h.patients],
            "family_name": [p.family_name for p in h.patients],
            "given_name": [p.given_name for p in h.patients],
            "birth_date": [p.birth_date for p in h.patients],
            "address": [p.address for p in h.patients],
            "postal_code": [p.postal_code for p in h.patients],
            "vip": [p.vip for p in h.patients],
        },
        schema=PATIENTS,
    )
    care_cols: list[tuple[Any, ...]] = (
        list(zip(*base.care_rows, strict=True)) if base.care_rows else [()] * 6
    )
    care = pl.DataFrame(
        dict(zip(CARE_COLUMNS, care_cols, strict=True)),
        schema={
            "patient_id": pl.String,
            "user_id": pl.String,
            "department": pl.String,
            "start": pl.Int64,
            "end": pl.Int64,
            "kind": pl.String,
        },
    ).with_columns(pl.col("start", "end").cast(pl.Datetime("us", "UTC")))
    care = care.select(list(CARE))
    auth_sorted = sorted(a for a in base.auth_rows if base.start_us <= a[0] < end_us)
    auth_cols: list[tuple[Any, ...]] = (
        list(zip(*auth_sorted, strict=True)) if auth_sorted else [()] * 5
    )
    auth = pl.DataFrame(
        {
            "timestamp": pl.Series(auth_cols[0], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "user_id": pl.Series(auth_cols[1], dtype=pl.String),
            "source": pl.Series(auth_cols[2], dtype=pl.String),
            "outcome": pl.Series(auth_cols[3], dtype=pl.String),
            "secret_hash": pl.Series(auth_cols[4], dtype=pl.String),
        },
        schema=AUTH,
    )
    return access, staff, patients, care, auth, labels
