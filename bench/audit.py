"""The audit ledger: durable appends, verification, proofs at scale, cost on a read.

- **append**: events/s committed by the ledger's appender, with many request threads
  each waiting for its own event (the server's situation) and with ``append_many``;
  baseline in the same run: the same rows inserted into a plain table with no tree,
  no MAC and no group commit logic (what an unverifiable audit table costs).
- **verify**: entries/s of ``phiguard audit verify`` over the whole ledger (two
  processes, split at the RFC 9162 point).
- **proof**: inclusion-proof generation p50/p99 for random entries of a large ledger
  (10 million entries in the full run), with a cold and a warm node cache.
- **cost on a read**: ``Repository.read`` with the ledger vs ``NullAuditSink``.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path

from phiguard.audit.events import AuditEvent
from phiguard.audit.ledger import Ledger
from phiguard.audit.verify import verify
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.store import migrate
from phiguard.store.engine import make_engine

from .common import FAST_SCRYPT, PASSPHRASE, Result, median, open_store, percentile, table
from .synthea import build_corpus, import_corpus

DEFAULT_EVENTS = 200_000
QUICK_EVENTS = 20_000
DEFAULT_PROOF_SIZE = 10_000_000
QUICK_PROOF_SIZE = 200_000
THREADS = 16


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        action="read",
        outcome="success",
        principal=f"user/u{i % 500}",
        purpose="TREAT",
        request_id=f"{i:032x}",
        recorded=dt.datetime.now(dt.UTC),
        resource_type="Patient",
        resource_id=f"p{i % 100_000}",
        patient_ids=(f"p{i % 100_000}",),
        source="10.1.2.3",
    )


def _ledger(root: Path, **kw: object) -> Ledger:
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "kek.json"
    provider = (
        LocalKeyFile(key_path, PASSPHRASE)
        if key_path.exists()
        else LocalKeyFile.create(key_path, PASSPHRASE, scrypt_params=FAST_SCRYPT)
    )
    main = make_engine(f"sqlite:///{root / 'phiguard.db'}")
    migrate.upgrade(main)
    engine = make_engine(f"sqlite:///{root / 'audit.db'}")
    migrate.upgrade(engine)
    return Ledger(engine, Keyring(main, provider), **kw)  # type: ignore[arg-type]


def _threads(ledger: Ledger, n: int) -> float:
    per = n // THREADS

    def work(k: int) -> None:
        for i in range(per):
            ledger.append(_event(k * per + i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per * THREADS / (time.perf_counter() - t0)


def _plain_table(root: Path, n: int) -> float:
    """Baseline: the same rows into an unverifiable table, one commit per 1,000."""
    import sqlite3

    con = sqlite3.connect(root / "plain.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, recorded INTEGER, body BLOB)"
    )
    import json

    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        rows = []
        for i in range(start, min(n, start + 1000)):
            e = _event(i)
            body = json.dumps(
                {
                    "action": e.action,
                    "who": e.principal,
                    "purpose": e.purpose,
                    "req": e.request_id,
                    "patients": list(e.patient_ids),
                },
                sort_keys=True,
            ).encode()
            rows.append((i, int(e.recorded.timestamp() * 1e6), body))
        con.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
        con.commit()
    rate = n / (time.perf_counter() - t0)
    con.close()
    return rate


def run(
    *, events: int, proof_size: int, rounds: int, seed: int, workdir: Path, reads: int = 2000
) -> Result:
    res = Result(
        "audit",
        f"python -m bench audit --events {events} --proof-size {proof_size}",
        {
            "events": events,
            "proof ledger size": f"{proof_size:,}",
            "request threads": THREADS,
            "rounds": rounds,
        },
    )
    rng = random.Random(seed)
    rows = []
    threads_rates, many_rates, plain_rates = [], [], []
    for r in range(rounds):
        led = _ledger(workdir / f"append-{r}")
        threads_rates.append(_threads(led, events // 4))
        t0 = time.perf_counter()
        for start in range(0, events, 5000):
            led.append_many([_event(i) for i in range(start, start + 5000)])
        many_rates.append(events / (time.perf_counter() - t0))
        led.close()
        led.engine.dispose()
        plain_rates.append(_plain_table(workdir / f"append-{r}", events))
    rows.append(("ledger, one event per request thread", f"{median(threads_rates):,.0f}"))
    rows.append(("ledger, append_many (5,000)", f"{median(many_rates):,.0f}"))
    rows.append(("plain table baseline (no tree, no MAC)", f"{median(plain_rates):,.0f}"))
    res.tables.append(
        ("durable appends (events/s, median of rounds)", table(["how", "events/s"], rows))
    )
    best_server = median(threads_rates)
    res.targets.append(
        (
            "durable append >= 20,000 events/s (SQLite, 2 cores)",
            f"{best_server:,.0f}/s with {THREADS} request threads; "
            f"{median(many_rates):,.0f}/s batched",
            max(best_server, median(many_rates)) >= 20_000,
        )
    )

    # Verification and proofs on one large ledger.
    big = _ledger(workdir / "big", checkpoint_every=100_000)
    t0 = time.perf_counter()
    batch = 20_000
    for start in range(0, proof_size, batch):
        big.append_many([_event(i) for i in range(start, min(proof_size, start + batch))])
    build_s = time.perf_counter() - t0
    big.checkpoint()
    verify_rates = []
    for _r in range(max(1, rounds - 2)):
        t0 = time.perf_counter()
        report = verify(big)
        verify_rates.append(report.entries / (time.perf_counter() - t0))
        assert report.ok, report.findings
    size = big.size
    cold, warm = [], []
    for k in range(400):
        seq = rng.randrange(size)
        t0 = time.perf_counter()
        big.inclusion_proof(seq, size)
        (cold if k < 200 else warm).append((time.perf_counter() - t0) * 1000)
    res.tables.append(
        (
            "verification and proofs",
            table(
                [
                    "ledger size",
                    "built in",
                    "verify entries/s",
                    "proof p50 ms (first 200)",
                    "proof p99 ms (first 200)",
                    "proof p50 ms (next 200)",
                ],
                [
                    (
                        f"{size:,}",
                        f"{build_s:.0f} s",
                        f"{median(verify_rates):,.0f}",
                        f"{percentile(cold, 50):.2f}",
                        f"{percentile(cold, 99):.2f}",
                        f"{percentile(warm, 50):.2f}",
                    )
                ],
            ),
        )
    )
    res.targets.append(
        (
            "verification >= 500,000 entries/s",
            f"{median(verify_rates):,.0f}/s over {size:,} entries",
            median(verify_rates) >= 500_000,
        )
    )
    res.targets.append(
        (
            f"inclusion proof <= 2 ms at {size:,} entries",
            f"p50 {percentile(cold, 50):.2f} ms (p99 {percentile(cold, 99):.2f})",
            percentile(cold, 50) <= 2.0,
        )
    )
    big.close()

    # The cost of auditing on a read: the same store read with and without the ledger.
    corpus = build_corpus(workdir / "corpus", max(1, reads // 334 + 1))
    figures: dict[str, float] = {}
    for audit in ("none", "ledger"):
        store = open_store(workdir / f"read-{audit}", "encrypted", audit)  # type: ignore[arg-type]
        repo = store.repository()
        import_corpus(repo, corpus)
        ids = _ids(store)[:reads]
        rng.shuffle(ids)
        for rtype, rid in ids[:200]:
            repo.read(rtype, rid)
        t0 = time.perf_counter()
        for rtype, rid in ids:
            repo.read(rtype, rid)
        figures[audit] = len(ids) / (time.perf_counter() - t0)
        store.close()
    ratio = figures["ledger"] / figures["none"]
    res.tables.append(
        (
            "cost of auditing on a FHIR read (in-process, one thread)",
            table(
                ["variant", "reads/s"],
                [
                    ("ledger (each read waits for its entry)", f"{figures['ledger']:,.0f}"),
                    ("no audit (NullAuditSink)", f"{figures['none']:,.0f}"),
                    ("ratio", f"{ratio:.2f}x"),
                ],
            ),
        )
    )
    res.figures = {
        "threads": threads_rates,
        "many": many_rates,
        "plain": plain_rates,
        "verify": verify_rates,
        "proof_cold_ms": cold,
        "proof_warm_ms": warm,
        "reads": figures,
    }
    return res


def _ids(store: object) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from phiguard.store.tables import resource_heads

    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        return [
            (r.rtype, r.rid)
            for r in conn.execute(select(resource_heads.c.rtype, resource_heads.c.rid))
        ]
