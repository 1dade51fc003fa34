"""Injected misuse with a ground-truth manifest.

Each scenario picks a perpetrator and targets from the hospital's real social
structure (households, streets, employee-patients, VIPs, terminated staff) and adds
labelled accesses to the benign traffic.  Intensities come from ``ScenarioParams``
ranges; the evaluation tunes on one parameter set and reports on another
(``HELD_OUT_PARAMS``) so the detectors cannot be fitted to one set of numbers.
Perpetrators are distinct users, so each instance is judged by its own case.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from phiguard.monitor.eval.traffic import DAY, HOUR, US, TrafficBase, User

KINDS: Final = (
    "family",
    "coworker",
    "neighbour",
    "self",
    "vip-surge",
    "terminated",
    "after-hours",
    "mrn-browsing",
    "low-and-slow",
    "bulk-export",
    "compromised",
)

Range = tuple[int, int]


@dataclass(frozen=True)
class ScenarioParams:
    """Ranges (inclusive) scenarios draw their intensity from."""

    instances: int = 2
    family_records: Range = (2, 6)
    family_patients: Range = (1, 2)
    coworker_records: Range = (2, 6)
    neighbour_patients: Range = (1, 3)
    neighbour_records: Range = (2, 4)
    self_records: Range = (1, 4)
    vip_users: Range = (4, 8)
    vip_hours: Range = (4, 16)
    terminated_patients: Range = (3, 10)
    after_hours_patients: Range = (1, 3)
    after_hours_hour: Range = (1, 4)
    mrn_run: Range = (8, 20)
    slow_patients: Range = (8, 14)
    slow_gap_days: Range = (3, 7)
    bulk_patients: Range = (40, 120)
    compromise_factor: Range = (4, 8)


TUNING_PARAMS: Final = ScenarioParams()
HELD_OUT_PARAMS: Final = ScenarioParams(
    family_records=(1, 4),
    family_patients=(1, 3),
    coworker_records=(1, 4),
    neighbour_patients=(2, 4),
    neighbour_records=(1, 3),
    self_records=(1, 2),
    vip_users=(4, 10),
    vip_hours=(2, 20),
    terminated_patients=(1, 6),
    after_hours_patients=(1, 2),
    after_hours_hour=(0, 5),
    mrn_run=(6, 30),
    slow_patients=(7, 18),
    slow_gap_days=(2, 9),
    bulk_patients=(30, 200),
    compromise_factor=(3, 10),
)


@dataclass(frozen=True)
class Instance:
    """One injected misuse: who, to whom, from when."""

    id: str
    kind: str
    user_id: str
    patient_ids: tuple[str, ...]
    first_event_at: dt.datetime


class Injector:
    """Adds scenario instances to ``base``; ``instances`` is the manifest."""

    def __init__(self, base: TrafficBase, params: ScenarioParams, first_day: int) -> None:
        self.base = base
        self.rng = base.rng
        self.params = params
        self.first_day = first_day
        self.used: set[str] = set()
        self.instances: list[Instance] = []
        h = base.hospital
        self.patients = [p.patient_id for p in h.patients]

    # -- helpers ------------------------------------------------------------------
    def between(self, bounds: Range) -> int:
        lo, hi = bounds
        return lo + int(self.rng.random() * (hi - lo + 1))

    def day(self, lo: int | None = None, hi: int | None = None) -> int:
        lo = self.first_day if lo is None else max(lo, self.first_day)
        hi = self.base.days - 1 if hi is None else min(hi, self.base.days - 1)
        return lo + int(self.rng.random() * max(1, hi - lo + 1))

    def free(self, users: list[User], day: int | None = None) -> list[User]:
        return [
            u
            for u in users
            if u.user_id not in self.used and (day is None or self.base.active(u, day))
        ]

    def clinical(self) -> list[User]:
        return [
            u
            for u in self.base.users.values()
            if u.member.role in ("physician", "nurse") and u.member.termination_date is None
        ]

    def choose(self, items: list[User]) -> User | None:
        return items[int(self.rng.random() * len(items))] if items else None

    def unrelated(self, user: User, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            p = self.patients[int(self.rng.random() * len(self.patients))]
            if (user.user_id, p) not in self.base.care_pairs and p not in out:
                out.append(p)
        return out

    def record(self, kind: str, user: User, patients: list[str], first: int) -> str:
        iid = f"{kind}-{len(self.instances) + 1:03d}"
        self.used.add(user.user_id)
        self.instances.append(
            Instance(
                iid,
                kind,
                user.user_id,
                tuple(patients),
                dt.datetime.fromtimestamp(first / US, tz=dt.UTC),
            )
        )
        return iid

    def snoop(
        self,
        user: User,
        patients: list[str],
        records: int,
        day: int,
        kind: str,
        hour: int | None = None,
    ) -> None:
        base = self.base
        times = []
        for patient in patients:
            if hour is None:
                t = base.shift_time(user, day)
            else:
                t = base.start_us + day * DAY + hour * HOUR + int(self.rng.random() * HOUR)
            times.append((t, patient))
        first = min(t for t, _ in times)
        iid = self.record(kind, user, patients, first)
        for t, patient in times:
            base.chart(t, user, patient, records, iid)

    # -- scenarios ----------------------------------------------------------------
    def family(self) -> None:
        h, p = self.base.hospital, self.params
        options = []
        for household in h.households:
            for user_id in household.staff_user_ids:
                user = self.base.users[user_id]
                relatives = [
                    pid
                    for pid in household.patient_ids
                    if pid != user.member.patient_id
                    and h.patient_by_id[pid].family_name == user.member.family_name
                    and (user_id, pid) not in self.base.care_pairs
                ]
                if relatives and user.member.termination_date is None:
                    options.append((user, relatives))
        options = [(u, r) for u, r in options if u.user_id not in self.used]
        if not options:
            return
        user, relatives = options[int(self.rng.random() * len(options))]
        count = min(len(relatives), self.between(p.family_patients))
        self.snoop(user, relatives[:count], self.between(p.family_records), self.day(), "family")

    def coworker(self) -> None:
        p = self.params
        users = self.clinical()
        for _ in range(50):
            user = self.choose(self.free(users))
            if user is None:
                return
            targets = [
                u.member.patient_id
                for u in users
                if u.department == user.department
                and u is not user
                and u.member.patient_id is not None
                and (user.user_id, u.member.patient_id) not in self.base.care_pairs
            ]
            if targets:
                target = targets[int(self.rng.random() * len(targets))]
                assert target is not None
                self.snoop(user, [target], self.between(p.coworker_records), self.day(), "coworker")
                return

    def neighbour(self) -> None:
        h, p = self.base.hospital, self.params
        for _ in range(50):
            user = self.choose(self.free(self.clinical()))
            if user is None:
                return
            home = h.household_by_id[user.member.household_id]
            near = [
                pid
                for other in h.neighbours(home.id)
                for pid in other.patient_ids
                if (user.user_id, pid) not in self.base.care_pairs
            ]
            if near:
                self.rng.shuffle(near)
                count = min(len(near), self.between(p.neighbour_patients))
                self.snoop(
                    user, near[:count], self.between(p.neighbour_records), self.day(), "neighbour"
                )
                return

    def self_access(self) -> None:
        users = [u for u in self.free(self.clinical()) if u.member.patient_id is not None]
        user = self.choose(users)
        if user is None or user.member.patient_id is None:
            return
        self.snoop(
            user,
            [user.member.patient_id],
            self.between(self.params.self_records),
            self.day(),
            "self",
        )

    def vip_surge(self) -> None:
        h, p = self.base.hospital, self.params
        vips = [q.patient_id for q in h.patients if q.vip]
        if not vips:
            return
        vip = vips[int(self.rng.random() * len(vips))]
        day = self.day()
        crowd = [
            u
            for u in self.free(self.clinical(), day)
            if (u.user_id, vip) not in self.base.care_pairs
        ]
        self.rng.shuffle(crowd)
        hours = self.between(p.vip_hours)
        start = self.base.start_us + day * DAY + 8 * HOUR
        for user in crowd[: self.between(p.vip_users)]:
            t = start + int(self.rng.random() * hours * HOUR)
            iid = self.record("vip-surge", user, [vip], t)
            self.base.chart(t, user, vip, 1 + int(self.rng.random() * 3), iid)

    def terminated(self) -> None:
        p = self.params
        base = self.base
        leavers = [
            u
            for u in base.users.values()
            if u.user_id not in self.used
            and u.member.termination_date is not None
            and self.first_day
            <= (u.member.termination_date - base.hospital.start).days
            < base.days - 2
        ]
        user = self.choose(leavers)
        if user is None or user.member.termination_date is None:
            return
        gone = (user.member.termination_date - base.hospital.start).days
        day = self.day(gone, gone + 20)
        patients = self.unrelated(user, self.between(p.terminated_patients))
        self.snoop(user, patients, 2, day, "terminated")

    def after_hours(self) -> None:
        p = self.params
        users = [u for u in self.free(self.clinical()) if u.shift in ("day", "office")]
        user = self.choose(users)
        if user is None:
            return
        patients = self.unrelated(user, self.between(p.after_hours_patients))
        self.snoop(
            user,
            patients,
            2 + int(self.rng.random() * 3),
            self.day(),
            "after-hours",
            hour=self.between(p.after_hours_hour),
        )

    def mrn_browsing(self) -> None:
        base, p = self.base, self.params
        user = self.choose(self.free(self.clinical()))
        if user is None:
            return
        run = self.between(p.mrn_run)
        start_index = int(self.rng.random() * max(1, len(self.patients) - run))
        patients = [
            q
            for q in self.patients[start_index : start_index + run]
            if (user.user_id, q) not in base.care_pairs
        ]
        t = base.shift_time(user, self.day())
        iid = self.record("mrn-browsing", user, patients, t)
        for q in patients:
            base.add(t, user, q, "Patient", iid)
            t += int((20 + self.rng.random() * 100) * US)

    def known_people(self, user: User) -> list[str]:
        """Patients a user may know of without treating them: people on their street,
        with their surname, colleagues in other departments, the famous."""
        h = self.base.hospital
        home = h.household_by_id[user.member.household_id]
        pool = [pid for other in h.neighbours(home.id) for pid in other.patient_ids]
        pool += [
            q.patient_id
            for q in h.patients
            if q.family_name == user.member.family_name and q.household_id != home.id
        ]
        pool += [
            u.member.patient_id
            for u in self.base.users.values()
            if u.member.patient_id is not None and u.department != user.department
        ]
        pool += [q.patient_id for q in h.patients if q.vip]
        return sorted(
            {
                pid
                for pid in pool
                if pid is not None
                and pid not in home.patient_ids
                and (user.user_id, pid) not in self.base.care_pairs
            }
        )

    def low_and_slow(self) -> None:
        """One record every few days for weeks, each below any single alert."""
        base, p = self.base, self.params
        user = self.choose(self.free(self.clinical()))
        if user is None:
            return
        count = self.between(p.slow_patients)
        known = self.known_people(user)
        self.rng.shuffle(known)
        patients = known[: count // 2] + self.unrelated(user, count - min(len(known), count // 2))
        day = self.day(self.first_day, self.first_day + 3)
        first = base.shift_time(user, day)
        iid = self.record("low-and-slow", user, patients, first)
        t = first
        for q in patients:
            if day >= base.days:
                break
            base.chart(t, user, q, 1 + int(self.rng.random() * 3), iid)
            day += self.between(p.slow_gap_days)
            t = base.shift_time(user, day)

    def bulk_export(self) -> None:
        base, p = self.base, self.params
        user = self.choose(self.free(self.clinical()))
        if user is None:
            return
        patients = self.unrelated(user, self.between(p.bulk_patients))
        t = base.shift_time(user, self.day())
        iid = self.record("bulk-export", user, patients, t)
        for q in patients:
            base.add(t, user, q, "Patient", iid, action="export")
            base.add(t + US, user, q, "DocumentReference", iid, action="export")
            t += int((5 + self.rng.random() * 40) * US)

    def compromised(self) -> None:
        base, p = self.base, self.params
        users = [u for u in self.free(self.clinical()) if u.shift != "night"]
        user = self.choose(users)
        if user is None:
            return
        day = self.day()
        usual = sum(1 for e in base.events if e[1] == user.user_id) / max(1, base.days) / 4
        count = max(12, int(usual * self.between(p.compromise_factor)))
        patients = self.unrelated(user, count)
        t = base.start_us + day * DAY + (1 + int(self.rng.random() * 3)) * HOUR
        source = f"203.0.113.{1 + int(self.rng.random() * 250)}"
        for i in range(12):
            base.auth_rows.append((t - (15 - i) * 30 * US, user.user_id, source, "failure", None))
        base.auth_rows.append((t - 30 * US, user.user_id, source, "success", None))
        iid = self.record("compromised", user, patients, t)
        station = f"ws-ext-{1 + int(self.rng.random() * 90):02d}"
        for q in patients:
            base.add(t, user, q, "Patient", iid, workstation=station)
            base.add(t + 5 * US, user, q, "Condition", iid, workstation=station)
            t += int((30 + self.rng.random() * 120) * US)

    def run(self, kinds: tuple[str, ...]) -> list[Instance]:
        table: dict[str, Callable[[], None]] = {
            "family": self.family,
            "coworker": self.coworker,
            "neighbour": self.neighbour,
            "self": self.self_access,
            "vip-surge": self.vip_surge,
            "terminated": self.terminated,
            "after-hours": self.after_hours,
            "mrn-browsing": self.mrn_browsing,
            "low-and-slow": self.low_and_slow,
            "bulk-export": self.bulk_export,
            "compromised": self.compromised,
        }
        for _ in range(self.params.instances):
            for kind in kinds:
                table[kind]()
        return self.instances
