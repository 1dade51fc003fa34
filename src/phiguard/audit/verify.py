"""``phiguard audit verify``: recompute the ledger and name the first thing wrong.

Checks, in one pass over the entries in sequence order:

- no gaps (a deleted entry), and each leaf claims the position it is stored at
  (swapped or moved entries);
- each leaf hashes to its stored leaf hash, and each MAC is valid under the
  ledger key (an edited, inserted or forged entry, even after the last checkpoint);
- at every checkpoint size, the recomputed root equals the signed root, the
  signature verifies, and the stored subtree nodes give the same root (proofs
  served from them are sound);
- the log is not shorter than its newest checkpoint (truncation);
- against an external witness folder: every witnessed checkpoint is matched by
  the log (a database restored from an older backup, i.e. a rollback, is caught).
"""

from __future__ import annotations

import base64
import hmac
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from phiguard.crypto.signing import verify as verify_signature
from phiguard.store.tables import audit_entries

from . import merkle
from .ledger import DbNodes, Ledger, checkpoint_message, leaf_seq

BATCH = 20_000


@dataclass
class Finding:
    kind: str
    message: str
    seq: int | None = None


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad_entry(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.seq is not None]
        return min(seqs) if seqs else None


def read_witness(folder: Path) -> list[dict[str, object]]:
    docs = []
    for path in sorted(folder.glob("checkpoint-*.json")):
        docs.append(json.loads(path.read_text()))
    return docs


def verify(
    ledger: Ledger,
    *,
    witness: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    limit_findings: int = 20,
) -> VerifyReport:
    report = VerifyReport()
    checkpoints = ledger.checkpoints()
    keys = ledger.public_keys()
    by_size = {cp.size: cp for cp in checkpoints}
    witnessed = read_witness(witness) if witness is not None else []
    capture = set(by_size) | {int(str(d.get("size", -1))) for d in witnessed}
    report.checkpoints = len(checkpoints)
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        if key is None or not verify_signature(key, cp.signature, cp.message()):
            report.findings.append(
                Finding("checkpoint", f"checkpoint at size {cp.size} has an invalid signature")
            )
    total = ledger.size
    mac_key = ledger._mac_key
    frontier: dict[int, bytes] = {}
    expected = 0
    broken = False
    roots: dict[int, bytes] = {}

    def add(finding: Finding) -> None:
        if len(report.findings) < limit_findings:
            report.findings.append(finding)

    with ledger.engine.connect() as conn:
        stmt = select(
            audit_entries.c.seq,
            audit_entries.c.leaf,
            audit_entries.c.leaf_hash,
            audit_entries.c.mac,
        ).order_by(audit_entries.c.seq)
        result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(stmt)
        for seq, leaf, stored_hash, mac in result:
            if seq != expected:
                add(
                    Finding("gap", f"entries {expected}..{seq - 1} are missing (deleted)", expected)
                )
                # Carry on to report further damage; the tree past a gap is unknowable.
                expected, broken = seq, True
            leaf = bytes(leaf)
            lh = merkle.leaf_hash(leaf)
            if leaf_seq(leaf) != seq:
                add(
                    Finding(
                        "order",
                        f"entry {seq} holds the content of entry "
                        f"{leaf_seq(leaf)} (moved or swapped)",
                        seq,
                    )
                )
            if lh != bytes(stored_hash):
                add(Finding("content", f"entry {seq} does not match its hash (edited)", seq))
            good_mac = hmac.digest(mac_key, struct.pack(">Q", seq) + lh, "sha256")
            if not hmac.compare_digest(good_mac, bytes(mac)):
                add(Finding("mac", f"entry {seq} fails its MAC (forged or edited)", seq))
            if not broken:
                carry, level, size = lh, 0, expected
                while size >> level & 1:
                    carry = merkle.node_hash(frontier.pop(level), carry)
                    level += 1
                frontier[level] = carry
            expected += 1
            if expected in capture and not broken:
                roots[expected] = _fold(frontier)
            if progress and expected % BATCH == 0:
                progress(expected, total)
        report.entries = expected
        nodes = DbNodes(conn)
        for cp in checkpoints:
            if cp.size > expected:
                add(
                    Finding(
                        "truncation",
                        f"the log has {expected} entries but was signed at "
                        f"size {cp.size} (truncated)",
                        expected,
                    )
                )
                continue
            if roots.get(cp.size) != cp.root:
                add(
                    Finding(
                        "root",
                        f"entries before {cp.size} differ from those signed in the "
                        f"checkpoint at size {cp.size}",
                        None,
                    )
                )
            elif merkle.root(nodes, cp.size) != cp.root:
                add(
                    Finding(
                        "nodes",
                        f"stored tree nodes disagree with the checkpoint at size "
                        f"{cp.size}: proofs from them would be wrong",
                        None,
                    )
                )
        for doc in witnessed:
            report.witnessed += 1
            _check_witness(doc, expected, roots, add)
    if progress:
        progress(expected, total)
    return report


def _fold(frontier: dict[int, bytes]) -> bytes:
    acc: bytes | None = None
    for level in sorted(frontier):
        acc = frontier[level] if acc is None else merkle.node_hash(frontier[level], acc)
    return acc or merkle.EMPTY_ROOT


def _check_witness(
    doc: dict[str, object], entries: int, roots: dict[int, bytes], add: Callable[[Finding], None]
) -> None:
    try:
        size = int(str(doc["size"]))
        root = base64.b64decode(str(doc["root"]))
        public = base64.b64decode(str(doc["public_key"]))
        signature = base64.b64decode(str(doc["signature"]))
        signed_at = int(str(doc["signed_at_us"]))
    except (KeyError, ValueError):
        add(Finding("witness", "a witness checkpoint file is malformed"))
        return
    if not verify_signature(public, signature, checkpoint_message(size, root, signed_at)):
        add(Finding("witness", f"the witnessed checkpoint at size {size} has a bad signature"))
        return
    if size > entries:
        add(
            Finding(
                "rollback",
                f"the witness saw {size} entries but the log has {entries}: "
                f"the database was rolled back or truncated",
                entries,
            )
        )
    elif roots.get(size) != root:
        add(
            Finding(
                "rollback",
                f"the log at size {size} differs from the witnessed "
                f"checkpoint: history was rewritten or rolled back",
            )
        )
