"""Measured: a refusal takes the same time whether or not the account exists.

With the production argon2id parameters, the fastest time of a wrong password for a
real account, for an unknown id, and for a real account that is backing off after
failures must agree within a margin far below one argon2 verification -- the
difference an attacker would need to see.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.errors import AuthenticationError
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.throttle import ThrottlePolicy
from phiguard.records.vault import Vault
from tests.identity.test_accounts import OTHER, PASSWORD, make_accounts

ROUNDS = 9


def _time_ms(attempt: Callable[[], object], *, refused: bool = True) -> float:
    start = time.perf_counter()
    if refused:
        with pytest.raises(AuthenticationError):
            attempt()
    else:
        attempt()
    return (time.perf_counter() - start) * 1000


def test_refusals_take_the_same_time_for_known_unknown_and_throttled_ids(
    vault: Vault, clock: FixedClock
) -> None:
    engine: Engine = vault.engine
    keyring: Keyring = vault.keyring
    hashing = PasswordHashing()  # production parameters: the real cost being hidden
    policy = ThrottlePolicy(free_failures=2, lock_after=100, address_burst=10_000)
    accounts = make_accounts(engine, keyring, clock, ListAuditSink(), hashing, policy)
    for user in ("known01", "backoff01"):
        accounts.add(user, "T", f"{user}@example.org", ["nurse"], PASSWORD, by="user/admin")
    for _ in range(3):  # backoff01 is now backing off: its attempts are refused early
        with pytest.raises(AuthenticationError):
            accounts.authenticate("backoff01", OTHER, "192.0.2.1")

    # Interleaved rounds, so that load from other processes falls on every kind
    # alike; the fastest of each kind is its intrinsic cost.
    kinds: dict[str, Callable[[], object]] = {
        "known": lambda: accounts.authenticate("known01", OTHER, "192.0.2.2"),
        "unknown": lambda: accounts.authenticate("ghost01", OTHER, "192.0.2.3"),
        "throttled": lambda: accounts.authenticate("backoff01", OTHER, "192.0.2.4"),
    }
    samples: dict[str, list[float]] = {k: [] for k in (*kinds, "hash")}
    for _ in range(ROUNDS):
        samples["hash"].append(_time_ms(lambda: hashing.verify_decoy(OTHER), refused=False))
        for name, attempt in kinds.items():
            samples[name].append(_time_ms(attempt))
    best = {name: min(values) for name, values in samples.items()}
    one_hash = best.pop("hash")
    known, unknown, throttled = best["known"], best["unknown"], best["throttled"]
    spread = max(known, unknown, throttled) - min(known, unknown, throttled)
    print(f"argon2 {one_hash:.1f} ms; known {known:.1f}, unknown {unknown:.1f}, ", end="")
    print(f"throttled {throttled:.1f}")
    assert spread < one_hash * 0.5, (known, unknown, throttled, one_hash)
