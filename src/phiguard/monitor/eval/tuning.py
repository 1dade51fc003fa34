"""Threshold tuning on the tuning seeds, and the leave-one-kind-out check.

The grid is small on purpose: a few thresholds a privacy office would actually
adjust.  A configuration is admissible when it meets the false-alarm and
explanation targets on every tuning seed; among those, the one with the best
worst-case recall (then precision, then fewest false alerts) wins.  For the
leave-one-kind-out check the choice ignores one scenario kind entirely, and the
chosen configuration is then run on the held-out seed and parameters: if the left
out kind is still caught, detection was not fitted to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.eval.generate import Traffic, generate
from phiguard.monitor.eval.metrics import Figures, evaluate
from phiguard.monitor.eval.scenarios import KINDS, ScenarioParams
from phiguard.monitor.scan import scan

GRID: Final[dict[str, tuple[Any, ...]]] = {
    "alert_threshold": (45.0, 50.0, 55.0),
    "serial_alpha": (1e-2, 1e-3, 1e-4),
    "off_hours_share": (0.005, 0.01, 0.02),
}

Step = Callable[[str], None]


def configurations(base: DetectionConfig | None = None) -> list[DetectionConfig]:
    base = base or DetectionConfig()
    names = list(GRID)
    return [
        base.with_(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*(GRID[n] for n in names))
    ]


def _key(config: DetectionConfig) -> tuple[Any, ...]:
    return tuple(getattr(config, name) for name in GRID)


def _objective(runs: Sequence[Figures], left_out: str | None) -> tuple[float, ...] | None:
    if not all(
        f.false_alerts_per_10k <= f.targets.false_alerts_per_10k
        and f.explained_benign >= f.targets.explained_benign
        for f in runs
    ):
        return None
    recalls = [
        k.recall
        for f in runs
        for kind, k in f.kinds.items()
        if kind != left_out and k.instances and not math.isnan(k.recall)
    ]
    precision = sum(f.precision_at_budget for f in runs) / len(runs)
    false = sum(f.false_alerts_per_10k for f in runs) / len(runs)
    return (min(recalls, default=0.0), sum(recalls) / max(1, len(recalls)), precision, -false)


@dataclass
class Fold:
    left_out: str | None
    chosen: dict[str, Any]
    held_out: Figures


@dataclass
class TuningReport:
    grid: dict[str, tuple[Any, ...]]
    tuning_seeds: tuple[int, ...]
    held_out_seed: int
    folds: list[Fold]

    def as_dict(self) -> dict[str, Any]:
        return {
            "grid": {k: list(v) for k, v in self.grid.items()},
            "tuning_seeds": list(self.tuning_seeds),
            "held_out_seed": self.held_out_seed,
            "folds": [
                {
                    "left_out": f.left_out,
                    "chosen": f.chosen,
                    "left_out_recall": (
                        f.held_out.kinds[f.left_out].recall if f.left_out else None
                    ),
                    "held_out_met": f.held_out.met,
                }
                for f in self.folds
            ],
        }


def tune(
    *,
    tuning_seeds: Sequence[int],
    tuning_params: ScenarioParams,
    held_out_seed: int,
    held_out_params: ScenarioParams,
    patients: int,
    days: int,
    left_out: Sequence[str | None] = (None, *KINDS),
    step: Step | None = None,
) -> TuningReport:
    """Choose a configuration per fold on the tuning seeds, judge it on the held-out one."""
    say = step or (lambda _: None)
    grid = configurations()
    tuning: list[Traffic] = []
    for seed in tuning_seeds:
        say(f"generating tuning seed {seed}")
        tuning.append(generate(seed, patients=patients, days=days, params=tuning_params))
    results: dict[tuple[Any, ...], list[Figures]] = {}
    for i, config in enumerate(grid, 1):
        say(f"tuning grid {i}/{len(grid)}")
        results[_key(config)] = [
            evaluate(t, scan(t.dataset, config=config, since=t.since)) for t in tuning
        ]
    say(f"generating held-out seed {held_out_seed}")
    held = generate(held_out_seed, patients=patients, days=days, params=held_out_params)
    judged: dict[tuple[Any, ...], Figures] = {}
    folds: list[Fold] = []
    for kind in left_out:
        scored = [
            (objective, i)
            for i, config in enumerate(grid)
            if (objective := _objective(results[_key(config)], kind)) is not None
        ]
        if not scored:
            continue
        # Ties go to the shipped defaults, then to the earlier grid point.
        default = _key(DetectionConfig())
        best = grid[
            max(scored, key=lambda item: (item[0], _key(grid[item[1]]) == default, -item[1]))[1]
        ]
        key = _key(best)
        if key not in judged:
            say(f"held-out scan for fold {kind or 'all kinds'}")
            judged[key] = evaluate(held, scan(held.dataset, config=best, since=held.since))
        folds.append(Fold(kind, {n: getattr(best, n) for n in GRID}, judged[key]))
    return TuningReport(dict(GRID), tuple(tuning_seeds), held_out_seed, folds)
