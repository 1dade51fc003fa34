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
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from phiguard.errors import ImportFailed, InvalidResource, PhiGuardError
from phiguard.records.repository import Repository
from phiguard.records.validation import validate
from phiguard.store.engine import now_us
from phiguard.store.tables import import_journal

from .bundles import BundleProcessor, EntryFailed

NDJSON_BLOCK = 1000
GROUP_COMMIT = 1000  # resources per transaction when units are small (Synthea bundles)
PARALLEL_THRESHOLD = 3000  # resources; below this a process pool costs more than it saves
VALIDATION_AHEAD = 4 * GROUP_COMMIT  # resources submitted for validation, not yet written
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
            raise ImportFailed(f"no such file or directory: {p}")
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
                raise ImportFailed(f"{path.name}: line {lineno} is not valid JSON") from None
            if len(block) >= NDJSON_BLOCK:
                yield Unit(digest, index, path, _as_entries(block))
                block, index = [], index + 1
        if block:
            yield Unit(digest, index, path, _as_entries(block))
        return
    try:
        doc = json.loads(text)
    except ValueError:
        raise ImportFailed(f"{path.name} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ImportFailed(f"{path.name} does not hold a FHIR resource")
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


def validate_unit(bundle: dict[str, Any]) -> list[str]:
    """Validation problems of every resource a unit writes (runs in worker processes)."""
    problems = []
    for i, entry in enumerate(bundle.get("entry") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        try:
            validate(entry["resource"])
        except InvalidResource as exc:
            problems.append(
                f"entry {i}: {exc}"
                + (f" ({'; '.join(exc.issues[:3])})" if exc.issues != [str(exc)] else "")
            )
    return problems


class Importer:
    """Applies units in order; validation runs ahead in worker processes for big imports.

    Validating a FHIR resource costs about as much as sealing, indexing and storing it,
    so on a 2-core machine the parse-and-validate work goes to a process pool while
    this process writes.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
    ) -> None:
        self.repo = repo
        self.progress = progress or (lambda n: None)
        self.workers = workers

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

    def _apply(self, batch: list[tuple[Unit, list[str] | None]], report: ImportReport) -> None:
        """Apply units in one transaction with their journal rows (group commit)."""
        for _unit, problems in batch:
            if problems:
                raise InvalidResource("the unit has invalid resources", problems)
        with self.repo.atomic() as conn:
            for unit, problems in batch:
                processor = BundleProcessor(self.repo)
                prepared = processor.prepare_writes(unit.bundle)
                if prepared is None:
                    processor.process(unit.bundle)
                else:
                    items, refs = prepared
                    self.repo.put_many(items, validated=problems is not None, references=refs)
            conn.execute(
                import_journal.insert(),
                [
                    {
                        "source": u.source,
                        "unit": u.index,
                        "resources": u.size,
                        "done_at": now_us(self.repo.vault.clock.now()),
                    }
                    for u, _ in batch
                ],
            )
        for unit, _ in batch:
            report.units += 1
            report.resources += unit.size
            for e in unit.bundle.get("entry") or []:
                rtype = str((e.get("resource") or {}).get("resourceType", "?"))
                report.by_type[rtype] = report.by_type.get(rtype, 0) + 1

    def _checked(
        self, units: Iterable[Unit], total: int
    ) -> Iterator[tuple[Unit, list[str] | None]]:
        """Units with their validation problems ([] = valid); None = validate on write.

        A bounded window of units is in flight, so a stream of units (seeding a large
        synthetic hospital) is never held in memory whole.
        """
        workers = self.workers if self.workers is not None else (os.cpu_count() or 1)
        if workers < 2 or total < PARALLEL_THRESHOLD:
            yield from ((u, None) for u in units)
            return
        ctx = multiprocessing.get_context("fork")
        window: deque[tuple[Unit, Future[list[str]]]] = deque()
        in_flight = 0
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for unit in units:
                window.append((unit, pool.submit(validate_unit, unit.bundle)))
                in_flight += unit.size
                # Keep enough validation queued that the workers never wait while this
                # process writes a group commit, and no more (a stream stays bounded).
                if in_flight >= VALIDATION_AHEAD:
                    head, future = window.popleft()
                    in_flight -= head.size
                    yield head, future.result()
            while window:
                head, future = window.popleft()
                yield head, future.result()

    def run(self, units: Iterable[Unit], *, total: int | None = None) -> ImportReport:
        """Import ``units`` in order; ``total`` (resources) is needed only for a stream."""
        if total is None:
            units = list(units)
            total = sum(u.size for u in units)
        report = ImportReport()
        files: set[Path] = set()

        def todo() -> Iterator[Unit]:
            for unit in units:
                files.add(unit.path)
                if self._done(unit):
                    report.skipped_units += 1
                    report.skipped_resources += unit.size
                    self.progress(unit.size)
                else:
                    yield unit

        deferred: list[tuple[Unit, list[str] | None]] = []
        batch: list[tuple[Unit, list[str] | None]] = []

        def flush() -> None:
            try:
                self._apply(batch, report)
            except PhiGuardError:
                # Find the culprit(s): apply one by one, deferring the failures (they may
                # point at units that come later).
                for item in batch:
                    try:
                        self._apply([item], report)
                    except PhiGuardError:
                        deferred.append(item)
            for unit, _ in batch:
                self.progress(unit.size)
            batch.clear()

        for unit, problems in self._checked(todo(), total):
            batch.append((unit, problems))
            if sum(u.size for u, _ in batch) >= GROUP_COMMIT:
                flush()
        if batch:
            flush()
        for unit, problems in deferred:
            try:
                self._apply([(unit, problems)], report)
            except PhiGuardError as exc:
                report.failures.append(f"{unit.path.name}#{unit.index}: {_describe(exc)}")
        report.files = len(files)
        return report


def _describe(exc: PhiGuardError) -> str:
    if isinstance(exc, InvalidResource) and exc.issues != [str(exc)]:
        return f"{exc}: {'; '.join(exc.issues[:3])}"
    if isinstance(exc, EntryFailed):
        cause = exc.cause
        details = getattr(cause, "issues", [])
        return f"entry {exc.index}: {cause}" + (f" ({'; '.join(details[:3])})" if details else "")
    return str(exc)
