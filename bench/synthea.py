"""Synthea fixture bundles, repeated with fresh UUIDs so each repetition is new data."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from phiguard.fhir.importer import Importer, ImportReport, Unit, read_units
from phiguard.records.repository import Repository

# ../shared beside the project, as the tests find it; PHIGUARD_SYNTHEA overrides.
FIXTURES = Path(
    os.environ.get(
        "PHIGUARD_SYNTHEA",
        str(Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "synthea"),
    )
)

# The first 28 hex digits of a UUID, then the last 4, which carry the repetition number.
_UUID = re.compile(
    r"\b([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{8})"
    r"[0-9a-fA-F]{4}\b"
)
MAX_REPS = 0x10000


def _order(path: Path) -> tuple[int, str]:
    """Hospital and practitioner bundles first: patient bundles refer to them."""
    name = path.name
    if name.startswith("hospitalInformation"):
        return 0, name
    if name.startswith("practitionerInformation"):
        return 1, name
    return 2, name


def fixture_files(directory: Path = FIXTURES) -> list[Path]:
    files = sorted((p for p in directory.glob("*.json") if p.is_file()), key=_order)
    if not files:
        raise SystemExit(f"no Synthea bundles in {directory} (set PHIGUARD_SYNTHEA)")
    return files


def rewrite(text: str, rep: int) -> str:
    """Every UUID in ``text`` with its last 4 hex digits replaced by ``rep``."""
    suffix = f"{rep:04x}"
    return _UUID.sub(lambda m: m.group(1) + suffix, text)


@dataclass
class Corpus:
    """The fixture bundles written out ``reps`` times (UUIDs rewritten), in import order."""

    paths: list[Path]
    reps: int
    per_rep: int  # resources per repetition

    @property
    def resources(self) -> int:
        return self.per_rep * self.reps

    def units(self) -> list[Unit]:
        """Freshly parsed units (the importer rewrites references in place, so a unit
        list serves one import only).  This is what ``phiguard import`` does first."""
        return [u for p in self.paths for u in read_units(p)]


def per_repetition(directory: Path = FIXTURES) -> int:
    """Resources in one repetition of the fixture bundles."""
    return sum(u.size for p in fixture_files(directory) for u in read_units(p))


def build_corpus(out_dir: Path, reps: int, directory: Path = FIXTURES) -> Corpus:
    if not 1 <= reps <= MAX_REPS:
        raise SystemExit(f"repetitions must be between 1 and {MAX_REPS}")
    files = fixture_files(directory)
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in files]
    for name, text in texts:
        full = {m.group(0).lower() for m in _UUID.finditer(text)}
        prefixes = {m.group(1).lower() for m in _UUID.finditer(text)}
        if len(full) != len(prefixes):
            raise SystemExit(f"{name}: UUIDs differing only in their last 4 digits")
    per_rep = per_repetition(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rep in range(reps):
        for name, text in texts:
            path = out_dir / f"rep{rep:05d}-{name}"
            path.write_text(rewrite(text, rep), encoding="utf-8")
            paths.append(path)
    return Corpus(paths, reps, per_rep)


def import_corpus(repo: Repository, corpus: Corpus) -> ImportReport:
    """Import every unit; fail loudly if anything did not import (a broken benchmark)."""
    units = corpus.units()
    expected = sum(u.size for u in units)
    report = Importer(repo).run(units)
    if report.failures or report.resources != expected:
        raise RuntimeError(
            f"import incomplete: {report.resources}/{expected} resources, "
            f"failures: {report.failures[:3]}"
        )
    return report
