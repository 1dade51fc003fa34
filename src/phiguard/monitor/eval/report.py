"""Plain-text tables of the evaluation (Markdown, readable in a terminal and a doc)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from phiguard.monitor.eval.metrics import Figures
from phiguard.monitor.eval.tuning import TuningReport


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def _num(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def render(figures: Figures, *, title: str) -> str:
    per_kind = _table(
        [
            "scenario",
            "instances",
            "caught",
            "recall",
            "PR-AUC",
            "explained away",
            "hours to detect",
        ],
        [
            [
                kind,
                str(k.instances),
                str(k.caught),
                _num(k.recall),
                _num(k.average_precision),
                "-" if math.isnan(k.explained_away) else f"{k.explained_away:.1%}",
                _num(k.median_detect_hours, 1),
            ]
            for kind, k in figures.kinds.items()
            if k.instances
        ],
    )
    overall = _table(
        ["figure", "value"],
        [
            ["accesses scanned", f"{figures.accesses:,}"],
            [
                "benign / injected accesses",
                f"{figures.benign_accesses:,} / {figures.injected_accesses:,}",
            ],
            ["review budget (cases)", f"{figures.budget} (2 per 10,000 accesses, at least 10)"],
            ["cases raised", str(figures.cases)],
            ["precision@budget", _num(figures.precision_at_budget)],
            ["PR-AUC (average precision, all kinds)", _num(figures.average_precision)],
            [
                "alerts on benign activity per 10,000 benign accesses",
                f"{figures.false_alerts_per_10k:.2f} ({figures.false_alerts})",
            ],
            ["benign accesses explained", f"{figures.explained_benign:.2%}"],
            ["injected snooping accesses explained away", f"{figures.explained_away:.2%}"],
        ],
    )
    checks = _table(
        ["target", "measured", "verdict"],
        [[t, m, "MET" if ok else "MISSED"] for t, m, ok in figures.checks()],
    )
    return "\n\n".join([f"## {title}", overall, per_kind, checks])


def render_tuning(report: TuningReport) -> str:
    rows = []
    for fold in report.folds:
        kind = fold.left_out
        recall = "-" if kind is None else _num(fold.held_out.kinds[kind].recall)
        rows.append(
            [
                kind or "(none: final choice)",
                ", ".join(f"{k}={v:g}" for k, v in fold.chosen.items()),
                recall,
                "MET" if fold.held_out.met else "MISSED",
            ]
        )
    head = (
        f"## Leave-one-kind-out (tuned on seeds {', '.join(map(str, report.tuning_seeds))}, "
        f"judged on held-out seed {report.held_out_seed})"
    )
    return "\n\n".join(
        [
            head,
            _table(
                ["kind left out of tuning", "chosen", "its recall on held-out", "all targets"],
                rows,
            ),
        ]
    )
