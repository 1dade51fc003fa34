"""CSV ingest: canonical files, a mapped foreign export, bad rows by line number."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from phiguard.errors import ImportFailed, MappingError
from phiguard.monitor import frames
from phiguard.monitor.sources.csv import ReadReport, read_csv
from phiguard.monitor.sources.mapping import Mapping
from phiguard.synth import generate_hospital
from phiguard.synth.roster import write_roster_csv

UTC = dt.UTC


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read(
    path: Path, kind: str, mapping: Mapping | None = None, **kw: object
) -> tuple[pl.DataFrame, ReadReport]:
    report = ReadReport()
    blocks = list(read_csv(path, kind, mapping, report=report, **kw))  # type: ignore[arg-type]
    frame = pl.concat(blocks) if blocks else frames.empty(kind)
    return frame, report


ACCESS = """timestamp,user_id,patient_id,action,resource_type,workstation
2026-01-05T10:00:00+02:00,u1,p1,view,Observation,ws-1
2026-01-05T10:01:00Z,u1,p2,PRINT,Patient,
2026-01-05T10:02:00,u1,p3,view,Patient,ws-1
2026-01-05T10:03:00+00:00,u2,,view,Patient,ws-2
2026-01-05T10:04:00+00:00,u2,p4,peek,Patient,ws-2
not-a-time,u2,p5,view,Patient,ws-2
2026-01-05T10:05:00+00:00,u2,p6,view

2026-01-05T10:06:00.250+00:00,u3,p7,export,Bundle,ws-9,extra
2026-01-05 10:07:00+01:00,u3,p8,search,Patient,ws-9
"""


def test_canonical_access_keeps_good_rows_and_names_bad_lines(tmp_path: Path) -> None:
    frame, report = read(write(tmp_path / "a.csv", ACCESS), "access")
    assert frame.schema == pl.Schema(frames.ACCESS)
    assert frame["patient_id"].to_list() == ["p1", "p2", "p8"]
    assert frame["timestamp"].to_list() == [
        dt.datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 10, 1, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 9, 7, tzinfo=UTC),
    ]
    assert frame["action"].to_list() == ["view", "print", "search"]  # case folded
    assert frame["workstation"].to_list() == ["ws-1", None, "ws-9"]  # empty is null
    by_line = {b.line: b.reason for b in report.bad_rows}
    assert by_line == {
        4: "timestamp has no UTC offset and the mapping names no timezone",
        5: "patient_id is empty",
        6: "action is not one of: view, search, create, update, delete, print, export",
        7: "timestamp is not an ISO 8601 time with a UTC offset",
        8: "the row has 4 fields, the header has 6",
        10: "the row has 7 fields, the header has 6",
    }
    assert report.rows == 3 and report.rejected == 6


def test_reasons_never_quote_the_value(tmp_path: Path) -> None:
    text = "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"
    text += "p1,M1,Canaryname,Zed,19-07-1971,1 Canary Lane,12345,maybe\n"
    _frame, report = read(write(tmp_path / "p.csv", text), "patients")
    (bad,) = report.bad_rows
    assert bad.line == 2 and bad.reason == "birth_date is not a date (YYYY-MM-DD)"
    assert "Canary" not in bad.reason and "19-07" not in bad.reason


def test_quoted_fields_and_line_breaks_keep_true_line_numbers(tmp_path: Path) -> None:
    text = (
        "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
        "termination_date,patient_id\n"
        'u1,"O\'Neil, Jr.",Ann,nurse,ED,"12 Oak St,\nApt 4",12345,2020-01-01,,\n'
        'u2,"Bad"quote,Bo,nurse,ED,,,2020-01-01,,\n'
        "u3,Smith,Cy,physician,ED,1 Elm,12345,2019-02-03,2025-12-31,p9\n"
        "u4,Smith,Di,physician,ED,1 Elm,12345,2019-02-30,,\n"
    )
    frame, report = read(write(tmp_path / "s.csv", text), "staff")
    assert frame["user_id"].to_list() == ["u1", "u3"]
    assert frame["address"][0] == "12 Oak St,\nApt 4"
    assert frame["termination_date"].to_list() == [None, dt.date(2025, 12, 31)]
    assert [b.line for b in report.bad_rows] == [4, 6]
    assert "hire_date is not a date" in report.bad_rows[1].reason


def test_synthetic_roster_loads_without_a_single_refusal(tmp_path: Path) -> None:
    hospital = generate_hospital(seed=7, patients=200)
    staff, patients, care = write_roster_csv(hospital, tmp_path)
    for path, kind, expected in (
        (staff, "staff", len(hospital.staff)),
        (patients, "patients", len(hospital.patients)),
    ):
        frame, report = read(path, kind)
        assert report.rejected == 0 and frame.height == expected
    frame, report = read(care, "care")
    assert report.rejected == 0 and frame.height > 0
    teams = frame.filter(pl.col("kind") == "care_team")
    # Care-team periods are bare dates: start at midnight, end at the end of the day.
    assert (teams["start"].dt.time() == dt.time(0)).all()
    ends = teams["end"].drop_nulls()
    assert (ends.dt.time() == dt.time(0)).all()


def test_care_rules(tmp_path: Path) -> None:
    text = (
        "patient_id,user_id,department,start,end,kind\n"
        "p1,u1,,2026-01-01T08:00:00Z,2026-01-02T08:00:00Z,encounter\n"
        "p1,,Cardiology,2026-01-01,,care_team\n"
        "p2,,,2026-01-01T08:00:00Z,,order\n"
        "p3,u1,,2026-01-02T08:00:00Z,2026-01-01T08:00:00Z,consult\n"
        "p4,u1,,2026-01-02T08:00:00Z,,visit\n"
    )
    frame, report = read(write(tmp_path / "c.csv", text), "care")
    assert frame["patient_id"].to_list() == ["p1", "p1"]
    assert {b.line: b.reason for b in report.bad_rows} == {
        4: "the row has neither a user_id nor a department",
        5: "end is before start",
        6: "kind is not one of: encounter, appointment, care_team, order, consult",
    }


FOREIGN = """AccessDate;Emp;MRN;Kind;Screen;Terminal;Comment
05.01.2026 10:00:00;E1;P1;R;Chart;T1;ignored
05.01.2026 11:30:00;E1;P2;Print;Report;T1;ignored
29.03.2026 02:30:00;E2;P3;R;Chart;T2;(in the spring-forward gap)
31.13.2026 10:00:00;E2;P4;R;Chart;T2;bad month
05.01.2026 12:00:00;E2;P5;X;Chart;T2;unknown code
"""
MAPPING = """
columns:
  timestamp: AccessDate
  user_id: Emp
  patient_id: MRN
  action: Kind
  resource_type: Screen
  workstation: Terminal
formats:
  timestamp: "%d.%m.%Y %H:%M:%S"
timezone: Europe/Berlin
values:
  action:
    R: view
    Print: print
delimiter: ";"
"""


def test_mapped_foreign_export(tmp_path: Path) -> None:
    mapping_path = write(tmp_path / "m.yaml", MAPPING)
    frame, report = read(write(tmp_path / "f.csv", FOREIGN), "access", Mapping.load(mapping_path))
    assert frame["user_id"].to_list() == ["E1", "E1"]
    assert frame["timestamp"].to_list() == [  # CET is UTC+1 in January
        dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 10, 30, tzinfo=UTC),
    ]
    assert frame["action"].to_list() == ["view", "print"]
    assert frame.columns == list(frames.ACCESS)  # the extra Comment column is gone
    assert {b.line: b.reason for b in report.bad_rows} == {
        4: "timestamp does not match its format or does not exist in Europe/Berlin",
        5: "timestamp does not match its format or does not exist in Europe/Berlin",
        6: "action is not one of: view, search, create, update, delete, print, export",
    }


def test_naive_iso_times_take_the_mapping_zone(tmp_path: Path) -> None:
    text = "timestamp,user_id,source,outcome\n2026-07-01T12:00:00,u1,10.0.0.1,failure\n"
    mapping = Mapping.from_dict({"timezone": "America/New_York"})
    frame, report = read(write(tmp_path / "auth.csv", text), "auth", mapping)
    assert report.rejected == 0
    assert frame["timestamp"].to_list() == [dt.datetime(2026, 7, 1, 16, 0, tzinfo=UTC)]
    assert frame["secret_hash"].to_list() == [None]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"columns": {"timestmp": "x"}}, "columns names column(s) a access file does not have"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"formats": {"user_id": "%d"}}, "user_id is not a date or time column"),
        ({"delimiter": ";;"}, "delimiter must be one character"),
        ({"colums": {}}, "unknown mapping key"),
        ({"formats": {"timestamp": "%d.%m.%Y"}}, "the mapping must name a timezone"),
    ],
)
def test_bad_mappings_are_refused_before_reading(
    tmp_path: Path, doc: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "a.csv", ACCESS)
    with pytest.raises(MappingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(path, "access", Mapping.from_dict(doc))


def test_missing_required_column_names_the_mapped_name(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "when,who,patient,action\n")
    mapping = Mapping.from_dict({"columns": {"timestamp": "AccessTime", "user_id": "who"}})
    with pytest.raises(MappingError, match=r"timestamp \(mapped from AccessTime\), patient_id"):
        read(path, "access", mapping)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="is empty"):
        read(write(tmp_path / "e.csv", ""), "access")
    with pytest.raises(ImportFailed, match="cannot read"):
        read(tmp_path / "nope.csv", "access")


def test_small_blocks_give_the_same_rows_and_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", ACCESS)
    whole, whole_report = read(path, "access")
    pieces, piece_report = read(path, "access", block_bytes=40)
    assert pieces.equals(whole)
    assert piece_report.bad_rows == whole_report.bad_rows


def test_invalid_utf8_row_is_refused_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"timestamp,user_id,patient_id,action,resource_type,workstation\n"
        b"2026-01-05T10:00:00Z,u1,p\xff1,view,Patient,ws\n"
        b"2026-01-05T10:00:00Z,u1,p2,view,Patient,ws\n"
    )
    frame, report = read(path, "access")
    assert frame["patient_id"].to_list() == ["p2"]
    assert [(b.line, b.reason) for b in report.bad_rows] == [(2, "the row is not valid UTF-8")]
