"""Bulk import of FHIR Bundles and NDJSON files.

Each Bundle (or each block of NDJSON lines) is one unit, committed in one database
transaction together with a journal row naming the file's SHA-256 and the unit's
index.  A killed import therefore loses no committed unit and, run again, skips
every unit already in the journal: resuming is running the same command again.

Units whose references point into files not imported yet (Synthea patient bundles
point at practitioner and hospital bundles) are retried once after every other unit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from phiguard.errors import ImportError_, InvalidResource, PhiGuardError
from phiguard.records.repository import Repository
from phiguard.store.engine import now_us
from phiguard.store.tables import import_journal

from .bundles import BundleProcessor, EntryFailed

NDJSON_BLOCK = 1000
SUFFIXES = (".json", ".ndjson", ".jsonl")


@dataclass
class Unit:
    source: str  # SHA-256 of the file
    index: int
    path: Path
    bundle: dict[str, Any]

    @property
    def size(self) -> int:
        return len(self.bundle.get("entry") or [])


@dataclass
class ImportReport:
    files: int = 0
    units: int = 0
    resources: int = 0
    skipped_units: int = 0
    skipped_resources: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def discover(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise ImportError_(f"no such file or directory: {p}")
    return files


def _as_entries(resources: list[dict[str, Any]]) -> dict[str, Any]:
    entries = []
    for r in resources:
        rtype = r.get("resourceType")
        if not isinstance(rtype, str):
            raise InvalidResource("a line is not a FHIR resource")
        if r.get("id"):
            entries.append(
                {"resource": r, "request": {"method": "PUT", "url": f"{rtype}/{r['id']}"}}
            )
        else:
            entries.append({"resource": r, "request": {"method": "POST", "url": rtype}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def read_units(path: Path) -> Iterator[Unit]:
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8-sig")
    if path.suffix in (".ndjson", ".jsonl"):
        block: list[dict[str, Any]] = []
        index = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                block.append(json.loads(line))
            except ValueError:
                raise ImportError_(f"{path.name}: line {lineno} is not valid JSON") from None
            if len(block) >= NDJSON_BLOCK:
                yield Unit(digest, index, path, _as_entries(block))
                block, index = [], index + 1
        if block:
            yield Unit(digest, index, path, _as_entries(block))
        return
    try:
        doc = json.loads(text)
    except ValueError:
        raise ImportError_(f"{path.name} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ImportError_(f"{path.name} does not hold a FHIR resource")
    if doc.get("resourceType") == "Bundle":
        if doc.get("type") in ("batch", "transaction"):
            yield Unit(digest, 0, path, {**doc, "type": "transaction"})
        else:
            yield Unit(
                digest,
                0,
                path,
                _as_entries(
                    [
                        e["resource"]
                        for e in doc.get("entry") or []
                        if isinstance(e, dict) and "resource" in e
                    ]
                ),
            )
    else:
        yield Unit(digest, 0, path, _as_entries([doc]))


class Importer:
    def __init__(self, repo: Repository, *, progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.progress = progress or (lambda n: None)

    def _done(self, unit: Unit) -> bool:
        with self.repo.vault.engine.connect() as conn:
            return (
                conn.execute(
                    select(import_journal.c.unit).where(
                        import_journal.c.source == unit.source, import_journal.c.unit == unit.index
                    )
                ).first()
                is not None
            )

    def _apply(self, unit: Unit, report: ImportReport) -> None:
        with self.repo.atomic() as conn:
            BundleProcessor(self.repo).process(unit.bundle)
            conn.execute(
                import_journal.insert().values(
                    source=unit.source,
                    unit=unit.index,
                    resources=unit.size,
                    done_at=now_us(self.repo.vault.clock.now()),
                )
            )
        report.units += 1
        report.resources += unit.size
        for e in unit.bundle.get("entry") or []:
            rtype = str((e.get("resource") or {}).get("resourceType", "?"))
            report.by_type[rtype] = report.by_type.get(rtype, 0) + 1

    def run(self, units: list[Unit]) -> ImportReport:
        report = ImportReport(files=len({u.path for u in units}))
        deferred: list[tuple[Unit, PhiGuardError]] = []
        for unit in units:
            if self._done(unit):
                report.skipped_units += 1
                report.skipped_resources += unit.size
                self.progress(unit.size)
                continue
            try:
                self._apply(unit, report)
                self.progress(unit.size)
            except PhiGuardError as exc:
                deferred.append((unit, exc))
        for unit, _first in deferred:
            try:
                self._apply(unit, report)
            except PhiGuardError as exc:
                report.failures.append(f"{unit.path.name}#{unit.index}: {_describe(exc)}")
            self.progress(unit.size)
        return report


def _describe(exc: PhiGuardError) -> str:
    if isinstance(exc, EntryFailed):
        cause = exc.cause
        details = getattr(cause, "issues", [])
        return f"entry {exc.index}: {cause}" + (f" ({'; '.join(details[:3])})" if details else "")
    return str(exc)
