"""Shared pieces: stores (encrypted or plaintext), statistics, tables, profiling."""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from phiguard.audit.ledger import Ledger
from phiguard.audit.sink import LedgerSink
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.records.context import system_context
from phiguard.records.repository import Repository
from phiguard.records.vault import PlaintextCipherForBenchmarks, Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine

Variant = Literal["encrypted", "plaintext"]
Audit = Literal["none", "ledger"]
AUDITS: tuple[Audit, ...] = ("none", "ledger")
VARIANTS: tuple[Variant, ...] = ("encrypted", "plaintext")

# Low scrypt cost: it only protects the benchmark's throw-away key file and is paid
# once per store opening, never per record.  The record path is the production one.
FAST_SCRYPT = {"n": 2**10, "r": 8, "p": 1}
PASSPHRASE = "benchmark passphrase, not a secret"
OUT = Path(__file__).resolve().parent / "out"


# -- stores ---------------------------------------------------------------------------
@dataclass
class Store:
    """One file-based SQLite (WAL) vault: the production configuration, or plaintext."""

    variant: Variant
    root: Path
    engine: Engine
    vault: Vault
    ledger: Ledger | None = None

    def repository(self) -> Repository:
        return self.vault.repository(system_context(purpose="HOPERAT", source="bench"))

    def db_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("phiguard.db*"))

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger.engine.dispose()
        self.engine.dispose()


def open_store(root: Path, variant: Variant, audit: Audit = "none") -> Store:
    """Open the store under ``root``, creating the key file and schema if missing.

    Every opening gets a new engine and keyring, so the data-key cache starts cold
    (as after a server restart).  ``audit="none"`` is the ``NullAuditSink`` the test
    fixtures use; ``"ledger"`` is what ``phiguard.system`` wires in production (the
    audit ledger in its own SQLite file, each call waiting for its entry to commit).
    """
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / "kek.json"
    if key_path.exists():
        provider = LocalKeyFile(key_path, PASSPHRASE)
    else:
        provider = LocalKeyFile.create(key_path, PASSPHRASE, scrypt_params=FAST_SCRYPT)
    engine = make_engine(f"sqlite:///{root / 'phiguard.db'}")
    migrate.upgrade(engine)
    keyring = Keyring(engine, provider)
    cipher = PlaintextCipherForBenchmarks() if variant == "plaintext" else None
    ledger = None
    if audit == "ledger":  # as in production under SQLite: the ledger's own database file
        ledger_engine = make_engine(f"sqlite:///{root / 'audit.db'}")
        migrate.upgrade(ledger_engine)
        ledger = Ledger(ledger_engine, keyring)
    sink = LedgerSink(ledger) if ledger is not None else None
    return Store(variant, root, engine, Vault(engine, keyring, cipher=cipher, audit=sink), ledger)


# -- statistics -----------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float]) -> str:
    """min..max of the rounds, to show how noisy the machine was."""
    return f"{min(values):,.4g}..{max(values):,.4g}" if values else "-"


@dataclass
class Timer:
    seconds: float = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds = time.perf_counter() - start


# -- reporting ------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


@dataclass
class Result:
    """What a benchmark reports: its tables, target checks and raw figures."""

    name: str
    command: str
    parameters: dict[str, Any]
    tables: list[tuple[str, str]] = field(default_factory=list)
    targets: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, got, met)
    figures: dict[str, Any] = field(default_factory=dict)
    profile: str = ""

    def render(self) -> str:
        out = [f"## {self.name}", f"command: {self.command}"]
        out.append("parameters: " + ", ".join(f"{k}={v}" for k, v in self.parameters.items()))
        for title, text in self.tables:
            out += ["", f"### {title}", text]
        if self.targets:
            out += [
                "",
                "### targets",
                table(
                    ["target", "measured", "verdict"],
                    [(t, got, verdict(ok)) for t, got, ok in self.targets],
                ),
            ]
        if self.profile:
            out += ["", "### profile (encrypted, cProfile, top by tottime)", self.profile]
        return "\n".join(out)


# -- profiling ------------------------------------------------------------------------
def profile(fn: Callable[[], object], *, top: int = 25) -> str:
    """Run ``fn`` under cProfile; the ``top`` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    lines = buf.getvalue().strip().splitlines()
    # Drop pstats' preamble up to the summary line ("N function calls ... in S seconds").
    start = next((i for i, ln in enumerate(lines) if "function calls" in ln), 0)
    return "\n".join(ln.rstrip() for ln in lines[start:] if ln.strip())
