"""A seeded synthetic hospital in a real vault, with the access services wired in.

Built once per test module (seeding takes a few seconds): SQLite, a real key file,
the relationship index observing every write, ``StoreAttributes`` behind
``CedarPolicy``, and one ``users`` row per staff member (role, department,
practitioner id) as the identity layer would hold them.  The clock stands in the
middle of the hospital's year so relationships of every kind exist.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from phiguard.access.engine import PolicyBundle
from phiguard.access.wiring import AccessServices, build_access
from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine, now_us
from phiguard.store.tables import users
from phiguard.synth import generate_hospital
from phiguard.synth.model import Hospital, StaffMember
from phiguard.synth.seed import seed_hospital

FAST_SCRYPT = {"n": 2**10, "r": 8, "p": 1}
SEED = 11


@dataclass
class World:
    vault: Vault
    access: AccessServices
    hospital: Hospital
    clock: FixedClock
    audit: ListAuditSink
    root: Path | None = None
    """Where the key file (and, under SQLite, the database) lives."""

    @property
    def system(self) -> Repository:
        return self.vault.repository(system_context())

    def ctx(
        self,
        staff: StaffMember | str,
        *,
        roles: frozenset[str] | None = None,
        purpose: str = "TREAT",
        scopes: frozenset[str] | None = None,
        launch_patient: str | None = None,
    ) -> AccessContext:
        uid = staff if isinstance(staff, str) else staff.user_id
        if roles is None:
            member = self.hospital.staff_by_user_id.get(uid)
            roles = frozenset({member.role}) if member else frozenset()
        return AccessContext(
            principal=Principal(id=uid, kind="user", roles=roles, scopes=scopes),
            purpose=purpose,
            launch_patient=launch_patient,
        )

    def repo(self, staff: StaffMember | str, **kw: Any) -> Repository:
        return self.vault.repository(self.ctx(staff, **kw))

    def add_user(
        self,
        user_id: str,
        roles: list[str],
        *,
        department: str | None = None,
        practitioner_id: str | None = None,
        status: str = "active",
    ) -> None:
        at = now_us(self.clock.now())
        with self.vault.engine.begin() as conn:
            conn.execute(
                insert(users).values(
                    user_id=user_id,
                    tenant="default",
                    display_name=user_id,
                    email=f"{user_id}@example.org",
                    practitioner_id=practitioner_id,
                    roles=json.dumps(roles),
                    department=department,
                    status=status,
                    password_hash="unused",
                    password_changed_at=at,
                    created_at=at,
                    updated_at=at,
                )
            )
        self.access.attributes.invalidate()


PASSPHRASE = "world passphrase, long enough"


def build_world(
    root: Path, *, patients: int = 60, seed: int = SEED, url: str | None = None
) -> World:
    """A seeded hospital in SQLite under ``root`` (or in the database at ``url``)."""
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url or f"sqlite:///{root / 'phiguard.db'}")
    migrate.upgrade(engine)
    keyfile = LocalKeyFile.create(root / "kek.json", PASSPHRASE, scrypt_params=FAST_SCRYPT)
    hospital = generate_hospital(seed=seed, patients=patients)
    clock = FixedClock(
        dt.datetime.combine(
            hospital.start + dt.timedelta(days=hospital.days // 2), dt.time(12), tzinfo=dt.UTC
        )
    )
    audit = ListAuditSink()
    vault = Vault(engine, Keyring(engine, keyfile, clock=clock), clock=clock, audit=audit)
    access = build_access(vault)
    variant = os.environ.get("PHIGUARD_TEST_POLICY_DIR")
    if variant:  # run the security tests against another policy set (see docs/access.md)
        access.engine.load(PolicyBundle.from_directory(Path(variant)))
    seed_hospital(vault, seed=seed, patients=patients)
    world = World(vault, access, hospital, clock, audit, root)
    today = clock.now().date()
    for s in hospital.staff:
        world.add_user(
            s.user_id,
            [s.role],
            department=s.department_id,
            practitioner_id=s.practitioner_id,
            status="active" if s.active_on(today) else "terminated",
        )
    audit.events.clear()
    return world
