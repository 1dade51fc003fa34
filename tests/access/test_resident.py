"""Resident access facts (access/resident.py): a server holds them, kept current.

Residency may change how fast a decision is, never what it decides or how soon a
change counts: warmed facts answer exactly as facts loaded on demand, a warmed
decision runs no query, the background pass picks up another process's change
before any decision has to, and a load racing a write in this process never
installs the facts that write replaced.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from phiguard.access.resident import ResidentFacts
from phiguard.access.store_attributes import StoreAttributes
from phiguard.access.wiring import AccessServices, build_access
from phiguard.clock import FixedClock
from phiguard.config import from_dict
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.errors import ConfigError
from phiguard.records.context import Principal
from phiguard.records.vault import Vault
from phiguard.store.engine import make_engine
from phiguard.system import System, open_system
from phiguard.web.app import create_app

from .world import PASSPHRASE, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("resident"), patients=40)
    yield w
    w.vault.engine.dispose()


def _second_process(world: World, **kw: Any) -> tuple[AccessServices, FixedClock]:
    """The same store opened again, as another server process would."""
    assert world.root is not None
    clock = FixedClock(world.clock.now())
    engine = make_engine(str(world.vault.engine.url))
    provider = LocalKeyFile(world.root / "kek.json", PASSPHRASE)
    vault = Vault(engine, Keyring(engine, provider, clock=clock), clock=clock)
    services = build_access(vault)
    if kw:
        services.attributes = StoreAttributes(vault, services.index, clock=clock, **kw)
    return services, clock


def _close(services: AccessServices) -> None:
    services.index.reader.close()
    services.attributes.vault.engine.dispose()


def _count_queries(attrs: StoreAttributes) -> list[str]:
    seen: list[str] = []
    rows = attrs.index.reader.rows

    def counting(sql: str, params: Any) -> Any:
        seen.append(sql.split()[0] + " " + sql.split("FROM")[1].split()[0])
        return rows(sql, params)

    attrs.index.reader.rows = counting  # type: ignore[method-assign]
    return seen


def _pairs(world: World, n: int) -> list[tuple[Principal, str]]:
    h = world.hospital
    rng = random.Random(5)
    today = world.clock.now().date()
    active = [s for s in h.staff if s.active_on(today)]
    pairs = [(e.user_ids[0], e.patient_id) for e in h.encounters]
    pairs += [(rng.choice(active).user_id, p.patient_id) for p in h.patients]
    out = []
    for uid, pid in rng.sample(pairs, min(n, len(pairs))):
        out.append((world.ctx(uid).principal, pid))
    return out


def test_warmed_facts_answer_as_loaded_ones_without_a_query(world: World) -> None:
    warmed, _ = _second_process(world)
    cold, _ = _second_process(world)
    try:
        report = warmed.attributes.warm()
        assert report.patients == len(world.hospital.patients)
        assert report.users == len(world.hospital.staff)
        assert warmed.attributes.resident == len(world.hospital.patients)
        queries = _count_queries(warmed.attributes)
        compared = related = 0
        for who, pid in _pairs(world, 400):
            for purpose in ("TREAT", "HPAYMT"):
                ctx = world.ctx(who.id, purpose=purpose)
                answer = warmed.attributes.about(ctx, pid)
                assert answer == cold.attributes.about(ctx, pid), (who.id, pid, purpose)
                compared += 1
                related += answer.relationship.on_care_team or answer.relationship.recent_encounter
        assert queries == []  # every fact was in memory
        assert compared > 200 and related > 20
    finally:
        _close(warmed)
        _close(cold)


def _recent_encounter(world: World) -> tuple[dict[str, Any], Principal, str]:
    """An encounter moved to yesterday, its first (active) user and its patient."""
    now = world.clock.now()
    enc = next(
        e
        for e in world.hospital.encounters
        if world.hospital.staff_by_user_id[e.user_ids[0]].active_on(now.date())
    )
    stored = world.system.read("Encounter", enc.id).resource
    assert stored is not None
    body = copy.deepcopy(stored)
    body.pop("meta", None)
    body["period"] = {
        "start": (now - dt.timedelta(days=2)).isoformat(),
        "end": (now - dt.timedelta(days=1)).isoformat(),
    }
    body["status"] = "finished"
    return body, world.ctx(enc.user_ids[0]).principal, enc.patient_id


def test_the_background_pass_brings_another_process_change_before_a_decision(
    world: World,
) -> None:
    enc, who, pid = _recent_encounter(world)
    world.system.update("Encounter", enc["id"], enc)
    other, clock = _second_process(world)
    attrs = other.attributes
    try:
        attrs.warm()
        ctx = world.ctx(who.id)
        assert attrs.about(ctx, pid).relationship.recent_encounter

        # Written by "this" process; the other one's cache still holds the old facts.
        enc["status"] = "entered-in-error"
        world.system.update("Encounter", enc["id"], enc)
        assert not world.access.attributes.about(ctx, pid).relationship.recent_encounter
        assert attrs.about(ctx, pid).relationship.recent_encounter

        # The background pass half a ttl later re-checks every tag and reloads the
        # changed row; the decision after it runs no query and sees the change.
        clock.set(clock.now() + attrs.ttl / 2)
        assert attrs.keep_fresh() == len(world.hospital.patients)
        queries = _count_queries(attrs)
        assert not attrs.about(ctx, pid).relationship.recent_encounter
        # Another half ttl on: still fresh, because the pass extended every entry.
        clock.set(clock.now() + attrs.ttl / 2)
        assert not attrs.about(ctx, pid).relationship.recent_encounter
        assert queries == []
    finally:
        enc["status"] = "finished"
        world.system.update("Encounter", enc["id"], enc)
        _close(other)


def test_a_load_racing_a_local_write_does_not_install_what_the_write_replaced(
    world: World,
) -> None:
    enc, who, pid = _recent_encounter(world)
    world.system.update("Encounter", enc["id"], enc)
    attrs = world.access.attributes
    attrs.invalidate()
    ctx = world.ctx(who.id)
    began = attrs._begin_load()
    try:
        before = attrs.index.load([pid])  # read before the write commits...
        enc["status"] = "entered-in-error"
        world.system.update("Encounter", enc["id"], enc)  # ...which drops the patient
        from phiguard.access.store_attributes import _patient

        attrs._install({pid: _patient(before[pid], world.clock.now() + attrs.ttl)}, began)
    finally:
        attrs._end_load()
    try:
        assert not attrs.about(ctx, pid).relationship.recent_encounter
    finally:
        enc["status"] = "finished"
        world.system.update("Encounter", enc["id"], enc)


def test_a_full_cache_lets_the_oldest_go_not_everything(world: World) -> None:
    other, _clock = _second_process(world, max_patients=20)
    attrs = other.attributes
    try:
        assert attrs.warm().patients == 20
        assert attrs.resident == 20
        held = set(attrs._patients)
        outside = next(p.patient_id for p in world.hospital.patients if p.patient_id not in held)
        attrs.patient(outside)
        assert outside in attrs._patients
        assert 18 <= attrs.resident <= 20  # a tenth went, not the whole cache
    finally:
        _close(other)


def test_the_runner_warms_refreshes_and_stops(world: World) -> None:
    other, clock = _second_process(world)
    runner = ResidentFacts(other.attributes, limit=1000, interval=0.05)
    try:
        runner.start()
        assert runner.warmed.wait(30)
        assert other.attributes.resident == len(world.hospital.patients)
        clock.set(clock.now() + other.attributes.ttl)
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        while runner.passes < 2 and dt.datetime.now() < deadline:
            runner.warmed.wait(0.05)
        assert runner.passes >= 2
        # Every entry was re-checked at the new time: fresh for a while yet.
        now = clock.now()
        assert all(s.fresh_until > now for s in other.attributes._patients.values())
    finally:
        runner.stop()
        _close(other)
    assert runner._thread is None


def test_the_server_holds_the_facts_unless_told_not_to(
    home: tuple[System, str], tmp_path: Path
) -> None:
    system, _token = home
    assert system.settings.access_resident_patients == 50_000
    app = create_app(system)
    with TestClient(app):
        runner = app.state.resident_facts
        assert isinstance(runner, ResidentFacts) and runner.warmed.wait(30)
    assert runner._thread is None  # stopped with the server
    system.settings.access_resident_patients = 0
    app = create_app(system)
    with TestClient(app):
        assert app.state.resident_facts is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("access_resident_patients", -1),
        ("access_resident_patients", "many"),
        ("access_resident_patients", True),
        ("access_care_window_days", -1),
        ("access_care_window_days", 400),
        ("access_care_window_days", "30"),
    ],
)
def test_bad_access_settings_are_refused(tmp_path: Path, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        from_dict(tmp_path, {"phiguard": {name: value}})


def test_the_care_window_comes_from_the_settings(
    home: tuple[System, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, _token = home
    assert system.access is not None
    assert system.access.attributes.window == dt.timedelta(days=30)
    root = system.settings.home
    system.close()
    cfg = root / "phiguard.toml"
    cfg.write_text(
        cfg.read_text().replace("access_care_window_days = 30", "access_care_window_days = 7")
    )
    reopened = open_system(root)
    try:
        assert reopened.access is not None
        assert reopened.access.attributes.window == dt.timedelta(days=7)
    finally:
        reopened.close()
