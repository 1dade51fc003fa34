"""The repository: every PHI read and write, for one caller.

Each public method follows the same steps: check the input, ask the access policy,
open or seal through the keyring, touch the store, record an audit event (inside
the same transaction for writes: no audit, no write), and only then return.

Access is decided on the resource itself wherever there is one: the policy sees its
security labels only in the sealed body, so reads open first and decide second, and
search, history and ``$everything`` decide every result on its own body, drop the
refused ones and apply the field masks of the rest.  A resource the caller may not
read answers exactly like one that does not exist (``NotFound`` with the same
text), so ids cannot be probed; a refusal on something the caller may see (a write
they may not make) is ``AccessDenied``.  Searches by callers decided per resource
count only what they may see: the candidates are scanned in order until the page
(and one more, for the ``next`` link) is filled, and ``total`` is given only when
the scan reached the end (see docs/access.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, select

from phiguard.clock import isoformat
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import SHARED
from phiguard.errors import (
    AccessDenied,
    AuditError,
    Gone,
    InvalidResource,
    InvalidSearch,
    KeyShreddedError,
    NotFound,
    VersionConflict,
)
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import resource_heads, resources, search_tokens

from .compartment import compartment_of, iter_references, patient_of
from .context import AccessContext
from .hooks import AccessRequest, AuditEvent, Decision, Written
from .params import date_tokens, params_for
from .search import DateRange, SearchPlan, plan
from .validation import known_type, valid_id, validate

if TYPE_CHECKING:
    from .vault import Vault


@dataclass(frozen=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated_us: int
    deleted: bool
    resource: dict[str, Any] | None

    @property
    def last_updated(self) -> str:
        return isoformat(from_us(self.last_updated_us))

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class SearchResult:
    total: int | None
    """Matches the caller may see; None when a filtered scan stopped before the end."""
    offset: int
    count: int
    entries: list[StoredResource]
    more: bool = False
    """Whether a further page has entries (what the ``next`` link may promise)."""


@dataclass
class _Pending:
    stored: StoredResource
    compartment: str
    dek_version: int
    body: bytes | None
    new: bool
    tokens: set[tuple[str, bytes]]
    previous: str | None = None
    """The compartment of the head this version replaces, when it differs (the
    relationship index takes a moved resource's facts off its former patient)."""


# The bulk path writes with plain DBAPI executemany: SQLAlchemy's per-row parameter
# processing cost as much as the database work itself.  Placeholders are "?" here and
# become "%s" for drivers with the format paramstyle (psycopg).
_SQL_INSERT_RESOURCE = (
    "INSERT INTO resources (tenant, rtype, rid, version, compartment, dek_version, body,"
    " last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQL_INSERT_HEAD = (
    "INSERT INTO resource_heads (tenant, rtype, rid, version, compartment, last_updated,"
    " deleted) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQL_UPDATE_HEAD = (
    "UPDATE resource_heads SET version = ?, compartment = ?, last_updated = ?, deleted = ?"
    " WHERE tenant = ? AND rtype = ? AND rid = ?"
)
_SQL_DELETE_TOKENS = "DELETE FROM search_tokens WHERE tenant = ? AND rtype = ? AND rid = ?"
_SQL_INSERT_TOKENS = (
    "INSERT INTO search_tokens (tenant, rtype, param, token, rid) VALUES (?, ?, ?, ?, ?)"
)


def _executemany(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    conn.exec_driver_sql(sql, rows)


def _patients_of(compartment: str | None) -> tuple[str, ...]:
    if compartment is None or not compartment.startswith("Patient/"):
        return ()
    return (compartment.removeprefix("Patient/"),)


def _dumps(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Repository:
    """PHI access for one ``AccessContext``; build one per request."""

    def __init__(self, vault: Vault, ctx: AccessContext) -> None:
        self.vault = vault
        self.ctx = ctx
        self.tenant = ctx.tenant
        self._conn: Connection | None = None
        # (type, id) known to exist in this unit of work, to save reference look-ups.
        self._known: set[tuple[str, str]] = set()

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """One database transaction around several calls (batches, transactions, import)."""
        if self._conn is not None:
            yield self._conn
            return
        with self.vault.engine.begin() as conn:
            self._conn = conn
            try:
                yield conn
            finally:
                self._conn = None
                self._known.clear()

    # -- seams -----------------------------------------------------------------------
    def _decide(self, request: AccessRequest) -> Decision:
        return self.vault.policy.decide(self.ctx, request)

    def _per_resource(self) -> bool:
        """Whether results must be decided one by one (every caller but operators)."""
        check = getattr(self.vault.policy, "per_resource", None)
        return True if check is None else bool(check(self.ctx))

    def _shown(self, stored: StoredResource, decision: Decision) -> StoredResource:
        """``stored`` as this caller may see it: the decision's masks applied."""
        if not decision.masked_fields or stored.resource is None:
            return stored
        redact = getattr(self.vault.policy, "redact", None)
        if redact is None:  # an obligation nobody can carry out: fail closed
            raise AccessDenied(reasons=["masks-unsupported"])
        return replace(stored, resource=redact(stored.resource, decision.masked_fields))

    def _record_denial(self, request: AccessRequest, decision: Decision) -> None:
        patient = request.compartment.removeprefix("Patient/") if request.compartment else None
        self._audit(
            request.action,
            "denied",
            None,  # a denial is recorded even though the caller's work rolls back
            rtype=request.resource_type,
            rid=request.resource_id,
            patients=(patient,) if patient and patient != SHARED else (),
            detail={"reasons": list(decision.reasons)},
        )

    def _require_visible(self, request: AccessRequest, missing: str) -> Decision:
        """The decision for ``request``; a refusal is recorded and answered as absence."""
        decision = self._decide(request)
        if not decision.allowed:
            self._record_denial(request, decision)
            raise NotFound(missing)
        return decision

    def _require_existing(
        self, request: AccessRequest, current: StoredResource, compartment: str, missing: str
    ) -> Decision:
        """A write or delete of an existing resource: hidden unless the caller may read
        its current version, refused unless they may also change that version."""
        read = AccessRequest(
            "read", request.resource_type, request.resource_id, compartment, current.resource
        )
        if not self._decide(read).allowed:
            self._record_denial(request, Decision(False, ("not-visible",)))
            raise NotFound(missing)
        on_current = replace(request, compartment=compartment, resource=current.resource)
        return self._require(on_current, None)

    def _current(self, conn: Connection, head: Any) -> StoredResource:
        if head.deleted:
            return StoredResource(
                head.rtype, head.rid, int(head.version), int(head.last_updated), True, None
            )
        return self._open_head(conn, head)

    def _merge_hidden(
        self, resource: dict[str, Any], current: StoredResource, decision: Decision
    ) -> dict[str, Any]:
        """The new version with what the caller cannot see kept as stored, and read-only
        fields checked (``AccessDenied`` names the field)."""
        if current.resource is None or not (decision.masked_fields or decision.readonly_fields):
            return resource
        merge = getattr(self.vault.policy, "merge_hidden", None)
        if merge is None:
            raise AccessDenied(reasons=["masks-unsupported"])
        merged: dict[str, Any] = merge(
            resource, current.resource, decision.masked_fields, decision.readonly_fields
        )
        return merged

    def _audit(
        self,
        action: str,
        outcome: str,
        conn: Connection | None,
        *,
        rtype: str | None = None,
        rid: str | None = None,
        version: int | None = None,
        patients: tuple[str, ...] = (),
        detail: dict[str, Any] | None = None,
        break_glass: bool = False,
    ) -> None:
        event = AuditEvent(
            action=action,
            outcome=outcome,
            principal=self.ctx.principal.reference,
            purpose=self.ctx.purpose,
            request_id=self.ctx.request_id,
            recorded=self.vault.clock.now(),
            resource_type=rtype,
            resource_id=rid,
            version=version,
            patient_ids=patients,
            break_glass=self.ctx.break_glass or break_glass,
            source=self.ctx.source,
            detail=detail or {},
        )
        try:
            self.vault.audit.record(event, conn)
        except AuditError:
            raise
        except Exception as exc:  # fail closed whatever the sink's failure was
            raise AuditError(f"audit record failed: {type(exc).__name__}") from None

    def _require(self, request: AccessRequest, conn: Connection | None) -> Decision:
        decision = self._decide(request)
        if not decision.allowed:
            self._record_denial(request, decision)
            raise AccessDenied(reasons=list(decision.reasons))
        return decision

    @staticmethod
    def _check_type(rtype: str) -> None:
        if not known_type(rtype) or rtype == "Bundle":
            raise InvalidResource(f"unsupported resource type: {rtype[:64]}")

    # -- sealing ---------------------------------------------------------------------
    def _aad(self, rtype: str, rid: str, version: int, compartment: str) -> bytes:
        return aad(self.tenant, rtype, rid, version, compartment)

    def _open(self, conn: Connection, row: Any) -> StoredResource:
        rtype, rid, version = row.rtype, row.rid, int(row.version)
        resource: dict[str, Any] | None = None
        if not row.deleted:
            where = f"{rtype}/{rid}/_history/{version}"
            try:
                raw = self.vault.cipher.open(
                    row.compartment,
                    int(row.dek_version),
                    bytes(row.body),
                    self._aad(rtype, rid, version, row.compartment),
                    where,
                    conn,
                )
            except KeyShreddedError:
                raise Gone(
                    f"{rtype}/{rid} was destroyed (its patient's key was shredded)"
                ) from None
            resource = json.loads(raw)
        return StoredResource(
            rtype, rid, version, int(row.last_updated), bool(row.deleted), resource
        )

    def _prepare(
        self,
        conn: Connection,
        rtype: str,
        rid: str,
        version: int,
        resource: dict[str, Any] | None,
        compartment: str,
        *,
        new: bool,
        now: int,
        previous: str | None = None,
    ) -> _Pending:
        """Seal one version and compute its rows; ``_flush`` writes a list of them."""
        tokens: set[tuple[str, bytes]] = set()
        if resource is not None:
            meta = dict(resource.get("meta") or {})
            meta["versionId"] = str(version)
            meta["lastUpdated"] = isoformat(from_us(now))
            resource = {
                "resourceType": rtype,
                "id": rid,
                **{k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")},
                "meta": meta,
            }
            dek_version, body = self.vault.cipher.seal(
                compartment, _dumps(resource), self._aad(rtype, rid, version, compartment), conn
            )
            tokens = self.tokens(resource)
        else:
            dek_version, body = 0, None
        stored = StoredResource(rtype, rid, version, now, resource is None, resource)
        moved = previous if previous is not None and previous != compartment else None
        return _Pending(stored, compartment, dek_version, body, new, tokens, moved)

    def _flush(self, conn: Connection, pending: list[_Pending]) -> None:
        """Write prepared versions with one executemany per statement."""
        if not pending:
            return
        t = self.tenant
        _executemany(
            conn,
            _SQL_INSERT_RESOURCE,
            [
                (
                    t,
                    p.stored.resource_type,
                    p.stored.id,
                    p.stored.version,
                    p.compartment,
                    p.dek_version,
                    p.body,
                    p.stored.last_updated_us,
                    p.stored.deleted,
                )
                for p in pending
            ],
        )
        # A resource written twice in one batch: its first write decides insert or
        # update of the head, its last write the head's values and search tokens.
        first_new: dict[tuple[str, str], bool] = {}
        last: dict[tuple[str, str], _Pending] = {}
        for p in pending:
            key = (p.stored.resource_type, p.stored.id)
            first_new.setdefault(key, p.new)
            last[key] = p
        _executemany(
            conn,
            _SQL_INSERT_HEAD,
            [
                (
                    t,
                    key[0],
                    key[1],
                    p.stored.version,
                    p.compartment,
                    p.stored.last_updated_us,
                    p.stored.deleted,
                )
                for key, p in last.items()
                if first_new[key]
            ],
        )
        old = [(key, p) for key, p in last.items() if not first_new[key]]
        _executemany(
            conn,
            _SQL_UPDATE_HEAD,
            [
                (
                    p.stored.version,
                    p.compartment,
                    p.stored.last_updated_us,
                    p.stored.deleted,
                    t,
                    key[0],
                    key[1],
                )
                for key, p in old
            ],
        )
        _executemany(conn, _SQL_DELETE_TOKENS, [(t, key[0], key[1]) for key, _ in old])
        _executemany(
            conn,
            _SQL_INSERT_TOKENS,
            [
                (t, p.stored.resource_type, name, tok, p.stored.id)
                for p in last.values()
                for name, tok in p.tokens
            ],
        )
        if self.vault.observers:
            written = [
                Written(
                    key[0],
                    key[1],
                    p.compartment,
                    p.stored.resource,
                    _patients_of(p.previous),
                )
                for key, p in last.items()
            ]
            for observer in self.vault.observers:
                observer.written(conn, written)
        for p in pending:
            key = (p.stored.resource_type, p.stored.id)
            if p.stored.deleted:
                self._known.discard(key)
            else:
                self._known.add(key)

    def _write_version(
        self,
        conn: Connection,
        rtype: str,
        rid: str,
        version: int,
        resource: dict[str, Any] | None,
        compartment: str,
        *,
        new: bool,
        previous: str | None = None,
    ) -> StoredResource:
        now = now_us(self.vault.clock.now())
        pending = self._prepare(
            conn, rtype, rid, version, resource, compartment, new=new, now=now, previous=previous
        )
        self._flush(conn, [pending])
        return pending.stored

    def put_many(
        self,
        items: list[dict[str, Any]],
        *,
        validated: bool = False,
        references: list[list[str]] | None = None,
    ) -> list[StoredResource]:
        """Create or update many resources, each with its id, in one transaction.

        The bulk path of import and seeding: the same decisions, sealing, indexing and
        audit as ``update``, with one head look-up, one reference check and one
        executemany per table for the whole list instead of per resource.  ``validated``
        says the caller already ran ``validate`` on every item (import does it in
        worker processes); ``references``, if given, are each item's references as the
        caller already walked them (the bundle processor does, to rewrite them).
        """
        for r in items:
            if not validated:
                validate(r)
            rtype = str(r.get("resourceType"))
            self._check_type(rtype)
            if not isinstance(r.get("id"), str) or not valid_id(r["id"]):
                raise InvalidResource(f"{rtype} has no valid id")
        if self._per_resource():
            # People writing in bulk get every check of a single update, item by item.
            with self.atomic():
                return [self.update(str(r["resourceType"]), str(r["id"]), r)[0] for r in items]
        with self.atomic() as conn:
            heads = self._heads_for(conn, [str(r["id"]) for r in items])
            for r in items:
                self._known.add((str(r["resourceType"]), str(r["id"])))
            compartments = [compartment_of(r) for r in items]
            for r, compartment in zip(items, compartments, strict=True):
                key = (str(r["resourceType"]), str(r["id"]))
                head = heads.get(key)
                action = "update" if head is not None else "create"
                self._require(AccessRequest(action, key[0], key[1], compartment, r), conn)
                if head is not None and head.compartment != compartment:
                    self._require(AccessRequest("update", key[0], key[1], head.compartment), conn)
            self._check_references(conn, items, references)
            now = now_us(self.vault.clock.now())
            versions: dict[tuple[str, str], int] = {}
            pending = []
            created = 0
            for r, compartment in zip(items, compartments, strict=True):
                key = (str(r["resourceType"]), str(r["id"]))
                head = heads.get(key)
                previous = versions.get(key, int(head.version) if head is not None else 0)
                versions[key] = previous + 1
                is_new = previous == 0
                created += is_new
                pending.append(
                    self._prepare(
                        conn,
                        key[0],
                        key[1],
                        previous + 1,
                        r,
                        compartment,
                        new=is_new,
                        now=now,
                        previous=str(head.compartment) if head is not None else None,
                    )
                )
            self._flush(conn, pending)
            patients = sorted({p for r in items for p in self._patients(r)})
            by_type: dict[str, int] = {}
            for r in items:
                by_type[str(r["resourceType"])] = by_type.get(str(r["resourceType"]), 0) + 1
            self._audit(
                "import",
                "success",
                conn,
                patients=tuple(patients),
                detail={"created": created, "updated": len(items) - created, "types": by_type},
            )
        return [p.stored for p in pending]

    def _heads_for(self, conn: Connection, ids: list[str]) -> dict[tuple[str, str], Any]:
        h = resource_heads.c
        out: dict[tuple[str, str], Any] = {}
        for i in range(0, len(ids), 500):
            for row in conn.execute(
                select(h.rtype, h.rid, h.version, h.compartment, h.deleted).where(
                    h.tenant == self.tenant, h.rid.in_(ids[i : i + 500])
                )
            ):
                out[(row.rtype, row.rid)] = row
        return out

    def existing_ids(self, ids: list[str]) -> dict[str, str]:
        """For the ids that exist (in any type), their resource type."""
        with self.atomic() as conn:
            return {rid: rtype for (rtype, rid) in self._heads_for(conn, ids)}

    def tokens(self, resource: dict[str, Any]) -> set[tuple[str, bytes]]:
        """The blind-index tokens of one resource version."""
        indexer = self.vault.indexer
        out: set[tuple[str, bytes]] = set()
        rtype = str(resource["resourceType"])
        for name, param in params_for(rtype).items():
            key = f"{rtype}.{name}"
            for value in param.extract(resource):
                if param.kind == "date":
                    for part in date_tokens(value):
                        out.add((name, indexer.token(key, part)))
                elif param.normalised:
                    out.add((name, indexer.token(key, value)))
                else:
                    out.add((name, indexer.raw_token(key, value)))
        return out

    # -- references ------------------------------------------------------------------
    def _check_references(
        self,
        conn: Connection,
        items: list[dict[str, Any]],
        references: list[list[str]] | None = None,
    ) -> None:
        """Every relative reference must name a resource that exists (or is being written)."""
        wanted: dict[str, set[str]] = {}
        if references is None:
            references = [[ref for _h, ref in iter_references(r)] for r in items]
        for refs in references:
            for ref in refs:
                if ref.startswith("#") or "://" in ref or ref.startswith("urn:"):
                    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
                        raise InvalidResource(
                            "a reference was not resolved", [f"unresolved reference {ref[:80]}"]
                        )
                    continue
                parts = ref.split("/")
                if len(parts) not in (2, 4) or not known_type(parts[0]) or not valid_id(parts[1]):
                    raise InvalidResource(
                        "a reference is malformed", [f"malformed reference {ref[:80]}"]
                    )
                if (parts[0], parts[1]) not in self._known:
                    wanted.setdefault(parts[0], set()).add(parts[1])
        for rtype, ids in wanted.items():
            found: set[str] = set()
            id_list = sorted(ids)
            for i in range(0, len(id_list), 500):
                found.update(
                    r.rid
                    for r in conn.execute(
                        select(resource_heads.c.rid).where(
                            resource_heads.c.tenant == self.tenant,
                            resource_heads.c.rtype == rtype,
                            resource_heads.c.rid.in_(id_list[i : i + 500]),
                            resource_heads.c.deleted.is_(False),
                        )
                    )
                )
            missing = ids - found
            if missing:
                raise InvalidResource(
                    "a reference points at nothing",
                    [f"{rtype}/{m} does not exist" for m in sorted(missing)[:10]],
                )
            self._known.update((rtype, i) for i in found)

    def note_known(self, rtype: str, rid: str) -> None:
        """Tell the repository that ``rtype/rid`` will exist in this unit (bundle entries)."""
        self._known.add((rtype, rid))

    def _head(self, conn: Connection, rtype: str, rid: str) -> Any:
        return conn.execute(
            select(resource_heads).where(
                resource_heads.c.tenant == self.tenant,
                resource_heads.c.rtype == rtype,
                resource_heads.c.rid == rid,
            )
        ).first()

    # -- interactions ----------------------------------------------------------------
    def create(
        self, resource: dict[str, Any], *, rid: str | None = None, expected_type: str | None = None
    ) -> StoredResource:
        validate(resource, expected_type)
        rtype = str(resource["resourceType"])
        self._check_type(rtype)
        rid = rid or str(uuid.uuid4())
        resource = {**resource, "id": rid}
        compartment = compartment_of(resource)
        with self.atomic() as conn:
            decision = self._require(
                AccessRequest("create", rtype, rid, compartment, resource), conn
            )
            if self._head(conn, rtype, rid) is not None:
                raise VersionConflict(f"{rtype}/{rid} already exists")
            self._check_references(conn, [resource])
            stored = self._write_version(conn, rtype, rid, 1, resource, compartment, new=True)
            self._audit(
                "create",
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                version=1,
                patients=self._patients(resource),
            )
        return self._shown(stored, decision)

    def update(
        self, rtype: str, rid: str, resource: dict[str, Any], *, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Write a new version (or create with this id); returns (stored, created).

        For callers decided per resource, the current version must be visible to them
        (else the id answers as unknown) and theirs to change; fields masked from them
        keep their stored values, and read-only fields must not change.
        """
        self._check_type(rtype)
        validate(resource, rtype)
        if not valid_id(rid):
            raise InvalidResource("the resource id is not a valid FHIR id")
        if resource.get("id") not in (None, rid):
            raise InvalidResource("the resource id does not match the URL")
        resource = {**resource, "id": rid}
        compartment = compartment_of(resource)
        with self.atomic() as conn:
            head = self._head(conn, rtype, rid)
            action = "update" if head is not None else "create"
            if head is not None and self._per_resource():
                current = self._current(conn, head)
                on_current = self._require_existing(
                    AccessRequest("update", rtype, rid),
                    current,
                    str(head.compartment),
                    f"{rtype}/{rid} is not known",
                )
                resource = self._merge_hidden(resource, current, on_current)
                compartment = compartment_of(resource)
            decision = self._require(AccessRequest(action, rtype, rid, compartment, resource), conn)
            if head is not None and head.compartment != compartment:
                # Moving a record to another patient is a clinical correction; the old
                # compartment's policy must allow it too.
                self._require(AccessRequest("update", rtype, rid, head.compartment), conn)
            if if_match is not None and (head is None or int(head.version) != if_match):
                raise VersionConflict(
                    f"{rtype}/{rid} is at version {head.version if head else 'none'}, "
                    f"not {if_match}"
                )
            self._check_references(conn, [resource])
            version = int(head.version) + 1 if head is not None else 1
            stored = self._write_version(
                conn,
                rtype,
                rid,
                version,
                resource,
                compartment,
                new=head is None,
                previous=str(head.compartment) if head is not None else None,
            )
            self._audit(
                action,
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                version=version,
                patients=self._patients(resource),
            )
        return self._shown(stored, decision), head is None

    def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """Mark deleted (history keeps the versions); None if it was already deleted."""
        self._check_type(rtype)
        missing = f"{rtype}/{rid} is not known"
        with self.atomic() as conn:
            head = self._head(conn, rtype, rid)
            if head is None:
                self._require_visible(AccessRequest("delete", rtype, rid), missing)
                raise NotFound(missing)
            if self._per_resource():
                self._require_existing(
                    AccessRequest("delete", rtype, rid),
                    self._current(conn, head),
                    str(head.compartment),
                    missing,
                )
            else:
                self._require(AccessRequest("delete", rtype, rid, head.compartment), conn)
            if head.deleted:
                return None
            stored = self._write_version(
                conn, rtype, rid, int(head.version) + 1, None, head.compartment, new=False
            )
            self._audit(
                "delete",
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                version=stored.version,
                patients=self._compartment_patients(head.compartment),
            )
            self._known.discard((rtype, rid))
        return stored

    def read(self, rtype: str, rid: str) -> StoredResource:
        self._check_type(rtype)
        missing = f"{rtype}/{rid} is not known"
        with self.atomic() as conn:
            head = self._head(conn, rtype, rid)
            if head is None:
                self._require_visible(AccessRequest("read", rtype, rid), missing)
                raise NotFound(missing)
            if head.deleted:
                self._require_visible(AccessRequest("read", rtype, rid, head.compartment), missing)
                if self.vault.keyring.is_shredded(head.compartment, conn):
                    raise Gone(f"{rtype}/{rid} was destroyed (its patient's key was shredded)")
                raise Gone(f"{rtype}/{rid} was deleted")
            row = conn.execute(
                select(resources).where(
                    resources.c.tenant == self.tenant,
                    resources.c.rtype == rtype,
                    resources.c.rid == rid,
                    resources.c.version == head.version,
                )
            ).one()
            try:
                stored = self._open(conn, row)
            except Gone:
                self._require_visible(AccessRequest("read", rtype, rid, head.compartment), missing)
                raise
            decision = self._require_visible(
                AccessRequest("read", rtype, rid, head.compartment, stored.resource), missing
            )
            self._audit(
                "read",
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                version=stored.version,
                patients=self._compartment_patients(head.compartment),
                break_glass=decision.break_glass,
            )
        return self._shown(stored, decision)

    def vread(self, rtype: str, rid: str, version: int) -> StoredResource:
        self._check_type(rtype)
        missing = f"{rtype}/{rid} has no version {version}"
        with self.atomic() as conn:
            row = conn.execute(
                select(resources).where(
                    resources.c.tenant == self.tenant,
                    resources.c.rtype == rtype,
                    resources.c.rid == rid,
                    resources.c.version == version,
                )
            ).first()
            if row is None:
                self._require_visible(AccessRequest("vread", rtype, rid), missing)
                raise NotFound(missing)
            try:
                stored = self._open(conn, row)
            except Gone:
                self._require_visible(AccessRequest("vread", rtype, rid, row.compartment), missing)
                raise
            decision = self._require_visible(
                AccessRequest("vread", rtype, rid, row.compartment, stored.resource), missing
            )
            if stored.deleted:
                raise Gone(f"{rtype}/{rid} version {version} is a deletion")
            self._audit(
                "vread",
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                version=version,
                patients=self._compartment_patients(row.compartment),
                break_glass=decision.break_glass,
            )
        return self._shown(stored, decision)

    def history(self, rtype: str, rid: str) -> list[StoredResource]:
        """Every version, newest first; each decided on its own body (labels may change)."""
        self._check_type(rtype)
        missing = f"{rtype}/{rid} is not known"
        with self.atomic() as conn:
            head = self._head(conn, rtype, rid)
            if head is None:
                self._require_visible(AccessRequest("history", rtype, rid), missing)
                raise NotFound(missing)
            rows = conn.execute(
                select(resources)
                .where(
                    resources.c.tenant == self.tenant,
                    resources.c.rtype == rtype,
                    resources.c.rid == rid,
                )
                .order_by(resources.c.version.desc())
            ).all()
            opened = []
            for row in rows:
                try:
                    opened.append((row, self._open(conn, row)))
                except Gone:
                    stub = StoredResource(
                        rtype, rid, int(row.version), int(row.last_updated), True, None
                    )
                    opened.append((row, stub))
            # The resource as a whole: decided on its newest readable version.
            newest = next((s.resource for _r, s in opened if s.resource is not None), None)
            decision = self._require_visible(
                AccessRequest("history", rtype, rid, head.compartment, newest), missing
            )
            per_resource = self._per_resource()
            out = []
            used_break_glass = decision.break_glass
            for row, stored in opened:
                if stored.resource is None or not per_resource:
                    out.append(stored)
                    continue
                each = self._decide(
                    AccessRequest("history", rtype, rid, row.compartment, stored.resource)
                )
                if each.allowed:
                    used_break_glass |= each.break_glass
                    out.append(self._shown(stored, each))
            self._audit(
                "history",
                "success",
                conn,
                rtype=rtype,
                rid=rid,
                patients=self._compartment_patients(head.compartment),
                detail={"versions": len(out), "withheld": len(opened) - len(out)},
                break_glass=used_break_glass,
            )
        return out

    # -- search ----------------------------------------------------------------------
    def search(self, rtype: str, items: list[tuple[str, str]]) -> SearchResult:
        self._check_type(rtype)
        search_plan = plan(rtype, items)
        with self.atomic() as conn:
            self._require(AccessRequest("search", rtype), conn)
            if self._per_resource():
                return self._search_filtered(conn, rtype, items, search_plan)
            counted, heads = self._candidates(conn, search_plan)
            first, last = search_plan.offset, search_plan.offset + search_plan.count
            if search_plan.post_filters:
                opened = self._open_heads(conn, heads)
                matched = [
                    s
                    for s in opened
                    if s.resource is not None
                    and all(f(s.resource) for f in search_plan.post_filters)
                ]
                total = len(matched)
                page = [] if search_plan.summary_count else matched[first:last]
            elif counted is None:
                heads = self._recheck(conn, rtype, heads, search_plan)
                total = len(heads)
                window = [] if search_plan.summary_count else heads[first:last]
                page = self._open_heads(conn, window)
            else:
                total = counted
                page = self._open_heads(conn, heads)
            page = [p for p in page if p.resource is not None]
            self._audit_search(conn, rtype, items, page, {"total": total})
        more = not search_plan.summary_count and search_plan.offset + search_plan.count < total
        return SearchResult(total, search_plan.offset, search_plan.count, page, more)

    def _audit_search(
        self,
        conn: Connection,
        rtype: str,
        items: list[tuple[str, str]],
        page: list[StoredResource],
        detail: dict[str, Any],
        *,
        break_glass: bool = False,
    ) -> None:
        """One ledger event for a page of search results, naming every patient in it."""
        patients = sorted({p for s in page for p in self._patients(s.resource or {})})
        self._audit(
            "search",
            "success",
            conn,
            rtype=rtype,
            patients=tuple(patients),
            detail={
                **detail,
                "returned": len(page),
                "params": sorted({n for n, _ in items}),
            },
            break_glass=break_glass,
        )

    SCAN_BATCH = 200
    """Candidates opened and decided at a time by a filtered search."""

    def _search_filtered(
        self, conn: Connection, rtype: str, items: list[tuple[str, str]], search_plan: SearchPlan
    ) -> SearchResult:
        """Search for a caller decided per resource: only what they may see counts.

        Candidates (blind-index matches, in the search's order) are opened a batch at a
        time, re-checked, decided on their bodies, and the visible ones kept until the
        page and one more are found; ``total`` is the visible count when the scan got to
        the end, else None.  Nothing about withheld resources reaches the caller.
        """
        wanted = None if search_plan.summary_count else search_plan.offset + search_plan.count
        prefetch = getattr(self.vault.policy, "prefetch", None)
        visible: list[StoredResource] = []
        decided = 0
        used_break_glass = False
        pos = 0
        complete = False
        # Candidates are fetched a slice at a time, so a search over a large type costs
        # what the page needs, not a read of every matching head.
        while wanted is None or len(visible) <= wanted:
            # At least what the page still needs (and one more): a large page whose
            # candidates are mostly visible is then opened in one slice, not rounded
            # up to whole batches of candidates decrypted and decided for nothing.
            size = (
                self.SCAN_BATCH
                if wanted is None
                else max(self.SCAN_BATCH, wanted + 1 - len(visible))
            )
            _none, fetched = self._candidates(conn, search_plan, window=(pos, size))
            pos += len(fetched)
            if len(fetched) < size:
                complete = True
            batch = self._recheck(conn, rtype, fetched, search_plan)
            opened = self._open_heads(conn, batch)
            if prefetch is not None:
                prefetch(self.ctx, [str(h.compartment) for h in batch])
            for head, stored in zip(batch, opened, strict=True):
                if stored.resource is None:
                    continue
                if search_plan.post_filters and not all(
                    f(stored.resource) for f in search_plan.post_filters
                ):
                    continue
                decided += 1
                decision = self._decide(
                    AccessRequest("search", rtype, stored.id, head.compartment, stored.resource)
                )
                if decision.allowed:
                    used_break_glass |= decision.break_glass
                    visible.append(self._shown(stored, decision))
            if complete:
                break
        total = len(visible) if complete else None
        first, last = search_plan.offset, search_plan.offset + search_plan.count
        page = [] if search_plan.summary_count else visible[first:last]
        more = not search_plan.summary_count and len(visible) > last
        self._audit_search(
            conn,
            rtype,
            items,
            page,
            {"total": total, "decided": decided, "withheld": decided - len(visible)},
            break_glass=used_break_glass,
        )
        return SearchResult(total, search_plan.offset, search_plan.count, page, more)

    def _recheck(
        self, conn: Connection, rtype: str, heads: list[Any], search_plan: SearchPlan
    ) -> list[Any]:
        """Decrypt and re-check only the candidates that matched a marker token (dates
        stored with year or month precision at the edge of a searched range)."""
        rechecks = [tf for tf in search_plan.token_filters if tf.recheck and tf.check]
        if not rechecks or not heads:
            return heads
        st = search_tokens.c
        dropped: set[str] = set()
        by_rid = {h.rid: h for h in heads}
        for tf in rechecks:
            key = f"{rtype}.{tf.param.name}"
            tokens = [self.vault.indexer.token(key, v) for v in tf.recheck]
            suspects = {
                r.rid
                for r in conn.execute(
                    select(st.rid).where(
                        st.tenant == self.tenant,
                        st.rtype == rtype,
                        st.param == tf.param.name,
                        st.token.in_(tokens),
                    )
                )
            }
            for rid in suspects & by_rid.keys():
                opened = self._open_head(conn, by_rid[rid])
                if opened.resource is None or not tf.check(opened.resource):  # type: ignore[misc]
                    dropped.add(rid)
        return [h for h in heads if h.rid not in dropped]

    def _open_heads(self, conn: Connection, heads: list[Any]) -> list[StoredResource]:
        """Open the current versions of many resources with one query per type."""
        by_type: dict[str, dict[str, int]] = {}
        for head in heads:
            by_type.setdefault(head.rtype, {})[head.rid] = int(head.version)
        rows: dict[tuple[str, str], Any] = {}
        r = resources.c
        for rtype, versions in by_type.items():
            ids = list(versions)
            for i in range(0, len(ids), 500):
                for row in conn.execute(
                    select(resources).where(
                        r.tenant == self.tenant, r.rtype == rtype, r.rid.in_(ids[i : i + 500])
                    )
                ):
                    if int(row.version) == versions[row.rid]:
                        rows[(rtype, row.rid)] = row
        out = []
        for head in heads:
            try:
                out.append(self._open(conn, rows[(head.rtype, head.rid)]))
            except Gone:
                out.append(
                    StoredResource(
                        head.rtype, head.rid, int(head.version), int(head.last_updated), True, None
                    )
                )
        return out

    def _open_head(self, conn: Connection, head: Any) -> StoredResource:
        row = conn.execute(
            select(resources).where(
                resources.c.tenant == self.tenant,
                resources.c.rtype == head.rtype,
                resources.c.rid == head.rid,
                resources.c.version == head.version,
            )
        ).one()
        try:
            return self._open(conn, row)
        except Gone:
            return StoredResource(
                head.rtype, head.rid, int(head.version), int(head.last_updated), True, None
            )

    def _candidates(
        self,
        conn: Connection,
        search_plan: SearchPlan,
        *,
        every: bool = False,
        window: tuple[int, int] | None = None,
    ) -> tuple[int | None, list[Any]]:
        """(total, the page's heads), or (None, every candidate, in order) when the
        candidates must be decrypted and re-checked (or decided) before they count."""
        h = resource_heads.c
        rtype = search_plan.resource_type
        conds = [h.tenant == self.tenant, h.rtype == rtype, h.deleted.is_(False)]
        for ids in search_plan.ids:
            conds.append(h.rid.in_(ids))
        for comps in search_plan.compartments:
            conds.append(h.compartment.in_(comps))
        for prefix, rng in search_plan.updated:
            conds.append(_updated_condition(prefix, rng))
        indexer = self.vault.indexer
        st = search_tokens.c
        token_sets = []
        for tf in search_plan.token_filters:
            key = f"{rtype}.{tf.param.name}"
            tokens = [
                indexer.token(key, v)
                if tf.param.normalised or tf.param.kind == "date"
                else indexer.raw_token(key, v)
                for v in tf.values
            ]
            token_sets.append((tf.param.name, tokens))
        cols = (h.rtype, h.rid, h.version, h.last_updated, h.compartment)
        st1 = search_tokens.alias("st1")
        if token_sets:
            # Drive the query from the most selective index there is, the tokens of the
            # first filter; the other filters probe it.  (Left to itself, SQLite walks
            # every head of the type in index order to save a sort.)
            first_param, first_tokens = min(token_sets, key=lambda t: len(t[1]))
            joined = st1.join(
                resource_heads,
                and_(h.tenant == st1.c.tenant, h.rtype == st1.c.rtype, h.rid == st1.c.rid),
            )
            # st1.rid is selected too: PostgreSQL orders a DISTINCT only by what it selects.
            stmt = (
                select(*cols, st1.c.rid.label("token_rid"))
                .select_from(joined)
                .where(
                    st1.c.tenant == self.tenant,
                    st1.c.rtype == rtype,
                    st1.c.param == first_param,
                    st1.c.token.in_(first_tokens),
                )
            )
            if len(first_tokens) > 1:
                stmt = stmt.distinct()
            others = [t for t in token_sets if t[1] is not first_tokens]
        else:
            stmt = select(*cols)
            others = []
        for param, tokens in others:
            conds.append(
                h.rid.in_(
                    select(st.rid).where(
                        st.tenant == self.tenant,
                        st.rtype == rtype,
                        st.param == param,
                        st.token.in_(tokens),
                    )
                )
            )
        stmt = stmt.where(and_(*conds))
        # Default order: resource id, stable for paging.  With tokens it is the token
        # index's own rid (ordering by the heads' rid would make SQLite walk every head
        # of the type in key order); _sort=_lastUpdated on request, sorted explicitly.
        rid_col: Any = st1.c.rid if token_sets else h.rid
        if search_plan.sort_by_updated:
            order: Any = h.last_updated + 0 if token_sets else h.last_updated
            order_by = [order.desc(), rid_col.desc()] if search_plan.sort_desc else [order, rid_col]
        else:
            order_by = [rid_col.desc()] if search_plan.sort_desc else [rid_col]
        rechecking = any(tf.recheck for tf in search_plan.token_filters)
        if window is not None:  # one slice of the ordered candidates (filtered scans)
            sliced = stmt.order_by(*order_by).limit(window[1]).offset(window[0])
            return None, list(conn.execute(sliced).all())
        if search_plan.post_filters or rechecking or every:
            return None, list(conn.execute(stmt.order_by(*order_by)).all())
        total = int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
        if search_plan.summary_count or search_plan.offset >= total:
            return total, []
        page = stmt.order_by(*order_by).limit(search_plan.count).offset(search_plan.offset)
        return total, list(conn.execute(page).all())

    def everything(self, patient_id: str) -> list[StoredResource]:
        """The patient and every current resource in their compartment that the caller may
        read, each decided on its own body and masked."""
        compartment = f"Patient/{patient_id}"
        missing = f"Patient/{patient_id} is not known"
        with self.atomic() as conn:
            head = self._head(conn, "Patient", patient_id)
            if head is None or head.deleted:
                self._require_visible(AccessRequest("everything", "Patient", patient_id), missing)
                raise NotFound(missing)
            patient = self._open_head(conn, head)
            decision = self._require_visible(
                AccessRequest("everything", "Patient", patient_id, compartment, patient.resource),
                missing,
            )
            heads = conn.execute(
                select(
                    resource_heads.c.rtype,
                    resource_heads.c.rid,
                    resource_heads.c.version,
                    resource_heads.c.last_updated,
                )
                .where(
                    resource_heads.c.tenant == self.tenant,
                    resource_heads.c.compartment == compartment,
                    resource_heads.c.deleted.is_(False),
                )
                .order_by(
                    resource_heads.c.rtype != "Patient",
                    resource_heads.c.rtype,
                    resource_heads.c.rid,
                )
            ).all()
            opened = [s for s in self._open_heads(conn, list(heads)) if s.resource is not None]
            used_break_glass = decision.break_glass
            if self._per_resource():
                out = []
                for stored in opened:
                    each = self._decide(
                        AccessRequest(
                            "read", stored.resource_type, stored.id, compartment, stored.resource
                        )
                    )
                    if each.allowed:
                        used_break_glass |= each.break_glass
                        out.append(self._shown(stored, each))
            else:
                out = opened
            self._audit(
                "everything",
                "success",
                conn,
                rtype="Patient",
                rid=patient_id,
                patients=(patient_id,),
                detail={"returned": len(out), "withheld": len(opened) - len(out)},
                break_glass=used_break_glass,
            )
        return out

    # -- bulk export -----------------------------------------------------------------
    def export_allowed(self, types: Sequence[str]) -> None:
        """Refuse (``AccessDenied``, recorded) unless the caller may export every type."""
        for rtype in types:
            self._check_type(rtype)
        for rtype in types:
            self._require(AccessRequest("export", rtype, None, None, None), None)

    def export(
        self,
        types: Sequence[str],
        *,
        since_us: int | None = None,
        patients_only: bool = False,
        batch: int = 500,
    ) -> Iterator[tuple[str, list[StoredResource]]]:
        """Every current resource of ``types`` the caller may export, ``batch`` at a time.

        Each type is decided first (``export_allowed``); then every resource on its own
        body, as a search result is: one the caller may not export is left out, and
        the masks of its decision are applied.  Each batch is one ledger event naming
        every patient whose data it returned, with the counts returned and withheld.
        ``patients_only``: resources in a patient's compartment only (Patient-level
        export).  ``since_us``: changed at or after that instant.
        """
        self.export_allowed(types)
        per_resource = self._per_resource()
        h = resource_heads.c
        for rtype in types:
            after = ""
            while True:
                with self.atomic() as conn:
                    query = (
                        select(h.rtype, h.rid, h.version, h.last_updated, h.compartment)
                        .where(
                            h.tenant == self.tenant,
                            h.rtype == rtype,
                            h.deleted.is_(False),
                            h.rid > after,
                        )
                        .order_by(h.rid)
                        .limit(batch)
                    )
                    if since_us is not None:
                        query = query.where(h.last_updated >= since_us)
                    if patients_only:
                        query = query.where(h.compartment.like("Patient/%"))
                    heads = conn.execute(query).all()
                    if not heads:
                        break
                    after = str(heads[-1].rid)
                    out: list[StoredResource] = []
                    patients: set[str] = set()
                    withheld = 0
                    used_break_glass = False
                    for head, stored in zip(
                        heads, self._open_heads(conn, list(heads)), strict=True
                    ):
                        if stored.resource is None:
                            continue
                        if per_resource:
                            decision = self._decide(
                                AccessRequest(
                                    "export", rtype, stored.id, head.compartment, stored.resource
                                )
                            )
                            if not decision.allowed:
                                withheld += 1
                                continue
                            used_break_glass |= decision.break_glass
                            stored = self._shown(stored, decision)
                        out.append(stored)
                        patients.update(self._compartment_patients(str(head.compartment)))
                    self._audit(
                        "export",
                        "success",
                        conn,
                        rtype=rtype,
                        patients=tuple(sorted(patients)),
                        detail={"returned": len(out), "withheld": withheld},
                        break_glass=used_break_glass,
                    )
                yield rtype, out

    # -- helpers ---------------------------------------------------------------------
    @staticmethod
    def _patients(resource: dict[str, Any]) -> tuple[str, ...]:
        pid = patient_of(resource)
        return (pid,) if pid else ()

    @staticmethod
    def _compartment_patients(compartment: str) -> tuple[str, ...]:
        return (compartment.removeprefix("Patient/"),) if compartment.startswith("Patient/") else ()

    def resolve_id(self, rid: str) -> str | None:
        """The resource type of an existing resource id (for ``urn:uuid`` references)."""
        with self.atomic() as conn:
            row = conn.execute(
                select(resource_heads.c.rtype)
                .where(
                    resource_heads.c.tenant == self.tenant,
                    resource_heads.c.rid == rid,
                    resource_heads.c.deleted.is_(False),
                )
                .limit(2)
            ).all()
        return str(row[0].rtype) if len(row) == 1 else None


def _updated_condition(prefix: str, rng: DateRange) -> Any:
    col = resource_heads.c.last_updated
    lo, hi = now_us(rng.start), now_us(rng.end)
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "gt":
        return col >= hi
    if prefix == "ge":
        return col >= lo
    if prefix == "lt":
        return col < lo
    if prefix == "le":
        return col < hi
    raise InvalidSearch("unsupported _lastUpdated prefix")


__all__ = ["Repository", "SearchResult", "StoredResource"]
