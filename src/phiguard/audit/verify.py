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
import hashlib
import hmac
import json
import multiprocessing
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phiguard.crypto.signing import verify as verify_signature
from phiguard.errors import AuditError
from phiguard.store.engine import make_throwaway_engine

from . import merkle
from .ledger import DbNodes, Ledger, Planner, checkpoint_message
from .retention import load_archives

BATCH = 20_000
PARALLEL_MIN = 200_000  # below this, a second process costs more than it saves
BLOCK_LEVEL = 16  # the split point is a multiple of 2^16 entries


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
    archived_unchecked: int = 0  # archived entries whose leaves were not supplied
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
    workers: int = 2,
    parallel_min: int = PARALLEL_MIN,
    archives: list[Path] | None = None,
) -> VerifyReport:
    report = VerifyReport()
    archived = load_archives(archives) if archives else {}
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

    def add(finding: Finding) -> None:
        if len(report.findings) < limit_findings:
            report.findings.append(finding)

    url = ledger.engine.url.render_as_string(hide_password=False)
    if workers > 1 and total >= parallel_min and not url.startswith("sqlite:///:memory:"):
        # Two halves split at a multiple of 2^BLOCK_LEVEL near the middle.  The right
        # half merges subtrees only up to that level (alignment relative to its start
        # is then absolute); its whole blocks and partial frontiers are appended to the
        # left half's frontier here, exactly as appends would have built the tree.
        m = (total // 2) >> BLOCK_LEVEL << BLOCK_LEVEL
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            left_async = pool.apply_async(
                _scan, (url, 0, m, mac_key, capture, limit_findings, None, 0, archived)
            )
            right_async = pool.apply_async(
                _scan,
                (url, m, None, mac_key, capture, limit_findings, None, 0, archived, BLOCK_LEVEL),
            )
            left, right = left_async.get(), right_async.get()
        scans = [left, right]
        roots = dict(left.roots)
        if not left.broken and left.end == m:
            for size, (done, partial) in right.partials.items():
                roots[size] = _combine(left.frontier, m, right.blocks[:done], partial)
        expected = right.end if right.end > m or left.end == m else left.end
        if left.end != m and right.count:
            add(Finding("gap", f"entries {left.end}..{m - 1} are missing (deleted)", left.end))
    else:
        only = _scan(url, 0, None, mac_key, capture, limit_findings, progress, total, archived)
        scans = [only]
        roots = dict(only.roots)
        expected = only.end
    for scan in scans:
        for f in scan.findings:
            add(f)
    report.entries = expected
    report.archived_unchecked = sum(scan.archived for scan in scans)

    for cp in checkpoints:
        if cp.size > expected:
            add(
                Finding(
                    "truncation",
                    f"the log has {expected} entries but was signed at size {cp.size} (truncated)",
                    expected,
                )
            )
        elif roots.get(cp.size) != cp.root:
            add(
                Finding(
                    "root",
                    f"entries before {cp.size} differ from those signed in the "
                    f"checkpoint at size {cp.size}",
                    None,
                )
            )
    # Stored subtree nodes are a cache for proofs: a damaged one makes proofs fail
    # their check, it cannot make a false one pass.  The newest checkpoint's root is
    # recomputed from them to catch damage early.
    newest = checkpoints[-1] if checkpoints else None
    if newest is not None and newest.size <= expected and roots.get(newest.size) == newest.root:
        planner = Planner()
        merkle.root(planner, newest.size)
        with ledger.engine.connect() as conn:
            nodes = DbNodes(conn)
            try:
                nodes.prefetch(planner.wanted)
                stored_root = merkle.root(nodes, newest.size)
            except AuditError:
                stored_root = b""
        if stored_root != newest.root:
            add(
                Finding(
                    "nodes",
                    f"stored tree nodes disagree with the checkpoint at size "
                    f"{newest.size}: proofs from them would fail",
                    None,
                )
            )
    for doc in witnessed:
        report.witnessed += 1
        _check_witness(doc, expected, roots, add)
    if progress:
        progress(expected, total)
    return report


@dataclass
class _Scan:
    end: int = 0  # one past the last sequence number seen
    count: int = 0
    archived: int = 0  # entries checked by MAC only (leaf archived, archive not given)
    frontier: dict[int, bytes] = field(default_factory=dict)  # right-edge subtrees at the end
    blocks: list[bytes] = field(default_factory=list)  # whole aligned blocks (right half)
    partials: dict[int, tuple[int, dict[int, bytes]]] = field(default_factory=dict)
    broken: bool = False
    roots: dict[int, bytes] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def _scan(
    url: str,
    start: int,
    stop: int | None,
    mac_key: bytes,
    capture: set[int],
    limit: int,
    progress: Callable[[int, int], None] | None = None,
    total: int = 0,
    archived: dict[int, bytes] | None = None,
    block_level: int | None = None,
) -> _Scan:
    """Check entries [start, stop): position, leaf hash, MAC; fold the tree of the range
    and keep its root at every size in ``capture`` (sizes counted from 0).

    With ``block_level`` (a scan that starts at a multiple of 2^block_level), subtrees
    are merged only up to that level: whole blocks are handed back in order, and at
    each captured size the scan keeps how many blocks were done and the partial
    frontier, for the caller to combine with the left part's frontier.
    """
    out = _Scan(end=start)
    archived = archived or {}
    engine = make_throwaway_engine(url)
    sha256, blake2b, pack, compare = (
        hashlib.sha256,
        hashlib.blake2b,
        struct.Struct(">Q").pack,
        hmac.compare_digest,
    )
    unpack_seq = struct.Struct(">Q").unpack_from
    cap = -1 if block_level is None else block_level
    frontier: dict[int, bytes] = {}
    expected = start
    base_mac = blake2b(key=mac_key, digest_size=32)

    def careful(seq: int, raw_leaf: object, stored_hash: object, mac: object) -> bytes:
        """Check one entry that failed the fast path, naming what is wrong with it;
        returns the leaf hash the tree must use."""
        # A tampered row may not even hold bytes any more.
        leaf = raw_leaf.encode() if isinstance(raw_leaf, str) else _blob(raw_leaf)
        if not leaf:  # archived: its leaf is in an archive file, if given
            leaf = archived.get(seq, b"")
        if leaf:
            lh = sha256(b"\x00" + leaf).digest()
            claimed = unpack_seq(leaf, 4)[0] if leaf[:4] == b"PGL1" and len(leaf) >= 12 else -1
        else:  # trust the stored hash as far as its MAC vouches for it
            lh, claimed = _blob(stored_hash), seq
            out.archived += 1
        bad = []
        if claimed != seq:
            bad.append(
                Finding(
                    "order",
                    f"entry {seq} holds the content of entry {claimed} (moved or swapped)",
                    seq,
                )
            )
        if lh != _blob(stored_hash):
            bad.append(Finding("content", f"entry {seq} does not match its hash (edited)", seq))
        good = blake2b(pack(seq) + lh, key=mac_key, digest_size=32).digest()
        if not compare(good, _blob(mac)):
            bad.append(Finding("mac", f"entry {seq} fails its MAC (forged or edited)", seq))
        if bad and len(out.findings) < limit:
            out.findings.extend(bad[: limit - len(out.findings)])
        return lh

    sql = "SELECT seq, leaf, leaf_hash, mac FROM audit_entries WHERE seq >= ?"
    params: tuple[int, ...] = (start,)
    if stop is not None:
        sql += " AND seq < ?"
        params = (start, stop)
    sql += " ORDER BY seq"
    try:
        with engine.connect() as conn:
            if conn.dialect.paramstyle != "qmark":
                sql = sql.replace("?", "%s")
            cursor = conn.exec_driver_sql(sql, params).cursor
            assert cursor is not None
            while True:
                rows = cursor.fetchmany(BATCH)
                if not rows:
                    break
                for seq, leaf, stored_hash, mac in rows:
                    # The fast path: a well-formed row in sequence whose leaf, hash and
                    # MAC all agree.  Anything else goes to the careful path.
                    if (
                        seq == expected
                        and type(leaf) is bytes
                        and type(stored_hash) is bytes
                        and type(mac) is bytes
                        and leaf[:4] == b"PGL1"
                        and leaf[4:12] == pack(seq)
                    ):
                        lh = sha256(b"\x00" + leaf).digest()
                        keyed = base_mac.copy()
                        keyed.update(pack(seq))
                        keyed.update(lh)
                        if lh != stored_hash or not compare(keyed.digest(), mac):
                            lh = careful(seq, leaf, stored_hash, mac)
                    else:
                        if seq != expected:
                            if len(out.findings) < limit:
                                out.findings.append(
                                    Finding(
                                        "gap",
                                        f"entries {expected}..{seq - 1} are missing (deleted)",
                                        expected,
                                    )
                                )
                            # Carry on to report further damage; the tree past a gap is
                            # unknowable.
                            expected, out.broken = seq, True
                        lh = careful(seq, leaf, stored_hash, mac)
                    if not out.broken:
                        carry, level, size = lh, 0, expected - start
                        while level != cap and size >> level & 1:
                            carry = sha256(b"\x01" + frontier.pop(level) + carry).digest()
                            level += 1
                        if level == cap:
                            out.blocks.append(carry)
                        else:
                            frontier[level] = carry
                    expected += 1
                    out.count += 1
                    if expected in capture and not out.broken:
                        if block_level is None:
                            out.roots[expected] = _fold(frontier)
                        else:
                            out.partials[expected] = (len(out.blocks), dict(frontier))
                if progress:
                    progress(expected, total)
    finally:
        engine.dispose()
    out.end = expected
    out.frontier = frontier
    return out


def _append_subtree(frontier: dict[int, bytes], size: int, level: int, value: bytes) -> int:
    """Append a perfect subtree of 2^level leaves at ``size`` (a multiple of 2^level)."""
    carry, lvl = value, level
    while size >> lvl & 1:
        carry = merkle.node_hash(frontier.pop(lvl), carry)
        lvl += 1
    frontier[lvl] = carry
    return size + (1 << level)


def _combine(
    left: dict[int, bytes], size: int, blocks: list[bytes], partial: dict[int, bytes]
) -> bytes:
    """The root of the left frontier extended by whole blocks, then a partial frontier."""
    frontier = dict(left)
    for block in blocks:
        size = _append_subtree(frontier, size, BLOCK_LEVEL, block)
    for level in sorted(partial, reverse=True):
        size = _append_subtree(frontier, size, level, partial[level])
    return _fold(frontier)


def _blob(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else b""


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
