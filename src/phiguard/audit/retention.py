"""Retention: archiving old ledger segments without breaking proofs or verification.

HIPAA asks that audit records be kept six years (45 CFR 164.316); a hospital's
ledger then holds billions of entries it rarely reads.  Archiving moves the leaf
bytes of entries older than the retention period to an archive file and blanks them
in the database, but keeps each entry's leaf hash, MAC and every tree node: roots,
checkpoints and inclusion proofs stay exactly as they were, and ``verify`` still
checks each archived entry's MAC (which binds its position and leaf hash).  Given
the archive file, ``verify`` checks the archived leaves in full as well.

Archive file: JSON lines; the first line describes the segment (first and last
sequence numbers, the newest checkpoint covering it, the ledger public key); then
one ``{"seq": n, "leaf": base64}`` per entry.  Leaves hold identifiers only (their
free text is sealed), so the file is as sensitive as the ledger's identifiers.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update

from phiguard.errors import AuditError
from phiguard.store.engine import now_us
from phiguard.store.tables import audit_checkpoints, audit_entries

from . import merkle
from .ledger import Ledger, _checkpoint

DEFAULT_RETENTION_DAYS = 2192  # six years


@dataclass(frozen=True)
class ArchiveResult:
    first: int
    last: int
    entries: int
    path: Path


def archive(ledger: Ledger, out: Path, before: dt.datetime) -> ArchiveResult:
    """Move the leaves of entries recorded before ``before`` into ``out``."""
    e = audit_entries.c
    with ledger.engine.connect() as conn:
        bounds = conn.execute(
            select(func.min(e.seq), func.max(e.seq)).where(
                e.recorded < now_us(before), func.length(e.leaf) > 0
            )
        ).one()
        if bounds[0] is None:
            raise AuditError("no entries older than the retention period are left to archive")
        first, last = int(bounds[0]), int(bounds[1])
        row = conn.execute(
            select(audit_checkpoints)
            .where(audit_checkpoints.c.size > last)
            .order_by(audit_checkpoints.c.size)
            .limit(1)
        ).first()
    checkpoint = _checkpoint(row) if row is not None else ledger.checkpoint()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "format": "phiguard-ledger-archive/v1",
                    "first": first,
                    "last": last,
                    "checkpoint": checkpoint.to_json(ledger.public_key_b64),
                }
            )
            + "\n"
        )
        with ledger.engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=10_000).execute(
                select(e.seq, e.leaf, e.leaf_hash)
                .where(e.seq >= first, e.seq <= last)
                .order_by(e.seq)
            )
            for seq, leaf, leaf_hash in rows:
                leaf = bytes(leaf)
                if leaf and merkle.leaf_hash(leaf) != bytes(leaf_hash):
                    raise AuditError(f"entry {seq} does not match its hash: verify first")
                fh.write(
                    json.dumps({"seq": int(seq), "leaf": base64.b64encode(leaf).decode()}) + "\n"
                )
                count += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    # Only once the archive is safely on disk are the leaves blanked.
    with ledger.engine.begin() as conn:
        conn.execute(update(audit_entries).where(e.seq >= first, e.seq <= last).values(leaf=b""))
    return ArchiveResult(first, last, count, out)


def load_archives(paths: list[Path]) -> dict[int, bytes]:
    leaves: dict[int, bytes] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            if header.get("format") != "phiguard-ledger-archive/v1":
                raise AuditError(f"{path} is not a phiguard ledger archive")
            for line in fh:
                doc = json.loads(line)
                leaves[int(doc["seq"])] = base64.b64decode(doc["leaf"])
    return leaves
