"""Column mappings: how another EHR's export differs from phiguard's canonical CSV.

Hospitals export audit trails and rosters with their own column names, date formats
and codes.  Rather than asking them to rewrite files, a small YAML file says how to
read them::

    columns:                 # canonical name: the column's name in the file
      timestamp: ACCESS_TIME
      user_id: EMP_ID
    formats:                 # strftime-style formats of date and time columns
      timestamp: "%m/%d/%Y %H:%M:%S"
    timezone: America/Chicago   # the zone of times written without a UTC offset
    values:                  # translations of coded values, per canonical column
      action:
        "Chart Review": view
    delimiter: ","

Columns the mapping does not name keep their canonical names; columns the file has
beyond those are ignored.  Every problem is reported with the mapping's own words
(never a value from a data file, which may be PHI).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import polars as pl
import yaml

from phiguard.errors import MappingError
from phiguard.monitor import frames

_KEYS: Final = frozenset({"columns", "formats", "timezone", "values", "delimiter"})

# Columns a file of each kind must have; the others may be absent (read as empty).
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "access": ("timestamp", "user_id", "patient_id", "action"),
    "staff": ("user_id",),
    "patients": ("patient_id",),
    "care": ("patient_id", "start", "kind"),
    "auth": ("timestamp", "user_id", "outcome"),
}
# Columns that must hold a value in every row (a row without one is rejected).
NOT_EMPTY: Final[dict[str, tuple[str, ...]]] = REQUIRED
# Columns a CSV file never supplies (only phiguard's own ledger can).
NOT_IN_CSV: Final[dict[str, frozenset[str]]] = {"auth": frozenset({"secret_hash"})}


def csv_columns(kind: str) -> list[str]:
    """The canonical CSV columns of ``kind``, in order."""
    skip = NOT_IN_CSV.get(kind, frozenset())
    return [name for name in frames.SCHEMAS[kind] if name not in skip]


@dataclass(frozen=True)
class Mapping:
    """How to read one export; ``Mapping()`` reads the canonical format."""

    columns: dict[str, str] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    timezone: str | None = None
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    delimiter: str = ","

    @classmethod
    def load(cls, path: Path) -> Mapping:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise MappingError(f"cannot read the mapping file: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise MappingError(f"the mapping file is not valid YAML{where}") from None
        return cls.from_dict(doc or {})

    @classmethod
    def from_dict(cls, doc: Any) -> Mapping:
        if not isinstance(doc, dict):
            raise MappingError("a mapping file must be a YAML mapping (key: value)")
        unknown = set(doc) - _KEYS
        if unknown:
            raise MappingError(f"unknown mapping key(s): {', '.join(sorted(map(str, unknown)))}")
        mapping = cls(
            columns=_str_dict(doc.get("columns"), "columns"),
            formats=_str_dict(doc.get("formats"), "formats"),
            timezone=_optional_str(doc.get("timezone"), "timezone"),
            values={
                str(column): _str_dict(table, f"values.{column}")
                for column, table in _dict(doc.get("values"), "values").items()
            },
            delimiter=_optional_str(doc.get("delimiter"), "delimiter") or ",",
        )
        if len(mapping.delimiter) != 1 or mapping.delimiter in '"\r\n':
            raise MappingError("delimiter must be one character other than a quote or newline")
        if mapping.timezone is not None:
            mapping.zone()  # refuse an unknown zone before any row is read
        return mapping

    def zone(self) -> zoneinfo.ZoneInfo | None:
        if self.timezone is None:
            return None
        try:
            return zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise MappingError(f"unknown timezone: {self.timezone}") from None

    def check_for(self, kind: str) -> None:
        """Refuse names that mean nothing for ``kind`` (a typo would silently do nothing)."""
        known = set(csv_columns(kind))
        for section in ("columns", "formats", "values"):
            names = set(getattr(self, section))
            if names - known:
                raise MappingError(
                    f"{section} names column(s) a {kind} file does not have: "
                    f"{', '.join(sorted(names - known))}"
                )
        schema = frames.SCHEMAS[kind]
        for name in self.formats:
            if not isinstance(schema[name], pl.Date | pl.Datetime):
                raise MappingError(f"formats.{name}: {name} is not a date or time column")
            _check_format(name, self.formats[name])

    def locate(self, kind: str, header: list[str]) -> dict[str, int | None]:
        """For each canonical column, its position in ``header`` (None: absent)."""
        self.check_for(kind)
        stripped = [h.strip() for h in header]
        if header and stripped[0].startswith("\ufeff"):
            stripped[0] = stripped[0].removeprefix("\ufeff")
        positions: dict[str, int | None] = {}
        for name in csv_columns(kind):
            source = self.columns.get(name, name)
            positions[name] = stripped.index(source) if source in stripped else None
        missing = [n for n in REQUIRED[kind] if positions[n] is None]
        if missing:
            named = [
                f"{n} (mapped from {self.columns[n]})" if n in self.columns else n for n in missing
            ]
            raise MappingError(f"the {kind} file has no column for: {', '.join(named)}")
        if kind == "care" and positions["user_id"] is None and positions["department"] is None:
            raise MappingError("the care file has neither a user_id nor a department column")
        return positions


def _check_format(name: str, fmt: str) -> None:
    """A format must at least produce text when used for output (catches stray %)."""
    try:
        dt.datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
    except ValueError:
        raise MappingError(f"formats.{name} is not a valid date format") from None
    if "%" not in fmt:
        raise MappingError(f"formats.{name} has no % directive")


def _dict(value: Any, where: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError(f"{where} must be a mapping")
    return value


def _str_dict(value: Any, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _dict(value, where).items():
        if not isinstance(v, str | int | float | bool) or v is None:
            raise MappingError(f"{where}.{k} must be a single value")
        out[str(k)] = str(v)
    return out


def _optional_str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MappingError(f"{where} must be text")
    return value
