"""Parsing FHIR search queries into a plan the repository can run on ciphertext.

Token and string parameters become sets of blind-index tokens; date parameters
become a *cover* of year, month and day tokens for the searched range (so
``birthdate=ge1990-02-10`` is answered by the tokens for 10..28 Feb 1990, Mar..Dec
1990 and the years 1991..2199), and only searches finer than a day, or with the
``ne``/``sa``/``eb``/``ap`` prefixes, need the decrypted resources re-checked.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from phiguard.errors import InvalidSearch

from .params import CONTROL, Param, params_for

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
FLOOR = dt.date(1800, 1, 1)
CEILING = dt.date(2200, 1, 1)
MAX_COUNT = 1000
DEFAULT_COUNT = 50

_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class DateRange:
    """A searched or stored date as a half-open UTC range [start, end)."""

    start: dt.datetime
    end: dt.datetime
    day_precision: bool  # True if no finer than a day


def parse_date(value: str) -> DateRange:
    m = _DATE.match(value)
    if not m:
        raise InvalidSearch("a date must look like YYYY, YYYY-MM, YYYY-MM-DD or an instant")
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        if hour is not None:
            offset = dt.UTC
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                offset = dt.timezone(sign * dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
            start = dt.datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                int(float(frac) * 1_000_000) if frac else 0,
                tzinfo=offset,
            ).astimezone(dt.UTC)
            step = dt.timedelta(seconds=1) if second is not None else dt.timedelta(minutes=1)
            return DateRange(start, start + step, False)
        if day is not None:
            d0 = dt.date(int(year), int(month), int(day))
            d1 = d0 + dt.timedelta(days=1)
        elif month is not None:
            d0 = dt.date(int(year), int(month), 1)
            d1 = dt.date(d0.year + (d0.month == 12), d0.month % 12 + 1, 1)
        else:
            d0 = dt.date(int(year), 1, 1)
            d1 = dt.date(d0.year + 1, 1, 1)
    except ValueError:
        raise InvalidSearch("the date does not exist in the calendar") from None
    return DateRange(_midnight(d0), _midnight(d1), True)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def date_matches(prefix: str, target: DateRange, search: DateRange) -> bool:
    """FHIR date comparison of a stored value's range with a searched range."""
    inside = search.start <= target.start and target.end <= search.end
    if prefix == "eq":
        return inside
    if prefix == "ne":
        return not inside
    if prefix == "gt":
        return target.end > search.end
    if prefix == "lt":
        return target.start < search.start
    if prefix == "ge":
        return target.end > search.end or inside
    if prefix == "le":
        return target.start < search.start or inside
    if prefix == "sa":
        return target.start >= search.end
    if prefix == "eb":
        return target.end <= search.start
    return target.start < search.end and search.start < target.end  # ap: overlaps


def day_range(prefix: str, search: DateRange) -> tuple[dt.date, dt.date] | None:
    """The days [lo, hi) a day-precision search covers, or None if it cannot be covered."""
    lo, hi = search.start.date(), search.end.date()
    if prefix == "eq":
        return lo, hi
    if prefix in ("gt", "sa"):
        return hi, CEILING
    if prefix == "ge":
        return lo, CEILING
    if prefix in ("lt", "eb"):
        return FLOOR, lo
    if prefix == "le":
        return FLOOR, hi
    return None


def date_cover(lo: dt.date, hi: dt.date) -> Iterator[str]:
    """Fewest year/month/day token values whose union is exactly the days [lo, hi)."""
    day = max(lo, FLOOR)
    hi = min(hi, CEILING)
    while day < hi:
        next_year = dt.date(day.year + 1, 1, 1)
        next_month = dt.date(day.year + (day.month == 12), day.month % 12 + 1, 1)
        if day.month == 1 and day.day == 1 and next_year <= hi:
            yield f"{day.year:04d}"
            day = next_year
        elif day.day == 1 and next_month <= hi:
            yield f"{day.year:04d}-{day.month:02d}"
            day = next_month
        else:
            yield day.isoformat()
            day += dt.timedelta(days=1)


@dataclass
class TokenFilter:
    """Resources with any of ``values`` for ``param`` (one AND-ed search parameter)."""

    param: Param
    values: list[str]
    # Marker values whose matches must be decrypted and re-checked with ``check``.
    recheck: list[str] = field(default_factory=list)
    check: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class SearchPlan:
    resource_type: str
    token_filters: list[TokenFilter] = field(default_factory=list)
    ids: list[list[str]] = field(default_factory=list)
    compartments: list[list[str]] = field(default_factory=list)
    updated: list[tuple[str, DateRange]] = field(default_factory=list)
    post_filters: list[Callable[[dict[str, Any]], bool]] = field(default_factory=list)
    scan_all: bool = False
    count: int = DEFAULT_COUNT
    offset: int = 0
    summary_count: bool = False
    sort_desc: bool = False
    sort_by_updated: bool = False


def _int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidSearch(f"{name} must be a whole number") from None
    if not lo <= number <= hi:
        raise InvalidSearch(f"{name} must be between {lo} and {hi}")
    return number


def _date_post_filter(
    param: Param, prefix: str, search: DateRange
) -> Callable[[dict[str, Any]], bool]:
    def check(resource: dict[str, Any]) -> bool:
        for value in param.extract(resource):
            try:
                if date_matches(prefix, parse_date(value), search):
                    return True
            except InvalidSearch:
                continue
        return False

    return check


def plan(resource_type: str, items: list[tuple[str, str]]) -> SearchPlan:
    """Turn query items (name, value) into a ``SearchPlan``, or raise ``InvalidSearch``."""
    result = SearchPlan(resource_type)
    known = params_for(resource_type)
    for raw_name, value in items:
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL:
            if name == "_count":
                result.count = _int("_count", value, 0, MAX_COUNT)
                result.summary_count = result.summary_count or result.count == 0
            elif name == "_offset":
                result.offset = _int("_offset", value, 0, 10**9)
            elif name == "_summary":
                if value == "count":
                    result.summary_count = True
                elif value not in ("false",):
                    raise InvalidSearch("only _summary=count and _summary=false are supported")
            elif name == "_sort":
                key = value.lstrip("-")
                if key not in ("_lastUpdated", "_id"):
                    raise InvalidSearch("_sort supports _lastUpdated and _id")
                result.sort_desc = value.startswith("-")
                result.sort_by_updated = key == "_lastUpdated"
            continue
        if value == "":
            continue
        if modifier and modifier not in ("exact",):
            raise InvalidSearch(f"unsupported search modifier :{modifier[:20]}")
        values = [v for v in value.split(",") if v]
        if name == "_id":
            result.ids.append(values)
        elif name in ("patient", "subject"):
            comps = []
            for v in values:
                pid = v.removeprefix("Patient/")
                if "/" in pid:
                    raise InvalidSearch(f"{name} must reference a Patient")
                comps.append(f"Patient/{pid}")
            result.compartments.append(comps)
        elif name == "_lastUpdated":
            for v in values:
                prefix, body = split_prefix(v)
                if prefix not in ("eq", "gt", "lt", "ge", "le"):
                    raise InvalidSearch("_lastUpdated supports eq, gt, lt, ge and le")
                result.updated.append((prefix, parse_date(body)))
        elif name in known:
            param = known[name]
            if param.kind == "date":
                _plan_date(result, param, values)
            else:
                result.token_filters.append(TokenFilter(param, values))
        else:
            raise InvalidSearch(f"unknown search parameter for {resource_type}: {name[:40]}")
    return result


def _plan_date(result: SearchPlan, param: Param, values: list[str]) -> None:
    if len(values) != 1:
        raise InvalidSearch(f"{param.name} takes one date per parameter (repeat it to AND)")
    prefix, body = split_prefix(values[0])
    search = parse_date(body)
    days = day_range(prefix, search) if search.day_precision else None
    if days is None:
        # Finer than a day, or a prefix no range of days answers: cover the days the
        # search touches (when it can) and re-check the decrypted values.
        if prefix in ("ne", "ap"):
            result.scan_all = True
        else:
            lo = search.start.date() if prefix not in ("lt", "le", "eb") else FLOOR
            hi = (
                (search.end + dt.timedelta(days=1)).date()
                if prefix not in ("gt", "ge", "sa")
                else CEILING
            )
            markers = partial_markers(lo, hi)
            result.token_filters.append(TokenFilter(param, [*date_cover(lo, hi), *markers]))
        result.post_filters.append(_date_post_filter(param, prefix, search))
        return
    cover = list(date_cover(*days))
    if not cover:
        cover = ["0000-00-00"]  # an empty range matches nothing
    markers = partial_markers(*days)
    result.token_filters.append(
        TokenFilter(param, [*cover, *markers], markers, _date_post_filter(param, prefix, search))
    )


def partial_markers(lo: dt.date, hi: dt.date) -> list[str]:
    """Markers of the years and months that the days [lo, hi) cut through: dates
    stored with only that precision may match and must be re-checked."""
    if lo >= hi:
        return []
    last = hi - dt.timedelta(days=1)
    out: list[str] = []
    for year in sorted({lo.year, last.year}):
        if not (dt.date(year, 1, 1) >= lo and dt.date(year + 1, 1, 1) <= hi):
            out.append(f"~{year:04d}")
    for year, month in sorted({(lo.year, lo.month), (last.year, last.month)}):
        first = dt.date(year, month, 1)
        after = dt.date(year + (month == 12), month % 12 + 1, 1)
        if not (first >= lo and after <= hi):
            out.append(f"~{year:04d}-{month:02d}")
    return out
