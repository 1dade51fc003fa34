"""import: the bulk ``Importer`` on file-based SQLite (WAL), encrypted vs plaintext.

The 5 Synthea bundles are written out ``reps`` times with every UUID rewritten per
repetition (hospital and practitioner bundles first in each), parsed as ``phiguard
import`` parses them (untimed), and imported into a fresh store per round.  The time
is ``Importer.run`` wall time, including the start-up of its validation process pool.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from phiguard.fhir.importer import PARALLEL_THRESHOLD, Importer, ImportReport

from .common import VARIANTS, Result, Variant, median, open_store, profile, spread, table
from .synthea import Corpus, build_corpus

DEFAULT_REPS = 30
QUICK_REPS = 9  # 3,006 resources: just over the importer's process-pool threshold
TARGET_PER_S = 3000.0


@dataclass
class Round:
    seconds: float
    per_s: float
    db_mib: float
    writer_cpu_s: float  # this process, all threads (incl. the pool's feeder thread)
    pool_cpu_s: float  # the validation workers (reaped children)


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _import_once(
    corpus: Corpus, root: Path, variant: Variant, workers: int | None, *, profiled: bool = False
) -> tuple[Round, str]:
    """One import into a fresh store; with ``profiled``, also cProfile's top functions of
    ``Importer.run`` alone (not the parsing or the store creation)."""
    units = corpus.units()
    expected = sum(u.size for u in units)
    store = open_store(root, variant)
    try:
        importer = Importer(store.repository(), workers=workers)
        reports: list[ImportReport] = []
        text = ""
        cpu, children = time.process_time(), _children_cpu()
        start = time.perf_counter()
        if profiled:
            text = profile(lambda: reports.append(importer.run(units)))
        else:
            reports.append(importer.run(units))
        seconds = time.perf_counter() - start
        cpu, children = time.process_time() - cpu, _children_cpu() - children
        report = reports[0]
        if report.failures or report.resources != expected:
            raise RuntimeError(
                f"import incomplete: {report.resources}/{expected}, {report.failures[:3]}"
            )
        return (
            Round(seconds, expected / seconds, store.db_bytes() / 2**20, cpu, children),
            text,
        )
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)


def run(
    *,
    reps: int,
    rounds: int,
    workers: int | None,
    workdir: Path,
    do_profile: bool,
    profile_misses: bool,
) -> Result:
    corpus = build_corpus(workdir / "corpus", reps)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    pooled = n_workers >= 2 and corpus.resources >= PARALLEL_THRESHOLD
    result = Result(
        "import",
        f"python -m bench import --reps {reps} --rounds {rounds}"
        + (f" --workers {workers}" if workers is not None else ""),
        {
            "resources per import": f"{corpus.resources} ({reps} x {corpus.per_rep})",
            "bundles per import": len(corpus.paths),
            "rounds": rounds,
            "validation pool": f"{n_workers} workers" if pooled else "none (in-process)",
        },
    )
    per: dict[Variant, list[Round]] = {v: [] for v in VARIANTS}
    for i in range(rounds):
        for v in VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS)):
            per[v].append(_import_once(corpus, workdir / f"round{i}-{v}", v, workers)[0])

    med = {
        v: Round(
            median([x.seconds for x in per[v]]),
            median([x.per_s for x in per[v]]),
            median([x.db_mib for x in per[v]]),
            median([x.writer_cpu_s for x in per[v]]),
            median([x.pool_cpu_s for x in per[v]]),
        )
        for v in VARIANTS
    }
    enc, plain = med["encrypted"], med["plaintext"]
    ratio = enc.per_s / plain.per_s
    result.tables.append(
        (
            "import throughput (median of rounds)",
            table(
                ["variant", "resources/s", "seconds", "resources/s by round", "DB MiB"],
                [
                    (
                        v,
                        med[v].per_s,
                        med[v].seconds,
                        spread([x.per_s for x in per[v]]),
                        med[v].db_mib,
                    )
                    for v in VARIANTS
                ]
                + [("enc/plain", f"{ratio:.2f}x", f"{enc.seconds / plain.seconds:.2f}x", "", "")],
            ),
        )
    )
    cores = os.cpu_count() or 1
    budget_rows = []
    ceilings: dict[Variant, float] = {}
    for v in VARIANTS:
        m, n = med[v], corpus.resources
        writer_ms, pool_ms = m.writer_cpu_s / n * 1e3, m.pool_cpu_s / n * 1e3
        total_ms = writer_ms + pool_ms
        # The writer is one thread; validation spreads over the workers.  On `cores`
        # cores the import can go no faster than either bound.
        ceilings[v] = min(1e3 / writer_ms, cores * 1e3 / total_ms)
        budget_rows.append(
            (
                v,
                m.seconds / n * 1e3,
                writer_ms,
                pool_ms,
                total_ms,
                f"{(m.writer_cpu_s + m.pool_cpu_s) / (m.seconds * cores):.0%}",
                ceilings[v],
            )
        )
    result.tables.append(
        (
            f"CPU budget per resource (medians; {cores} cores): how fast it could go",
            table(
                [
                    "variant",
                    "wall ms",
                    "writer CPU ms",
                    "validation pool CPU ms",
                    "total CPU ms",
                    "share of machine used",
                    f"ceiling on {cores} cores (res/s)",
                ],
                budget_rows,
            ),
        )
    )
    result.targets.append(
        (
            f"encrypted import >= {TARGET_PER_S:,.0f} resources/s (SQLite, 2 cores)",
            f"{enc.per_s:,.0f} resources/s ({enc.seconds:.2f} s for {corpus.resources})",
            enc.per_s >= TARGET_PER_S,
        )
    )
    result.figures = {
        "rounds": {v: [vars(x) for x in per[v]] for v in VARIANTS},
        "median": {v: vars(med[v]) for v in VARIANTS},
        "ratio": ratio,
        "resources": corpus.resources,
        "ceiling_per_s": ceilings,
    }
    if do_profile or (profile_misses and not all(ok for _, _, ok in result.targets)):
        # In-process (workers=1) so validation shows up next to sealing and SQL; with the
        # pool, validation runs in children that cProfile does not see.
        serial, text = _import_once(
            corpus, workdir / "profile-serial", "encrypted", 1, profiled=True
        )
        result.profile = (
            f"workers=1, validation in-process ({serial.per_s:,.0f} resources/s under the "
            f"profiler):\n{text}"
        )
        if pooled:
            pool, text = _import_once(
                corpus, workdir / "profile-pool", "encrypted", workers, profiled=True
            )
            result.profile += (
                f"\n\nworkers={n_workers}, the writer process only ({pool.per_s:,.0f} "
                f"resources/s under the profiler; validation runs in the children):\n{text}"
            )
    return result
