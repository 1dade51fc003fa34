"""``phiguard monitor evaluate|generate`` through Typer, as the monitor group registers them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from phiguard.cli.monitor_eval import register
from phiguard.monitor import scan as scan_module


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_evaluate_json_reports_every_figure() -> None:
    result = CliRunner().invoke(
        _app(),
        ["evaluate", "--patients", "1000", "--days", "40", "--format", "json", "--no-targets"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    figures = out["figures"]
    assert out["settings"]["patients"] == 1000
    assert set(figures) >= {
        "precision_at_budget",
        "average_precision",
        "false_alerts_per_10k_benign",
        "explained_benign",
        "explained_away",
        "kinds",
        "checks",
        "review_budget_cases",
    }
    assert all("median_hours_to_detect" in k for k in figures["kinds"].values())


def test_evaluate_exits_non_zero_when_a_target_is_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    def everything(access: pl.DataFrame, *_: object) -> pl.Series:
        return pl.Series("explained_by", ["encounter"] * access.height, dtype=pl.String)

    monkeypatch.setattr(scan_module, "explain", everything)
    result = CliRunner().invoke(_app(), ["evaluate", "--patients", "1000", "--days", "40"])
    assert result.exit_code == 1
    assert "target(s) missed" in result.stderr
    assert "Traceback" not in result.output


def test_bad_options_are_one_line_errors() -> None:
    result = CliRunner().invoke(_app(), ["evaluate", "--patients", "10"])
    assert result.exit_code != 0
    assert "--patients" in str(result.exception)


def test_generate_writes_the_csvs(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "generate",
            "--out",
            str(tmp_path),
            "--patients",
            "1000",
            "--days",
            "40",
            "--kinds",
            "family,bulk-export",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "access.csv").stat().st_size > 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {i["kind"] for i in manifest["instances"]} == {"family", "bulk-export"}
    bad = CliRunner().invoke(_app(), ["generate", "--out", str(tmp_path), "--kinds", "nope"])
    assert bad.exit_code != 0
