"""WebAuthn challenges in the database: single use, expiring, shared across processes."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from phiguard.clock import FixedClock
from phiguard.identity.challenges import ChallengeStore
from phiguard.store import migrate
from phiguard.store.engine import make_engine
from tests.support.postgres import fresh_database, shared_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FixedClock
) -> Iterator[tuple[ChallengeStore, ChallengeStore]]:
    """Two stores on one database, as two server processes would have."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'phiguard.db'}"
        else:
            server = stack.enter_context(shared_postgres())
            url = stack.enter_context(fresh_database(server, "challenges"))
        engines = [make_engine(url), make_engine(url)]
        for engine in engines:
            stack.callback(engine.dispose)
        migrate.upgrade(engines[0])
        yield ChallengeStore(engines[0], clock), ChallengeStore(engines[1], clock)


def test_a_challenge_drawn_in_one_process_is_answered_in_another_once(
    stores: tuple[ChallengeStore, ChallengeStore],
) -> None:
    one, two = stores
    one.put("handle-a", "authenticate", b"c" * 32)
    assert two.take("handle-a", "register") is None  # another ceremony
    assert two.take("handle-b", "authenticate") is None  # another session
    assert two.take("handle-a", "authenticate") == b"c" * 32
    assert one.take("handle-a", "authenticate") is None  # used once


def test_a_new_ceremony_replaces_the_pending_one_and_old_ones_expire(
    stores: tuple[ChallengeStore, ChallengeStore], clock: FixedClock
) -> None:
    one, two = stores
    one.put("h", "register", b"first")
    one.put("h", "register", b"second")
    assert two.take("h", "register") == b"second"
    one.put("h", "register", b"late")
    clock.advance(seconds=121)
    assert two.take("h", "register") is None
    with pytest.raises(ValueError, match="ceremony"):
        one.put("h", "sign", b"x")


def test_of_many_concurrent_answers_exactly_one_gets_the_challenge(
    stores: tuple[ChallengeStore, ChallengeStore],
) -> None:
    one, two = stores
    one.put("race", "authenticate", b"only-once")
    got: list[bytes | None] = []
    lock = threading.Lock()

    def answer(store: ChallengeStore) -> None:
        value = store.take("race", "authenticate")
        with lock:
            got.append(value)

    threads = [threading.Thread(target=answer, args=(s,)) for s in (one, two) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=lambda v: v is None) == [b"only-once"] + [None] * 7
