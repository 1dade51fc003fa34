"""Properties of the enforced system (real repository, store-backed attributes, shipped
policies) over arbitrary users, role combinations, purposes and searches:

- search never returns what read would refuse (and returns it as read shows it);
- nothing labelled restricted reaches a caller without a direct care relationship
  (ground truth from the synthetic hospital), the privacy-officer role, or a running
  break-the-glass grant for that patient used with an emergency purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phiguard.access.attributes import HospitalAttributes
from phiguard.access.labels import security_labels
from phiguard.errors import AccessDenied, NotFound
from phiguard.records.context import Principal
from phiguard.records.repository import Repository, StoredResource
from phiguard.roles import ROLES

from .oracle import RESTRICTED
from .world import World, build_world

# Weighted towards the cases that matter: clinicians treating, patients admitted with
# restricted records (a department match must not open those).
PURPOSES = ("TREAT", "TREAT", "TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "HRESCH")
ROLE_CHOICES = (*ROLES, "physician", "physician", "nurse", "nurse")
TYPES = ("Condition", "Observation", "Encounter", "Patient", "CareTeam")
REASON = "Emergency admission, patient cannot give a history"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("properties"), patients=150)
    yield w
    w.vault.engine.dispose()


_made: set[str] = set()
_interesting: dict[int, list[str]] = {}


def _patient(world: World, index: int) -> str:
    """Half the time one of the patients who are admitted and have restricted records."""
    key = id(world)
    if key not in _interesting:
        h, attrs = world.hospital, world.access.attributes
        sensitive = {c.patient_id for c in h.conditions if c.sensitivity}
        sensitive |= {o.patient_id for o in h.observations if o.sensitivity}
        _interesting[key] = sorted(p for p in sensitive if attrs.patient(p).department)
    pool = (
        _interesting[key]
        if index % 2 and _interesting[key]
        else [p.patient_id for p in world.hospital.patients]
    )
    return pool[(index // 2) % len(pool)]


def _user(
    world: World,
    staff_index: int,
    roles: frozenset[str],
    patient: str = "",
    colleague: bool = False,
) -> tuple[str, str]:
    """A user who is staff member ``staff_index`` (practitioner, department) with ``roles``;
    with ``colleague``, one from the department the patient is admitted to (the case a
    department match must not open restricted records for)."""
    active = [s for s in world.hospital.staff if s.active_on(world.clock.now().date())]
    admitted = world.access.attributes.patient(patient).department if colleague else ""
    if admitted:
        # A newcomer to the ward: same department, no encounter or team with anyone.
        uid = f"new-{admitted[:8]}-" + "-".join(sorted(r[:4] for r in roles))
        if uid not in _made:
            world.add_user(uid, sorted(roles), department=admitted)
            _made.add(uid)
        return uid, uid
    staff = active[staff_index % len(active)]
    uid = f"p{staff.user_id}-" + "-".join(sorted(r[:4] for r in roles))
    if uid not in _made:
        world.add_user(
            uid,
            sorted(roles),
            department=staff.department_id,
            practitioner_id=staff.practitioner_id,
        )
        _made.add(uid)
    return uid, staff.user_id


SCENARIO = dict(
    staff_index=st.integers(0, 500),
    roles=st.frozensets(st.sampled_from(ROLE_CHOICES), min_size=1, max_size=2),
    purpose=st.sampled_from(PURPOSES),
    rtype=st.sampled_from(TYPES),
    patient_index=st.integers(0, 299),
    by_patient=st.booleans(),
    declare=st.booleans(),
    colleague=st.booleans(),
)


def _scenario(
    world: World,
    staff_index: int,
    roles: frozenset[str],
    purpose: str,
    rtype: str,
    patient_index: int,
    by_patient: bool,
    declare: bool,
    colleague: bool,
) -> tuple[str, str, str, Repository, list[StoredResource] | None]:
    """The patient, the user and their staff id, their repository, and what their
    search found (None when the type itself is refused)."""
    patient = _patient(world, patient_index)
    uid, staff_id = _user(world, staff_index, roles, patient, colleague)
    if declare and roles & {"physician", "nurse"}:
        world.access.break_glass.declare(uid, patient, REASON, reauthenticated=True)
    repo = world.repo(uid, roles=roles, purpose=purpose)
    items = [("patient", patient)] if by_patient and rtype != "Patient" else [("_count", "60")]
    try:
        return patient, uid, staff_id, repo, repo.search(rtype, items).entries
    except AccessDenied:
        return patient, uid, staff_id, repo, None


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(**SCENARIO)  # type: ignore[arg-type]
def test_search_never_returns_what_read_refuses(
    world: World,
    staff_index: int,
    roles: frozenset[str],
    purpose: str,
    rtype: str,
    patient_index: int,
    by_patient: bool,
    declare: bool,
    colleague: bool,
) -> None:
    _patient_id, _uid, _staff, repo, found = _scenario(
        world, staff_index, roles, purpose, rtype, patient_index, by_patient, declare, colleague
    )
    if found is None:
        return  # the type itself is out of reach: nothing returned
    for s in found:
        shown = repo.read(s.resource_type, s.id)
        assert shown.resource == s.resource


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(**SCENARIO)  # type: ignore[arg-type]
def test_restricted_labels_need_direct_care_privacy_office_or_break_glass(
    world: World,
    staff_index: int,
    roles: frozenset[str],
    purpose: str,
    rtype: str,
    patient_index: int,
    by_patient: bool,
    declare: bool,
    colleague: bool,
) -> None:
    patient, uid, staff_id, repo, searched = _scenario(
        world, staff_index, roles, purpose, rtype, patient_index, by_patient, declare, colleague
    )
    found = searched or []  # None: the type itself is out of reach
    own = [("patient", patient)] if rtype != "Patient" else [("_id", patient)]
    candidates = world.system.search(rtype, own).entries
    for c in candidates[:30]:  # and each of the patient's resources read directly
        with contextlib.suppress(NotFound):
            found.append(repo.read(c.resource_type, c.id))
    truth = HospitalAttributes(world.hospital, world.clock)
    who = Principal(id=staff_id, kind="user")
    now = world.clock.now()
    for s in found:
        if not (security_labels(s.resource) & RESTRICTED):
            continue
        pid = (
            s.id if s.resource_type == "Patient" else (s.resource or {})["subject"]["reference"][8:]
        )
        rel = truth.relationship(who, pid)
        grant = world.access.break_glass.active_until(uid, pid, now) is not None
        assert (
            rel.on_care_team
            or rel.recent_encounter
            or "privacy_officer" in roles
            or (grant and purpose in ("BTG", "ETREAT"))
        ), (uid, sorted(roles), purpose, s.resource_type, s.id)
