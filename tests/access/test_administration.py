"""Policy administration: only a re-authenticated security administrator changes the
running set; a set that does not validate is refused and the running one stays; each
change is a stored generation and a ledger event; running engines pick it up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phiguard.access.administration import (
    PolicyAdminError,
    PolicyRefresher,
    PolicyStore,
    bundle_files,
    with_file,
)
from phiguard.access.engine import PolicyBundle, PolicyEngine
from phiguard.access.facts import Facts, PatientFacts
from phiguard.errors import PolicyLoadError
from phiguard.records.hooks import AccessRequest

from .world import World, build_world

LOOSE = """
@id("reference-data")
@description("Any workforce user may read and search shared reference data (changed).")
permit (
  principal, action in [Action::"read", Action::"search"], resource in ResourceClass::"reference"
);

@id("registration-demographics")
@description("Registration reads demographics only.")
permit (
  principal in Role::"registration",
  action == Action::"read",
  resource in ResourceClass::"demographic"
);

@id("billing-payment")
@description("Billing.")
permit (
  principal in Role::"billing",
  action in [Action::"read", Action::"search"],
  resource in ResourceClass::"financial"
)
when { context.purpose == "HPAYMT" };

@id("him-operations")
@description("HIM.")
permit (principal in Role::"him", action, resource) when { context.purpose == "HOPERAT" };
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("admin"), patients=5)
    w.add_user("sec1", ["security_admin"])
    w.add_user("nurse1", ["nurse"])
    yield w
    w.vault.engine.dispose()


def _registration_creates(engine: PolicyEngine) -> bool:
    facts = Facts("create", "Patient", frozenset({"registration"}), patient=PatientFacts())
    return engine.decide(facts).allowed


def test_only_a_reauthenticated_security_admin_changes_policies(world: World) -> None:
    store: PolicyStore = world.access.policies
    candidate = with_file(store.running_bundle(), "business.cedar", LOOSE)
    with pytest.raises(PolicyAdminError, match="security administrators"):
        store.install(candidate, by="nurse1", reauthenticated=True)
    with pytest.raises(PolicyAdminError, match="re-authenticate"):
        store.install(candidate, by="sec1", reauthenticated=False)
    assert store.generation() == 0


def test_a_bad_set_is_refused_and_the_running_set_stays(world: World) -> None:
    store: PolicyStore = world.access.policies
    events = len(world.audit.events)
    typo = with_file(
        store.running_bundle(),
        "guards.cedar",
        'permit (principal, action, resource) when { context.purpos == "X" };',
    )
    with pytest.raises(PolicyLoadError):
        store.install(typo, by="sec1", reauthenticated=True)
    assert store.generation() == 0
    refused = world.audit.events[events:]
    assert [(e.action, e.outcome) for e in refused] == [("policy-change", "denied")]
    assert _registration_creates(world.access.engine)


def test_an_installed_set_is_stored_recorded_and_picked_up(world: World) -> None:
    store: PolicyStore = world.access.policies
    before = store.running_bundle()
    candidate = with_file(before, "business.cedar", LOOSE)
    other_engine = PolicyEngine()  # another server process, still on the shipped set
    refresher = PolicyRefresher(store, other_engine, loaded=store.generation())
    assert not refresher()
    installed = store.install(
        candidate, by="sec1", reauthenticated=True, comment="narrow registration"
    )
    assert installed.generation == 1 and store.history()[0].installed_by == "sec1"
    assert bundle_files(store.running_bundle())["business.cedar"] == LOOSE
    event = world.audit.events[-1]
    assert (event.action, event.outcome, event.principal) == (
        "policy-change",
        "success",
        "user/sec1",
    )
    assert set(event.detail["changed"]) == {"business.cedar"}
    change = event.detail["changed"]["business.cedar"]
    assert change["before"] != change["after"]
    assert _registration_creates(other_engine)
    assert refresher() and other_engine.generation == 2
    assert not _registration_creates(other_engine)
    # The system's own policy refreshes itself from decide() (every few seconds).
    policy = world.access.policy
    policy._next_refresh = 0.0  # do not wait for the interval
    policy.decide(world.ctx("nurse1"), AccessRequest("search", "Practitioner"))
    assert not _registration_creates(world.access.engine)
    with pytest.raises(PolicyAdminError, match="same as the running one"):
        store.install(candidate, by="sec1", reauthenticated=True)
    # Back to the shipped set: a new generation, not a rollback of history.
    restored = store.install(PolicyBundle.from_directory(), by="sec1", reauthenticated=True)
    assert restored.generation == 2
