"""search: ``Repository.search("Patient", [("family", name)])`` over many patients.

Patients come from the synthetic hospital (``generate_hospital`` + ``to_fhir``,
keeping the hospital Organization they refer to and the Patient resources only),
loaded with ``Repository.put_many`` in chunks of 1000, each chunk one
``repo.atomic()`` transaction.  About half the sampled family names are drawn
uniformly from the distinct names (mostly rare ones: the names are Zipf-distributed)
and half from the patients (weighted by frequency: mostly common ones); the most
common name is always included.

By default both stores are built fresh; ``--cache`` keeps them under
``bench/out/search-cache/`` and reuses them on the next run with the same size and
seed.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

from phiguard.synth import generate_hospital, to_fhir

from .common import (
    OUT,
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

DEFAULT_PATIENTS = 100_000
QUICK_PATIENTS = 3_000
DEFAULT_NAMES = 200
QUICK_NAMES = 60
CHUNK = 1000
TARGET_P50_MS = 20.0
BUCKETS = ((1, 50), (51, 500), (501, 10**9))


def hospital_patients(patients: int, seed: int) -> list[dict[str, Any]]:
    """The hospital Organization, then every Patient resource, in ``to_fhir`` order."""
    hospital = generate_hospital(seed=seed, patients=patients)
    out: list[dict[str, Any]] = []
    stream: Iterator[dict[str, Any]] = iter(to_fhir(hospital))
    out.append(next(stream))  # the hospital Organization (managingOrganization)
    for resource in stream:
        if resource["resourceType"] == "Patient":
            out.append(resource)
        elif out[-1]["resourceType"] == "Patient":
            break  # to_fhir yields all patients together; the rest is not needed
    if len(out) != patients + 1:
        raise RuntimeError(f"expected {patients} patients, got {len(out) - 1}")
    return out


def load(store: Store, resources: list[dict[str, Any]]) -> float:
    repo = store.repository()
    start = time.perf_counter()
    for i in range(0, len(resources), CHUNK):
        with repo.atomic():
            repo.put_many(resources[i : i + CHUNK])
    return time.perf_counter() - start


def sample_names(resources: list[dict[str, Any]], k: int, seed: int) -> list[str]:
    families = [
        str(r["name"][0]["family"])
        for r in resources
        if r["resourceType"] == "Patient" and r.get("name")
    ]
    counts = Counter(families)
    rng = random.Random(seed)
    chosen: list[str] = [counts.most_common(1)[0][0]]
    distinct = sorted(counts)
    for name in rng.sample(distinct, min(len(distinct), k // 2)):
        if name not in chosen:
            chosen.append(name)
    attempts = 0
    while len(chosen) < min(k, len(distinct)) and attempts < 100 * k:
        attempts += 1
        name = rng.choice(families)
        if name not in chosen:
            chosen.append(name)
    return chosen[:k]


@dataclass
class Round:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    cpu_p50_ms: float  # this thread's CPU time: robust to time-slicing by other load
    by_name_ms: dict[str, float]


def _summarise(lat: dict[str, float], cpu: list[float]) -> Round:
    values = list(lat.values())
    return Round(
        percentile(values, 50) * 1e3,
        percentile(values, 99) * 1e3,
        sum(values) / len(values) * 1e3,
        max(values) * 1e3,
        percentile(cpu, 50) * 1e3,
        {n: v * 1e3 for n, v in lat.items()},
    )


def _search_pass(store: Store, names: list[str]) -> tuple[Round, dict[str, int]]:
    """One variant alone (warm-up, result counts, profiling)."""
    repo = store.repository()
    lat: dict[str, float] = {}
    cpu: list[float] = []
    totals: dict[str, int] = {}
    for name in names:
        c = time.thread_time()
        t = time.perf_counter()
        res = repo.search("Patient", [("family", name)])
        lat[name] = time.perf_counter() - t
        cpu.append(time.thread_time() - c)
        totals[name] = res.total
    return _summarise(lat, cpu), totals


def _interleaved_round(opened: dict[Variant, Store], names: list[str]) -> dict[Variant, Round]:
    """Each name is searched in both variants back to back, the first one alternating."""
    repos = {v: opened[v].repository() for v in VARIANTS}
    lat: dict[Variant, dict[str, float]] = {v: {} for v in VARIANTS}
    cpu: dict[Variant, list[float]] = {v: [] for v in VARIANTS}
    for i, name in enumerate(names):
        for v in VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS)):
            c = time.thread_time()
            t = time.perf_counter()
            repos[v].search("Patient", [("family", name)])
            lat[v][name] = time.perf_counter() - t
            cpu[v].append(time.thread_time() - c)
    return {v: _summarise(lat[v], cpu[v]) for v in VARIANTS}


def explain(store: Store, name: str) -> str:
    """EXPLAIN QUERY PLAN of every SELECT that one family-name search issues."""
    seen: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        store.repository().search("Patient", [("family", name)])
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    lines = [f"SELECTs of one search (family={name!r}):"]
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        for i, (sql, params) in enumerate(seen, 1):
            flat = " ".join(sql.split())
            lines.append(f"{i}. {flat[:300]}{' ...' if len(flat) > 300 else ''}")
            if raw is not None:
                rows = raw.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                lines += [f"     plan: {row[3]}" for row in rows]
    return "\n".join(lines)


def _stores(
    workdir: Path, patients: int, seed: int, cache: bool, audit: Audit
) -> tuple[dict[Variant, Store], dict[Variant, float | None], list[dict[str, Any]], float]:
    """Both stores, loaded; load seconds per variant (None = reused from the cache)."""
    start = time.perf_counter()
    resources = hospital_patients(patients, seed)
    generate_s = time.perf_counter() - start
    base = OUT / "search-cache" / f"p{patients}-s{seed}" if cache else workdir / "search"
    opened: dict[Variant, Store] = {}
    load_s: dict[Variant, float | None] = {}
    for v in VARIANTS:
        root = base / v
        done = root / "LOADED"
        if cache and done.exists():
            load_s[v] = None
        else:
            shutil.rmtree(root, ignore_errors=True)
            store = open_store(root, v)
            load_s[v] = load(store, resources)
            store.close()
            done.write_text(f"{patients} patients, seed {seed}\n")
        opened[v] = open_store(root, v, audit)  # reopened: cold key cache, as after a restart
    return opened, load_s, resources, generate_s


def run(
    *,
    patients: int,
    names: int,
    rounds: int,
    seed: int,
    workdir: Path,
    cache: bool,
    do_profile: bool,
    profile_misses: bool,
    audit: Audit = "none",
) -> Result:
    cache_note = " --cache" if cache else ""
    result = Result(
        "search",
        f"python -m bench search --patients {patients} --names {names} --rounds {rounds}"
        + cache_note
        + (f" --audit {audit}" if audit != "none" else ""),
        {
            "patients": patients,
            "family names": names,
            "rounds": rounds,
            "seed": seed,
            "audit sink": "NullAuditSink" if audit == "none" else "LedgerSink (production)",
        },
    )
    opened, load_s, resources, generate_s = _stores(workdir, patients, seed, cache, audit)
    try:
        sample = sample_names(resources, names, seed)
        del resources
        rng = random.Random(seed)
        totals: dict[Variant, dict[str, int]] = {}
        cold: dict[Variant, Round] = {}
        for v in VARIANTS:  # first pass: cold key cache; also the result counts
            cold[v], totals[v] = _search_pass(opened[v], sample)
        if totals["encrypted"] != totals["plaintext"]:
            raise RuntimeError("the two stores answer the same search differently")
        per: dict[Variant, list[Round]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            order = list(sample)
            rng.shuffle(order)
            for v, r in _interleaved_round(opened, order).items():
                per[v].append(r)
        med = {
            v: Round(
                median([x.p50_ms for x in per[v]]),
                median([x.p99_ms for x in per[v]]),
                median([x.mean_ms for x in per[v]]),
                median([x.max_ms for x in per[v]]),
                median([x.cpu_p50_ms for x in per[v]]),
                {n: median([x.by_name_ms[n] for x in per[v]]) for n in sample},
            )
            for v in VARIANTS
        }
        enc, plain = med["encrypted"], med["plaintext"]
        counts = totals["encrypted"]
        result.parameters["result page"] = "50 (default _count); total counts every match"

        load_rows = []
        for v in VARIANTS:
            s = load_s[v]
            load_rows.append((v, "cached" if s is None else s, "-" if s is None else patients / s))
        result.tables.append(
            (
                f"load ({patients:,} Patients via put_many, chunks of {CHUNK}; "
                f"generating them took {generate_s:.1f} s)",
                table(["variant", "load s", "patients/s"], load_rows),
            )
        )
        result.tables.append(
            (
                "search latency (median of rounds)",
                table(
                    [
                        "variant",
                        "p50 ms",
                        "p99 ms",
                        "mean ms",
                        "max ms",
                        "CPU p50 ms",
                        "p50 by round",
                    ],
                    [
                        (
                            v,
                            med[v].p50_ms,
                            med[v].p99_ms,
                            med[v].mean_ms,
                            med[v].max_ms,
                            med[v].cpu_p50_ms,
                            spread([x.p50_ms for x in per[v]]),
                        )
                        for v in VARIANTS
                    ]
                    + [
                        (
                            "enc/plain",
                            f"{enc.p50_ms / plain.p50_ms:.2f}x",
                            f"{enc.p99_ms / plain.p99_ms:.2f}x",
                            f"{enc.mean_ms / plain.mean_ms:.2f}x",
                            f"{enc.max_ms / plain.max_ms:.2f}x",
                            f"{enc.cpu_p50_ms / plain.cpu_p50_ms:.2f}x",
                            "",
                        )
                    ]
                    + [
                        (
                            f"{v}, first pass (cold key cache)",
                            cold[v].p50_ms,
                            cold[v].p99_ms,
                            cold[v].mean_ms,
                            cold[v].max_ms,
                            cold[v].cpu_p50_ms,
                            "",
                        )
                        for v in VARIANTS
                    ],
                ),
            )
        )
        values = sorted(counts.values())
        top = max(counts, key=lambda n: counts[n])
        result.tables.append(
            (
                "result counts (total matches per sampled name)",
                table(
                    ["names", "min", "p50", "p90", "max", "most common"],
                    [
                        (
                            len(values),
                            values[0],
                            percentile(values, 50),
                            percentile(values, 90),
                            values[-1],
                            f"{top} ({counts[top]:,})",
                        )
                    ],
                ),
            )
        )
        bucket_rows = []
        for lo, hi in BUCKETS:
            in_bucket = [n for n in sample if lo <= counts[n] <= hi]
            if not in_bucket:
                continue
            e = [enc.by_name_ms[n] for n in in_bucket]
            p = [plain.by_name_ms[n] for n in in_bucket]
            label = f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}"
            bucket_rows.append(
                (label, len(in_bucket), percentile(e, 50), max(e), percentile(p, 50), max(p))
            )
        result.tables.append(
            (
                "latency by result count (per-name medians)",
                table(
                    [
                        "matches",
                        "names",
                        "enc p50 ms",
                        "enc max ms",
                        "plain p50 ms",
                        "plain max ms",
                    ],
                    bucket_rows,
                ),
            )
        )
        result.targets.append(
            (
                f"encrypted p50 <= {TARGET_P50_MS:.0f} ms on {patients:,} patients",
                f"{enc.p50_ms:.2f} ms (p99 {enc.p99_ms:.1f} ms)",
                enc.p50_ms <= TARGET_P50_MS,
            )
        )
        result.figures = {
            "load_s": load_s,
            "generate_s": generate_s,
            "median": {
                v: {k: val for k, val in vars(med[v]).items() if k != "by_name_ms"}
                for v in VARIANTS
            },
            "by_name_ms": {v: med[v].by_name_ms for v in VARIANTS},
            "counts": counts,
        }
        if do_profile or (profile_misses and not all(ok for _, _, ok in result.targets)):
            result.tables.append(
                ("query plans (encrypted store)", explain(opened["encrypted"], top))
            )
            worst = sorted(sample, key=lambda n: -counts[n])[:5]
            result.profile = (
                f"one pass over all {len(sample)} names:\n"
                + profile(lambda: _search_pass(opened["encrypted"], sample))
                + f"\n\nthe 5 most common names {worst}, 5 times each:\n"
                + profile(lambda: [_search_pass(opened["encrypted"], worst) for _ in range(5)])
            )
    finally:
        for store in opened.values():
            store.close()
        if not cache:
            shutil.rmtree(workdir / "search", ignore_errors=True)
    return result
