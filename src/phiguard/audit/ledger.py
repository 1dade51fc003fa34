"""The append-only Merkle ledger with group commit and signed checkpoints.

Writers call ``append``; one appender thread takes whatever events are waiting,
gives them consecutive sequence numbers, writes entries and new perfect-subtree
nodes in one transaction, and only then releases the writers.  A writer is never
told "recorded" before the commit, and a failed commit fails every writer in the
batch, so the interaction that caused an event can fail closed.

Each entry stores the canonical leaf bytes, the RFC 9162 leaf hash and a MAC
(keyed BLAKE2b, key derived from a keyring data key) over (seq, leaf hash):
editing, inserting, deleting or reordering entries is visible even between
checkpoints, and pinpoints the entry.
Checkpoints are Ed25519-signed tree heads (size, root, time).
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from phiguard.clock import Clock, SystemClock, isoformat
from phiguard.crypto.envelope import Sealer, aad
from phiguard.crypto.keyring import AUDIT_COMPARTMENT, Keyring
from phiguard.crypto.signing import SigningKey
from phiguard.errors import AuditError
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import (
    audit_checkpoints,
    audit_entries,
    audit_keys,
    audit_nodes,
    audit_patients,
)

from . import merkle
from .events import AuditEvent

LEAF_VERSION = 1
_SQL_ENTRY = (
    "INSERT INTO audit_entries (seq, recorded, leaf, leaf_hash, mac) VALUES (?, ?, ?, ?, ?)"
)
_SQL_NODE = "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)"
_SQL_PATIENT = "INSERT INTO audit_patients (patient, seq, recorded) VALUES (?, ?, ?)"


def _executemany(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Plain DBAPI executemany: the appender's hot path."""
    if rows:
        if conn.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        conn.exec_driver_sql(sql, rows)


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: bytes
    signed_at_us: int
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return checkpoint_message(self.size, self.root, self.signed_at_us)

    def to_json(self, public_b64: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "signed_at": isoformat(from_us(self.signed_at_us)),
            "signed_at_us": self.signed_at_us,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }
        if public_b64:
            doc["public_key"] = public_b64
        return doc


def entry_mac(key: bytes, seq: int, leaf_hash: bytes) -> bytes:
    """Keyed BLAKE2b over (seq, leaf hash): a MAC in BLAKE2's keyed mode, several times
    cheaper per call than HMAC-SHA256, which matters when verifying millions of entries."""
    return hashlib.blake2b(struct.pack(">Q", seq) + leaf_hash, key=key, digest_size=32).digest()


def checkpoint_message(size: int, root: bytes, signed_at_us: int) -> bytes:
    """What a checkpoint signature covers (documented for outside verifiers)."""
    return b"phiguard-checkpoint/v1\n" + struct.pack(">QQ", size, signed_at_us) + root


LEAF_MAGIC = b"PGL1"


def encode_leaf(event: AuditEvent, seq: int, sealer: Sealer | None) -> bytes:
    """Canonical bytes of one event at one position; free-text detail sealed.

    Layout: ``PGL1`` | seq (8 bytes, big-endian) | canonical JSON.  The binary seq
    lets verification check positions without parsing JSON.
    """
    doc: dict[str, Any] = {
        "v": LEAF_VERSION,
        "seq": seq,
        "t": now_us(event.recorded),
        "action": event.action,
        "outcome": event.outcome,
        "who": event.principal,
        "purpose": event.purpose,
        "req": event.request_id,
        "patients": list(event.patient_ids),
    }
    if event.resource_type:
        doc["type"] = event.resource_type
    if event.resource_id:
        doc["id"] = event.resource_id
    if event.version is not None:
        doc["ver"] = event.version
    if event.break_glass:
        doc["btg"] = True
    if event.source:
        doc["src"] = event.source
    if event.detail and sealer is not None:
        raw = json.dumps(event.detail, sort_keys=True, separators=(",", ":"), default=str)
        doc["detail"] = base64.b64encode(
            sealer.seal(raw.encode(), aad("audit-detail", seq))
        ).decode()
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return LEAF_MAGIC + struct.pack(">Q", seq) + body


def leaf_seq(leaf: bytes) -> int:
    """The position a leaf claims, or -1 if it is not a phiguard leaf."""
    if len(leaf) < 12 or leaf[:4] != LEAF_MAGIC:
        return -1
    return int(struct.unpack_from(">Q", leaf, 4)[0])


def decode_leaf(leaf: bytes, sealer: Sealer | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(leaf[12:])
    if "detail" in doc and sealer is not None:
        token = base64.b64decode(doc["detail"])
        doc["detail"] = json.loads(sealer.open(token, aad("audit-detail", doc["seq"])))
    return doc


class Planner:
    """Records which perfect subtrees a proof needs, answering with placeholders."""

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def perfect(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return b"\x00" * 32


SHARED_LEVEL = 6  # subtrees of 64 leaves and up are kept in memory across proofs
SHARED_MAX = 500_000


class DbNodes:
    """Perfect-subtree hashes from the ledger tables (level 0 = entries' leaf hashes).

    Perfect subtrees never change once written, so the upper levels, which every
    proof needs, can be kept across proofs in a ``shared`` dict.
    """

    def __init__(
        self, conn: Connection, shared: dict[tuple[int, int], bytes] | None = None
    ) -> None:
        self.conn = conn
        self.shared = shared
        self.cache: dict[tuple[int, int], bytes] = {}

    def _keep(self, key: tuple[int, int], value: bytes) -> None:
        self.cache[key] = value
        if self.shared is not None and key[0] >= SHARED_LEVEL:
            if len(self.shared) >= SHARED_MAX:
                self.shared.clear()
            self.shared[key] = value

    def _known(self, key: tuple[int, int]) -> bytes | None:
        found = self.cache.get(key)
        if found is None and self.shared is not None:
            found = self.shared.get(key)
        return found

    def prefetch(self, wanted: set[tuple[int, int]]) -> None:
        """Load many nodes in a few queries (a proof needs O(log^2 n) of them)."""
        missing = [k for k in wanted if self._known(k) is None]
        leaves = [i for lv, i in missing if lv == 0]
        if leaves:
            for row in self.conn.execute(
                select(audit_entries.c.seq, audit_entries.c.leaf_hash).where(
                    audit_entries.c.seq.in_(leaves)
                )
            ):
                self._keep((0, int(row.seq)), bytes(row.leaf_hash))
        inner = [(lv, i) for lv, i in missing if lv > 0]
        # One statement for every level: each (level, idx) term is a primary-key probe,
        # and one round trip instead of one per level is most of a proof's cost.
        for start in range(0, len(inner), 400):
            chunk = inner[start : start + 400]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            sql = f"SELECT level, idx, hash FROM audit_nodes WHERE {where}"  # noqa: S608
            if self.conn.dialect.paramstyle != "qmark":
                sql = sql.replace("?", "%s")
            params = tuple(v for pair in chunk for v in pair)
            for level, idx, value in self.conn.exec_driver_sql(sql, params):
                self._keep((int(level), int(idx)), bytes(value))

    def perfect(self, level: int, index: int) -> bytes:
        key = (level, index)
        found = self._known(key)
        if found is not None:
            return found
        if level == 0:
            value = self.conn.execute(
                select(audit_entries.c.leaf_hash).where(audit_entries.c.seq == index)
            ).scalar()
        else:
            value = self.conn.execute(
                select(audit_nodes.c.hash).where(
                    audit_nodes.c.level == level, audit_nodes.c.idx == index
                )
            ).scalar()
        if value is None:
            raise AuditError(f"the ledger is missing tree node {level}/{index}")
        self._keep(key, bytes(value))
        return bytes(value)


class _Waiter:
    """One event waiting for its commit: a pre-acquired lock the appender releases
    (cheaper than an Event per event at tens of thousands of events a second)."""

    __slots__ = ("error", "event", "lock", "seq")

    def __init__(self, event: AuditEvent) -> None:
        self.event = event
        self.lock = threading.Lock()
        self.lock.acquire()
        self.seq = -1
        self.error: BaseException | None = None

    def release(self) -> None:
        self.lock.release()

    def wait(self, timeout: float) -> bool:
        return self.lock.acquire(timeout=timeout)


class Ledger:
    """The audit ledger of one phiguard installation."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        *,
        clock: Clock | None = None,
        batch_max: int = 2000,
        checkpoint_every: int = 10_000,
        checkpoint_seconds: float = 60.0,
        timeout: float = 30.0,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.clock = clock or SystemClock()
        self.batch_max = batch_max
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.timeout = timeout
        with keyring.engine.begin() as conn:
            self._sealer = keyring.current_sealer(AUDIT_COMPARTMENT, conn)
        self._mac_key = self._sealer.derive(b"phiguard/audit-mac")
        self._signing = self._load_signing_key()
        self._lock = threading.Lock()  # guards size/frontier between appender and readers
        self._size, self._frontier = self._load_tree()
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._last_checkpoint = time.monotonic()
        self._queue: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the appender thread's own
        self._closed = False

    # -- keys --------------------------------------------------------------------------
    def _load_signing_key(self) -> SigningKey:
        with self.engine.begin() as conn:
            row = conn.execute(
                select(audit_keys).where(audit_keys.c.active.is_(True)).limit(1)
            ).first()
            if row is not None:
                with self.keyring.engine.begin() as kconn:
                    sealer = self.keyring.sealer(AUDIT_COMPARTMENT, int(row.dek_version), kconn)
                return SigningKey.open(sealer, bytes(row.sealed), aad("audit-signing", row.key_id))
            return self._new_signing_key(conn)

    def _new_signing_key(self, conn: Connection) -> SigningKey:
        """A fresh checkpoint signing key, stored sealed under the ledger's data key."""
        key = SigningKey.generate()
        conn.execute(
            audit_keys.insert().values(
                key_id=key.key_id,
                public=key.public_raw,
                sealed=key.seal(self._sealer, aad("audit-signing", key.key_id)),
                dek_version=self._sealer.key_version,
                created_at=now_us(self.clock.now()),
                active=True,
            )
        )
        return key

    @property
    def public_key_b64(self) -> str:
        return self._signing.public_b64

    def public_keys(self) -> dict[str, bytes]:
        with self.engine.connect() as conn:
            return {r.key_id: bytes(r.public) for r in conn.execute(select(audit_keys))}

    def mac(self, seq: int, leaf_hash: bytes) -> bytes:
        return entry_mac(self._mac_key, seq, leaf_hash)

    @property
    def detail_sealer(self) -> Sealer:
        return self._sealer

    # -- tree state --------------------------------------------------------------------
    def _load_tree(self, conn: Connection | None = None) -> tuple[int, dict[int, bytes]]:
        if conn is None:
            with self.engine.connect() as own:
                return self._load_tree(own)
        last = conn.execute(select(func.max(audit_entries.c.seq))).scalar()
        size = 0 if last is None else int(last) + 1
        nodes = DbNodes(conn)
        frontier: dict[int, bytes] = {}
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier[level] = nodes.perfect(level, start >> level)
                start += 1 << level
        return size, frontier

    def _lock_for_append(self, conn: Connection) -> None:
        """Take the ledger's write lock for this transaction, then catch up with any
        entries another process (the CLI beside a running server) appended.

        SQLite: ``BEGIN IMMEDIATE`` takes the database write lock before the first
        read, so the tail read next cannot go stale.  PostgreSQL: a transaction-scoped
        advisory lock serialises appenders across processes.
        """
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7305846121042)")

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    # -- appending ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-appender", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None and not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(self.timeout)
            self._thread = None

    def append(self, event: AuditEvent) -> int:
        """Record ``event`` durably; returns its sequence number, or raises AuditError."""
        return self.append_many([event])[0]

    def append_many(self, events: list[AuditEvent]) -> list[int]:
        if self._closed:
            raise AuditError("the audit ledger is closed")
        self.start()
        waiters = [_Waiter(e) for e in events]
        for w in waiters:
            self._queue.put(w)
        for w in waiters:
            if not w.wait(self.timeout):
                raise AuditError("the audit ledger did not record the event in time")
            if w.error is not None:
                raise AuditError("the audit ledger could not record the event") from w.error
        return [w.seq for w in waiters]

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> Connection:
        """The appender's own connection, kept across batches (a pool check-out and a
        connect per batch were a third of an append's latency)."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                seqs = self._write(batch)
            except Exception as exc:  # every writer in the batch fails closed
                if self._conn is not None:  # start the next batch on a fresh connection
                    self._conn.close()
                    self._conn = None
                for w in batch:
                    w.error = exc
                    w.release()
            else:
                for w, seq in zip(batch, seqs, strict=True):
                    w.seq = seq
                    w.release()
            if stop:
                return

    def _write(self, batch: list[_Waiter]) -> list[int]:
        conn = self._connection()
        with conn.begin():
            self._lock_for_append(conn)
            last = conn.execute(select(func.max(audit_entries.c.seq))).scalar()
            stored = 0 if last is None else int(last) + 1
            with self._lock:
                if stored != self._size:  # another process appended meanwhile
                    self._size, self._frontier = self._load_tree(conn)
            return self._write_locked(conn, batch)

    def _write_locked(self, conn: Connection, batch: list[_Waiter]) -> list[int]:
        with self._lock:
            size, frontier = self._size, dict(self._frontier)
        entries: list[tuple[Any, ...]] = []
        nodes: list[tuple[Any, ...]] = []
        patients: list[tuple[Any, ...]] = []
        seqs: list[int] = []
        sealer, mac_key, leaf_hash, node_hash = (
            self._sealer,
            self._mac_key,
            merkle.leaf_hash,
            merkle.node_hash,
        )
        for w in batch:
            seq = size
            leaf = encode_leaf(w.event, seq, sealer)
            lh = leaf_hash(leaf)
            mac = entry_mac(mac_key, seq, lh)
            recorded = now_us(w.event.recorded)
            entries.append((seq, recorded, leaf, lh, mac))
            patients.extend((p, seq, recorded) for p in dict.fromkeys(w.event.patient_ids))
            carry, level = lh, 0
            while size >> level & 1:
                carry = node_hash(frontier.pop(level), carry)
                level += 1
                nodes.append((level, size >> level, carry))
            frontier[level] = carry
            size += 1
            seqs.append(seq)
        checkpoint = None
        due = (size // self.checkpoint_every) > ((size - len(batch)) // self.checkpoint_every) or (
            time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
        )
        _executemany(conn, _SQL_ENTRY, entries)
        _executemany(conn, _SQL_NODE, nodes)
        _executemany(conn, _SQL_PATIENT, patients)
        if due:
            checkpoint = self._sign(size, _root_from_frontier(frontier, size))
            _store_checkpoint(conn, checkpoint)
        with self._lock:
            self._size, self._frontier = size, frontier
        if checkpoint is not None:
            self._last_checkpoint = time.monotonic()
        return seqs

    # -- checkpoints -------------------------------------------------------------------
    def _sign(self, size: int, root: bytes) -> Checkpoint:
        at = now_us(self.clock.now())
        sig = self._signing.sign(checkpoint_message(size, root, at))
        return Checkpoint(size, root, at, self._signing.key_id, sig)

    def checkpoint(self) -> Checkpoint:
        """Sign the current tree head now (no-op if the newest checkpoint is current)."""
        with self._lock, self.engine.begin() as conn:
            size, frontier = self._size, dict(self._frontier)
            latest = self._latest(conn)
            if latest is not None and latest.size == size:
                return latest
            cp = self._sign(size, _root_from_frontier(frontier, size))
            _store_checkpoint(conn, cp)
        self._last_checkpoint = time.monotonic()
        return cp

    @staticmethod
    def _latest(conn: Connection) -> Checkpoint | None:
        row = conn.execute(
            select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
        ).first()
        return _checkpoint(row) if row is not None else None

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as conn:
            return [
                _checkpoint(r)
                for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size))
            ]

    # -- reading and proofs ------------------------------------------------------------
    def root(self, size: int | None = None) -> bytes:
        with self.engine.connect() as conn:
            return merkle.root(DbNodes(conn), self.size if size is None else size)

    def entry(self, seq: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(audit_entries).where(audit_entries.c.seq == seq)).first()
        if row is None:
            raise AuditError(f"no ledger entry {seq}")
        return {"seq": seq, "leaf": bytes(row.leaf), "leaf_hash": bytes(row.leaf_hash)}

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        planner = Planner()
        merkle.inclusion_path(planner, seq, size)
        with self.engine.connect() as conn:
            nodes = DbNodes(conn, self._nodes)
            nodes.prefetch(planner.wanted)
            return merkle.inclusion_path(nodes, seq, size)

    def proof_document(self, seq: int) -> dict[str, Any]:
        """Everything an outsider needs to check that entry ``seq`` is in the ledger:
        the leaf, its inclusion path and a signed checkpoint that covers it."""
        if not 0 <= seq < self.size:
            raise AuditError(f"no ledger entry {seq}")
        with self.engine.connect() as conn:
            row = conn.execute(
                select(audit_checkpoints)
                .where(audit_checkpoints.c.size > seq)
                .order_by(audit_checkpoints.c.size.desc())
                .limit(1)
            ).first()
        cp = _checkpoint(row) if row is not None else self.checkpoint()
        keys = self.public_keys()
        b64 = base64.b64encode
        return {
            "format": "phiguard-inclusion-proof/v1",
            "seq": seq,
            "leaf": b64(self.entry(seq)["leaf"]).decode(),
            "path": [b64(h).decode() for h in self.inclusion_proof(seq, cp.size)],
            "checkpoint": cp.to_json(b64(keys[cp.key_id]).decode()),
        }

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        planner = Planner()
        merkle.consistency_path(planner, first, second)
        with self.engine.connect() as conn:
            nodes = DbNodes(conn, self._nodes)
            nodes.prefetch(planner.wanted)
            return merkle.consistency_path(nodes, first, second)

    def events(self, since: int = 0, until: int | None = None) -> Iterator[dict[str, Any]]:
        """Decoded events (details opened) from ``since``, in order."""
        stmt = (
            select(audit_entries.c.seq, audit_entries.c.leaf)
            .where(audit_entries.c.seq >= since)
            .order_by(audit_entries.c.seq)
        )
        if until is not None:
            stmt = stmt.where(audit_entries.c.seq < until)
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
                if row.leaf:  # archived entries have their leaves in an archive file
                    yield decode_leaf(bytes(row.leaf), self._sealer)

    def search(
        self,
        *,
        patient: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        who: str | None = None,
        offset: int = 0,
        count: int = 50,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, decoded entries) for a patient and/or a period, oldest first."""
        e = audit_entries.c
        if patient is not None:
            p = audit_patients.c
            stmt = (
                select(e.seq, e.leaf)
                .join(audit_patients, p.seq == e.seq)
                .where(p.patient == patient)
            )
            if since_us is not None:
                stmt = stmt.where(p.recorded >= since_us)
            if until_us is not None:
                stmt = stmt.where(p.recorded < until_us)
        else:
            stmt = select(e.seq, e.leaf)
            if since_us is not None:
                stmt = stmt.where(e.recorded >= since_us)
            if until_us is not None:
                stmt = stmt.where(e.recorded < until_us)
        with self.engine.connect() as conn:
            rows = [(int(r.seq), bytes(r.leaf)) for r in conn.execute(stmt.order_by(e.seq))]
        docs = [decode_leaf(leaf, self._sealer) for _seq, leaf in rows if leaf]
        if who is not None:
            docs = [d for d in docs if d.get("who") == who]
        return len(docs), docs[offset : offset + count]

    def retire_signing_key(self) -> str:
        """Start signing with a fresh key (old checkpoints keep verifying with theirs)."""
        with self.engine.begin() as conn:
            conn.execute(update(audit_keys).values(active=False))
            key = self._new_signing_key(conn)
        self._signing = key
        return key.key_id


def _store_checkpoint(conn: Connection, cp: Checkpoint) -> None:
    conn.execute(
        audit_checkpoints.insert().values(
            size=cp.size,
            root=cp.root,
            signed_at=cp.signed_at_us,
            key_id=cp.key_id,
            signature=cp.signature,
        )
    )


def _root_from_frontier(frontier: dict[int, bytes], size: int) -> bytes:
    """MTH from the right-edge perfect subtrees (fold from the smallest upwards)."""
    if size == 0:
        return merkle.EMPTY_ROOT
    acc: bytes | None = None
    for level in sorted(frontier):
        acc = frontier[level] if acc is None else merkle.node_hash(frontier[level], acc)
    assert acc is not None
    return acc


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        int(row.size), bytes(row.root), int(row.signed_at), str(row.key_id), bytes(row.signature)
    )
