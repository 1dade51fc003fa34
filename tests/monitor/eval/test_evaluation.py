"""The evaluation on the held-out seed meets its targets; broken detection does not.

The held-out seed and parameter set are never used for tuning (see
``phiguard.monitor.eval.metrics``).  The broken variants prove the check can fail:
an explanation that explains everything, or one that explains nothing, or no
detectors at all, must each miss a target.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from phiguard.monitor import scan as scan_module
from phiguard.monitor.eval.generate import Traffic, generate
from phiguard.monitor.eval.metrics import HELD_OUT_SEED, TUNING_SEEDS, Figures, evaluate
from phiguard.monitor.eval.scenarios import HELD_OUT_PARAMS, KINDS
from phiguard.monitor.scan import scan

PATIENTS = 5000
DAYS = 90


@pytest.fixture(scope="module")
def held_out() -> Traffic:
    assert HELD_OUT_SEED not in TUNING_SEEDS
    return generate(HELD_OUT_SEED, patients=PATIENTS, days=DAYS, params=HELD_OUT_PARAMS)


def _figures(traffic: Traffic) -> Figures:
    return evaluate(traffic, scan(traffic.dataset, since=traffic.since))


def test_held_out_configuration_meets_every_target(held_out: Traffic) -> None:
    figures = _figures(held_out)
    missed = [(t, m) for t, m, ok in figures.checks() if not ok]
    assert missed == []
    assert {k for k, f in figures.kinds.items() if f.instances} == set(KINDS)
    assert figures.precision_at_budget > 0.5
    assert figures.average_precision > 0.8


def _explain_everything(access: pl.DataFrame, *_: object) -> pl.Series:
    return pl.Series("explained_by", ["encounter"] * access.height, dtype=pl.String)


def _explain_nothing(access: pl.DataFrame, *_: object) -> pl.Series:
    return pl.Series("explained_by", [None] * access.height, dtype=pl.String)


@pytest.mark.parametrize(
    ("broken", "target"),
    [
        (_explain_everything, "explained away"),
        (_explain_nothing, "benign accesses explained"),
    ],
)
def test_a_broken_explanation_misses_targets(
    held_out: Traffic,
    monkeypatch: pytest.MonkeyPatch,
    broken: Callable[..., pl.Series],
    target: str,
) -> None:
    monkeypatch.setattr(scan_module, "explain", broken)
    figures = _figures(held_out)
    failed = [t for t, _, ok in figures.checks() if not ok]
    assert any(target in t for t in failed), failed
    assert not figures.met


def test_without_detectors_recall_collapses(
    held_out: Traffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_module, "FAMILIES", ())
    figures = _figures(held_out)
    assert all(k.recall == 0 for k in figures.kinds.values() if k.instances)
    assert not figures.met
