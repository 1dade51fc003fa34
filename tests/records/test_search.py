"""Search planning: date covers, prefixes, parameters (pure functions, no database)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phiguard.errors import InvalidSearch
from phiguard.records.params import date_tokens
from phiguard.records.search import (
    CEILING,
    FLOOR,
    DateRange,
    date_cover,
    date_matches,
    parse_date,
    plan,
)

days = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31))


def covered(cover: list[str], day: dt.date) -> bool:
    """Whether a resource dated ``day`` has one of its tokens in ``cover``."""
    return any(t in cover for t in date_tokens(day.isoformat()))


@settings(max_examples=300, deadline=None)
@given(lo=days, hi=days, probe=days)
def test_cover_is_exact_for_day_ranges(lo: dt.date, hi: dt.date, probe: dt.date) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    cover = list(date_cover(lo, hi))
    assert covered(cover, probe) == (lo <= probe < hi)


@settings(max_examples=100, deadline=None)
@given(lo=days, hi=days)
def test_cover_is_small(lo: dt.date, hi: dt.date) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    # whole years, at most 11 months and 30 days at each edge
    assert len(list(date_cover(lo, hi))) <= (hi.year - lo.year + 1) + 2 * 11 + 2 * 31


def test_open_ranges_are_clamped() -> None:
    assert list(date_cover(dt.date(1000, 1, 1), FLOOR)) == []
    assert next(iter(date_cover(dt.date(2199, 12, 31), dt.date(3000, 1, 1)))) == "2199-12-31"
    assert CEILING.year == 2200


@pytest.mark.parametrize(
    ("value", "start", "end", "day"),
    [
        ("2020", "2020-01-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00", True),
        ("2020-02", "2020-02-01T00:00:00+00:00", "2020-03-01T00:00:00+00:00", True),
        ("2020-12", "2020-12-01T00:00:00+00:00", "2021-01-01T00:00:00+00:00", True),
        ("2020-02-29", "2020-02-29T00:00:00+00:00", "2020-03-01T00:00:00+00:00", True),
        ("2020-02-29T10:00:00Z", "2020-02-29T10:00:00+00:00", "2020-02-29T10:00:01+00:00", False),
        ("2020-02-29T10:00+02:00", "2020-02-29T08:00:00+00:00", "2020-02-29T08:01:00+00:00", False),
    ],
)
def test_parse_date(value: str, start: str, end: str, day: bool) -> None:
    r = parse_date(value)
    assert (r.start.isoformat(), r.end.isoformat(), r.day_precision) == (start, end, day)


@pytest.mark.parametrize("value", ["2020-13", "2021-02-29", "20", "yesterday", "2020-1-1"])
def test_bad_dates_are_refused(value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_date(value)


def r(value: str) -> DateRange:
    return parse_date(value)


@pytest.mark.parametrize(
    ("prefix", "target", "search", "expected"),
    [
        ("eq", "2020-05-05", "2020-05", True),
        ("eq", "2020-05", "2020-05-05", False),
        ("ne", "2020-05", "2020-05-05", True),
        ("gt", "2020-06-01", "2020-05", True),
        ("gt", "2020-05-31", "2020-05", False),
        ("ge", "2020-05-01", "2020-05", True),
        ("lt", "2020-04-30", "2020-05", True),
        ("lt", "2020-05-01", "2020-05", False),
        ("le", "2020-05-31", "2020-05", True),
        ("sa", "2020-06-01", "2020-05", True),
        ("eb", "2020-04-30", "2020-05", True),
        ("ap", "2020-05-15", "2020-05", True),
    ],
)
def test_date_matches(prefix: str, target: str, search: str, expected: bool) -> None:
    assert date_matches(prefix, r(target), r(search)) is expected


def test_plan_reads_control_parameters() -> None:
    p = plan("Patient", [("_count", "5"), ("_offset", "10"), ("_sort", "-_lastUpdated")])
    assert (p.count, p.offset, p.sort_desc, p.summary_count) == (5, 10, True, False)
    assert plan("Patient", [("_summary", "count")]).summary_count


@pytest.mark.parametrize(
    "items",
    [
        [("nonsense", "x")],
        [("_count", "-1")],
        [("_count", "100000")],
        [("_count", "ten")],
        [("family:contains", "x")],
        [("birthdate", "ge2020,le2021")],
        [("_sort", "family")],
        [("_summary", "true")],
        [("subject", "Group/1")],
    ],
)
def test_plan_refuses_bad_queries(items: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidSearch):
        plan("Patient", items)


def test_day_precision_searches_need_no_recheck() -> None:
    assert plan("Patient", [("birthdate", "ge1990-02-10")]).post_filters == []
    timed = plan("Observation", [("date", "ge2020-01-01T10:00:00Z")])
    assert timed.post_filters and timed.token_filters
    assert plan("Observation", [("date", "ne2020")]).scan_all
