"""Streaming CSV ingest: canonical (or mapped) exports into monitoring frames.

Files from other EHRs run to millions of rows, so they are read in blocks of lines
and each block is parsed and checked with vectorised Polars expressions; memory
stays bounded by the block size whatever the file size.  A block without quote
characters (the usual audit export) is split on the delimiter directly, which is
many times faster than a row-by-row reader; a block with quotes goes through the
standard library's ``csv`` reader, which handles quoted delimiters and line breaks.

A row that cannot be used (wrong number of fields, an empty required value, a time
that does not parse, an unknown action...) is skipped and reported by its line
number in the file and the reason -- never by its content, which is PHI.  The good
rows of the same block are kept.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

import polars as pl

from phiguard.errors import ImportFailed, MappingError
from phiguard.monitor import frames

from .mapping import NOT_EMPTY, Mapping

BLOCK_BYTES: Final = 16 * 1024 * 1024
MAX_REPORTED: Final = 10_000  # bad rows kept with their line numbers; the rest are counted
_ENUMS: Final[dict[str, tuple[str, ...]]] = {
    "action": frames.ACTIONS,
    "kind": frames.CARE_KINDS,
    "outcome": frames.AUTH_OUTCOMES,
}
_TRUE: Final = ("true", "t", "yes", "y", "1")
_FALSE: Final = ("false", "f", "no", "n", "0")
ISO_AWARE: Final = "%Y-%m-%dT%H:%M:%S%.f%z"
ISO_NAIVE: Final = "%Y-%m-%dT%H:%M:%S%.f"
ISO_DATE: Final = "%Y-%m-%d"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ReadReport:
    """What reading one file found: rows kept, rows refused and why."""

    rows: int = 0
    rejected: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)

    def add_bad(self, bad: pl.DataFrame) -> None:
        self.rejected += bad.height
        room = MAX_REPORTED - len(self.bad_rows)
        if room > 0:
            self.bad_rows += [
                BadRow(int(line), str(reason))
                for line, reason in bad.head(room).select("line", "reason").iter_rows()
            ]


def read_csv(
    path: Path,
    kind: str,
    mapping: Mapping | None = None,
    *,
    report: ReadReport | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[pl.DataFrame]:
    """Frames of ``kind`` (``frames.SCHEMAS``) from the CSV file at ``path``, block by block.

    Bad rows go to ``report``; a file that cannot be read at all (missing, no header,
    a required column absent) raises ``ImportFailed`` or ``MappingError`` before any
    frame is produced.
    """
    if kind not in frames.SCHEMAS:
        raise ImportFailed(f"unknown kind: {kind} (one of: {', '.join(frames.SCHEMAS)})")
    mapping = mapping or Mapping()
    report = report if report is not None else ReadReport()
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path.name}: {exc.strerror}") from None
    with handle:
        total = path.stat().st_size
        header_bytes = handle.readline()
        if not header_bytes.strip():
            raise ImportFailed(f"{path.name} is empty: a CSV file starts with a header line")
        try:
            header_text = header_bytes.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportFailed(f"the header of {path.name} is not UTF-8") from None
        header = next(csv.reader([header_text], delimiter=mapping.delimiter))
        positions = mapping.locate(kind, header)
        converter = _Converter(kind, mapping, positions, len(header))
        line = 2  # the first data line's number
        done = len(header_bytes)
        for block in _blocks(handle, block_bytes):
            raw, bad, lines = _split(block, line, len(header), mapping.delimiter)
            line += lines
            done += len(block)
            good = frames.empty(kind)
            if raw.height:
                good, refused = converter.convert(raw)
                if refused.height:
                    bad = pl.concat([bad, refused]).sort("line")
            if bad.height:
                report.add_bad(bad)
            if good.height:
                report.rows += good.height
                yield good
            if progress is not None:
                progress(done, total)


def _blocks(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """Blocks of whole lines; a block never ends inside a quoted field."""
    while True:
        block = handle.read(size)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += handle.readline()
        if b'"' in block:
            while block.count(b'"') % 2:
                more = handle.readline()
                if not more:
                    break  # an unterminated quote: the reader reports the row
                block += more
        yield block


def _split(
    block: bytes, first_line: int, width: int, delimiter: str
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(string columns c0.. with ``line``, bad rows, physical lines in the block)."""
    lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    if b'"' not in block:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            return (*_split_plain(text, first_line, width, delimiter), lines)
    return (*_split_quoted(block, first_line, width, delimiter), lines)


def _split_plain(
    text: str, first_line: int, width: int, delimiter: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    frame = pl.DataFrame({"text": rows}).with_columns(
        pl.col("text").str.strip_suffix("\r"),
        line=pl.int_range(first_line, first_line + len(rows), dtype=pl.Int64),
    )
    frame = frame.filter(pl.col("text").str.len_bytes() > 0)  # blank lines: skipped
    fields = pl.col("text").str.count_matches(delimiter, literal=True) + 1
    frame = frame.with_columns(fields=fields)
    bad = frame.filter(pl.col("fields") != width).select(
        "line",
        reason=pl.format("the row has {} fields, the header has " + str(width), pl.col("fields")),
    )
    good = frame.filter(pl.col("fields") == width)
    split = good.select(
        pl.col("text")
        .str.split_exact(delimiter, width - 1)
        .struct.rename_fields([f"c{i}" for i in range(width)])
        .alias("s"),
        "line",
    ).unnest("s")
    return split, bad


def _split_quoted(
    block: bytes, first_line: int, width: int, delimiter: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The standard reader, for blocks with quotes (or bytes that are not UTF-8)."""
    bad_lines: list[int] = []
    bad_reasons: list[str] = []
    raw_lines = block.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    texts: list[str] = []
    for offset, raw in enumerate(raw_lines):
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.append(first_line + offset)
            bad_reasons.append("the row is not valid UTF-8")
            texts.append("")  # keeps the numbering; a blank line is skipped
    reader = csv.reader(io.StringIO("\n".join(texts) + "\n"), delimiter=delimiter, strict=True)
    columns: list[list[str]] = [[] for _ in range(width)]
    line_numbers: list[int] = []
    start = first_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            bad_lines.append(start)
            bad_reasons.append("the row is not well-formed CSV (a quote is misplaced)")
            start = first_line + reader.line_num
            continue
        here, start = start, first_line + reader.line_num
        if not row:
            continue
        if len(row) != width:
            bad_lines.append(here)
            bad_reasons.append(f"the row has {len(row)} fields, the header has {width}")
            continue
        for i, value in enumerate(row):
            columns[i].append(value)
        line_numbers.append(here)
    good = pl.DataFrame(
        {**{f"c{i}": columns[i] for i in range(width)}, "line": line_numbers},
        schema={**{f"c{i}": pl.String() for i in range(width)}, "line": pl.Int64()},
    )
    bad = pl.DataFrame(
        {"line": bad_lines, "reason": bad_reasons},
        schema={"line": pl.Int64(), "reason": pl.String()},
    ).sort("line")
    return good, bad


class _Converter:
    """Typed, checked frames from string columns, with one reason per refused row.

    Evaluated in three passes so each column is cleaned and parsed once: the cleaned
    text of every column (``_t_<name>``), then the parsed values and the parses the
    checks need (``_v_<name>``, helpers ``_h_...``), then one reason per row from
    those columns.
    """

    def __init__(
        self, kind: str, mapping: Mapping, positions: dict[str, int | None], width: int
    ) -> None:
        self.kind = kind
        self.mapping = mapping
        self.positions = positions
        self.width = width
        self.zone = mapping.zone()
        self.texts: list[pl.Expr] = []
        self.values: list[pl.Expr] = []
        self.checks: list[tuple[pl.Expr, str]] = []
        self._plan()

    def _text(self, name: str) -> pl.Expr:
        pos = self.positions.get(name)
        if pos is None:
            return pl.lit(None, pl.String())
        expr = pl.col(f"c{pos}").str.strip_chars()
        expr = pl.when(expr.str.len_bytes() > 0).then(expr)
        table = self.mapping.values.get(name)
        if table:
            expr = expr.replace(table)
        return expr

    def _helper(self, name: str, expr: pl.Expr) -> pl.Expr:
        """``expr`` computed once as a column; returns a reference to it."""
        self.values.append(expr.alias(f"_h_{name}"))
        return pl.col(f"_h_{name}")

    def _plan(self) -> None:
        schema = frames.SCHEMAS[self.kind]
        required = set(NOT_EMPTY[self.kind])
        for name, dtype in schema.items():
            self.texts.append(self._text(name).alias(f"_t_{name}"))
            text = pl.col(f"_t_{name}")
            parsed = pl.col(f"_v_{name}")
            if name in required:
                self.checks.append((text.is_null(), f"{name} is empty"))
            if isinstance(dtype, pl.Datetime):
                value, problems = self._time(name, text)
            elif isinstance(dtype, pl.Date):
                fmt = self.mapping.formats.get(name, ISO_DATE)
                value = text.str.to_date(fmt, strict=False)
                expected = (
                    "the format in the mapping" if name in self.mapping.formats else ("YYYY-MM-DD")
                )
                problems = [
                    (text.is_not_null() & parsed.is_null(), f"{name} is not a date ({expected})")
                ]
            elif isinstance(dtype, pl.Boolean):
                lowered = text.str.to_lowercase()
                value = (
                    pl.when(lowered.is_in(_TRUE))
                    .then(True)
                    .when(lowered.is_in(_FALSE) | lowered.is_null())
                    .then(False)
                    .otherwise(None)
                )
                problems = [(parsed.is_null(), f"{name} is not true or false")]
            elif name in _ENUMS:
                value = text.str.to_lowercase()
                allowed = _ENUMS[name]
                problems = [
                    (
                        parsed.is_not_null() & ~parsed.is_in(allowed),
                        f"{name} is not one of: {', '.join(allowed)}",
                    )
                ]
            else:
                value = text
                problems = []
            self.checks += problems
            self.values.append(value.alias(f"_v_{name}"))
        if self.kind == "care":
            self.checks.append(
                (
                    pl.col("_t_user_id").is_null() & pl.col("_t_department").is_null(),
                    "the row has neither a user_id nor a department",
                )
            )
            start, end = pl.col("_v_start"), pl.col("_v_end")
            self.checks.append((end.is_not_null() & (end < start), "end is before start"))

    def _time(self, name: str, text: pl.Expr) -> tuple[pl.Expr, list[tuple[pl.Expr, str]]]:
        fmt = self.mapping.formats.get(name)
        zone = self.mapping.timezone
        parsed = pl.col(f"_v_{name}")
        if fmt is not None:
            aware_fmt = "%z" in fmt or "%:z" in fmt
            value = text.str.to_datetime(fmt, strict=False, time_unit="us")
            if aware_fmt:
                value = value.dt.convert_time_zone("UTC")
                return value, [
                    (text.is_not_null() & parsed.is_null(), f"{name} does not match its format")
                ]
            if zone is None:
                raise MappingError(
                    f"formats.{name} has no UTC offset (%z): the mapping must name a timezone"
                )
            return self._localise(value, zone), [
                (
                    text.is_not_null() & parsed.is_null(),
                    f"{name} does not match its format or does not exist in {zone}",
                )
            ]
        iso = text.str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T", literal=True)
        aware = self._helper(
            f"{name}_aware",
            iso.str.to_datetime(ISO_AWARE, strict=False, time_unit="us", time_zone="UTC"),
        )
        # Only what did not parse with an offset is tried without one (most rows have one).
        rest = pl.when(aware.is_null()).then(iso)
        naive = self._helper(
            f"{name}_naive", rest.str.to_datetime(ISO_NAIVE, strict=False, time_unit="us")
        )
        day = rest.str.to_date(ISO_DATE, strict=False)
        if name == "end":  # a care period's last day counts in full
            day = day + pl.duration(days=1)
        day_time = day.cast(pl.Datetime("us"))
        if zone is not None:
            value = pl.coalesce(aware, self._localise(pl.coalesce(naive, day_time), zone))
            return value, [
                (
                    text.is_not_null() & parsed.is_null(),
                    f"{name} is not an ISO 8601 time or does not exist in {zone}",
                )
            ]
        # Without a zone, a bare date is a whole UTC day; a naive time is ambiguous.
        value = pl.coalesce(aware, day_time.dt.replace_time_zone("UTC"))
        return value, [
            (
                naive.is_not_null(),
                f"{name} has no UTC offset and the mapping names no timezone",
            ),
            (
                text.is_not_null() & parsed.is_null(),
                f"{name} is not an ISO 8601 time with a UTC offset",
            ),
        ]

    @staticmethod
    def _localise(naive: pl.Expr, zone: str) -> pl.Expr:
        return naive.dt.replace_time_zone(
            zone, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")

    def convert(self, raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(good rows in the canonical schema, refused rows as ``line``/``reason``)."""
        reason: pl.Expr = pl.lit(None, pl.String())
        for condition, text in reversed(self.checks):
            reason = pl.when(condition).then(pl.lit(text)).otherwise(reason)
        helpers = [e for e in self.values if e.meta.output_name().startswith("_h_")]
        values = [e for e in self.values if not e.meta.output_name().startswith("_h_")]
        plan = raw.lazy().with_columns(self.texts)
        for helper in helpers:  # a helper may read the one before it
            plan = plan.with_columns(helper)
        staged = plan.with_columns(values).with_columns(reason.alias("_reason")).collect()
        bad = staged.filter(pl.col("_reason").is_not_null()).select(
            "line", pl.col("_reason").alias("reason")
        )
        good = staged.filter(pl.col("_reason").is_null()).select(
            pl.col(f"_v_{name}").alias(name) for name in frames.SCHEMAS[self.kind]
        )
        return frames.check(self.kind, good), bad
