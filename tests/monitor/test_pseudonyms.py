"""Other EHRs' patient ids: stored only as keyed pseudonyms, the ids themselves sealed.

An export keyed by MRN is loaded, scanned, reviewed (alert and case opened, a note, a
suppression naming the patient by MRN) and then every clear column, the ledger's
patient index and every byte of the home are searched for the MRNs.  The same flow
with pseudonymisation switched off must be caught by the same checks.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from phiguard.audit.sink import LedgerSink
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import INDEX_COMPARTMENT
from phiguard.errors import RecordsError
from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.monitor import frames
from phiguard.monitor.eval import metrics
from phiguard.monitor.eval.generate import generate
from phiguard.monitor.eval.scenarios import HELD_OUT_PARAMS
from phiguard.monitor.pseudonyms import (
    BUCKETS,
    Pseudonymiser,
    adopt_vault_ids,
    bucket,
    is_pseudonym,
)
from phiguard.monitor.scan import Alert, scan
from phiguard.monitor.store import SOURCE_IDS, DatasetStore
from phiguard.monitor.watch import Watcher
from phiguard.monitor.workflow import Workflow
from phiguard.records.context import system_context
from phiguard.records.maintenance import rotate_compartment
from phiguard.records.vault import Vault
from phiguard.store.tables import (
    monitor_alert_patients,
    monitor_alerts,
    monitor_cases,
    monitor_chunks,
    monitor_loads,
    monitor_suppressions,
)
from phiguard.system import System, init_home
from phiguard.web.app import create_app
from tests.conftest import TEST_PASSPHRASE
from tests.monitor.sources.test_ledger import CHEAP, PASSWORD, Everyone, user
from tests.test_canary import scan as scan_home
from tests.web.console_helpers import add_user, enrol

STAFF_HEADER = (
    "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
    "termination_date,patient_id\n"
)
PATIENT_HEADER = "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"
CARE_HEADER = "patient_id,user_id,department,start,end,kind\n"
ACCESS_HEADER = "timestamp,user_id,patient_id,action,resource_type,workstation\n"


@dataclass(frozen=True)
class Export:
    """One hospital's exports, every patient keyed by a unique MRN."""

    folder: Path
    mrn: dict[str, str]  # role in the story -> MRN

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}.csv"


def write_export(folder: Path) -> Export:
    tag = secrets.token_hex(4).upper()
    mrn = {
        "treated": f"MRN{tag}01",  # u1 treats this patient (explained)
        "own": f"MRN{tag}09",  # u1's own record: opening it is flagged ("self")
        "after": f"MRN{tag}02",  # opened by u2 after termination
    }
    folder.mkdir(parents=True, exist_ok=True)
    export = Export(folder, mrn)
    export.path("staff").write_text(
        STAFF_HEADER
        + f"u1,Ashgrove,Ann,nurse,Cardiology,3 Birch Road,12345,2020-01-01,,{mrn['own']}\n"
        + "u2,Brackley,Bo,clerk,Cardiology,9 Ash Road,12345,2019-01-01,2026-01-01,\n"
    )
    export.path("patients").write_text(
        PATIENT_HEADER
        + f"{mrn['treated']},{mrn['treated']},Cotterill,Cy,1950-01-01,1 Oak Road,12345,false\n"
        + f"{mrn['own']},{mrn['own']},Ashgrove,Ann,1980-01-01,3 Birch Road,12345,false\n"
        + f"{mrn['after']},{mrn['after']},Dunmore,Di,1960-01-01,2 Oak Road,12345,false\n"
    )
    export.path("care").write_text(
        CARE_HEADER
        + f"{mrn['treated']},u1,Cardiology,2026-01-04T08:00:00Z,2026-01-06T08:00:00Z,encounter\n"
    )
    export.path("access").write_text(
        ACCESS_HEADER
        + f"2026-01-05T09:00:00Z,u1,{mrn['treated']},view,Patient,ws1\n"
        + f"2026-01-05T09:30:00Z,u1,{mrn['own']},view,Patient,ws1\n"
        + f"2026-01-05T10:00:00Z,u2,{mrn['after']},view,Patient,ws2\n"
    )
    return export


def store_of(system: System) -> DatasetStore:
    return DatasetStore(
        system.engine, system.keyring, tenant=system.settings.tenant, clock=system.clock
    )


def ingest_all(system: System, export: Export) -> DatasetStore:
    store = store_of(system)
    for kind in ("staff", "patients", "care", "access"):
        assert store.ingest(export.path(kind), kind, by="operator/test").rows > 0
    return store


def scan_and_save(system: System, store: DatasetStore) -> tuple[Workflow, list[str], int]:
    flow = Workflow.from_system(system)
    result = scan(store.dataset())
    saved = flow.save(result.alerts, result.cases, by="system/test")
    return flow, saved.new_alerts, saved.known_alerts


@pytest.fixture
def world(home: tuple[System, str], tmp_path: Path) -> Iterator[tuple[System, Export]]:
    system, _ = home
    yield system, write_export(tmp_path / "exports")


def test_pseudonyms_are_stable_and_consistent_across_kinds(
    world: tuple[System, Export], tmp_path: Path
) -> None:
    system, export = world
    store = ingest_all(system, export)
    name = store.pseudonymiser().pseudonym
    ds = store.dataset()
    kinds = ("access", "staff", "patients", "care")
    ids = {kind: getattr(ds, kind)["patient_id"].drop_nulls().to_list() for kind in kinds}
    assert all(is_pseudonym(p) for kind in kinds for p in ids[kind])
    # The same MRN has the same pseudonym in every kind, so the frames still join.
    assert ids["staff"] == [name(export.mrn["own"])]
    assert sorted(ids["patients"]) == sorted(name(m) for m in export.mrn.values())
    assert ids["care"] == [name(export.mrn["treated"])]
    assert ids["access"] == [name(export.mrn[k]) for k in ("treated", "own", "after")]

    flow, first, _ = scan_and_save(system, store)
    alerts = {flow.alert_row(a).detector: flow.alert_row(a) for a in first}
    assert alerts["self"].patient_ids == (name(export.mrn["own"]),)  # staff joins access
    assert alerts["terminated-user"].patient_ids == (name(export.mrn["after"]),)

    # Another file with the same patients (other bytes: rows reordered) and a fresh
    # store (another process) give the same pseudonyms: the scan finds nothing new.
    lines = export.path("patients").read_text().splitlines(keepends=True)
    reordered = tmp_path / "patients-again.csv"
    reordered.write_text(lines[0] + "".join(reversed(lines[1:])))
    again = store_of(system)
    assert again.ingest(reordered, "patients", by="operator/test").replaced == 1
    assert sorted(again.frame("patients")["patient_id"].to_list()) == sorted(ids["patients"])
    _, new, known = scan_and_save(system, again)
    assert new == [] and known == len(first)


def test_clear_columns_and_the_ledger_hold_no_source_id(world: tuple[System, Export]) -> None:
    system, export = world
    found = review_and_search(system, export)
    assert found == {"clear columns": [], "ledger index": [], "ledger by pseudonym": True}
    # Nor anywhere else: every byte of the home (databases, WAL, ledger, keys).
    assert scan_home(system.settings.home, export.mrn) == []


def test_the_checks_catch_a_build_that_stores_source_ids(
    world: tuple[System, Export], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pseudonymisation switched off (at ingest, and for an id typed into a rule): the
    same checks must find the MRNs."""
    system, export = world
    monkeypatch.setattr(Pseudonymiser, "frame", lambda self, kind, frame: (frame, {}))
    monkeypatch.setattr(Pseudonymiser, "canonical", lambda self, patient_id: patient_id)
    found = review_and_search(system, export, expect_pseudonyms=False)
    assert set(found["clear columns"]) >= {
        "monitor_alerts",
        "monitor_alert_patients",
        "monitor_cases",
        "monitor_suppressions",
    }
    assert found["ledger index"] != []
    hits = scan_home(system.settings.home, export.mrn)
    assert {"phiguard.db", "audit.db"} <= {h.split(": ")[0].removesuffix("-wal") for h in hits}


def review_and_search(
    system: System, export: Export, *, expect_pseudonyms: bool = True
) -> dict[str, object]:
    """Ingest, scan, open, note and suppress by MRN; where the MRNs are in the clear."""
    store = ingest_all(system, export)
    flow, new, _ = scan_and_save(system, store)
    assert new
    for alert_id in new:
        flow.alert(alert_id, by="user/privacy")
    for case in flow.cases(status="all"):
        flow.case(case.case_id, by="user/privacy")
    flow.note(new[0], "HR confirmed the relationship", by="user/privacy")
    rule, _taken = flow.suppress(
        "terminated-user",
        patient_id=export.mrn["after"],
        reason="leaver's last day",
        expires_at=system.clock.now() + dt.timedelta(days=3),
        by="user/privacy",
    )
    mrns = set(export.mrn.values())
    clear: list[str] = []
    with system.engine.connect() as conn:
        stored = {
            "monitor_alerts": [
                p
                for r in conn.execute(select(monitor_alerts.c.patient_ids))
                for p in json.loads(r.patient_ids)
            ],
            "monitor_alert_patients": list(
                conn.execute(select(monitor_alert_patients.c.patient_id)).scalars()
            ),
            "monitor_cases": [
                p
                for r in conn.execute(select(monitor_cases.c.patient_ids))
                for p in json.loads(r.patient_ids)
            ],
            "monitor_suppressions": list(
                conn.execute(select(monitor_suppressions.c.patient_id)).scalars()
            ),
        }
    for table, values in stored.items():
        assert values, table  # each clear column was written
        if mrns & set(values):
            clear.append(table)
    index = [m for m in mrns if system.ledger.search(patient=m, count=5)[0]]
    name = store.pseudonymiser().pseudonym
    viewed = system.ledger.search(patient=name(export.mrn["after"]), count=50)[1]
    if expect_pseudonyms:
        assert rule.patient_id == name(export.mrn["after"])
    return {
        "clear columns": clear,
        "ledger index": index,
        "ledger by pseudonym": any(e["action"] == "monitor-alert-view" for e in viewed),
    }


def test_the_officer_sees_and_finds_the_source_id(world: tuple[System, Export]) -> None:
    system, export = world
    store = ingest_all(system, export)
    flow, new, _ = scan_and_save(system, store)
    name = store.pseudonymiser().pseudonym
    after = name(export.mrn["after"])
    [alert_id] = [a for a in new if flow.alert_row(a).detector == "terminated-user"]
    detail = flow.alert(alert_id, by="user/privacy")
    assert detail.source_ids == {after: export.mrn["after"]}
    [case] = [c for c in flow.cases(status="all") if c.user_id == "u2"]
    assert flow.case(case.case_id, by="user/privacy").source_ids == {after: export.mrn["after"]}
    # The opening is audited under the pseudonym, with the count of ids shown.
    _, entries = system.ledger.search(patient=after, count=50)
    views = [e for e in entries if e["action"] == "monitor-alert-view"]
    assert views and views[0]["detail"]["source_ids"] == 1
    # Search by the source id, by the pseudonym; an unknown id finds nothing.
    for typed in (export.mrn["after"], after, f" {export.mrn['after']} "):
        assert [a.alert_id for a in flow.queue(status="all", patient_id=typed)] == [alert_id]
    assert flow.queue(status="all", patient_id="MRN-not-loaded") == []

    add_user(system, "privacy01", ["privacy_officer"])
    with TestClient(create_app(system), follow_redirects=False) as officer:
        enrol(officer, "privacy01")
        page = officer.get(f"/monitor/alerts/{alert_id}")
        assert page.status_code == 200
        patients = page.text.split('id="patients"')[1].split("</td>")[0]
        assert after in patients
        assert f'source id <span class="source-id">{export.mrn["after"]}</span>' in patients
        drill = officer.get("/monitor/patients", params={"patient": export.mrn["after"]})
        assert f"/monitor/alerts/{alert_id}" in drill.text and after in drill.text
        assert "access-report?patient" not in drill.text  # a pseudonym is no vault patient
        queue = officer.get("/monitor")
        assert export.mrn["after"] not in queue.text and after[:8] in queue.text


def test_a_wrong_key_gives_other_pseudonyms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHIGUARD_PASSPHRASE", TEST_PASSPHRASE)
    export = write_export(tmp_path / "exports")
    mrn = export.mrn["after"]
    first, _ = init_home(tmp_path / "one")
    other, _ = init_home(tmp_path / "two")
    try:
        ours, theirs = store_of(first), store_of(other)
        for store in (ours, theirs):
            store.ingest(export.path("access"), "access", by="operator/test")
        mine = ours.frame("access")["patient_id"].to_list()
        foreign = theirs.frame("access")["patient_id"].to_list()
        assert set(mine).isdisjoint(foreign)
        name = ours.pseudonymiser().pseudonym
        assert ours.source_ids(mine) == {name(m): m for m in export.mrn.values()}
        assert theirs.source_ids(mine) == {}  # another key's pseudonyms resolve to nothing
        # The tenant is part of the input, and any other key gives other pseudonyms.
        key = secrets.token_bytes(32)
        assert Pseudonymiser(key, "a").pseudonym(mrn) != Pseudonymiser(key, "b").pseudonym(mrn)
        wrong = Pseudonymiser(secrets.token_bytes(32))
        assert Pseudonymiser(key).pseudonym(mrn) != wrong.pseudonym(mrn)
        assert Pseudonymiser(key).pseudonym(mrn) == Pseudonymiser(key).pseudonym(mrn)

        # Key rotation leaves them as they are: KEK rotation and rewrap, data-key
        # rotation of every record compartment; the index key itself cannot rotate.
        before = ours.pseudonymiser().pseudonym(mrn)
        first.provider.rotate()
        first.keyring.rewrap()
        for compartment in list(first.keyring.iter_compartments()):
            if not compartment.startswith("__"):
                rotate_compartment(first.vault, compartment)
        with pytest.raises(RecordsError):
            rotate_compartment(first.vault, INDEX_COMPARTMENT)
        first.keyring.forget()
        assert store_of(first).pseudonymiser().pseudonym(mrn) == before
    finally:
        first.close()
        other.close()


def test_the_source_id_map_is_deduplicated_and_split_by_bucket(
    home: tuple[System, str], tmp_path: Path
) -> None:
    system, _ = home
    store = store_of(system)

    def access(path: Path, ids: list[str]) -> Path:
        rows = [
            f"2026-01-05T09:{i % 60:02d}:00Z,u1,{p},view,Patient,ws1\n" for i, p in enumerate(ids)
        ]
        path.write_text(ACCESS_HEADER + "".join(rows))
        return path

    first = [f"EXT-{i:05d}" for i in range(300)]
    store.ingest(access(tmp_path / "a.csv", first), "access", by="operator/test")
    more = [*first[:100], "EXT-new-1", "EXT-new-2"]
    store.ingest(access(tmp_path / "b.csv", more), "access", by="operator/test")
    maps = store.loads(SOURCE_IDS)
    assert sorted(m.rows for m in maps) == [2, 300]  # only ids never seen are added
    assert all(info.kind != SOURCE_IDS for info in store.loads())  # internal, not listed
    with system.engine.connect() as conn:
        chunks = conn.execute(
            select(monitor_chunks.c.load_id, monitor_chunks.c.seq, monitor_chunks.c.rows)
            .join(monitor_loads, monitor_loads.c.load_id == monitor_chunks.c.load_id)
            .where(monitor_loads.c.kind == SOURCE_IDS)
        ).all()
    big = [c for c in chunks if c.load_id == next(m.load_id for m in maps if m.rows == 300)]
    assert 20 < len(big) <= BUCKETS and sum(c.rows for c in big) == 300
    name = store.pseudonymiser().pseudonym
    pseudonyms = {name(s): s for s in [*first, "EXT-new-1", "EXT-new-2"]}
    assert store.source_ids([*pseudonyms, "not-a-pseudonym"]) == pseudonyms
    assert {bucket(p) for p in pseudonyms} == {c.seq for c in big} | {
        bucket(name("EXT-new-1")),
        bucket(name("EXT-new-2")),
    }


def test_a_roster_naming_phiguard_patients_joins_the_ledger() -> None:
    """A roster supplying staff members' own vault records (for ``self`` on the
    ledger) was pseudonymised at ingest; merged with the ledger, the ids come back."""
    pseudonymiser = Pseudonymiser(secrets.token_bytes(32))
    vault_id = "2f9c1c8e-1b7a-4d7e-9c55-0a4d1c2b3e4f"
    staff = pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "family_name": ["A", "B"],
            "given_name": ["a", "b"],
            "role": ["nurse", "nurse"],
            "department": ["ED", "ED"],
            "address": ["1 X", "2 Y"],
            "postal_code": ["1", "2"],
            "hire_date": [dt.date(2020, 1, 1)] * 2,
            "termination_date": [None, None],
            "patient_id": [vault_id, "MRN-elsewhere"],
        },
        schema=frames.STAFF,
    )
    care = pl.DataFrame(
        {
            "patient_id": [vault_id],
            "user_id": ["u1"],
            "department": [None],
            "start": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)],
            "end": [None],
            "kind": ["encounter"],
        },
        schema=frames.CARE,
    )
    stored = pseudonymiser.dataset(frames.Dataset.of(staff=staff, care=care))
    assert all(is_pseudonym(p) for p in stored.staff["patient_id"].to_list())
    joined = adopt_vault_ids(stored, [vault_id, "another-vault-id"], pseudonymiser)
    assert joined.staff["patient_id"].to_list() == [
        vault_id,
        pseudonymiser.pseudonym("MRN-elsewhere"),
    ]
    # Another system's care rows keep their pseudonyms, whatever ids it used.
    assert joined.care["patient_id"].to_list() == [pseudonymiser.pseudonym(vault_id)]


def test_detection_does_not_change_with_pseudonyms() -> None:
    """The evaluation scans its synthetic frames as generated (synthetic ids are no
    PHI and never stored); pseudonymised as the ingest would, every alert, case and
    figure is the same but for the patients' names for them."""
    traffic = generate(metrics.HELD_OUT_SEED, patients=5000, days=90, params=HELD_OUT_PARAMS)
    plain = scan(traffic.dataset, since=traffic.since)
    pseudonymiser = Pseudonymiser(secrets.token_bytes(32))
    hidden = pseudonymiser.dataset(traffic.dataset)
    distinct = traffic.dataset.access["patient_id"].n_unique()
    assert hidden.access["patient_id"].n_unique() == distinct
    masked = scan(hidden, since=traffic.since)

    def shape(a: Alert, rename: dict[str, str] | None = None) -> str:
        patients = sorted((rename or {}).get(p, p) for p in a.patient_ids)
        return str((a.detector, a.user_id, a.score, a.first_event_at, a.access_rows, patients))

    rename = {p: pseudonymiser.pseudonym(p) for a in plain.alerts for p in a.patient_ids}
    assert plain.alerts
    assert sorted(shape(a, rename) for a in plain.alerts) == sorted(map(shape, masked.alerts))
    # Cases tied on score may swap places: their ids hash the patients' names for them.
    assert sorted((c.user_id, c.score, c.opened_at) for c in plain.cases) == sorted(
        (c.user_id, c.score, c.opened_at) for c in masked.cases
    )
    before = metrics.evaluate(traffic, plain)
    after = metrics.evaluate(dataclasses.replace(traffic, dataset=hidden), masked)
    assert after.as_dict() == before.as_dict() and after.met


def test_the_watcher_joins_a_roster_naming_staff_members_vault_records(
    home: tuple[System, str], tmp_path: Path
) -> None:
    """The documented use of a roster with the ledger: the ``self`` detector."""
    system, _ = home
    repo = system.vault.repository(system_context())
    own = repo.create({"resourceType": "Patient", "name": [{"family": "Ashgrove"}]}).id
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    accounts.add("u00010", "Ann Ashgrove", "ann@hospital.example", ["nurse"], PASSWORD, by="op/t")
    roster = tmp_path / "staff.csv"
    roster.write_text(
        STAFF_HEADER + f"u00010,Ashgrove,Ann,nurse,Cardiology,3 Birch Road,1,2020-01-01,,{own}\n"
    )
    store = store_of(system)
    store.ingest(roster, "staff", by="operator/test")
    assert store.frame("staff")["patient_id"].to_list() == [store.pseudonymiser().pseudonym(own)]
    watcher = Watcher(system, poll=0.1)
    users = Vault(system.engine, system.keyring, policy=Everyone(), audit=LedgerSink(system.ledger))
    users.repository(user("u00010")).read("Patient", own)
    saved = watcher.step()
    assert saved is not None
    rows = [Workflow.from_system(system).alert_row(a) for a in saved.new_alerts]
    assert [(r.detector, r.patient_ids) for r in rows if r.detector == "self"] == [("self", (own,))]


@pytest.mark.parametrize("source_id", ["MRN0042", "", "Müller-ß 7", "x" * 300])
def test_the_pseudonym_is_the_documented_keyed_hash(source_id: str) -> None:
    """ "x" + base32(HMAC-SHA256(key, tenant | source id))[:26], lower case."""
    key = secrets.token_bytes(32)
    mac = hmac.digest(key, aad("hospital-a", source_id), "sha256")
    expected = "x" + base64.b32encode(mac).decode("ascii")[:26].lower()
    pseudonymiser = Pseudonymiser(key, "hospital-a")
    assert pseudonymiser.pseudonym(source_id) == expected and is_pseudonym(expected)
    # A frame gives the same, and hands over each pair only the first time it meets it.
    frame = pl.DataFrame(
        {"patient_id": [source_id, None, source_id]}, schema={"patient_id": pl.String()}
    )
    first, pairs = pseudonymiser.frame("access", frame)
    assert first["patient_id"].to_list() == [expected, None, expected]
    assert pairs == {expected: source_id}
    again, pairs = pseudonymiser.frame("care", frame)
    assert again["patient_id"].to_list() == [expected, None, expected] and pairs == {}
    untouched, pairs = pseudonymiser.frame("auth", frame)  # log-ins name no patient
    assert untouched is frame and pairs == {}
