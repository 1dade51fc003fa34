"""``phiguard monitor`` end to end, as a subprocess against a real home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import assert_one_error_line, cli, cli_env, make_home, ok

STAFF = (
    "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
    "termination_date,patient_id\n"
    "u1,Quillfeather,Ann,nurse,Cardiology,3 Birch Road,12345,2020-01-01,,\n"
    "u2,Marchbanks,Bo,nurse,Cardiology,9 Ash Road,12345,2019-01-01,2026-01-01,\n"
)
PATIENTS = (
    "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"
    "p1,MRN001,Pemberton,Cy,1950-01-01,1 Oak Road,12345,false\n"
    "p2,MRN002,Fairweather,Di,1960-01-01,2 Oak Road,12345,false\n"
)
CARE = (
    "patient_id,user_id,department,start,end,kind\n"
    "p1,u1,Cardiology,2026-01-04T08:00:00Z,2026-01-06T08:00:00Z,encounter\n"
)
# A foreign export: other names, a day-first date format, a zone, coded actions, and
# one row whose time does not parse.
ACCESS = (
    "When|Who|Patient|Act|Screen|Terminal|Comment\n"
    "05/01/2026 09:00|u1|p1|R|Patient|ws1|ok\n"
    "05/01/2026 10:00|u2|p2|R|Patient|ws2|after termination\n"
    "yesterday|u1|p1|R|Patient|ws1|bad time\n"
)
MAPPING = """
columns: {timestamp: When, user_id: Who, patient_id: Patient, action: Act,
          resource_type: Screen, workstation: Terminal}
formats: {timestamp: "%d/%m/%Y %H:%M"}
timezone: Europe/London
values: {action: {R: view}}
delimiter: "|"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, text in (
        ("staff", STAFF),
        ("patients", PATIENTS),
        ("care", CARE),
        ("access", ACCESS),
        ("mapping", MAPPING),
    ):
        out[name] = root / f"{name}.{'yaml' if name == 'mapping' else 'csv'}"
        out[name].write_text(text)
    return out


def test_ingest_scan_review(tmp_path: Path, files: dict[str, Path]) -> None:
    home = make_home(tmp_path / "home")
    h = ("--home", str(home))
    for kind in ("staff", "patients", "care"):
        assert "Loaded " in ok("monitor", "ingest", "--kind", kind, files[kind], *h)
    done = cli(
        "monitor", "ingest", "--kind", "access", files["access"], "--mapping", files["mapping"], *h
    )
    assert done.returncode == 0, done.stderr
    assert "Loaded 2 access rows, refused 1" in done.stdout
    assert "line 4: timestamp does not match its format" in done.stderr
    again = ok(
        "monitor", "ingest", "--kind", "access", files["access"], "--mapping", files["mapping"], *h
    )
    assert "already loaded" in again

    summary = ok("monitor", "scan", *h)
    assert "Scanned 2 accesses" in summary
    assert "new case" in summary
    queue = json.loads(ok("monitor", "alerts", "--format", "json", *h))
    terminated = [a for a in queue if a["detector"] == "terminated-user"]
    assert terminated and terminated[0]["user_id"] == "u2"
    # The export's patient id is stored, and listed, as its pseudonym only.
    [pseudonym] = terminated[0]["patient_ids"]
    assert pseudonym.startswith("x") and len(pseudonym) == 27 and "p2" not in pseudonym
    alert_id = terminated[0]["alert_id"]
    by_source = json.loads(ok("monitor", "alerts", "--patient", "p2", "--format", "json", *h))
    assert [a["alert_id"] for a in by_source] == [alert_id]
    by_pseudonym = json.loads(
        ok("monitor", "alerts", "--patient", pseudonym, "--format", "json", *h)
    )
    assert [a["alert_id"] for a in by_pseudonym] == [alert_id]
    assert json.loads(ok("monitor", "alerts", "--patient", "p3", "--format", "json", *h)) == []
    listing = ok("monitor", "alerts", "--format", "csv", *h)
    assert listing.splitlines()[0].startswith("alert_id,score,detector,status")
    for name in ("Quillfeather", "Marchbanks", "Pemberton", "Fairweather", "Oak Road"):
        assert name not in listing + json.dumps(queue)

    assert "in-review" not in ok("monitor", "assign", alert_id, "--to", "user/privacy", *h)
    noted = cli("monitor", "note", alert_id, *h, stdin="called HR: access confirmed\n")
    assert noted.returncode == 0, noted.stderr
    shown = ok("monitor", "show", alert_id, *h)
    assert "called HR: access confirmed" in shown and "terminated-user" in shown
    assert f"source id of {pseudonym}: p2" in shown
    closed = ok("monitor", "close", alert_id, "--disposition", "breach", *h)
    assert "referred it to incident management" in closed
    after = json.loads(ok("monitor", "alerts", "--status", "closed", "--format", "json", *h))
    assert [(a["alert_id"], a["status"], a["assignee"]) for a in after] == [
        (alert_id, "closed", "user/privacy")
    ]
    rescan = ok("monitor", "scan", *h)
    assert "0 new alert(s)" in rescan and "already known" in rescan

    rule = cli(
        "monitor",
        "suppress",
        "--detector",
        "vip",
        "--user",
        "u1",
        "--days",
        "30",
        *h,
        stdin="u1 is the VIP's carer\n",
    )
    assert rule.returncode == 0 and "Suppression s-" in rule.stdout, rule.stderr
    rules = json.loads(ok("monitor", "suppressions", "--format", "json", *h))
    assert [(r["detector"], r["user_id"]) for r in rules] == [("vip", "u1")]
    assert "carer" not in json.dumps(rules)
    loads = ok("monitor", "loads", *h)
    assert loads.count("active") == 4 and "operator/" in loads


def test_errors_are_one_plain_line(tmp_path: Path, files: dict[str, Path]) -> None:
    home = make_home(tmp_path / "home")
    h = ("--home", str(home))
    assert_one_error_line(
        cli("monitor", "ingest", "--kind", "bogus", files["staff"], *h), contains="--kind must"
    )
    assert_one_error_line(
        cli("monitor", "close", "nope", "--disposition", "breach", *h),
        contains="there is no alert or case nope",
    )
    assert_one_error_line(cli("monitor", "alerts", "--format", "xml", *h), contains="--format")
    assert_one_error_line(
        cli("monitor", "show", "nope", *h), contains="there is no alert or case nope"
    )
    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("colums: {}\n")
    assert_one_error_line(
        cli("monitor", "ingest", "--kind", "access", files["access"], "--mapping", bad_mapping, *h),
        contains="unknown mapping key",
    )
    assert_one_error_line(cli("monitor", "scan", *h), contains="nothing to scan")
    assert_one_error_line(
        cli("monitor", "note", "x", *h, stdin=""), contains="no note on standard input"
    )
    wrong = cli("monitor", "alerts", *h, env=cli_env(PHIGUARD_PASSPHRASE="not the passphrase!"))
    assert_one_error_line(wrong)
