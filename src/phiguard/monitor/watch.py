"""Streaming: follow the audit ledger and raise alerts within seconds of an access.

The watcher polls the ledger's size in the database (other processes append to it)
every ``poll`` seconds; new entries become access and auth rows (``sources.ledger``),
which are scanned against a rolling window of recent history (the users' habits)
and the reference data (staff, patients, care: the vault's, plus any roster loaded
from another EHR), and new alerts are stored and notified.  Where it stopped is kept
in ``monitor_cursors``, so a restart resumes at the next entry; a crash between
storing alerts and moving the cursor only re-scans entries whose alerts are already
stored under the same deterministic ids.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl
from sqlalchemy import select, update

from phiguard.monitor import frames
from phiguard.monitor.notify import Notifier, notify_new
from phiguard.monitor.pseudonyms import adopt_vault_ids
from phiguard.monitor.sources import ledger as ledger_source
from phiguard.monitor.store import DatasetStore, merge
from phiguard.monitor.workflow import SaveResult, Workflow
from phiguard.store.engine import now_us
from phiguard.store.tables import monitor_cursors
from phiguard.system import System

CURSOR: Final = "ledger"
PRINCIPAL: Final = "system/monitor"
Scanner = Callable[..., Any]


@dataclass
class WatchStats:
    polls: int = 0
    entries: int = 0
    accesses: int = 0
    alerts: list[str] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)


class Watcher:
    """Follows one home's ledger; ``step`` does one poll, ``run`` polls until stopped."""

    def __init__(
        self,
        system: System,
        *,
        scanner: Scanner | None = None,
        config: Any = None,
        poll: float = 0.25,
        window: dt.timedelta = dt.timedelta(days=14),
        refresh: dt.timedelta = dt.timedelta(minutes=10),
        notifier: Notifier | None = None,
        on_alerts: Callable[[SaveResult], None] | None = None,
    ) -> None:
        if scanner is None:
            from phiguard.monitor.scan import scan

            scanner = scan
        self.system = system
        self.scanner = scanner
        self.config = config
        self.poll = min(poll, 0.5)
        self.window = window
        self.refresh = refresh
        self.notifier = notifier
        self.on_alerts = on_alerts
        self.workflow = Workflow.from_system(system)
        self.store = DatasetStore(
            system.engine, system.keyring, tenant=system.settings.tenant, clock=system.clock
        )
        self.stats = WatchStats()
        self._reference: frames.Dataset | None = None
        self._reference_at = 0.0
        self._history_access = frames.empty("access")
        self._history_auth = frames.empty("auth")
        self._cursor = self._load_cursor()

    # -- state ---------------------------------------------------------------------------
    @property
    def cursor(self) -> int:
        return self._cursor

    def _load_cursor(self) -> int:
        with self.system.engine.connect() as conn:
            value = conn.execute(
                select(monitor_cursors.c.position).where(monitor_cursors.c.name == CURSOR)
            ).scalar()
        # A first start watches from now on; the past is what ``scan`` is for.
        start = int(value) if value is not None else ledger_source.ledger_size(self.system.ledger)
        since = self.system.clock.now() - self.window
        past = ledger_source.read_events(self.system.ledger, since=since, until_seq=start)
        self._history_access, self._history_auth = past.access, past.auth
        return start

    def _save_cursor(self, position: int) -> None:
        at = now_us(self.system.clock.now())
        with self.system.engine.begin() as conn:
            moved = conn.execute(
                update(monitor_cursors)
                .where(monitor_cursors.c.name == CURSOR)
                .values(position=position, updated_at=at)
            )
            if moved.rowcount == 0:
                conn.execute(
                    monitor_cursors.insert().values(name=CURSOR, position=position, updated_at=at)
                )
        self._cursor = position

    def reference(self) -> frames.Dataset:
        """Staff, patients and care: the vault's and any loaded roster; refreshed now and
        then (rosters change by the day, not by the second)."""
        if self._reference is None or time.monotonic() - self._reference_at > (
            self.refresh.total_seconds()
        ):
            own = ledger_source.reference(
                self.system.vault, self.system.engine, self.system.settings.tenant
            )
            stored = frames.Dataset.of(
                staff=self.store.frame("staff"),
                patients=self.store.frame("patients"),
                care=self.store.frame("care"),
            )
            if stored.staff.height:
                # A roster naming staff members' own vault records was pseudonymised
                # at ingest; those ids join the ledger's again.
                stored = adopt_vault_ids(
                    stored, own.patients["patient_id"].to_list(), self.store.pseudonymiser()
                )
            self._reference = merge(own, stored)
            self._reference_at = time.monotonic()
        return self._reference

    # -- polling -------------------------------------------------------------------------
    def step(self) -> SaveResult | None:
        """One poll: scan whatever the ledger gained since the cursor."""
        self.stats.polls += 1
        size = ledger_source.ledger_size(self.system.ledger)
        if size <= self._cursor:
            return None
        new = ledger_source.read_events(self.system.ledger, since_seq=self._cursor, until_seq=size)
        self.stats.entries += new.entries
        result = None
        if new.access.height or new.auth.height:
            self.stats.accesses += new.access.height
            ref = self.reference()
            dataset = frames.Dataset.of(
                access=new.access,
                auth=new.auth,
                staff=ref.staff,
                patients=ref.patients,
                care=ref.care,
            )
            history = frames.Dataset.of(
                access=self._history_access,
                auth=self._history_auth,
                staff=ref.staff,
                patients=ref.patients,
                care=ref.care,
            )
            scanned = self.scanner(dataset, config=self.config, history=history)
            result = self.workflow.save(scanned.alerts, scanned.cases, by=PRINCIPAL, source="watch")
            self.stats.alerts += result.new_alerts
            self.stats.cases += result.new_cases
            self._remember(new.access, new.auth)
            if result.new_alerts and self.on_alerts is not None:
                self.on_alerts(result)
            if result.new_alerts and self.notifier is not None:
                notify_new(self.workflow, self.notifier, by=PRINCIPAL, source="watch")
        self._save_cursor(new.next_seq)
        return result

    def _remember(self, access: pl.DataFrame, auth: pl.DataFrame) -> None:
        cutoff = self.system.clock.now() - self.window
        self._history_access = pl.concat([self._history_access, access]).filter(
            pl.col("timestamp") >= cutoff
        )
        self._history_auth = pl.concat([self._history_auth, auth]).filter(
            pl.col("timestamp") >= cutoff
        )

    def run(self, stop: threading.Event, *, seconds: float | None = None) -> WatchStats:
        """Poll until ``stop`` is set (or ``seconds`` have passed)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.is_set():
            started = time.monotonic()
            self.step()
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(max(0.0, self.poll - (time.monotonic() - started)))
        return self.stats
