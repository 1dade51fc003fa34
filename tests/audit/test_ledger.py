"""The ledger: group-committed appends, proofs, checkpoints, and every attack detected."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from phiguard.audit import merkle
from phiguard.audit import verify as verify_module
from phiguard.audit.ledger import Checkpoint, Ledger, decode_leaf
from phiguard.audit.verify import verify
from phiguard.records.vault import Vault
from tests.audit.helpers import event, fill, open_ledger, sql


def test_appends_are_numbered_and_readable(ledger: Ledger) -> None:
    seqs = ledger.append_many([event(i) for i in range(5)])
    assert seqs == [0, 1, 2, 3, 4]
    docs = list(ledger.events())
    assert [d["seq"] for d in docs] == seqs
    assert docs[2]["detail"] == {"note": "free text 2"}
    assert docs[2]["patients"] == ["p2"]


def test_details_are_sealed_in_the_database(ledger: Ledger, ledger_path: Path) -> None:
    ledger.append(event(1, detail={"reason": "CanaryReasonText"}))
    ledger.engine.dispose()
    raw = b"".join(p.read_bytes() for p in ledger_path.parent.iterdir())
    assert b"CanaryReasonText" not in raw


def test_concurrent_writers_share_commits(ledger: Ledger) -> None:
    def work(k: int) -> None:
        for i in range(50):
            ledger.append(event(k * 1000 + i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.size == 400
    assert verify(ledger).ok


def test_root_matches_a_tree_built_in_memory(ledger: Ledger) -> None:
    fill(ledger, 37)
    leaves = [merkle.leaf_hash(ledger.entry(i)["leaf"]) for i in range(37)]
    assert ledger.root() == merkle.root(merkle.MemoryNodes(leaves), 37)


def test_proofs_from_the_database_verify(ledger: Ledger) -> None:
    fill(ledger, 50)
    cp = ledger.checkpoint()
    for seq in (0, 17, 49):
        leaf = merkle.leaf_hash(ledger.entry(seq)["leaf"])
        assert merkle.verify_inclusion(
            leaf, seq, cp.size, ledger.inclusion_proof(seq, cp.size), cp.root
        )
    old = ledger.checkpoints()[0]
    assert merkle.verify_consistency(
        old.size, cp.size, old.root, cp.root, ledger.consistency_proof(old.size, cp.size)
    )


def test_checkpoints_every_n_entries_and_reopen(
    ledger: Ledger, ledger_path: Path, vault: Vault
) -> None:
    for i in range(40):  # one event per commit: checkpoints land exactly every 16
        ledger.append(event(i))
    assert [cp.size for cp in ledger.checkpoints()] == [16, 32]
    root = ledger.root()
    ledger.close()
    again = open_ledger(ledger_path, vault.keyring, checkpoint_every=16)
    assert again.size == 40 and again.root() == root
    fill(again, 10, start=40)
    assert verify(again).ok
    again.close()


def test_a_clean_ledger_verifies(ledger: Ledger) -> None:
    for start in range(0, 100, 10):
        fill(ledger, 10, start)
    ledger.checkpoint()
    report = verify(ledger)
    assert report.ok, report.findings
    assert report.entries == 100 and report.checkpoints >= 6


def attacked(ledger: Ledger, ledger_path: Path, statement: str, *args: object) -> list[str]:
    fill(ledger, 40)
    ledger.checkpoint()
    ledger.engine.dispose()
    sql(ledger_path, statement, *args)
    report = verify(ledger)
    assert not report.ok
    return [f.message for f in report.findings]


def test_edit_a_byte_is_detected_and_named(ledger: Ledger, ledger_path: Path) -> None:
    con = sqlite3.connect(ledger_path)
    fill(ledger, 40)
    ledger.checkpoint()
    leaf = bytearray(con.execute("SELECT leaf FROM audit_entries WHERE seq = 21").fetchone()[0])
    leaf[-3] ^= 1
    con.execute("UPDATE audit_entries SET leaf = ? WHERE seq = 21", (bytes(leaf),))
    con.commit()
    report = verify(ledger)
    assert report.first_bad_entry == 21
    assert "entry 21 does not match its hash (edited)" in [f.message for f in report.findings]


def test_edit_with_recomputed_hash_is_caught_by_the_mac(ledger: Ledger, ledger_path: Path) -> None:
    fill(ledger, 40)
    leaf = ledger.entry(5)["leaf"].replace(b'"read"', b'"vread"')
    msgs = attacked(
        ledger,
        ledger_path,
        "UPDATE audit_entries SET leaf = ?, leaf_hash = ? WHERE seq = 5",
        leaf,
        merkle.leaf_hash(leaf),
    )
    assert "entry 5 fails its MAC (forged or edited)" in msgs


def test_delete_a_row_is_detected(ledger: Ledger, ledger_path: Path) -> None:
    msgs = attacked(ledger, ledger_path, "DELETE FROM audit_entries WHERE seq = 7")
    assert "entries 7..7 are missing (deleted)" in msgs


def test_truncation_is_detected(ledger: Ledger, ledger_path: Path) -> None:
    msgs = attacked(ledger, ledger_path, "DELETE FROM audit_entries WHERE seq >= 30")
    assert any("truncated" in m for m in msgs)


def test_swapping_two_rows_is_detected(ledger: Ledger, ledger_path: Path) -> None:
    fill(ledger, 40)
    ledger.checkpoint()
    ledger.engine.dispose()
    con = sqlite3.connect(ledger_path)
    a = con.execute("SELECT leaf, leaf_hash, mac FROM audit_entries WHERE seq = 3").fetchone()
    b = con.execute("SELECT leaf, leaf_hash, mac FROM audit_entries WHERE seq = 9").fetchone()
    con.execute("UPDATE audit_entries SET leaf=?, leaf_hash=?, mac=? WHERE seq = 3", b)
    con.execute("UPDATE audit_entries SET leaf=?, leaf_hash=?, mac=? WHERE seq = 9", a)
    con.commit()
    msgs = [f.message for f in verify(ledger).findings]
    assert "entry 3 holds the content of entry 9 (moved or swapped)" in msgs


def test_inserting_a_row_is_detected(ledger: Ledger, ledger_path: Path) -> None:
    fill(ledger, 40)
    ledger.checkpoint()
    ledger.engine.dispose()
    forged = ledger.entry(39)["leaf"].replace(b"\x00" * 7 + b"\x27", b"\x00" * 7 + b"\x28", 1)
    sql(
        ledger_path,
        "INSERT INTO audit_entries VALUES (40, 0, ?, ?, ?)",
        forged,
        merkle.leaf_hash(forged),
        b"\x00" * 32,
    )
    msgs = [f.message for f in verify(ledger).findings]
    assert "entry 40 fails its MAC (forged or edited)" in msgs


def test_rollback_to_an_old_copy_is_caught_by_the_witness(
    ledger: Ledger, ledger_path: Path, tmp_path: Path, vault: Vault
) -> None:
    fill(ledger, 20)
    ledger.close()
    ledger.engine.dispose()
    old_copy = tmp_path / "old.db"
    shutil.copy(ledger_path, old_copy)
    led = open_ledger(ledger_path, vault.keyring, checkpoint_every=16)
    fill(led, 20, start=20)
    cp = led.checkpoint()
    witness = tmp_path / "witness"
    witness.mkdir()
    (witness / f"checkpoint-{cp.size:012d}.json").write_text(
        json.dumps(cp.to_json(led.public_key_b64))
    )
    led.close()
    led.engine.dispose()
    shutil.copy(old_copy, ledger_path)
    for suffix in ("-wal", "-shm"):
        Path(str(ledger_path) + suffix).unlink(missing_ok=True)
    restored = open_ledger(ledger_path, vault.keyring, checkpoint_every=16)
    assert verify(restored).ok  # self-consistent: only the witness can tell
    report = verify(restored, witness=witness)
    assert any(f.kind == "rollback" for f in report.findings), report.findings
    restored.close()


def test_a_forged_checkpoint_is_refused(ledger: Ledger, ledger_path: Path) -> None:
    fill(ledger, 20)
    cp = ledger.checkpoint()
    msgs = attacked(
        ledger,
        ledger_path,
        "UPDATE audit_checkpoints SET root = ? WHERE size = ?",
        b"\x01" * 32,
        cp.size,
    )
    assert any("invalid signature" in m for m in msgs)


def test_a_failed_commit_fails_every_writer(ledger: Ledger, ledger_path: Path) -> None:
    fill(ledger, 3)
    ledger.engine.dispose()
    sql(
        ledger_path,
        "CREATE TRIGGER no_more BEFORE INSERT ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'read-only'); END",
    )
    from phiguard.errors import AuditError

    with pytest.raises(AuditError):
        ledger.append(event(99))
    assert ledger.size == 3
    sql(ledger_path, "DROP TRIGGER no_more")
    assert ledger.append(event(100)) == 3
    assert verify(ledger).ok


def test_checkpoint_json_round_trip(ledger: Ledger) -> None:
    fill(ledger, 5)
    cp = ledger.checkpoint()
    doc = cp.to_json(ledger.public_key_b64)
    assert doc["size"] == 5 and isinstance(cp, Checkpoint)
    assert decode_leaf(ledger.entry(0)["leaf"])["action"] == "read"


def test_standalone_verifier_accepts_real_proofs_and_refuses_forged(
    ledger: Ledger, tmp_path: Path
) -> None:
    import base64
    import subprocess
    import sys

    fill(ledger, 30)
    ledger.checkpoint()
    doc = ledger.proof_document(12)
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(doc))
    # Run the verifier as a copy outside the package: it must need nothing of phiguard.
    verifier = tmp_path / "verify_proof.py"
    source = Path(__file__).resolve().parents[2] / "src/phiguard/audit/verify_proof.py"
    verifier.write_text(source.read_text())
    run = [sys.executable, "-I", str(verifier)]
    ok = subprocess.run(
        [*run, str(good), "--public-key", ledger.public_key_b64], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK: entry 12"), ok.stdout + ok.stderr
    for change in ("leaf", "path", "root", "key"):
        forged = json.loads(json.dumps(doc))
        if change == "leaf":
            forged["leaf"] = base64.b64encode(ledger.entry(13)["leaf"]).decode()
        elif change == "path":
            forged["path"][0] = base64.b64encode(b"\x00" * 32).decode()
        elif change == "root":
            forged["checkpoint"]["root"] = base64.b64encode(b"\x02" * 32).decode()
        bad = tmp_path / f"bad-{change}.json"
        bad.write_text(json.dumps(forged))
        key = base64.b64encode(b"\x03" * 32).decode() if change == "key" else ledger.public_key_b64
        res = subprocess.run([*run, str(bad), "--public-key", key], capture_output=True, text=True)
        assert res.returncode == 1 and "FAILED" in res.stdout, (change, res.stdout)


@pytest.mark.parametrize(
    "kind", ["clean", "edit-left", "edit-right", "delete-left", "delete-right", "truncate"]
)
def test_the_two_process_verification_finds_the_same(
    ledger: Ledger, ledger_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verifier splits big logs at the RFC 9162 split point over two processes."""
    for start in range(0, 100, 20):
        fill(ledger, 20, start)
    ledger.checkpoint()
    ledger.engine.dispose()
    # 100 entries: the split is at 48.
    statements = {
        "edit-left": "UPDATE audit_entries SET leaf = CAST(leaf || x'00' AS BLOB) WHERE seq = 10",
        "edit-right": "UPDATE audit_entries SET leaf = leaf || x'00' WHERE seq = 70",
        "delete-left": "DELETE FROM audit_entries WHERE seq = 30",
        "delete-right": "DELETE FROM audit_entries WHERE seq = 63",
        "truncate": "DELETE FROM audit_entries WHERE seq >= 90",
    }
    if kind in statements:
        sql(ledger_path, statements[kind])
    serial = verify(ledger, workers=1)
    # Split at 48 with blocks of 16 entries (the real split uses 2^16).
    monkeypatch.setattr(verify_module, "BLOCK_LEVEL", 4)
    parallel = verify(ledger, workers=2, parallel_min=1)
    assert [f.message for f in parallel.findings] == [f.message for f in serial.findings]
    assert parallel.ok == (kind == "clean")
    assert parallel.entries == serial.entries


def test_two_processes_appending_to_one_ledger_interleave_cleanly(
    ledger: Ledger, ledger_path: Path, vault: Vault
) -> None:
    """A CLI command (its own Ledger) appending while the server's ledger runs: both
    catch up with the other's entries instead of reusing sequence numbers."""
    other = open_ledger(ledger_path, vault.keyring, checkpoint_every=16)
    try:
        fill(ledger, 5)
        assert other.append(event(100)) == 5  # the second writer started at size 0
        assert ledger.append(event(101)) == 6  # the first had its size cached at 5
        threads = [
            threading.Thread(target=fill, args=(led, 40, start))
            for led, start in ((ledger, 200), (other, 300))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ledger.append(event(400)) == 87
        report = verify(ledger)
        assert report.ok, [f.message for f in report.findings]
    finally:
        other.close()
        other.engine.dispose()
