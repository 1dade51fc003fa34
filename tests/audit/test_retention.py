"""Archiving old ledger segments: proofs and verification stay valid."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from phiguard.audit import merkle
from phiguard.audit.ledger import Ledger
from phiguard.audit.retention import archive
from phiguard.audit.verify import verify
from phiguard.errors import AuditError
from tests.audit.helpers import fill

CUTOFF = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.UTC)  # events 0..29 are older


def test_archive_keeps_roots_proofs_and_verification(ledger: Ledger, tmp_path: Path) -> None:
    fill(ledger, 60)
    cp = ledger.checkpoint()
    root_before = ledger.root()
    proof_before = ledger.inclusion_proof(7, cp.size)
    result = archive(ledger, tmp_path / "seg.jsonl", CUTOFF)
    assert (result.first, result.last, result.entries) == (0, 29, 30)
    assert ledger.root() == root_before
    assert ledger.inclusion_proof(7, cp.size) == proof_before
    lines = (tmp_path / "seg.jsonl").read_text().splitlines()
    leaf7 = base64.b64decode(json.loads(lines[8])["leaf"])
    assert merkle.verify_inclusion(merkle.leaf_hash(leaf7), 7, cp.size, proof_before, cp.root)
    plain = verify(ledger)
    assert plain.ok and plain.archived_unchecked == 30
    full = verify(ledger, archives=[tmp_path / "seg.jsonl"])
    assert full.ok and full.archived_unchecked == 0
    assert [e["seq"] for e in ledger.events()][:1] == [30]  # archived leaves are not read
    with pytest.raises(AuditError):
        archive(ledger, tmp_path / "again.jsonl", CUTOFF)


def test_archived_entries_are_still_guarded(
    ledger: Ledger,
    ledger_path: Path,
    tmp_path: Path,
) -> None:
    fill(ledger, 60)
    ledger.checkpoint()
    archive(ledger, tmp_path / "seg.jsonl", CUTOFF)
    ledger.engine.dispose()
    con = sqlite3.connect(ledger_path)
    con.execute("UPDATE audit_entries SET leaf_hash = ? WHERE seq = 12", (b"\x07" * 32,))
    con.commit()
    con.close()
    assert "entry 12 fails its MAC (forged or edited)" in [
        f.message for f in verify(ledger).findings
    ]


def test_a_tampered_archive_is_caught(ledger: Ledger, tmp_path: Path) -> None:
    fill(ledger, 60)
    ledger.checkpoint()
    archive(ledger, tmp_path / "seg.jsonl", CUTOFF)
    lines = (tmp_path / "seg.jsonl").read_text().splitlines()
    doc = json.loads(lines[5])
    leaf = base64.b64decode(doc["leaf"]).replace(b'"read"', b'"vread"')
    doc["leaf"] = base64.b64encode(leaf).decode()
    lines[5] = json.dumps(doc)
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    report = verify(ledger, archives=[tmp_path / "bad.jsonl"])
    assert report.first_bad_entry == 4
