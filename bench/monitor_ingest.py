"""Monitoring ingest: rows/s of ``phiguard monitor ingest``, and ledger-to-alert latency.

- **ingest**: 1,000,000 canonical access rows (one CSV file) loaded by
  ``DatasetStore.ingest`` -- streaming read, per-row checks, Arrow IPC, AES-256-GCM
  sealing under the ``__monitor__`` data key, SQLite rows -- against two baselines in
  the same run: a plain ``polars.read_csv`` of the same file with its timestamps
  parsed (no checks, nothing stored: what loading costs at least) and phiguard's
  reader alone (checks, no sealing, nothing stored).  Variants alternate in each round.
- **latency**: a watcher follows the ledger; a user whose account was terminated
  reads a patient record through the repository; the time from the ledger append
  returning to the alert being stored (polled every 5 ms), over many rounds.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
from pathlib import Path

import polars as pl

from phiguard.audit.sink import LedgerSink
from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.monitor import frames
from phiguard.monitor.sources.csv import ReadReport, read_csv
from phiguard.monitor.store import DatasetStore
from phiguard.monitor.watch import Watcher
from phiguard.monitor.workflow import Workflow
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest, Decision
from phiguard.records.vault import Vault
from phiguard.system import init_home

from .common import PASSPHRASE, Result, median, percentile, spread, table

DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
DEFAULT_ALERTS = 30
QUICK_ALERTS = 10
HEADER = "timestamp,user_id,patient_id,action,resource_type,workstation\n"
ACTIONS = ("view", "view", "view", "view", "search", "update", "print")
TYPES = ("Patient", "Observation", "Encounter", "Condition", "MedicationRequest")


def write_access(path: Path, rows: int, seed: int) -> int:
    """A canonical access export of ``rows`` rows over 90 days; returns its size."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with path.open("w") as f:
        f.write(HEADER)
        for i in range(rows):
            at = start + dt.timedelta(seconds=i * 7 + rng.randrange(7))
            f.write(
                f"{at.isoformat(timespec='seconds')},u{rng.randrange(3000):05d},"
                f"{rng.randrange(100_000):08x}-pat,{rng.choice(ACTIONS)},{rng.choice(TYPES)},"
                f"ws-{rng.randrange(400)}\n"
            )
    return path.stat().st_size


def _baseline_polars(path: Path) -> int:
    frame = pl.read_csv(path, infer_schema=False).with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%z", time_unit="us", time_zone="UTC")
    )
    return frame.height


def _reader_only(path: Path) -> int:
    report = ReadReport()
    for _block in read_csv(path, "access", report=report):
        pass
    return report.rows


class _Everyone:
    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        return Decision(True, ("benchmark",))

    def per_resource(self, ctx: AccessContext) -> bool:
        return False


def _latency(work: Path, alerts: int) -> list[float]:
    os.environ["PHIGUARD_PASSPHRASE"] = PASSPHRASE + " (long enough)"
    system, _token = init_home(work / "latency-home")
    try:
        repo = system.vault.repository(system_context())
        patients = [
            repo.create({"resourceType": "Patient", "name": [{"family": f"P{i}"}]}).id
            for i in range(alerts)
        ]
        accounts = Accounts.from_system(system, hashing=PasswordHashing())
        accounts.add(
            "u09999", "Left Already", "x@h.example", ["nurse"], "a long password 1234", by="b"
        )
        accounts.terminate("u09999", by="b", when=system.clock.now() - dt.timedelta(days=3))
        watcher = Watcher(system, poll=0.25, refresh=dt.timedelta(hours=1))
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        users = Vault(
            system.engine, system.keyring, policy=_Everyone(), audit=LedgerSink(system.ledger)
        )
        ctx = AccessContext(principal=Principal(id="u09999", kind="user"), source="10.0.0.9")
        flow = Workflow.from_system(system)
        out = []
        time.sleep(1.0)  # the watcher has loaded its reference data
        for i, patient in enumerate(patients):
            users.repository(ctx).read("Patient", patient)
            appended = time.perf_counter()
            while len(flow.queue(user_id="u09999")) <= i:
                if time.perf_counter() - appended > 30:
                    raise RuntimeError("no alert within 30 s")
                time.sleep(0.005)
            out.append(time.perf_counter() - appended)
            time.sleep(random.uniform(0, 0.25))  # land anywhere in the poll interval
        stop.set()
        thread.join(10)
        return out
    finally:
        system.close()


def run(*, rows: int, alerts: int, rounds: int, seed: int, workdir: Path) -> Result:
    path = workdir / "access.csv"
    size = write_access(path, rows, seed)
    os.environ["PHIGUARD_PASSPHRASE"] = PASSPHRASE + " (long enough)"
    timings: dict[str, list[float]] = {"polars": [], "reader": [], "ingest": []}
    for r in range(rounds):
        order = ["polars", "reader", "ingest"]
        if r % 2:
            order.reverse()
        for variant in order:
            if variant == "ingest":
                system, _token = init_home(workdir / f"home-{r}")
                try:
                    store = DatasetStore(system.engine, system.keyring, clock=system.clock)
                    t0 = time.perf_counter()
                    result = store.ingest(path, "access", by="operator/bench")
                    elapsed = time.perf_counter() - t0
                    assert result.rows == rows, result
                    stored = store.frame("access").height
                    assert stored == rows
                finally:
                    system.close()
            else:
                t0 = time.perf_counter()
                got = _baseline_polars(path) if variant == "polars" else _reader_only(path)
                elapsed = time.perf_counter() - t0
                assert got == rows
            timings[variant].append(rows / elapsed)
    db_bytes = sum(p.stat().st_size for p in (workdir / "home-0").glob("phiguard.db*"))
    latencies = _latency(workdir, alerts)
    ingest = median(timings["ingest"])
    res = Result(
        name="monitor-ingest",
        command=f"python -m bench monitor-ingest --rows {rows} --rounds {rounds}",
        parameters={
            "rows": f"{rows:,}",
            "file": f"{size / 1e6:.0f} MB",
            "rounds": rounds,
            "alerts timed": alerts,
        },
    )
    res.tables.append(
        (
            "ingest throughput (rows/s, median of rounds)",
            table(
                ["variant", "rows/s", "rounds", "vs ingest"],
                [
                    (
                        "polars.read_csv + timestamp parse (no checks, nothing stored)",
                        median(timings["polars"]),
                        spread(timings["polars"]),
                        f"{median(timings['polars']) / ingest:.2f}x",
                    ),
                    (
                        "phiguard reader (checks, line numbers; nothing stored)",
                        median(timings["reader"]),
                        spread(timings["reader"]),
                        f"{median(timings['reader']) / ingest:.2f}x",
                    ),
                    (
                        "ingest (checks + Arrow + AES-256-GCM + SQLite)",
                        ingest,
                        spread(timings["ingest"]),
                        "1.00x",
                    ),
                ],
            ),
        )
    )
    res.tables.append(
        (
            "ledger append to stored alert (watcher polling every 0.25 s)",
            table(
                ["p50 s", "p95 s", "max s", "n"],
                [
                    (
                        percentile(latencies, 50),
                        percentile(latencies, 95),
                        max(latencies),
                        len(latencies),
                    )
                ],
            ),
        )
    )
    res.targets.append(
        (
            "ledger append to alert <= 2 s",
            f"p95 {percentile(latencies, 95):.2f} s",
            percentile(latencies, 95) <= 2.0,
        )
    )
    res.figures = {
        "rows_per_s": timings,
        "latency_s": latencies,
        "database_bytes": db_bytes,
        "columns": list(frames.ACCESS),
    }
    return res
