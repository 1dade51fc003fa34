"""phiguard's own audit ledger (and vault) as a monitoring source.

The ledger records every PHI interaction with who, what, which patients, why and
when; this module turns its entries into ACCESS and AUTH frames, and the vault's
workforce and patient records into STAFF, PATIENTS and CARE frames, so the same
detectors that read another EHR's exports read phiguard's own activity.

Mapping of ledger entries (documented in docs/monitoring.md, "Sources"):

* Only successful interactions of workforce users (``user/<id>``) become access rows:
  a denied request disclosed nothing, and phiguard's own jobs, operators' tokens and
  applications are audited but are not people whose browsing is judged here.
* ``read``, ``vread`` and ``history`` are ``view``; ``search`` is ``search``;
  ``create`` and ``import`` are ``create``; ``update``, ``delete`` as named;
  ``$everything`` is ``export`` (the whole record leaves in one response), and so is
  a bulk ``$export`` batch (one row per patient whose data it returned).
* An entry naming several patients gives one row per patient.
* Break-the-glass: the access module's declaration (``break-glass``, one entry when a
  user invokes emergency access to a patient) becomes one marker row with action
  ``view`` and resource type ``BreakTheGlass`` (``monitor.config.BREAK_THE_GLASS``),
  the representation every source uses; the reads under the grant are ordinary
  rows.  An interaction flagged ``btg`` (or with purpose ``BTG``/``ETREAT``) for a
  user and patient with no declaration among the entries read together gets a marker
  of its own, so emergency access declared another way is not lost.
* ``login-success`` and ``login-failure`` become auth rows; a failure whose sealed
  reason is ``account-locked`` has outcome ``locked``.  Attempts for accounts that do
  not exist carry the ledger's anonymous principal (the typed name is never kept).
  ``secret_hash`` stays empty: the throttle's password fingerprints never leave its
  process's memory.

Vault data is read through ``Repository`` with the system context, so each read is
itself audited; names and addresses exist only in this process's memory.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import polars as pl
from sqlalchemy import Engine, func, select

from phiguard.audit.ledger import Ledger, decode_leaf
from phiguard.crypto.envelope import aad
from phiguard.errors import DecryptionError
from phiguard.monitor import frames
from phiguard.monitor.config import BREAK_THE_GLASS
from phiguard.records.context import system_context
from phiguard.records.repository import Repository, StoredResource
from phiguard.records.vault import Vault
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import audit_entries, users

BREAK_GLASS_PURPOSES: Final = frozenset({"BTG", "ETREAT"})
ACTIONS: Final[dict[str, str]] = {
    "read": "view",
    "vread": "view",
    "history": "view",
    "search": "search",
    "create": "create",
    "import": "create",
    "update": "update",
    "delete": "delete",
    "everything": "export",
    "export": "export",
}
LOGIN_ACTIONS: Final = frozenset({"login-success", "login-failure"})
DECLARATION: Final = "break-glass"  # access.breakglass: emergency access declared
USER_PREFIX: Final = "user/"
PAGE: Final = 1000
BATCH: Final = 50_000
MRN_SYSTEMS: Final = frozenset({"urn:phiguard:mrn"})
VIP_CODES: Final = frozenset({"vip", "VIP"})


@dataclass
class LedgerEvents:
    """Frames extracted from a run of ledger entries, and where the run ended."""

    access: pl.DataFrame
    auth: pl.DataFrame
    next_seq: int
    entries: int


def ledger_size(ledger: Ledger) -> int:
    """The ledger's size as the database has it (other processes append too)."""
    with ledger.engine.connect() as conn:
        last = conn.execute(select(func.max(audit_entries.c.seq))).scalar()
    return 0 if last is None else int(last) + 1


def read_events(
    ledger: Ledger,
    *,
    since_seq: int = 0,
    since: dt.datetime | None = None,
    until_seq: int | None = None,
) -> LedgerEvents:
    """ACCESS and AUTH frames of the entries from ``since_seq`` (and ``since``, a time)."""
    e = audit_entries.c
    stmt = select(e.seq, e.leaf).where(e.seq >= since_seq).order_by(e.seq)
    if since is not None:
        stmt = stmt.where(e.recorded >= now_us(since))
    if until_seq is not None:
        stmt = stmt.where(e.seq < until_seq)
    builder = _Builder(ledger)
    next_seq = since_seq
    count = 0
    with ledger.engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
            next_seq = int(row.seq) + 1
            count += 1
            if row.leaf:  # archived entries keep only their hashes here
                builder.add(decode_leaf(bytes(row.leaf)))
    return LedgerEvents(builder.access(), builder.auth(), next_seq, count)


def events_to_frames(
    entries: Iterable[dict[str, Any]], ledger: Ledger | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ACCESS, AUTH) frames of decoded ledger entries (``decode_leaf`` documents)."""
    builder = _Builder(ledger)
    for entry in entries:
        builder.add(entry)
    return builder.access(), builder.auth()


class _Builder:
    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger
        self.rows: dict[str, list[Any]] = {name: [] for name in frames.ACCESS}
        self.logins: dict[str, list[Any]] = {name: [] for name in frames.AUTH}
        self.declared: set[tuple[str, str]] = set()
        self.flagged: dict[tuple[str, str], tuple[dt.datetime, str | None]] = {}

    def add(self, entry: dict[str, Any]) -> None:
        action = str(entry.get("action", ""))
        who = str(entry.get("who", ""))
        when = from_us(int(entry["t"]))
        if action in LOGIN_ACTIONS:
            self._login(entry, action, who, when)
            return
        if entry.get("outcome") != "success" or not who.startswith(USER_PREFIX):
            return
        user = who.removeprefix(USER_PREFIX)
        source = entry.get("src") or None
        patients = list(dict.fromkeys(str(p) for p in entry.get("patients", ())))
        if action == DECLARATION:
            for patient in patients:
                self.declared.add((user, patient))
                self._access(when, user, patient, "view", BREAK_THE_GLASS, source)
            return
        mapped = ACTIONS.get(action)
        if mapped is None:
            return
        rtype = entry.get("type")
        glass = bool(entry.get("btg")) or entry.get("purpose") in BREAK_GLASS_PURPOSES
        for patient in patients:
            self._access(when, user, patient, mapped, rtype, source)
            if glass:
                self.flagged.setdefault((user, patient), (when, source))

    def _access(
        self,
        when: dt.datetime,
        user: str,
        patient: str,
        action: str,
        rtype: str | None,
        source: str | None,
    ) -> None:
        r = self.rows
        r["timestamp"].append(when)
        r["user_id"].append(user)
        r["patient_id"].append(patient)
        r["action"].append(action)
        r["resource_type"].append(rtype)
        r["workstation"].append(source)

    def _login(self, entry: dict[str, Any], action: str, who: str, when: dt.datetime) -> None:
        outcome = "success"
        if action == "login-failure":
            outcome = "locked" if self._reason(entry) == "account-locked" else "failure"
        r = self.logins
        r["timestamp"].append(when)
        r["user_id"].append(who.removeprefix(USER_PREFIX))
        r["source"].append(entry.get("src") or None)
        r["outcome"].append(outcome)
        r["secret_hash"].append(None)

    def _reason(self, entry: dict[str, Any]) -> str:
        detail = entry.get("detail")
        if isinstance(detail, dict):
            return str(detail.get("reason", ""))
        if isinstance(detail, str) and self.ledger is not None:
            try:
                raw = self.ledger.detail_sealer.open(
                    base64.b64decode(detail), aad("audit-detail", entry["seq"])
                )
            except DecryptionError:
                return ""
            return str(json.loads(raw).get("reason", ""))
        return ""

    def access(self) -> pl.DataFrame:
        for (user, patient), (when, source) in self.flagged.items():
            if (user, patient) not in self.declared:  # emergency access declared elsewhere
                self._access(when, user, patient, "view", BREAK_THE_GLASS, source)
        self.flagged.clear()
        return pl.DataFrame(self.rows, schema=frames.ACCESS).sort("timestamp", maintain_order=True)

    def auth(self) -> pl.DataFrame:
        return pl.DataFrame(self.logins, schema=frames.AUTH)


# -- the vault: staff, patients, care ---------------------------------------------------
def reference(vault: Vault, engine: Engine, tenant: str = "default") -> frames.Dataset:
    """STAFF, PATIENTS and CARE frames from the users table and the vault's records."""
    repo = vault.repository(system_context(source="monitor"))
    practitioners = {s.id: s.resource or {} for s in _all(repo, "Practitioner")}
    organizations = {s.id: s.resource or {} for s in _all(repo, "Organization")}
    with engine.connect() as conn:
        accounts = list(conn.execute(select(users).where(users.c.tenant == tenant)).all())
    user_of = {str(a.practitioner_id): str(a.user_id) for a in accounts if a.practitioner_id}
    staff = _staff(accounts, practitioners)
    patients = _patients(_all(repo, "Patient"))
    care = _care(repo, user_of, organizations)
    return frames.Dataset.of(staff=staff, patients=patients, care=care)


def _all(repo: Repository, rtype: str) -> Iterator[StoredResource]:
    offset = 0
    while True:
        page = repo.search(rtype, [("_count", str(PAGE)), ("_offset", str(offset))])
        yield from (e for e in page.entries if e.resource is not None)
        offset += PAGE
        finished = page.total is not None and offset >= page.total
        if finished or not (page.entries or page.more):
            return


def _staff(accounts: list[Any], practitioners: dict[str, dict[str, Any]]) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {name: [] for name in frames.STAFF}
    for a in accounts:
        practitioner = practitioners.get(str(a.practitioner_id), {}) if a.practitioner_id else {}
        family, given = _name(practitioner)
        if family is None:
            parts = str(a.display_name).rsplit(" ", 1)
            family, given = parts[-1], parts[0] if len(parts) > 1 else None
        line, postal = _address(practitioner)
        roles = json.loads(a.roles)
        rows["user_id"].append(str(a.user_id))
        rows["family_name"].append(family)
        rows["given_name"].append(given)
        rows["role"].append(roles[0] if roles else None)
        rows["department"].append(a.department)
        rows["address"].append(line)
        rows["postal_code"].append(postal)
        rows["hire_date"].append(from_us(int(a.created_at)).date())
        terminated = a.terminated_at if a.status == "terminated" else None
        rows["termination_date"].append(None if terminated is None else from_us(terminated).date())
        rows["patient_id"].append(None)
    return pl.DataFrame(rows, schema=frames.STAFF)


def _patients(found: Iterable[StoredResource]) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {name: [] for name in frames.PATIENTS}
    for stored in found:
        p = stored.resource or {}
        family, given = _name(p)
        line, postal = _address(p)
        rows["patient_id"].append(stored.id)
        rows["mrn"].append(_mrn(p))
        rows["family_name"].append(family)
        rows["given_name"].append(given)
        rows["birth_date"].append(_date(p.get("birthDate")))
        rows["address"].append(line)
        rows["postal_code"].append(postal)
        security = p.get("meta", {}).get("security", [])
        rows["vip"].append(any(s.get("code") in VIP_CODES for s in security))
    return pl.DataFrame(rows, schema=frames.PATIENTS)


def _care(
    repo: Repository, user_of: dict[str, str], organizations: dict[str, dict[str, Any]]
) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {name: [] for name in frames.CARE}

    def add(
        patient: str | None,
        practitioners: list[str],
        org: str | None,
        start: Any,
        end: Any,
        kind: str,
    ) -> None:
        begins = _instant(start)
        if patient is None or begins is None:
            return
        department = organizations.get(org or "", {}).get("name")
        people: list[str | None] = [user_of[p] for p in practitioners if p in user_of]
        for user in people or [None]:
            if user is None and department is None:
                continue
            rows["patient_id"].append(patient)
            rows["user_id"].append(user)
            rows["department"].append(department)
            rows["start"].append(begins)
            rows["end"].append(_instant(end, end_of_day=True))
            rows["kind"].append(kind)

    for s in _all(repo, "Encounter"):
        r = s.resource or {}
        who = [_ref_id(p.get("individual"), "Practitioner") for p in r.get("participant", [])]
        period = r.get("period", {})
        add(
            _ref_id(r.get("subject"), "Patient"),
            [w for w in who if w],
            _ref_id(r.get("serviceProvider"), "Organization"),
            period.get("start"),
            period.get("end"),
            "encounter",
        )
    for s in _all(repo, "Appointment"):
        r = s.resource or {}
        actors = [p.get("actor") for p in r.get("participant", [])]
        patient = next((_ref_id(a, "Patient") for a in actors if _ref_id(a, "Patient")), None)
        who = [_ref_id(a, "Practitioner") for a in actors]
        org = next(
            (
                _ref_id(i, "Organization")
                for i in r.get("supportingInformation", [])
                if _ref_id(i, "Organization")
            ),
            None,
        )
        add(patient, [w for w in who if w], org, r.get("start"), r.get("end"), "appointment")
    for s in _all(repo, "CareTeam"):
        r = s.resource or {}
        who = [_ref_id(p.get("member"), "Practitioner") for p in r.get("participant", [])]
        orgs = [_ref_id(o, "Organization") for o in r.get("managingOrganization", [])]
        period = r.get("period", {})
        add(
            _ref_id(r.get("subject"), "Patient"),
            [w for w in who if w],
            next((o for o in orgs if o), None),
            period.get("start"),
            period.get("end"),
            "care_team",
        )
    return pl.DataFrame(rows, schema=frames.CARE)


def _ref_id(ref: Any, rtype: str) -> str | None:
    if not isinstance(ref, dict):
        return None
    value = str(ref.get("reference", ""))
    prefix = rtype + "/"
    return value[len(prefix) :] if value.startswith(prefix) else None


def _name(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    names = resource.get("name") or []
    if not names:
        return None, None
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    given = chosen.get("given") or []
    return chosen.get("family"), " ".join(given) or None


def _address(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    addresses = resource.get("address") or []
    if not addresses:
        return None, None
    chosen = next((a for a in addresses if a.get("use") == "home"), addresses[0])
    lines = chosen.get("line") or []
    return (lines[0] if lines else None), chosen.get("postalCode")


def _mrn(patient: dict[str, Any]) -> str | None:
    for ident in patient.get("identifier", []):
        codes = {c.get("code") for c in ident.get("type", {}).get("coding", [])}
        if ident.get("system") in MRN_SYSTEMS or "MR" in codes:
            value = ident.get("value")
            return None if value is None else str(value)
    return None


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value[:10]) if len(value) >= 10 else None
    except ValueError:
        return None


def _instant(value: Any, *, end_of_day: bool = False) -> dt.datetime | None:
    """A FHIR date or dateTime as a UTC instant (a bare date: its start, or its end)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) <= 10:
            day = dt.date.fromisoformat(value)
            if end_of_day:
                day += dt.timedelta(days=1)
            return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
