"""Monitoring datasets at rest: sealed Arrow chunks in the database, never plain files.

An export from another EHR holds the same PHI as the vault (names, addresses, birth
dates), so it gets the same protection: each block of rows is written as Arrow IPC
bytes and sealed with AES-256-GCM under the ``__monitor__`` data key, bound to its
tenant, kind, load and position (a chunk moved to another row or load fails to
open).  Nothing is written outside the database, so SQLite's ``secure_delete`` and
the backup's encryption cover it like any other row.

Roster, patient and care loads replace the previous load of their kind (a roster is
a snapshot); access and auth loads add to what is there, and a file already loaded
(same bytes, by keyed digest) is recognised and skipped.  A load becomes visible
only when it is complete, so a scan never sees half a roster.

Everything stored here comes from another system, so its patient ids are replaced
by keyed pseudonyms before the first chunk is sealed (``pseudonyms``); the ids
themselves are kept only in the sealed source-id map (loads of kind
``source-ids``, one chunk per pseudonym bucket, never replaced), from which an
officer's opening of an alert resolves them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl
from sqlalchemy import Engine, Select, and_, delete, or_, select, update

from phiguard.clock import Clock, SystemClock
from phiguard.crypto.envelope import Sealer, aad
from phiguard.crypto.keyring import MONITOR_COMPARTMENT, Keyring
from phiguard.errors import ImportFailed, MonitorError
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import monitor_chunks, monitor_loads

from . import frames
from .pseudonyms import ALPHABET, PATIENT_KINDS, PREFIX, Pseudonymiser, bucket, is_pseudonym
from .sources.csv import BadRow, ReadReport, read_csv
from .sources.mapping import Mapping

APPEND_KINDS: Final = frozenset({"access", "auth"})
TIMED_KINDS: Final = APPEND_KINDS  # kinds whose rows carry an event time
STALE_LOADING: Final = dt.timedelta(hours=1)  # an unfinished load older than this is debris
_DIGEST_PURPOSE: Final = b"phiguard/monitor-file-digest"
SOURCE_IDS: Final = "source-ids"  # the sealed map of pseudonyms to foreign patient ids
_BUCKET_OF: Final = {c: i for i, c in enumerate(ALPHABET)}
_SOURCE_SCHEMA: Final = {"pseudonym": pl.String(), "source_id": pl.String()}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IngestResult:
    """The outcome of loading one file; ``bad_rows`` holds the first refused rows."""

    kind: str
    load_id: str | None
    rows: int
    rejected: int
    bad_rows: list[BadRow] = field(default_factory=list)
    duplicate: bool = False
    replaced: int = 0  # earlier loads of the kind this one replaced


@dataclass(frozen=True)
class LoadInfo:
    load_id: str
    kind: str
    rows: int
    rejected: int
    state: str
    loaded_at: dt.datetime
    loaded_by: str


class DatasetStore:
    """Loads, lists and opens the monitoring datasets of one tenant."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        *,
        tenant: str = "default",
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.tenant = tenant
        self.clock = clock or SystemClock()

    # -- writing -----------------------------------------------------------------------
    def ingest(
        self,
        path: Path,
        kind: str,
        mapping: Mapping | None = None,
        *,
        by: str,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Load the CSV file at ``path`` as ``kind`` (see the module docstring)."""
        if kind not in frames.SCHEMAS:
            raise MonitorError(f"unknown kind: {kind} (one of: {', '.join(frames.SCHEMAS)})")
        mapping = mapping or Mapping()
        try:
            path.stat()
        except OSError as exc:
            raise ImportFailed(f"cannot read {path.name}: {exc.strerror}") from None
        header = _header(path, mapping)
        if header:  # refuse a bad mapping before hashing (an unreadable file: read_csv says)
            mapping.locate(kind, header)
        digest = self._digest(path)
        with self.engine.connect() as conn:
            same = conn.execute(
                select(monitor_loads.c.load_id).where(
                    monitor_loads.c.tenant == self.tenant,
                    monitor_loads.c.kind == kind,
                    monitor_loads.c.state == "active",
                    monitor_loads.c.digest == digest,
                )
            ).first()
        if same is not None:
            return IngestResult(kind, str(same.load_id), 0, 0, duplicate=True)
        report = ReadReport()
        load_id, rows, replaced = self.write(
            kind,
            read_csv(path, kind, mapping, report=report, progress=progress),
            digest=digest,
            by=by,
            rejected=lambda: report.rejected,
        )
        return IngestResult(
            kind, load_id, rows, report.rejected, report.bad_rows, replaced=replaced
        )

    def write(
        self,
        kind: str,
        blocks: Iterable[pl.DataFrame],
        *,
        digest: str,
        by: str,
        rejected: Callable[[], int] = lambda: 0,
    ) -> tuple[str, int, int]:
        """Seal ``blocks`` as a new load of ``kind``; (load id, rows, loads replaced).

        Each block commits on its own (bounded transactions for millions of rows); the
        load turns active, and replaces the previous one for snapshot kinds, in one
        final transaction.  On any failure the partial load is removed.

        Patient ids are pseudonymised here, block by block, before anything is sealed:
        every caller's frames come from another system.  Ids the map has never seen
        go into a new part of it, which turns active in the same final transaction.
        """
        self._clear_debris()
        load_id = self._open_load(kind, digest, by)
        rows = 0
        map_load: str | None = None
        try:
            pseudonymiser = self.pseudonymiser() if kind in PATIENT_KINDS else None
            known = self._known_pseudonyms() if pseudonymiser is not None else set()
            fresh: dict[str, str] = {}
            for seq, block in enumerate(b for b in blocks if b.height):
                block = frames.check(kind, block)
                if pseudonymiser is not None:
                    block, pairs = pseudonymiser.frame(kind, block)
                    fresh.update((p, s) for p, s in pairs.items() if p not in known)
                self._write_chunk(load_id, kind, seq, block)
                rows += block.height
            if rows == 0:
                raise MonitorError(f"the {kind} file has no usable rows; nothing was loaded")
            if fresh:
                map_load = self._write_source_ids(fresh, by)
            replaced = self._activate(
                load_id, kind, rows, rejected(), companion=(map_load, len(fresh))
            )
        except BaseException:
            self._drop(load_id)
            if map_load is not None:
                self._drop(map_load)
            raise
        return load_id, rows, replaced

    def _open_load(self, kind: str, digest: str, by: str) -> str:
        load_id = secrets.token_hex(16)
        with self.engine.begin() as conn:
            conn.execute(
                monitor_loads.insert().values(
                    load_id=load_id,
                    tenant=self.tenant,
                    kind=kind,
                    digest=digest,
                    rows=0,
                    rejected=0,
                    state="loading",
                    loaded_at=now_us(self.clock.now()),
                    loaded_by=by,
                )
            )
        return load_id

    def pseudonymiser(self) -> Pseudonymiser:
        """What the store pseudonymises with (also: to find alerts by a source id)."""
        return Pseudonymiser.for_tenant(self.keyring, self.tenant)

    def _write_source_ids(self, pairs: dict[str, str], by: str) -> str:
        """The new part of the source-id map as a load of its own, one chunk per bucket
        (so resolving one alert's patients opens a thirty-second of the map)."""
        load_id = self._open_load(SOURCE_IDS, "", by)
        frame = pl.DataFrame(
            {"pseudonym": list(pairs), "source_id": list(pairs.values())}, schema=_SOURCE_SCHEMA
        ).with_columns(
            pl.col("pseudonym")
            .str.slice(len(PREFIX), 1)
            .replace_strict(_BUCKET_OF, return_dtype=pl.Int64())
            .alias("bucket")
        )
        for (seq,), part in frame.partition_by("bucket", as_dict=True).items():
            self._write_chunk(load_id, SOURCE_IDS, int(seq), part.drop("bucket").sort("pseudonym"))
        return load_id

    def _write_chunk(self, load_id: str, kind: str, seq: int, block: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        block.write_ipc(buffer, compression="lz4")
        first = last = None
        if kind in TIMED_KINDS:
            times = block.get_column("timestamp")
            first, last = _us(times.min()), _us(times.max())
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(MONITOR_COMPARTMENT, conn)
            conn.execute(
                monitor_chunks.insert().values(
                    load_id=load_id,
                    seq=seq,
                    kind=kind,
                    rows=block.height,
                    first_at=first,
                    last_at=last,
                    dek_version=sealer.key_version,
                    sealed=sealer.seal(buffer.getvalue(), self._aad(kind, load_id, seq)),
                )
            )

    def _activate(
        self,
        load_id: str,
        kind: str,
        rows: int,
        rejected: int,
        *,
        companion: tuple[str | None, int] = (None, 0),
    ) -> int:
        with self.engine.begin() as conn:
            if companion[0] is not None:  # the source-id map turns active with its load
                conn.execute(
                    update(monitor_loads)
                    .where(monitor_loads.c.load_id == companion[0])
                    .values(state="active", rows=companion[1])
                )
            replaced: list[str] = []
            if kind not in APPEND_KINDS:
                replaced = list(
                    conn.execute(
                        select(monitor_loads.c.load_id).where(
                            monitor_loads.c.tenant == self.tenant,
                            monitor_loads.c.kind == kind,
                            monitor_loads.c.state == "active",
                        )
                    ).scalars()
                )
                if replaced:
                    conn.execute(
                        update(monitor_loads)
                        .where(monitor_loads.c.load_id.in_(replaced))
                        .values(state="replaced")
                    )
                    conn.execute(
                        delete(monitor_chunks).where(monitor_chunks.c.load_id.in_(replaced))
                    )
            conn.execute(
                update(monitor_loads)
                .where(monitor_loads.c.load_id == load_id)
                .values(state="active", rows=rows, rejected=rejected)
            )
        return len(replaced)

    def _drop(self, load_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(monitor_chunks).where(monitor_chunks.c.load_id == load_id))
            conn.execute(delete(monitor_loads).where(monitor_loads.c.load_id == load_id))

    def _clear_debris(self) -> None:
        """Remove loads a crashed ingest left unfinished (never visible to scans)."""
        cutoff = now_us(self.clock.now() - STALE_LOADING)
        with self.engine.connect() as conn:
            stale = list(
                conn.execute(
                    select(monitor_loads.c.load_id).where(
                        monitor_loads.c.tenant == self.tenant,
                        monitor_loads.c.state == "loading",
                        monitor_loads.c.loaded_at < cutoff,
                    )
                ).scalars()
            )
        for load_id in stale:
            self._drop(load_id)

    def _aad(self, kind: str, load_id: str, seq: int) -> bytes:
        return aad("monitor-chunk", self.tenant, kind, load_id, seq)

    def _digest(self, path: Path) -> str:
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(MONITOR_COMPARTMENT, conn)
        mac = hmac.new(sealer.derive(_DIGEST_PURPOSE), digestmod=hashlib.sha256)
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                mac.update(block)
        return mac.hexdigest()

    # -- reading -----------------------------------------------------------------------
    def loads(self, kind: str | None = None) -> list[LoadInfo]:
        """Every finished load (active and replaced), newest first.

        The source-id map's loads are listed only when asked for by their kind.
        """
        stmt = (
            select(monitor_loads)
            .where(monitor_loads.c.tenant == self.tenant, monitor_loads.c.state != "loading")
            .order_by(monitor_loads.c.loaded_at.desc())
        )
        if kind is not None:
            stmt = stmt.where(monitor_loads.c.kind == kind)
        else:
            stmt = stmt.where(monitor_loads.c.kind != SOURCE_IDS)
        with self.engine.connect() as conn:
            return [
                LoadInfo(
                    str(r.load_id),
                    str(r.kind),
                    int(r.rows),
                    int(r.rejected),
                    str(r.state),
                    from_us(int(r.loaded_at)),
                    str(r.loaded_by),
                )
                for r in conn.execute(stmt)
            ]

    def blocks(
        self, kind: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> Iterator[pl.DataFrame]:
        """The active rows of ``kind``, chunk by chunk, opened in memory only."""
        c, ld = monitor_chunks.c, monitor_loads.c
        stmt = (
            select(c.load_id, c.seq, c.kind, c.dek_version, c.sealed)
            .join(monitor_loads, ld.load_id == c.load_id)
            .where(ld.tenant == self.tenant, ld.kind == kind, ld.state == "active")
            .order_by(ld.loaded_at, c.load_id, c.seq)
        )
        timed = kind in TIMED_KINDS
        if timed and since is not None:
            stmt = stmt.where(or_(c.last_at.is_(None), c.last_at >= now_us(since)))
        if timed and until is not None:
            stmt = stmt.where(or_(c.first_at.is_(None), c.first_at < now_us(until)))
        for block in self._open(stmt):
            if timed and since is not None:
                block = block.filter(pl.col("timestamp") >= since)
            if timed and until is not None:
                block = block.filter(pl.col("timestamp") < until)
            yield frames.check(kind, block)

    def _open(self, stmt: Select[Any]) -> Iterator[pl.DataFrame]:
        """The chunks ``stmt`` selects (load, seq, kind, key version, sealed), opened."""
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        sealers: dict[int, Sealer] = {}
        for r in rows:
            version = int(r.dek_version)
            if version not in sealers:
                sealers[version] = self.keyring.sealer(MONITOR_COMPARTMENT, version)
            raw = sealers[version].open(
                bytes(r.sealed), self._aad(str(r.kind), str(r.load_id), int(r.seq)), "chunk"
            )
            yield pl.read_ipc(io.BytesIO(raw))

    # -- the source-id map -------------------------------------------------------------
    def _map_chunks(self, buckets: Iterable[int] | None = None) -> Iterator[pl.DataFrame]:
        c, ld = monitor_chunks.c, monitor_loads.c
        stmt = (
            select(c.load_id, c.seq, c.kind, c.dek_version, c.sealed)
            .join(monitor_loads, ld.load_id == c.load_id)
            .where(ld.tenant == self.tenant, ld.kind == SOURCE_IDS, ld.state == "active")
            .order_by(ld.loaded_at, c.load_id, c.seq)
        )
        if buckets is not None:
            stmt = stmt.where(c.seq.in_(sorted(set(buckets))))
        yield from self._open(stmt)

    def _known_pseudonyms(self) -> set[str]:
        known: set[str] = set()
        for part in self._map_chunks():
            known.update(part.get_column("pseudonym").to_list())
        return known

    def source_ids(self, pseudonyms: Iterable[str]) -> dict[str, str]:
        """``{pseudonym: the other system's patient id}`` for those that have one.

        The caller shows these to one reviewer and must audit it (``Workflow.alert``
        and ``Workflow.case`` do); ids that are not pseudonyms (phiguard's own) are
        their own source and are left out.
        """
        wanted = sorted({p for p in pseudonyms if is_pseudonym(p)})
        if not wanted:
            return {}
        asked = pl.DataFrame({"pseudonym": wanted}, schema={"pseudonym": pl.String()})
        found: dict[str, str] = {}
        for part in self._map_chunks(bucket(p) for p in wanted):
            hits = part.join(asked, on="pseudonym", how="semi")
            found.update(zip(hits["pseudonym"].to_list(), hits["source_id"].to_list(), strict=True))
        return found

    def frame(
        self, kind: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> pl.DataFrame:
        parts = list(self.blocks(kind, since=since, until=until))
        if not parts:
            return frames.empty(kind)
        return pl.concat(parts, how="vertical", rechunk=True)

    def dataset(
        self, *, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> frames.Dataset:
        """Everything stored: events within [since, until), the latest rosters whole."""
        return frames.Dataset.of(
            **{kind: self.frame(kind, since=since, until=until) for kind in frames.SCHEMAS}
        )

    def count(self, kind: str) -> int:
        with self.engine.connect() as conn:
            return int(
                sum(
                    conn.execute(
                        select(monitor_loads.c.rows).where(
                            and_(
                                monitor_loads.c.tenant == self.tenant,
                                monitor_loads.c.kind == kind,
                                monitor_loads.c.state == "active",
                            )
                        )
                    ).scalars()
                )
            )


def merge(*datasets: frames.Dataset) -> frames.Dataset:
    """One dataset from several sources: events added up, rosters joined without repeats."""
    parts: dict[str, pl.DataFrame] = {}
    for kind in frames.SCHEMAS:
        found = [getattr(d, kind) for d in datasets if getattr(d, kind).height]
        if not found:
            parts[kind] = frames.empty(kind)
            continue
        combined = pl.concat(found, how="vertical", rechunk=True)
        parts[kind] = combined if kind in APPEND_KINDS else combined.unique(maintain_order=True)
    return frames.Dataset.of(**parts)


def _header(path: Path, mapping: Mapping) -> list[str]:
    import csv

    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            return next(csv.reader([f.readline()], delimiter=mapping.delimiter), [])
    except (OSError, UnicodeDecodeError):
        return []


def _us(value: object) -> int | None:
    return now_us(value) if isinstance(value, dt.datetime) else None
