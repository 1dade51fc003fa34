"""``phiguard audit disclose``: what was disclosed comes from standard input, never argv."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from phiguard.audit import reports
from tests.cli import assert_one_error_line, cli, make_home, opened


def test_disclosure_is_read_from_stdin_and_reported(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    done = cli(
        "audit",
        "disclose",
        "--home",
        home,
        "--patient",
        "p-1",
        "--recipient",
        "State registry",
        stdin="Positive TB test reported\n",
    )
    assert done.returncode == 0, done.stderr
    assert "Positive TB test" not in done.stdout
    with opened(home) as system:
        system.ledger.checkpoint()
        today = system.clock.now().date()
        built = reports.build(system.ledger, "p-1", today - dt.timedelta(days=1), today)
    assert [d["description"] for d in built.disclosures] == ["Positive TB test reported"]
    assert built.disclosures[0]["recipient"] == "State registry"


def test_a_disclosure_without_a_description_is_refused(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    empty = cli(
        "audit", "disclose", "--home", home, "--patient", "p-1", "--recipient", "X", stdin=""
    )
    assert_one_error_line(empty, contains="standard input")
    old = cli(
        "audit",
        "disclose",
        "--home",
        home,
        "--patient",
        "p-1",
        "--recipient",
        "X",
        "--description",
        "on the command line",
        stdin="x\n",
    )
    assert old.returncode != 0
