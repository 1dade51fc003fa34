"""The relationship index: what access decisions need to know about a patient, kept sealed.

Deciding "is this nurse caring for this patient?" from the FHIR resources themselves
would mean decrypting every CareTeam, Encounter and Appointment of the patient on
every request.  Instead the repository hands every write of those types (and of
EpisodeOfCare, Consent and the Patient itself) to ``RelationshipIndex.written``,
which reduces the resource to the few facts the policies use (members, department,
period, status, flags, consent denials) and stores them in ``access_facts``:

- one row per source resource, keyed by ``HMAC(source type/id)``, with
  ``HMAC(patient id)`` as the look-up key (blind-index keys, so nobody without the
  key can join a row to a resource, a patient or a practitioner);
- the facts themselves sealed with the patient's own data key, bound to the tenant,
  the source key and the patient's compartment, so rows cannot be moved between
  patients and crypto-shredding the patient destroys them with the rest.

What the table reveals, by design: how many indexed resources each (hashed) patient
has, and when rows change; see docs/access.md.  The index is derived data: a row
that no longer opens (after a data-key rotation destroyed the key version that
sealed it) is rebuilt from the patient's resources on the spot, and ``rebuild_all``
re-derives everything.

PractitionerRole resources (staff directory, not PHI) go to a plain table mapping a
role id to its practitioner and department, so a participant named by role matches
the user behind it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, delete, insert, select

from phiguard.crypto.envelope import aad
from phiguard.errors import CryptoError, InvalidSearch, KeyShreddedError
from phiguard.records.compartment import patient_of
from phiguard.records.hooks import Written
from phiguard.records.search import parse_date
from phiguard.store.engine import now_us
from phiguard.store.tables import access_facts, access_practitioner_roles, resource_heads, resources

from .labels import has_flag

if TYPE_CHECKING:
    from phiguard.records.vault import Vault

INDEXED: Final[frozenset[str]] = frozenset(
    {"Patient", "CareTeam", "Encounter", "Appointment", "EpisodeOfCare", "Consent"}
)
"""Resource types whose writes update ``access_facts``."""

_PATIENT_PARAM: Final = "access.patient"
_SOURCE_PARAM: Final = "access.source"
_AAD_KIND: Final = "access-facts"

Fact = dict[str, Any]


def _refs(node: Any, *path: str) -> list[str]:
    """``reference`` strings found under ``path`` (lists are walked)."""
    items = [node]
    for step in path:
        nxt: list[Any] = []
        for item in items:
            if isinstance(item, dict) and step in item:
                value = item[step]
                nxt.extend(value if isinstance(value, list) else [value])
        items = nxt
    return [
        str(i["reference"])
        for i in items
        if isinstance(i, dict) and isinstance(i.get("reference"), str)
    ]


def _instants(start: Any, end: Any) -> tuple[int | None, int | None]:
    """A FHIR period as [start, end) in epoch microseconds (a date-only end lasts to the
    end of its day), parsed once at write time so decisions never parse dates."""
    lo = hi = None
    try:
        if isinstance(start, str):
            lo = now_us(parse_date(start).start)
        if isinstance(end, str):
            hi = now_us(parse_date(end).end)
    except InvalidSearch:
        return None, None
    return lo, hi


def _period(node: Any) -> tuple[int | None, int | None]:
    if not isinstance(node, dict):
        return None, None
    return _instants(node.get("start"), node.get("end"))


def _people(refs: Iterable[str]) -> list[str]:
    return sorted({r for r in refs if r.startswith(("Practitioner/", "PractitionerRole/"))})


def _orgs(refs: Iterable[str]) -> list[str]:
    return sorted({r.split("/", 1)[1] for r in refs if r.startswith("Organization/")})


def _deny_rules(provision: Any, inherited: str | None = None) -> list[Fact]:
    """Deny provisions of a Consent, nested ones included (a deny inside a permit)."""
    if not isinstance(provision, dict):
        return []
    kind = provision.get("type") or inherited
    out: list[Fact] = []
    if kind == "deny":
        start, end = _period(provision.get("period"))
        purposes = sorted(
            {
                str(c["code"])
                for c in provision.get("purpose") or []
                if isinstance(c, dict) and isinstance(c.get("code"), str)
            }
        )
        out.append(
            {
                "a": sorted(set(_refs(provision, "actor", "reference"))),
                "p": purposes,
                "b": start,
                "e": end,
            }
        )
    for child in provision.get("provision") or []:
        out.extend(_deny_rules(child))
    return out


def facts_of(resource: dict[str, Any]) -> Fact | None:
    """The access facts of one indexed resource, or None if it carries none."""
    rtype = resource.get("resourceType")
    status = str(resource.get("status") or "")
    if rtype == "Patient":
        return {
            "t": "Patient",
            "vip": has_flag(resource, "vip"),
            "emp": has_flag(resource, "employee"),
        }
    if rtype == "CareTeam":
        start, end = _period(resource.get("period"))
        members = _refs(resource, "participant", "member")
        orgs = _refs(resource, "participant", "onBehalfOf") + _refs(
            resource, "managingOrganization"
        )
        return {
            "t": rtype,
            "s": status,
            "m": _people(members),
            "o": _orgs(orgs),
            "b": start,
            "e": end,
        }
    if rtype == "Encounter":
        start, end = _period(resource.get("period"))
        members = _refs(resource, "participant", "individual")
        orgs = _refs(resource, "serviceProvider")
        return {
            "t": rtype,
            "s": status,
            "m": _people(members),
            "o": _orgs(orgs),
            "b": start,
            "e": end,
        }
    if rtype == "Appointment":
        actors = _refs(resource, "participant", "actor")
        start, end = _instants(resource.get("start"), resource.get("end"))
        return {
            "t": rtype,
            "s": status,
            "m": _people(actors),
            "o": _orgs(_refs(resource, "supportingInformation")),
            "b": start,
            "e": end,
        }
    if rtype == "EpisodeOfCare":
        start, end = _period(resource.get("period"))
        members = _refs(resource, "careManager") + _refs(resource, "team")
        return {
            "t": rtype,
            "s": status,
            "m": _people(members),
            "o": _orgs(_refs(resource, "managingOrganization")),
            "b": start,
            "e": end,
        }
    if rtype == "Consent":
        start, end = _period((resource.get("provision") or {}).get("period"))
        return {
            "t": rtype,
            "s": status,
            "deny": _deny_rules(resource.get("provision")),
            "b": start,
            "e": end,
        }
    return None


class RelationshipIndex:
    """Maintains and reads ``access_facts`` for one vault (a ``WriteObserver``)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.tenant = vault.tenant
        self._listeners: list[Any] = []

    # -- keys --------------------------------------------------------------------------
    def patient_key(self, patient_id: str) -> bytes:
        return self.vault.indexer.raw_token(_PATIENT_PARAM, patient_id)

    def source_key(self, rtype: str, rid: str) -> bytes:
        return self.vault.indexer.raw_token(_SOURCE_PARAM, f"{rtype}/{rid}")

    def _aad(self, source_key: bytes, compartment: str) -> bytes:
        return aad(self.tenant, _AAD_KIND, source_key, compartment)

    def on_change(self, listener: Any) -> None:
        """``listener(patient_ids)`` after rows of those patients were rewritten."""
        self._listeners.append(listener)

    # -- writing -----------------------------------------------------------------------
    def written(self, conn: Connection, items: Sequence[Written]) -> None:
        """Bring the index up to date with resources written in ``conn``'s transaction.

        Batched like the repository's own bulk path: one delete per 500 sources and one
        multi-row insert, so seeding a hospital does not pay a round trip per resource.
        """
        touched: set[str] = set()
        indexed = [i for i in items if i.resource_type in INDEXED]
        for item in items:
            if item.resource_type == "PractitionerRole":
                self._practitioner_role(conn, item)
        if indexed:
            self._write_many(conn, indexed, touched)
        if touched:
            for listener in self._listeners:
                listener(touched)

    def _write_many(self, conn: Connection, items: Sequence[Written], touched: set[str]) -> None:
        sources = [self.source_key(i.resource_type, i.id) for i in items]
        c = access_facts.c
        for n in range(0, len(sources), 500):
            conn.execute(
                delete(access_facts).where(
                    c.tenant == self.tenant, c.source_key.in_(sources[n : n + 500])
                )
            )
        rows = []
        for item, source in zip(items, sources, strict=True):
            touched.update(item.previous_patients)
            if item.compartment.startswith("Patient/"):
                touched.add(item.compartment.removeprefix("Patient/"))
            if item.resource is None:
                continue
            patient_id = patient_of(item.resource)
            fact = facts_of(item.resource)
            if patient_id is None or fact is None:
                continue
            compartment = f"Patient/{patient_id}"
            version, body = self.vault.cipher.seal(
                compartment,
                json.dumps(fact, separators=(",", ":")).encode(),
                self._aad(source, compartment),
                conn,
            )
            rows.append(
                {
                    "tenant": self.tenant,
                    "source_key": source,
                    "patient_key": self.patient_key(patient_id),
                    "dek_version": version,
                    "body": body,
                }
            )
            touched.add(patient_id)
        if rows:
            conn.execute(insert(access_facts), rows)

    def _write(self, conn: Connection, item: Written) -> set[str]:
        touched: set[str] = set()
        self._write_many(conn, [item], touched)
        return touched

    def _practitioner_role(self, conn: Connection, item: Written) -> None:
        t = access_practitioner_roles.c
        conn.execute(
            delete(access_practitioner_roles).where(t.tenant == self.tenant, t.role_id == item.id)
        )
        resource = item.resource
        if resource is None:
            return
        practitioner = [
            r.split("/", 1)[1]
            for r in _refs(resource, "practitioner")
            if r.startswith("Practitioner/")
        ]
        if not practitioner:
            return
        orgs = _orgs(_refs(resource, "organization"))
        conn.execute(
            insert(access_practitioner_roles).values(
                tenant=self.tenant,
                role_id=item.id,
                practitioner_id=practitioner[0],
                organization_id=orgs[0] if orgs else None,
                active=resource.get("active") is not False,
            )
        )

    # -- reading -----------------------------------------------------------------------
    def load(self, patient_ids: Sequence[str]) -> dict[str, list[Fact]]:
        """The facts of each patient (one query for all); rebuilt where a row fails to open."""
        keys = {self.patient_key(p): p for p in patient_ids}
        found: dict[str, list[Fact]] = {p: [] for p in patient_ids}
        broken: set[str] = set()
        shredded: set[str] = set()
        key_list = list(keys)
        c = access_facts.c
        with self.vault.engine.connect() as conn:
            for i in range(0, len(key_list), 500):
                rows = conn.execute(
                    select(c.source_key, c.patient_key, c.dek_version, c.body).where(
                        c.tenant == self.tenant, c.patient_key.in_(key_list[i : i + 500])
                    )
                ).all()
                for row in rows:
                    pid = keys[bytes(row.patient_key)]
                    if pid in broken or pid in shredded:
                        continue
                    compartment = f"Patient/{pid}"
                    try:
                        raw = self.vault.cipher.open(
                            compartment,
                            int(row.dek_version),
                            bytes(row.body),
                            self._aad(bytes(row.source_key), compartment),
                            "access index",
                            conn,
                        )
                    except KeyShreddedError:
                        shredded.add(pid)
                        continue
                    except CryptoError:
                        broken.add(pid)
                        continue
                    found[pid].append(json.loads(raw))
        for pid in shredded:
            found[pid] = []
        for pid in broken:
            found[pid] = self.rebuild_patient(pid)
        return found

    def practitioner_roles(self, practitioner_id: str) -> list[tuple[str, str | None, bool]]:
        """(role id, department organization id, active) of one practitioner."""
        t = access_practitioner_roles.c
        with self.vault.engine.connect() as conn:
            rows = conn.execute(
                select(t.role_id, t.organization_id, t.active).where(
                    t.tenant == self.tenant, t.practitioner_id == practitioner_id
                )
            ).all()
        return [(str(r.role_id), r.organization_id, bool(r.active)) for r in rows]

    # -- rebuilding --------------------------------------------------------------------
    def rebuild_patient(self, patient_id: str) -> list[Fact]:
        """Re-derive one patient's rows from their current resources; returns the facts."""
        compartment = f"Patient/{patient_id}"
        h, r = resource_heads.c, resources.c
        out: list[Fact] = []
        with self.vault.engine.begin() as conn:
            if self.vault.keyring.is_shredded(compartment, conn):
                conn.execute(
                    delete(access_facts).where(
                        access_facts.c.tenant == self.tenant,
                        access_facts.c.patient_key == self.patient_key(patient_id),
                    )
                )
                return []
            conn.execute(
                delete(access_facts).where(
                    access_facts.c.tenant == self.tenant,
                    access_facts.c.patient_key == self.patient_key(patient_id),
                )
            )
            rows = conn.execute(
                select(r.rtype, r.rid, r.version, r.dek_version, r.body)
                .select_from(
                    resource_heads.join(
                        resources,
                        (r.tenant == h.tenant)
                        & (r.rtype == h.rtype)
                        & (r.rid == h.rid)
                        & (r.version == h.version),
                    )
                )
                .where(
                    h.tenant == self.tenant,
                    h.compartment == compartment,
                    h.deleted.is_(False),
                    h.rtype.in_(sorted(INDEXED)),
                )
            ).all()
            items = []
            for row in rows:
                raw = self.vault.cipher.open(
                    compartment,
                    int(row.dek_version),
                    bytes(row.body),
                    aad(self.tenant, row.rtype, row.rid, int(row.version), compartment),
                    f"{row.rtype}/{row.rid}",
                    conn,
                )
                resource = json.loads(raw)
                items.append(Written(str(row.rtype), str(row.rid), compartment, resource))
                fact = facts_of(resource)
                if fact is not None and patient_of(resource) == patient_id:
                    out.append(fact)
            for item in items:
                self._write(conn, item)
        return out

    def rebuild_all(self, batch: int = 500) -> int:
        """Re-derive the whole index (after a restore or a key rotation); returns patients."""
        h = resource_heads.c
        with self.vault.engine.connect() as conn:
            compartments = [
                str(c)
                for (c,) in conn.execute(
                    select(h.compartment)
                    .where(
                        h.tenant == self.tenant,
                        h.compartment.like("Patient/%"),
                        h.rtype.in_(sorted(INDEXED)),
                    )
                    .distinct()
                )
            ]
            roles = conn.execute(
                select(h.rid).where(
                    h.tenant == self.tenant, h.rtype == "PractitionerRole", h.deleted.is_(False)
                )
            ).all()
        for compartment in compartments:
            self.rebuild_patient(compartment.removeprefix("Patient/"))
        self._rebuild_roles([str(r.rid) for r in roles], batch)
        return len(compartments)

    def _rebuild_roles(self, ids: list[str], batch: int) -> None:
        h, r = resource_heads.c, resources.c
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            with self.vault.engine.begin() as conn:
                rows = conn.execute(
                    select(r.rid, r.version, r.dek_version, r.body, r.compartment)
                    .select_from(
                        resource_heads.join(
                            resources,
                            (r.tenant == h.tenant)
                            & (r.rtype == h.rtype)
                            & (r.rid == h.rid)
                            & (r.version == h.version),
                        )
                    )
                    .where(h.tenant == self.tenant, h.rtype == "PractitionerRole", h.rid.in_(chunk))
                ).all()
                for row in rows:
                    raw = self.vault.cipher.open(
                        str(row.compartment),
                        int(row.dek_version),
                        bytes(row.body),
                        aad(
                            self.tenant,
                            "PractitionerRole",
                            row.rid,
                            int(row.version),
                            row.compartment,
                        ),
                        f"PractitionerRole/{row.rid}",
                        conn,
                    )
                    item = Written(
                        "PractitionerRole", str(row.rid), str(row.compartment), json.loads(raw)
                    )
                    self._practitioner_role(conn, item)
