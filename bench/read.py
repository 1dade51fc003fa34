"""read: in-process ``Repository.read(type, id)`` of random ids, encrypted vs plaintext.

The stores are filled through the importer with Synthea bundles (UUIDs rewritten
per repetition), then reopened with a cold data-key cache, warmed with a short pass,
and read in a freshly shuffled order every round.  Both variants read the same
permutation, interleaved in blocks of 50 reads (which variant goes first alternates),
so background load on a shared machine falls on both alike.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from phiguard.crypto.envelope import aad
from phiguard.store.tables import resource_heads, resources

from .common import (
    VARIANTS,
    Audit,
    Result,
    Store,
    Variant,
    median,
    open_store,
    percentile,
    profile,
    spread,
    table,
)
from .synthea import build_corpus, import_corpus, per_repetition

DEFAULT_N = 3000
QUICK_N = 1000
WARMUP = 300
BLOCK = 50  # reads per variant before switching to the other
TARGET_RATIO = 0.8
TARGET_P50_MS = 2.0


@dataclass
class Round:
    reads_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_us: float  # this thread's CPU time per read: robust to time-slicing by other load


def _ids(store: Store) -> list[tuple[str, str]]:
    h = resource_heads.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(h.rtype, h.rid)
            .where(h.tenant == store.vault.tenant, h.deleted.is_(False))
            .order_by(h.rtype, h.rid)
        ).all()
    return [(str(r.rtype), str(r.rid)) for r in rows]


def _summarise(lat: list[float], wall: float, cpu: float) -> Round:
    return Round(
        reads_per_s=len(lat) / wall,
        p50_ms=percentile(lat, 50) * 1e3,
        p99_ms=percentile(lat, 99) * 1e3,
        mean_ms=sum(lat) / len(lat) * 1e3,
        cpu_us=cpu / len(lat) * 1e6,
    )


def _read_pass(store: Store, ids: list[tuple[str, str]]) -> Round:
    """One variant alone (warm-up, profiling)."""
    repo = store.repository()
    lat: list[float] = []
    clock = time.perf_counter
    cpu = time.thread_time()
    start = clock()
    for rtype, rid in ids:
        t = clock()
        repo.read(rtype, rid)
        lat.append(clock() - t)
    return _summarise(lat, clock() - start, time.thread_time() - cpu)


def _interleaved_round(
    opened: dict[Variant, Store], ids: dict[Variant, list[tuple[str, str]]], perm: list[int]
) -> dict[Variant, Round]:
    """Both variants read the same permutation in alternating blocks (the first variant
    alternates too), so bursts of load from other processes hit both alike."""
    repos = {v: opened[v].repository() for v in VARIANTS}
    lat: dict[Variant, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[Variant, float] = dict.fromkeys(VARIANTS, 0.0)
    cpu: dict[Variant, float] = dict.fromkeys(VARIANTS, 0.0)
    clock = time.perf_counter
    for b, at in enumerate(range(0, len(perm), BLOCK)):
        block = perm[at : at + BLOCK]
        for v in VARIANTS if b % 2 == 0 else tuple(reversed(VARIANTS)):
            repo, mine, out = repos[v], ids[v], lat[v]
            cpu_start = time.thread_time()
            start = clock()
            for j in block:
                rtype, rid = mine[j]
                t = clock()
                stored = repo.read(rtype, rid)
                out.append(clock() - t)
                if stored.resource is None:  # pragma: no cover - a broken store
                    raise RuntimeError(f"{rtype}/{rid} read back empty")
            wall[v] += clock() - start
            cpu[v] += time.thread_time() - cpu_start
    return {v: _summarise(lat[v], wall[v], cpu[v]) for v in VARIANTS}


def _cipher_open_us(store: Store, ids: list[tuple[str, str]]) -> tuple[float, float]:
    """Median microseconds of ``vault.cipher.open`` alone on the bodies read, and the
    median body size in bytes: how much of a read is the AES-GCM work itself."""
    wanted = set(ids)
    r = resources.c
    with store.engine.begin() as conn:
        rows = [
            row
            for row in conn.execute(
                select(r.rtype, r.rid, r.version, r.compartment, r.dek_version, r.body).where(
                    r.tenant == store.vault.tenant, r.body.is_not(None)
                )
            )
            if (row.rtype, row.rid) in wanted
        ]
        cipher = store.vault.cipher
        times: list[float] = []
        for _ in range(3):
            for row in rows:
                associated = aad(
                    store.vault.tenant, row.rtype, row.rid, int(row.version), row.compartment
                )
                body = bytes(row.body)
                t = time.perf_counter()
                cipher.open(row.compartment, int(row.dek_version), body, associated, "", conn)
                times.append(time.perf_counter() - t)
    return median(times) * 1e6, median([float(len(bytes(row.body))) for row in rows])


def run(
    *,
    n: int,
    rounds: int,
    seed: int,
    workdir: Path,
    do_profile: bool,
    profile_misses: bool,
    audit: Audit = "none",
) -> Result:
    reps = max(1, math.ceil(n / per_repetition()))
    corpus = build_corpus(workdir / "corpus", reps)
    result = Result(
        "read",
        f"python -m bench read --n {n} --rounds {rounds}"
        + (f" --audit {audit}" if audit != "none" else ""),
        {
            "reads per round": n,
            "store size": f"{corpus.resources} resources ({reps} x Synthea x5 bundles)",
            "rounds": rounds,
            "warm-up reads": WARMUP,
            "interleaving": f"blocks of {BLOCK} reads, alternating variant",
            "seed": seed,
            "audit sink": "NullAuditSink" if audit == "none" else "LedgerSink (production)",
        },
    )

    fill_s: dict[Variant, float] = {}
    for v in VARIANTS:
        store = open_store(workdir / v, v)
        start = time.perf_counter()
        import_corpus(store.repository(), corpus)
        fill_s[v] = time.perf_counter() - start
        store.close()

    opened = {v: open_store(workdir / v, v, audit) for v in VARIANTS}  # cold key cache
    try:
        # Ids are the same in both stores except for the Organization and Practitioner
        # copies inside patient bundles, which the importer gives fresh random ids; so
        # each store reads its own ids, in the same permutation of a (type, id) order.
        ids = {v: _ids(opened[v]) for v in VARIANTS}
        if Counter(t for t, _ in ids["encrypted"]) != Counter(t for t, _ in ids["plaintext"]):
            raise RuntimeError("the two stores hold different resources")
        rng = random.Random(seed)
        chosen = rng.sample(range(len(ids["encrypted"])), min(n, len(ids["encrypted"])))
        ids = {v: [ids[v][i] for i in chosen] for v in VARIANTS}

        for v in VARIANTS:
            _read_pass(opened[v], ids[v][:WARMUP])
        per: dict[Variant, list[Round]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            perm = list(range(len(chosen)))
            rng.shuffle(perm)
            for v, r in _interleaved_round(opened, ids, perm).items():
                per[v].append(r)

        med = {
            v: Round(
                median([x.reads_per_s for x in per[v]]),
                median([x.p50_ms for x in per[v]]),
                median([x.p99_ms for x in per[v]]),
                median([x.mean_ms for x in per[v]]),
                median([x.cpu_us for x in per[v]]),
            )
            for v in VARIANTS
        }
        opens = {v: _cipher_open_us(opened[v], ids[v]) for v in VARIANTS}
        enc, plain = med["encrypted"], med["plaintext"]
        ratio = enc.reads_per_s / plain.reads_per_s
        result.tables.append(
            (
                "per-read figures (median of rounds)",
                table(
                    [
                        "variant",
                        "reads/s",
                        "p50 ms",
                        "p99 ms",
                        "mean ms",
                        "CPU us/read",
                        "reads/s by round",
                    ],
                    [
                        (
                            v,
                            med[v].reads_per_s,
                            med[v].p50_ms,
                            med[v].p99_ms,
                            med[v].mean_ms,
                            med[v].cpu_us,
                            spread([x.reads_per_s for x in per[v]]),
                        )
                        for v in VARIANTS
                    ]
                    + [
                        (
                            "enc/plain",
                            f"{ratio:.2f}x",
                            f"{enc.p50_ms / plain.p50_ms:.2f}x",
                            f"{enc.p99_ms / plain.p99_ms:.2f}x",
                            f"{enc.mean_ms / plain.mean_ms:.2f}x",
                            f"{enc.cpu_us / plain.cpu_us:.2f}x",
                            "",
                        )
                    ],
                ),
            )
        )
        result.tables.append(
            (
                "where the time goes",
                table(
                    ["variant", "cipher.open alone (us, median)", "median body bytes", "fill s"],
                    [(v, opens[v][0], opens[v][1], fill_s[v]) for v in VARIANTS],
                ),
            )
        )
        result.targets += [
            (
                f"encrypted throughput >= {TARGET_RATIO}x plaintext",
                f"{ratio:.2f}x ({enc.reads_per_s:,.0f} vs {plain.reads_per_s:,.0f} reads/s; "
                f"CPU per read {plain.cpu_us / enc.cpu_us:.2f}x)",
                ratio >= TARGET_RATIO,
            ),
            (
                f"encrypted p50 <= {TARGET_P50_MS} ms",
                f"{enc.p50_ms:.2f} ms (p99 {enc.p99_ms:.2f} ms)",
                enc.p50_ms <= TARGET_P50_MS,
            ),
        ]
        result.figures = {
            "rounds": {v: [vars(x) for x in per[v]] for v in VARIANTS},
            "median": {v: vars(med[v]) for v in VARIANTS},
            "ratio": ratio,
            "cipher_open_us": {v: opens[v][0] for v in VARIANTS},
            "fill_s": fill_s,
        }
        if do_profile or (profile_misses and not all(ok for _, _, ok in result.targets)):
            result.profile = profile(lambda: _read_pass(opened["encrypted"], ids["encrypted"]))
    finally:
        for s in opened.values():
            s.close()
    return result
