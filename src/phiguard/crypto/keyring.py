"""Data keys per compartment: creation, caching, rotation, rewrap and shredding.

A compartment is everything about one patient (``Patient/<id>``) or the shared
compartment for resources about nobody in particular.  Each has its own data key
(DEK), so destroying one DEK (crypto-shredding) makes every version of every record
about that patient unreadable without touching any other patient.

DEKs are wrapped by the provider's newest KEK; the wrapped form is bound to its
tenant, compartment and version, so a wrapped key copied to another row fails to
unwrap.  Unwrapped DEKs are cached in memory (an LRU) because a provider round trip
per read would dominate read latency, above all with an HSM.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, event, func, select, update

from phiguard.clock import Clock, SystemClock
from phiguard.errors import KeyProviderError, KeyShreddedError
from phiguard.store.engine import now_us
from phiguard.store.tables import data_keys

from .envelope import Sealer, aad, new_key
from .providers import KeyProvider, WrappedKey

SHARED = "shared"
INDEX_COMPARTMENT = "__blind-index__"
BACKUP_COMPARTMENT = "__system__"
AUDIT_COMPARTMENT = "__audit__"
IDENTITY_COMPARTMENT = "__identity__"
MONITOR_COMPARTMENT = "__monitor__"  # monitoring datasets, alert evidence, notes
EXPORT_COMPARTMENT = "__export__"  # bulk export files, for the hour they are kept
RESERVED = frozenset(
    {
        INDEX_COMPARTMENT,
        BACKUP_COMPARTMENT,
        AUDIT_COMPARTMENT,
        IDENTITY_COMPARTMENT,
        MONITOR_COMPARTMENT,
        EXPORT_COMPARTMENT,
    }
)
_PENDING = "phiguard.pending_keys"
_PENDING_LATEST = "phiguard.pending_latest"  # compartment -> newest pending version
_VERIFIED = "phiguard.verified_keys"


def _forget_transaction_state(_dbapi_conn: Any, record: Any) -> None:
    """A connection back in the pool carries nothing of the transaction it ended."""
    if record is not None:
        record.info.pop(_PENDING, None)
        record.info.pop(_PENDING_LATEST, None)
        record.info.pop(_VERIFIED, None)


def patient_compartment(patient_id: str) -> str:
    return f"Patient/{patient_id}"


@dataclass(frozen=True)
class KeyStatus:
    provider: dict[str, str]
    compartments: int
    active_deks: int
    retired_deks: int
    shredded: int
    by_kek_version: dict[int, int]


class Keyring:
    """Per-tenant data keys, stored wrapped in ``data_keys``."""

    def __init__(
        self,
        engine: Engine,
        provider: KeyProvider,
        tenant: str = "default",
        *,
        clock: Clock | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.tenant = tenant
        self.clock = clock or SystemClock()
        self._cache: OrderedDict[tuple[str, int], Sealer] = OrderedDict()
        self._current: dict[str, int] = {}
        self._cache_size = cache_size
        self._lock = threading.RLock()
        # Keys created inside a transaction join the cache only when it commits: a
        # rolled-back key must never seal anything.
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "rollback", self._on_rollback)
        event.listen(engine.pool, "checkin", _forget_transaction_state)

    def _pending(self, conn: Connection) -> dict[tuple[str, int], Sealer]:
        pending: dict[tuple[str, int], Sealer] = conn.info.setdefault(_PENDING, {})
        return pending

    def _on_commit(self, conn: Connection) -> None:
        conn.info.pop(_VERIFIED, None)
        conn.info.pop(_PENDING_LATEST, None)
        pending = conn.info.pop(_PENDING, None)
        if pending:
            for (compartment, version), sealer in pending.items():
                self._remember(compartment, version, sealer)
                with self._lock:
                    self._current[compartment] = max(version, self._current.get(compartment, 0))

    def _on_rollback(self, conn: Connection) -> None:
        conn.info.pop(_VERIFIED, None)
        conn.info.pop(_PENDING_LATEST, None)
        pending = conn.info.pop(_PENDING, None)
        if pending:
            with self._lock:
                for compartment, _version in pending:
                    self._current.pop(compartment, None)

    # -- associated data -------------------------------------------------------------
    def _wrap_aad(self, compartment: str, version: int) -> bytes:
        return aad("phiguard-dek", self.tenant, compartment, version)

    # -- cache -----------------------------------------------------------------------
    def _remember(self, compartment: str, version: int, sealer: Sealer) -> None:
        with self._lock:
            self._cache[(compartment, version)] = sealer
            self._cache.move_to_end((compartment, version))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def forget(self, compartment: str | None = None) -> None:
        """Drop cached keys (all, or one compartment's): after shred, rotate or restore."""
        with self._lock:
            if compartment is None:
                self._cache.clear()
                self._current.clear()
                return
            for key in [k for k in self._cache if k[0] == compartment]:
                del self._cache[key]
            self._current.pop(compartment, None)

    # -- reading keys ----------------------------------------------------------------
    def sealer(self, compartment: str, version: int, conn: Connection | None = None) -> Sealer:
        """The key of ``compartment`` at ``version`` (to open a token sealed under it)."""
        with self._lock:
            cached = self._cache.get((compartment, version))
            if cached is not None:
                self._cache.move_to_end((compartment, version))
                return cached
        if conn is not None:
            pending: Sealer | None = conn.info.get(_PENDING, {}).get((compartment, version))
            if pending is not None:
                return pending
        row = self._load(compartment, version, conn)
        if row is None:
            raise KeyProviderError(f"no data key {version} for compartment {compartment}")
        if row.state == "shredded" or row.wrapped is None:
            raise KeyShreddedError(f"the data key of {compartment} was destroyed")
        raw = self.provider.unwrap(
            WrappedKey(int(row.kek_version), bytes(row.wrapped)),
            self._wrap_aad(compartment, version),
        )
        sealer = Sealer(raw, version)
        self._remember(compartment, version, sealer)
        return sealer

    def _load(self, compartment: str, version: int, conn: Connection | None) -> Any:
        stmt = select(data_keys).where(
            data_keys.c.tenant == self.tenant,
            data_keys.c.compartment == compartment,
            data_keys.c.version == version,
        )
        if conn is not None:
            return conn.execute(stmt).first()
        with self.engine.connect() as c:
            return c.execute(stmt).first()

    def current_sealer(self, compartment: str, conn: Connection) -> Sealer:
        """The key new data of ``compartment`` is sealed with; creates one on first use.

        Runs inside the caller's transaction, so a created key commits (or rolls back)
        with the record that needed it.
        """
        with self._lock:
            version = self._current.get(compartment)
        verified: set[tuple[str, int]] = conn.info.setdefault(_VERIFIED, set())
        if version is not None and (compartment, version) in verified:
            return self.sealer(compartment, version, conn)
        if version is not None:
            # One primary-key look-up per compartment and transaction keeps other
            # processes' shredding and rotation authoritative over this cache.
            state = conn.execute(
                select(data_keys.c.state).where(
                    data_keys.c.tenant == self.tenant,
                    data_keys.c.compartment == compartment,
                    data_keys.c.version == version,
                )
            ).scalar()
            if state == "active":
                verified.add((compartment, version))
                return self.sealer(compartment, version, conn)
            self.forget(compartment)
        latest = conn.info.get(_PENDING_LATEST, {}).get(compartment)
        if latest is not None:
            return self.sealer(compartment, latest, conn)
        row = conn.execute(
            select(data_keys.c.version, data_keys.c.state)
            .where(data_keys.c.tenant == self.tenant, data_keys.c.compartment == compartment)
            .order_by(data_keys.c.version.desc())
            .limit(1)
        ).first()
        if row is not None and row.state == "shredded":
            raise KeyShreddedError(f"the data key of {compartment} was destroyed")
        if row is not None and row.state == "active":
            sealer = self.sealer(compartment, int(row.version), conn)
            with self._lock:
                self._current[compartment] = sealer.key_version
            return sealer
        return self._create(compartment, (int(row.version) + 1) if row else 1, conn)

    def _create(self, compartment: str, version: int, conn: Connection) -> Sealer:
        raw = new_key()
        wrapped = self.provider.wrap(raw, self._wrap_aad(compartment, version))
        now = now_us(self.clock.now())
        conn.execute(
            data_keys.insert().values(
                tenant=self.tenant,
                compartment=compartment,
                version=version,
                provider=self.provider.name,
                kek_version=wrapped.kek_version,
                wrapped=wrapped.blob,
                state="active",
                created_at=now,
                changed_at=now,
            )
        )
        sealer = Sealer(raw, version)
        self._pending(conn)[(compartment, version)] = sealer
        latest: dict[str, int] = conn.info.setdefault(_PENDING_LATEST, {})
        latest[compartment] = max(version, latest.get(compartment, 0))
        return sealer

    def is_shredded(self, compartment: str, conn: Connection | None = None) -> bool:
        stmt = select(func.count()).where(
            data_keys.c.tenant == self.tenant,
            data_keys.c.compartment == compartment,
            data_keys.c.state == "shredded",
        )
        if conn is not None:
            return bool(conn.execute(stmt).scalar_one())
        with self.engine.connect() as c:
            return bool(c.execute(stmt).scalar_one())

    # -- rotation --------------------------------------------------------------------
    def begin_rotation(self, compartment: str, conn: Connection) -> tuple[int, Sealer]:
        """Retire the active DEK of ``compartment`` and create the next one.

        Records sealed under older versions still open (their keys stay, retired)
        until ``finish_rotation`` destroys them after every row was re-sealed.
        """
        row = conn.execute(
            select(data_keys.c.version, data_keys.c.state)
            .where(data_keys.c.tenant == self.tenant, data_keys.c.compartment == compartment)
            .order_by(data_keys.c.version.desc())
            .limit(1)
        ).first()
        if row is not None and row.state == "shredded":
            raise KeyShreddedError(f"the data key of {compartment} was destroyed")
        now = now_us(self.clock.now())
        conn.execute(
            update(data_keys)
            .where(
                data_keys.c.tenant == self.tenant,
                data_keys.c.compartment == compartment,
                data_keys.c.state == "active",
            )
            .values(state="retired", changed_at=now)
        )
        version = (int(row.version) + 1) if row else 1
        with self._lock:
            self._current.pop(compartment, None)
        return version, self._create(compartment, version, conn)

    def retired_versions(self, compartment: str, conn: Connection) -> list[int]:
        rows = conn.execute(
            select(data_keys.c.version).where(
                data_keys.c.tenant == self.tenant,
                data_keys.c.compartment == compartment,
                data_keys.c.state == "retired",
            )
        )
        return [int(r.version) for r in rows]

    def destroy_retired(self, compartment: str, versions: list[int], conn: Connection) -> None:
        """Erase retired DEKs no row uses any more (their wrapped bytes are overwritten)."""
        if not versions:
            return
        conn.execute(
            update(data_keys)
            .where(
                data_keys.c.tenant == self.tenant,
                data_keys.c.compartment == compartment,
                data_keys.c.version.in_(versions),
                data_keys.c.state == "retired",
            )
            .values(state="destroyed", wrapped=None, changed_at=now_us(self.clock.now()))
        )
        with self._lock:
            for v in versions:
                self._cache.pop((compartment, v), None)

    def compartments_in_rotation(self) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(data_keys.c.compartment)
                .where(data_keys.c.tenant == self.tenant, data_keys.c.state == "retired")
                .distinct()
            )
            return [r.compartment for r in rows]

    # -- KEK rewrap ------------------------------------------------------------------
    def rewrap(
        self, *, batch: int = 500, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Re-wrap every live DEK under the provider's current KEK version.

        Record ciphertext is untouched: only the small wrapped keys change.  Each batch
        commits on its own, so an interrupted rewrap resumes where it stopped.
        """
        current = self.provider.current_version()
        live = and_(
            data_keys.c.tenant == self.tenant,
            data_keys.c.state.in_(["active", "retired"]),
            data_keys.c.provider == self.provider.name,
            data_keys.c.kek_version != current,
        )
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).where(live)).scalar_one())
        done = 0
        while True:
            with self.engine.begin() as conn:
                rows = conn.execute(
                    select(
                        data_keys.c.compartment,
                        data_keys.c.version,
                        data_keys.c.kek_version,
                        data_keys.c.wrapped,
                    )
                    .where(live)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                for r in rows:
                    assoc = self._wrap_aad(r.compartment, int(r.version))
                    raw = self.provider.unwrap(
                        WrappedKey(int(r.kek_version), bytes(r.wrapped)), assoc
                    )
                    new = self.provider.wrap(raw, assoc)
                    conn.execute(
                        update(data_keys)
                        .where(
                            data_keys.c.tenant == self.tenant,
                            data_keys.c.compartment == r.compartment,
                            data_keys.c.version == r.version,
                        )
                        .values(
                            kek_version=new.kek_version,
                            wrapped=new.blob,
                            changed_at=now_us(self.clock.now()),
                        )
                    )
                done += len(rows)
            if progress:
                progress(done, total)
        return done

    # -- shredding -------------------------------------------------------------------
    def shred(self, compartment: str, conn: Connection) -> int:
        """Destroy every DEK of ``compartment``; returns how many keys were destroyed."""
        result = conn.execute(
            update(data_keys)
            .where(
                data_keys.c.tenant == self.tenant,
                data_keys.c.compartment == compartment,
                data_keys.c.state != "shredded",
            )
            .values(state="shredded", wrapped=None, changed_at=now_us(self.clock.now()))
        )
        count = int(result.rowcount or 0)
        if count == 0:
            # A compartment that never had a key gets a tombstone, so nothing new is
            # ever sealed for a patient whose data was shredded.
            now = now_us(self.clock.now())
            conn.execute(
                data_keys.insert().values(
                    tenant=self.tenant,
                    compartment=compartment,
                    version=1,
                    provider=self.provider.name,
                    kek_version=0,
                    wrapped=None,
                    state="shredded",
                    created_at=now,
                    changed_at=now,
                )
            )
        self.forget(compartment)
        return count

    # -- status ----------------------------------------------------------------------
    def status(self) -> KeyStatus:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(data_keys.c.state, data_keys.c.kek_version, func.count())
                .where(data_keys.c.tenant == self.tenant)
                .group_by(data_keys.c.state, data_keys.c.kek_version)
            ).all()
            compartments = int(
                conn.execute(
                    select(func.count(func.distinct(data_keys.c.compartment))).where(
                        data_keys.c.tenant == self.tenant
                    )
                ).scalar_one()
            )
        counts: dict[str, int] = {}
        by_kek: dict[int, int] = {}
        for state, kek_version, n in rows:
            counts[state] = counts.get(state, 0) + int(n)
            if state in ("active", "retired"):
                by_kek[int(kek_version)] = by_kek.get(int(kek_version), 0) + int(n)
        return KeyStatus(
            provider=self.provider.describe(),
            compartments=compartments,
            active_deks=counts.get("active", 0),
            retired_deks=counts.get("retired", 0),
            shredded=counts.get("shredded", 0),
            by_kek_version=dict(sorted(by_kek.items())),
        )

    def iter_compartments(self) -> Iterator[str]:
        with self.engine.connect() as conn:
            for r in conn.execute(
                select(data_keys.c.compartment)
                .where(data_keys.c.tenant == self.tenant, data_keys.c.state == "active")
                .distinct()
            ):
                yield r.compartment
