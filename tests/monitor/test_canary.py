"""Canary: names, addresses and MRNs loaded for monitoring, and reviewers' notes, never
reach the disk in the clear.

Unique strings go into a roster, a patient list, care rows, an alert's reason and
evidence, a note and a suppression reason; afterwards every byte under the home
(database, WAL, ledger, logs, key file) is searched for them.  The same flow with
sealing switched off must be caught by the same search, or the search proves nothing.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest

from phiguard.crypto.envelope import Sealer
from phiguard.monitor.store import DatasetStore
from phiguard.monitor.workflow import Workflow
from phiguard.system import init_home
from tests.conftest import TEST_PASSPHRASE
from tests.monitor.test_workflow import A, Ev
from tests.test_canary import scan

STAFF_HEADER = (
    "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
    "termination_date,patient_id\n"
)
PATIENT_HEADER = "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"


def canaries() -> dict[str, str]:
    tag = secrets.token_hex(4)
    return {
        "staff_family": f"Qzvstaff{tag}",
        "staff_street": f"{tag} Canary Staff Road",
        "patient_family": f"Wxkpatient{tag}",
        "patient_given": f"Jrngiven{tag}",
        "patient_street": f"{tag} Canary Patient Lane",
        "mrn": f"MRNCANARY{tag}",
        "reason": f"reason-canary-{tag}",
        "evidence": f"evidence-canary-{tag}",
        "note": f"note-canary-{tag}",
        "suppression": f"suppression-canary-{tag}",
    }


def run_flow(home: Path, exports: Path, c: dict[str, str]) -> None:
    exports.mkdir(parents=True, exist_ok=True)
    staff = exports / "staff.csv"
    staff.write_text(
        STAFF_HEADER
        + f"u1,{c['staff_family']},Ann,nurse,ED,{c['staff_street']},12345,2020-01-01,,p9\n"
    )
    patients = exports / "patients.csv"
    patients.write_text(
        PATIENT_HEADER + f"p1,{c['mrn']},{c['patient_family']},{c['patient_given']},1971-03-04,"
        f"{c['patient_street']},12345,true\n"
    )
    system, _token = init_home(home)
    try:
        store = DatasetStore(system.engine, system.keyring, clock=system.clock)
        assert store.ingest(staff, "staff", by="operator/test").rows == 1
        assert store.ingest(patients, "patients", by="operator/test").rows == 1
        flow = Workflow.from_system(system)
        alert = A(
            "a-canary",
            "family",
            "u1",
            ("p1",),
            90.0,
            reason=c["reason"],
            evidence=(Ev("same-surname", c["evidence"], {"surname": c["evidence"]}),),
        )
        flow.save([alert], by="system/monitor")
        flow.note("a-canary", c["note"], by="user/privacy")
        flow.suppress(
            "vip",
            user_id="u1",
            reason=c["suppression"],
            expires_at=system.clock.now() + dt.timedelta(days=1),
            by="user/privacy",
        )
        # Opened in memory they are all there: what is checked is only the disk.
        assert store.frame("patients")["family_name"].to_list() == [c["patient_family"]]
        assert flow.alert("a-canary", by="user/privacy").notes[0].text == c["note"]
    finally:
        system.close()


def test_no_monitoring_canary_reaches_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHIGUARD_PASSPHRASE", TEST_PASSPHRASE)
    c = canaries()
    run_flow(tmp_path / "home", tmp_path / "exports", c)
    assert scan(tmp_path / "home", c) == []


def test_the_scan_finds_them_when_sealing_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHIGUARD_PASSPHRASE", TEST_PASSPHRASE)
    monkeypatch.setattr(Sealer, "seal", lambda self, plaintext, associated: plaintext)
    monkeypatch.setattr(Sealer, "open", lambda self, token, associated, where="": token)
    c = canaries()
    run_flow(tmp_path / "home", tmp_path / "exports", c)
    found = {hit.split(": ")[1] for hit in scan(tmp_path / "home", c)}
    assert found == set(c)
