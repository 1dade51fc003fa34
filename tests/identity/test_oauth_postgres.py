"""The authorization server's use-once rules on PostgreSQL, with racing requests."""

from __future__ import annotations

import pytest

from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.identity.passwords import PasswordHashing
from tests.identity.test_oauth import (
    TOKEN_URL,
    approve,
    authorize_params,
    backend_token,
    exchange,
    live,
    login_flow,
    make_world,
    refresh,
)
from tests.identity.test_postgres import race
from tests.support.oauth import BackendKey, pkce_pair

pytestmark = pytest.mark.postgres


def test_code_refresh_token_and_assertion_each_win_once(
    pg_keyring: Keyring, clock: FixedClock, hashing: PasswordHashing
) -> None:
    world = make_world(pg_keyring.engine, pg_keyring, clock, hashing)
    world.user("doc01", ["physician"])
    client = world.public()

    verifier, challenge = pkce_pair()
    code = approve(
        world, "doc01", authorize_params(client.client_id, challenge, "user/*.rs offline_access")
    )
    wins = race(6, lambda: exchange(world, client.client_id, code, verifier).status == 200)
    assert sorted(wins) == [False] * 5 + [True]  # six answers: no request failed

    tokens = login_flow(world, "doc01", client, "user/*.rs offline_access")
    results = race(6, lambda: refresh(world, client.client_id, tokens["refresh_token"]).status)
    assert len(results) == 6 and set(results) <= {200, 400}
    assert results.count(200) <= 1
    # Concurrent use of one refresh token is reuse: the family ends either way.
    assert "oauth-refresh-reuse" in world.actions()

    key = BackendKey.rsa()
    backend = world.backend(key)
    assertion = key.assertion(backend.client_id, TOKEN_URL, clock.now(), jti="same")
    issued = race(6, lambda: backend_token(world, backend.client_id, assertion).status == 200)
    assert sorted(issued) == [False] * 5 + [True]
    assert live(world, login_flow(world, "doc01", client, "user/*.rs")["access_token"])
