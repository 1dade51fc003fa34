"""The relationship index: what access decisions need to know about a patient, kept sealed.

Deciding "is this nurse caring for this patient?" from the FHIR resources themselves
would mean decrypting every CareTeam, Encounter and Appointment of the patient on
every request.  Instead the repository hands every write of those types (and of
EpisodeOfCare, Consent and the Patient itself) to ``RelationshipIndex.written``,
which reduces each resource to the few facts the policies use (members, department,
period, status, flags, consent denials) and keeps them in ``access_facts``:

- **one row per patient**, holding the facts of all the patient's indexed resources
  (``{"Encounter/<id>": facts, ...}``), so deciding about a patient costs one
  look-up and one unsealing however long the record is; a write rewrites the row in
  the writing transaction (under PostgreSQL with a transaction-scoped advisory lock
  on the patient, so concurrent writers of one patient's resources cannot lose each
  other's facts; SQLite already serialises writers);
- keyed by ``HMAC(patient id)`` (a blind-index key), so nobody without the key can
  join a row to a patient;
- sealed with the patient's own data key, bound to the tenant, the row's key and the
  patient's compartment, so rows cannot be moved between patients and
  crypto-shredding the patient destroys them with the rest of the record; the
  plaintext is padded to a multiple of 256 bytes, so the row's length says little
  about how many resources it covers;
- ``change_tag``, a random number drawn at every rewrite: readers that cached a
  patient's facts compare tags in bulk, without unsealing anything, to see whether
  another process changed the row.

What the table reveals, by design: which (hashed) patients have indexed resources,
when their rows change, and the padded size of their facts; see docs/access.md.
The index is derived data: a row that no longer opens (after a data-key rotation
destroyed the key version that sealed it, or tampering) is rebuilt from the
patient's resources on the spot, and ``rebuild_all`` re-derives everything.

PractitionerRole resources (staff directory, not PHI) go to a plain table mapping a
role id to its practitioner and department, so a participant named by role matches
the user behind it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, delete, insert, select, text

from phiguard.audit.events import AuditEvent
from phiguard.crypto.envelope import aad
from phiguard.errors import CryptoError, InvalidSearch, KeyShreddedError
from phiguard.records.compartment import patient_of
from phiguard.records.hooks import Written
from phiguard.records.search import parse_date
from phiguard.records.vault import KeyringCipher
from phiguard.store.engine import now_us
from phiguard.store.tables import access_facts, access_practitioner_roles, resource_heads, resources

from .driver_sql import Reader, placeholders
from .labels import has_flag

if TYPE_CHECKING:
    from phiguard.records.vault import Vault

INDEXED: Final[frozenset[str]] = frozenset(
    {"Patient", "CareTeam", "Encounter", "Appointment", "EpisodeOfCare", "Consent"}
)
"""Resource types whose writes update ``access_facts``."""

DERIVE_ACTION: Final = "access-index-rebuild"
"""The ledger action recorded when phiguard reads a patient's resources to (re)derive
their row (an unreadable row, ``phiguard access reindex``)."""
_PATIENT_PARAM: Final = "access.patient"
_PERSON: Final = b"phiguard-access"
_AAD_KIND: Final = "access-facts"
_PAD: Final = 256
_CHUNK: Final = 500

NO_ROW: Final = 0
"""``change_tag`` of a patient without a row (tags drawn at writes are never 0)."""
UNREADABLE: Final = -1
"""``change_tag`` reported for a row whose data key was destroyed (shredded patient)."""

# Reads go through the driver's cursor (driver_sql.py): they run on the first decision
# about a patient, where SQLAlchemy's own cost would be most of the look-up.
_SQL_LOAD: Final = (
    "SELECT patient_key, change_tag, dek_version, body FROM access_facts "
    "WHERE tenant = ? AND patient_key IN ({})"
)
_SQL_LOAD_ONE: Final = (
    "SELECT patient_key, change_tag, dek_version, body FROM access_facts "
    "WHERE tenant = ? AND patient_key = ?"
)
_SQL_TAGS: Final = (
    "SELECT patient_key, change_tag, dek_version FROM access_facts "
    "WHERE tenant = ? AND patient_key IN ({})"
)
_SQL_CURRENT: Final = (
    "SELECT patient_key, dek_version, body FROM access_facts "
    "WHERE tenant = ? AND patient_key IN ({})"
)
_SQL_UPSERT: Final = (
    "INSERT INTO access_facts (tenant, patient_key, change_tag, dek_version, body) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, patient_key) DO UPDATE SET "
    "change_tag = excluded.change_tag, dek_version = excluded.dek_version, body = excluded.body"
)
_SQL_PATIENTS: Final = (
    "SELECT rid FROM resource_heads WHERE tenant = ? AND rtype = 'Patient' AND deleted = ? "
    "ORDER BY last_updated DESC LIMIT ?"
)
_SQL_DELETE: Final = "DELETE FROM access_facts WHERE tenant = ? AND patient_key = ?"
_SQL_LOCK: Final = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT k FROM unnest(CAST(:keys AS bigint[])) AS t(k) ORDER BY k) AS ordered"
)

Fact = dict[str, Any]


def _execute(conn: Connection, sql: str, params: Any, *, many: bool = False) -> list[Any]:
    """``sql`` on the driver cursor of ``conn``, inside its transaction (``?``
    placeholders, rewritten for drivers that use ``%s``); the rows of a query."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
            return []
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


@dataclass(frozen=True, slots=True)
class PatientFactsRow:
    """One patient's row as read: its change tag and the facts of its resources."""

    change_tag: int
    facts: tuple[Fact, ...] = ()


_EMPTY = PatientFactsRow(NO_ROW)


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
    if rtype == "Consent":
        start, end = _period((resource.get("provision") or {}).get("period"))
        return {
            "t": rtype,
            "s": status,
            "deny": _deny_rules(resource.get("provision")),
            "b": start,
            "e": end,
        }
    if rtype == "CareTeam":
        members = _refs(resource, "participant", "member")
        orgs = _refs(resource, "participant", "onBehalfOf")
        orgs += _refs(resource, "managingOrganization")
        period = _period(resource.get("period"))
    elif rtype == "Encounter":
        members = _refs(resource, "participant", "individual")
        orgs = _refs(resource, "serviceProvider")
        period = _period(resource.get("period"))
    elif rtype == "Appointment":
        members = _refs(resource, "participant", "actor")
        orgs = _refs(resource, "supportingInformation")
        period = _instants(resource.get("start"), resource.get("end"))
    elif rtype == "EpisodeOfCare":
        members = _refs(resource, "careManager") + _refs(resource, "team")
        orgs = _refs(resource, "managingOrganization")
        period = _period(resource.get("period"))
    else:
        return None
    start, end = period
    return {
        "t": rtype,
        "s": status,
        "m": _people(members),
        "o": _orgs(orgs),
        "b": start,
        "e": end,
    }


class RelationshipIndex:
    """Maintains and reads ``access_facts`` for one vault (a ``WriteObserver``)."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.tenant = vault.tenant
        self._listeners: list[Callable[[set[str]], object]] = []
        self.reader = Reader(vault.engine)
        self._aad_head = aad(self.tenant, _AAD_KIND)
        token = vault.indexer.raw_token
        self._patient_hash_key = token(_PATIENT_PARAM, "key/1") + token(_PATIENT_PARAM, "key/2")
        # Rows are opened with the keyring directly (as ``KeyringCipher`` does), so a
        # read needs no SQLAlchemy connection unless a data key must be loaded.
        cipher = vault.cipher
        self._keyring = cipher.keyring if isinstance(cipher, KeyringCipher) else None

    # -- keys --------------------------------------------------------------------------
    def patient_key(self, patient_id: str) -> bytes:
        """``BLAKE2b-128(patient id)`` keyed with a 256-bit key derived from the
        blind-index key of ``access.patient``.

        Keyed BLAKE2b is a PRF like the blind index's HMAC-SHA256, and it runs in
        Python's own code: the HMAC goes through OpenSSL, whose per-call set-up
        cost 10-50 us on the first decision about a patient (measured right after a
        chart was read); BLAKE2b costs about 2 us there.
        """
        return hashlib.blake2b(
            patient_id.encode(), key=self._patient_hash_key, digest_size=16, person=_PERSON
        ).digest()

    def _aad(self, patient_key: bytes, compartment: str) -> bytes:
        """``aad(tenant, "access-facts", patient key, compartment)``, with the constant
        head encoded once (tests/access/test_index.py holds the two equal)."""
        place = compartment.encode()
        return b"".join(
            (
                self._aad_head,
                len(patient_key).to_bytes(4, "big"),
                patient_key,
                len(place).to_bytes(4, "big"),
                place,
            )
        )

    def on_change(self, listener: Callable[[set[str]], object]) -> None:
        """``listener(patient_ids)`` after rows of those patients were rewritten."""
        self._listeners.append(listener)

    # -- writing -----------------------------------------------------------------------
    def written(self, conn: Connection, items: Sequence[Written]) -> None:
        """Bring the index up to date with resources written in ``conn``'s transaction.

        Each touched patient's row is read, changed and resealed once per call,
        whatever the number of its resources in ``items`` (the import's batches), and
        a resource that moved to another patient leaves its former patient's row.
        """
        changes: dict[str, dict[str, Fact | None]] = {}
        for item in items:
            if item.resource_type == "PractitionerRole":
                self._practitioner_role(conn, item)
            if item.resource_type not in INDEXED:
                continue
            source = f"{item.resource_type}/{item.id}"
            patient: str | None = None
            fact: Fact | None = None
            if item.resource is not None:
                patient = patient_of(item.resource)
                fact = facts_of(item.resource) if patient else None
                if fact is None:
                    patient = None
            earlier = set(item.previous_patients)
            if item.compartment.startswith("Patient/"):
                earlier.add(item.compartment.removeprefix("Patient/"))
            for pid in earlier:
                if pid != patient:
                    changes.setdefault(pid, {})[source] = None
            if patient is not None:
                changes.setdefault(patient, {})[source] = fact
        if not changes:
            return
        self._apply(conn, changes)
        touched = set(changes)
        for listener in self._listeners:
            listener(touched)

    def _lock(self, conn: Connection, keys: Iterable[bytes]) -> None:
        """Serialise writers of the same patients' rows (PostgreSQL; SQLite writers
        already hold the database's write lock when the repository calls us).  Keys
        are taken in ascending order so two writers never wait on each other."""
        if conn.dialect.name != "postgresql":
            return
        ids = sorted({int.from_bytes(k[:8], "big", signed=True) for k in keys})
        if ids:
            conn.execute(text(_SQL_LOCK), {"keys": ids})

    def _apply(self, conn: Connection, changes: dict[str, dict[str, Fact | None]]) -> None:
        """Read, change, reseal and write back each touched patient's row.

        The statements go through the transaction's own driver cursor: through Core
        the four statements of a single update cost ~0.6 ms, most of it SQLAlchemy's.
        """
        keys = {self.patient_key(p): p for p in changes}
        key_list = sorted(keys)
        self._lock(conn, key_list)
        current: dict[str, dict[str, Fact]] = {}
        shredded: set[str] = set()
        broken: list[str] = []
        found: list[Any] = []
        for i in range(0, len(key_list), _CHUNK):
            chunk = key_list[i : i + _CHUNK]
            found += _execute(
                conn, _SQL_CURRENT.format(placeholders(len(chunk))), (self.tenant, *chunk)
            )
        for key_value, version, body in found:
            key = bytes(key_value)
            pid = keys[key]
            try:
                current[pid] = self._open(conn, pid, key, int(version), body)
            except KeyShreddedError:
                shredded.add(pid)
            except CryptoError:
                broken.append(pid)
        if broken:
            self._record_derivation(broken, "unreadable row", conn)
        for pid in broken:
            # Re-derived from the resources as this transaction sees them, which
            # already includes the writes being indexed.
            current[pid] = self._derive(conn, pid)
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for key in key_list:
            pid = keys[key]
            entries = current.get(pid, {})
            for source, fact in changes[pid].items():
                if fact is None:
                    entries.pop(source, None)
                else:
                    entries[source] = fact
            if entries and pid not in shredded:
                row = self._sealed_row(conn, pid, key, entries)[0]
                upserts.append(
                    (row["tenant"], key, row["change_tag"], row["dek_version"], row["body"])
                )
            elif pid in current or pid in shredded:
                # Nothing left, or nothing can be sealed for it any more.
                deletes.append((self.tenant, key))
        if deletes:
            _execute(conn, _SQL_DELETE, deletes, many=True)
        if upserts:
            _execute(conn, _SQL_UPSERT, upserts, many=True)

    def _sealed_row(
        self, conn: Connection, patient_id: str, key: bytes, entries: dict[str, Fact]
    ) -> tuple[dict[str, Any], int]:
        compartment = f"Patient/{patient_id}"
        plain = json.dumps(entries, separators=(",", ":"), sort_keys=True).encode()
        plain += b" " * (-len(plain) % _PAD)
        version, body = self.vault.cipher.seal(
            compartment, plain, self._aad(key, compartment), conn
        )
        tag = secrets.randbits(62) + 1
        row = {
            "tenant": self.tenant,
            "patient_key": key,
            "change_tag": tag,
            "dek_version": version,
            "body": body,
        }
        return row, tag

    def _open(
        self, conn: Connection, patient_id: str, key: bytes, version: int, body: Any
    ) -> dict[str, Fact]:
        compartment = f"Patient/{patient_id}"
        raw = self.vault.cipher.open(
            compartment, version, bytes(body), self._aad(key, compartment), "access index", conn
        )
        entries: dict[str, Fact] = json.loads(raw)
        return entries

    def shredded(self, conn: Connection, patient_id: str) -> None:
        """Delete the patient's row in the transaction that destroys their keys (the
        row could never be opened again); caches here drop the patient at once, other
        processes at their next re-check (the tag reads as no row)."""
        key = self.patient_key(patient_id)
        self._lock(conn, [key])
        _execute(conn, _SQL_DELETE, (self.tenant, key))
        for listener in self._listeners:
            listener({patient_id})

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
    def _rows(self, sql: str, keys: list[bytes]) -> list[Any]:
        """Rows of ``sql`` for ``keys``, in slices of 500."""
        out: list[Any] = []
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            query = sql.format(placeholders(len(chunk)))
            out.extend(self.reader.rows(query, (self.tenant, *chunk)))
        return out

    def _read(self, patient_id: str, key: bytes, version: int, body: Any) -> dict[str, Fact]:
        compartment = f"Patient/{patient_id}"
        associated = self._aad(key, compartment)
        if self._keyring is not None:
            sealer = self._keyring.sealer(compartment, version)
            raw = sealer.open(bytes(body), associated, "access index")
        else:
            with self.vault.engine.connect() as conn:
                raw = self.vault.cipher.open(
                    compartment, version, bytes(body), associated, "access index", conn
                )
        entries: dict[str, Fact] = json.loads(raw.decode())  # str: no encoding sniffing
        return entries

    def load(self, patient_ids: Sequence[str]) -> dict[str, PatientFactsRow]:
        """The facts of each patient: one query for all, one unsealing per patient.

        A patient without a row has no facts (``NO_ROW``); one whose data key was
        destroyed has none either (``UNREADABLE``); a row that fails to open otherwise
        is rebuilt from the patient's resources.
        """
        keys = {self.patient_key(p): p for p in patient_ids}
        found: dict[str, PatientFactsRow] = dict.fromkeys(patient_ids, _EMPTY)
        broken: list[str] = []
        for key, tag, version, body in self._rows(_SQL_LOAD, list(keys)):
            pid = keys[bytes(key)]
            try:
                entries = self._read(pid, bytes(key), int(version), body)
            except KeyShreddedError:
                found[pid] = PatientFactsRow(UNREADABLE)
                continue
            except CryptoError:
                broken.append(pid)
                continue
            found[pid] = PatientFactsRow(int(tag), tuple(entries.values()))
        for pid in broken:
            found[pid] = self.rebuild_patient(pid)
        return found

    def load_one(self, patient_id: str) -> PatientFactsRow:
        """``load([patient_id])[patient_id]`` on the shortest path: the first decision
        about a patient waits on it."""
        key = self.patient_key(patient_id)
        rows = self.reader.rows(_SQL_LOAD_ONE, (self.tenant, key))
        if not rows:
            return _EMPTY
        _key, tag, version, body = rows[0]
        try:
            entries = self._read(patient_id, key, int(version), body)
        except KeyShreddedError:
            return PatientFactsRow(UNREADABLE)
        except CryptoError:
            return self.rebuild_patient(patient_id)
        return PatientFactsRow(int(tag), tuple(entries.values()))

    def patient_ids(self, limit: int) -> list[str]:
        """Ids of up to ``limit`` current patients, the most recently changed first (the
        ones ``StoreAttributes.warm`` keeps resident when not all fit)."""
        rows = self.reader.rows(_SQL_PATIENTS, (self.tenant, False, limit))
        return [str(r[0]) for r in rows]

    def change_tags(self, patient_ids: Sequence[str]) -> dict[str, int]:
        """Each patient's current ``change_tag``, without unsealing anything.

        ``UNREADABLE`` when the key that sealed the row is destroyed in this process's
        view (the patient was shredded here), so a cache holding the patient's facts
        lets them go as a reload would.
        """
        keys = {self.patient_key(p): p for p in patient_ids}
        out: dict[str, int] = dict.fromkeys(patient_ids, NO_ROW)
        for key, tag, version in self._rows(_SQL_TAGS, list(keys)):
            pid = keys[bytes(key)]
            out[pid] = int(tag)
            if self._keyring is not None:
                try:
                    self._keyring.sealer(f"Patient/{pid}", int(version))
                except CryptoError:
                    out[pid] = UNREADABLE
        return out

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
    def _derive(self, conn: Connection, patient_id: str) -> dict[str, Fact]:
        """The facts of the patient's current indexed resources, read in ``conn``."""
        compartment = f"Patient/{patient_id}"
        h, r = resource_heads.c, resources.c
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
        out: dict[str, Fact] = {}
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
            fact = facts_of(resource)
            if fact is not None and patient_of(resource) == patient_id:
                out[f"{row.rtype}/{row.rid}"] = fact
        return out

    def _record_derivation(
        self, patient_ids: Sequence[str], cause: str, conn: Connection | None = None
    ) -> None:
        """Record, before it happens, that phiguard opens these patients' care
        resources to derive their facts: the reads bypass the repository (they are no
        person's access), but the patient's access report still shows them, as
        "phiguard (automated process)"."""
        ids = tuple(patient_ids)
        self.vault.audit.record(
            AuditEvent(
                action=DERIVE_ACTION,
                outcome="success",
                principal="system/access-index",
                purpose="HOPERAT",
                request_id=secrets.token_hex(16),
                recorded=self.vault.clock.now(),
                resource_type="Patient",
                resource_id=ids[0] if len(ids) == 1 else None,
                patient_ids=ids,
                detail={"patients": len(ids), "cause": cause},
            ),
            conn,
        )

    def rebuild_patient(
        self, patient_id: str, *, cause: str = "unreadable row", recorded: bool = False
    ) -> PatientFactsRow:
        """Re-derive one patient's row from their current resources; returns it.
        (``recorded``: the caller has already recorded the derivation.)"""
        compartment = f"Patient/{patient_id}"
        key = self.patient_key(patient_id)
        c = access_facts.c
        if not recorded:
            self._record_derivation([patient_id], cause)
        with self.vault.engine.begin() as conn:
            self._lock(conn, [key])
            conn.execute(delete(access_facts).where(c.tenant == self.tenant, c.patient_key == key))
            if self.vault.keyring.is_shredded(compartment, conn):
                return PatientFactsRow(UNREADABLE)
            entries = self._derive(conn, patient_id)
            if not entries:
                return _EMPTY
            row, tag = self._sealed_row(conn, patient_id, key, entries)
            conn.execute(insert(access_facts), [row])
        for listener in self._listeners:
            listener({patient_id})
        return PatientFactsRow(tag, tuple(entries.values()))

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
        ids = [c.removeprefix("Patient/") for c in compartments]
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            self._record_derivation(chunk, "reindex")
            for pid in chunk:
                self.rebuild_patient(pid, recorded=True)
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
