"""``phiguard monitor evaluate|generate``: measure detection on synthetic traffic.

``evaluate`` generates a synthetic hospital with months of traffic and injected
misuse, scans it, and prints the figures against the targets; it exits 1 when a
target is missed (``--no-targets`` only reports).  ``generate`` writes the same
traffic as canonical CSVs plus the ground-truth manifest, for the ingest path.
Neither needs a phiguard home: the data is synthetic and never touches a store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from phiguard.errors import MonitorError
from phiguard.monitor.eval import metrics
from phiguard.monitor.eval.generate import generate as generate_traffic
from phiguard.monitor.eval.generate import write_csv
from phiguard.monitor.eval.report import render, render_tuning
from phiguard.monitor.eval.scenarios import HELD_OUT_PARAMS, KINDS, TUNING_PARAMS
from phiguard.monitor.eval.tuning import tune
from phiguard.monitor.scan import scan

from .common import console, err, progress

DEFAULT_PATIENTS = 5000
DEFAULT_DAYS = 90


def _check(patients: int, days: int) -> None:
    if not 500 <= patients <= 200_000:
        raise MonitorError("--patients must be between 500 and 200,000")
    if not 30 <= days <= 730:
        raise MonitorError("--days must be between 30 and 730")


def evaluate(
    seed: Annotated[
        int, typer.Option(help="traffic seed (default: the held-out seed, never used for tuning)")
    ] = metrics.HELD_OUT_SEED,
    days: Annotated[int, typer.Option(help="days of traffic")] = DEFAULT_DAYS,
    patients: Annotated[int, typer.Option(help="patients in the hospital")] = DEFAULT_PATIENTS,
    params: Annotated[
        str, typer.Option(help="scenario parameter set: held-out or tuning")
    ] = "held-out",
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    targets: Annotated[
        bool, typer.Option("--targets/--no-targets", help="exit 1 when a target is missed")
    ] = True,
    leave_one_out: Annotated[
        bool,
        typer.Option(
            "--leave-one-out",
            help="also tune on the tuning seeds without each scenario kind in turn and "
            "show the left-out kind is still caught on this seed (minutes)",
        ),
    ] = False,
) -> None:
    """Scan synthetic traffic with injected misuse and report recall, precision,
    false alarms, explanation and time to detect."""
    _check(patients, days)
    if output_format not in ("table", "json"):
        raise MonitorError("--format must be table or json")
    if params not in ("held-out", "tuning"):
        raise MonitorError("--params must be held-out or tuning")
    scenario = HELD_OUT_PARAMS if params == "held-out" else TUNING_PARAMS
    with progress() as bar:
        task = bar.add_task("generating traffic", total=100)
        traffic = generate_traffic(seed, patients=patients, days=days, params=scenario)
        bar.update(task, completed=30, description="scanning")

        def moved(stage: str, fraction: float) -> None:
            bar.update(task, completed=30 + 60 * fraction, description=f"scan: {stage}")

        result = scan(traffic.dataset, since=traffic.since, progress=moved)
        figures = metrics.evaluate(traffic, result)
        report = None
        if leave_one_out:
            bar.update(task, completed=90, description="leave-one-kind-out")
            report = tune(
                tuning_seeds=metrics.TUNING_SEEDS,
                tuning_params=TUNING_PARAMS,
                held_out_seed=seed,
                held_out_params=scenario,
                patients=patients,
                days=days,
                step=lambda text: bar.update(task, description=text),
            )
        bar.update(task, completed=100, description="done")
    settings: dict[str, Any] = {
        "seed": seed,
        "params": params,
        "patients": patients,
        "days": days,
        "history_days": traffic.history_days,
        "scan_seconds": round(sum(result.stats["timings"].values()), 3),
    }
    if output_format == "json":
        out: dict[str, Any] = {"settings": settings, "figures": figures.as_dict()}
        if report is not None:
            out["leave_one_kind_out"] = report.as_dict()
        console.print_json(json.dumps(out, default=str))
    else:
        title = (
            f"Evaluation: seed {seed} ({params} parameters), {patients:,} patients, "
            f"{days} days, scan {settings['scan_seconds']:.2f} s"
        )
        console.print(render(figures, title=title), markup=False)
        if report is not None:
            console.print()
            console.print(render_tuning(report), markup=False)
    missed = [t for t, _, ok in figures.checks() if not ok]
    if report is not None:
        missed += [
            f"left-out {f.left_out} not caught"
            for f in report.folds
            if f.left_out is not None and f.held_out.kinds[f.left_out].recall < 0.9
        ]
    if targets and missed:
        err.print(f"phiguard: {len(missed)} target(s) missed: {'; '.join(missed)}")
        raise typer.Exit(1)


def generate(
    out: Annotated[Path, typer.Option("--out", help="directory for the CSVs and manifest")],
    seed: Annotated[int, typer.Option(help="traffic seed")] = metrics.HELD_OUT_SEED,
    days: Annotated[int, typer.Option(help="days of traffic")] = DEFAULT_DAYS,
    patients: Annotated[int, typer.Option(help="patients in the hospital")] = DEFAULT_PATIENTS,
    kinds: Annotated[
        str, typer.Option(help=f"comma-separated scenario kinds (default all: {', '.join(KINDS)})")
    ] = ",".join(KINDS),
) -> None:
    """Write synthetic access, auth, staff, patient and care CSVs plus manifest.json."""
    _check(patients, days)
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise MonitorError(f"unknown scenario kind(s): {', '.join(unknown)}")
    with progress() as bar:
        task = bar.add_task("generating traffic", total=2)
        traffic = generate_traffic(
            seed, patients=patients, days=days, kinds=chosen, params=HELD_OUT_PARAMS
        )
        bar.update(task, advance=1, description="writing CSVs")
        paths = write_csv(traffic, out)
        bar.update(task, advance=1, description="done")
    console.print(
        f"wrote {len(paths)} files to {out}: {traffic.dataset.access.height:,} accesses, "
        f"{len(traffic.instances)} injected instances (synthetic data)",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``generate`` to the ``monitor`` command group."""
    app.command("evaluate")(evaluate)
    app.command("generate")(generate)
