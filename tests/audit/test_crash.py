"""Kill -9 in the middle of appends: the ledger verifies and keeps every acknowledged event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from phiguard.audit.ledger import Ledger
from phiguard.audit.verify import verify
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.store import migrate
from phiguard.store.engine import make_engine
from tests.conftest import FAST_SCRYPT, TEST_PASSPHRASE

WRITER = textwrap.dedent("""
    import datetime as dt, sys, threading
    from pathlib import Path
    from phiguard.audit.events import AuditEvent
    from phiguard.audit.ledger import Ledger
    from phiguard.crypto.keyring import Keyring
    from phiguard.crypto.providers import LocalKeyFile
    from phiguard.store.engine import make_engine

    root = Path(sys.argv[1])
    keyring = Keyring(make_engine(f"sqlite:///{root / 'db.sqlite'}"),
                      LocalKeyFile(root / "kek.json", sys.argv[2]))
    ledger = Ledger(make_engine(f"sqlite:///{root / 'audit.db'}"), keyring,
                    checkpoint_every=50)
    lock = threading.Lock()

    def work(k):
        for i in range(100000):
            rid = f"w{k}-{i}"
            seq = ledger.append(AuditEvent(
                action="read", outcome="success", principal=f"user/{k}", purpose="TREAT",
                request_id=rid, recorded=dt.datetime.now(dt.UTC), patient_ids=("p1",)))
            with lock:
                print(seq, rid, flush=True)

    for k in range(4):
        threading.Thread(target=work, args=(k,), daemon=True).start()
    threading.Event().wait()
""")


def test_kill_minus_nine_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    LocalKeyFile.create(tmp_path / "kek.json", TEST_PASSPHRASE, scrypt_params=FAST_SCRYPT)
    keyring = Keyring(
        make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        LocalKeyFile(tmp_path / "kek.json", TEST_PASSPHRASE),
    )
    migrate.upgrade(keyring.engine)
    audit_engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(audit_engine)
    Ledger(audit_engine, keyring).close()  # creates the signing and MAC keys first
    audit_engine.dispose()
    acknowledged: dict[int, str] = {}
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), TEST_PASSPHRASE],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seq, rid = line.split()
            acknowledged[int(seq)] = rid
            seen += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert seen >= 300, "the writer did not get going"
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'audit.db'}"), keyring)
    report = verify(ledger)
    assert report.ok, report.findings
    assert ledger.size >= max(acknowledged) + 1
    for seq, rid in acknowledged.items():
        assert ledger.entry(seq)["leaf"].find(rid.encode()) > 0, f"entry {seq} lost or changed"
    # And it carries on: a new append after the crashes extends a valid log.
    from tests.audit.helpers import event

    ledger.append(event(1))
    assert verify(ledger).ok
    ledger.close()
