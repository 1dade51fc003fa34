"""Console log-in throughput: bounded by argon2id by design.

A password log-in (``Accounts.authenticate``: throttle look-up, argon2id verification,
success bookkeeping, the ``login-success`` entry committed to the ledger) and a full
two-factor log-in (password, then a TOTP code through ``SecondFactor``), sequentially
and from two threads (the machine's two cores).  Baseline in the same run: one
argon2id verification alone with the same parameters, the floor no log-in can go
below.  The parameters are printed: they are the price of each guess to an attacker
who steals the hashes, which is the point.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pyotp

from phiguard.identity.accounts import Accounts
from phiguard.identity.mfa import SecondFactor
from phiguard.identity.passwords import PasswordHashing, PasswordPolicy
from phiguard.identity.recovery import RecoveryCodes
from phiguard.identity.throttle import LoginThrottle, ThrottlePolicy
from phiguard.identity.totp import TotpStore

from .common import Result, median, open_store, table

DEFAULT_LOGINS = 40
QUICK_LOGINS = 12
PASSWORD = "violet-Ferry-orbit-57"


class _Clock:
    """Real time, moved forward 30 s per call so each TOTP code is a fresh step."""

    def __init__(self) -> None:
        self._offset = dt.timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self._offset

    def skip_step(self) -> None:
        with self._lock:
            self._offset += dt.timedelta(seconds=30)


def _rate(fn: object, n: int, threads: int) -> float:
    per = n // threads
    workers = [
        threading.Thread(target=lambda i=i: [fn(i, k) for k in range(per)])  # type: ignore[operator]
        for i in range(threads)
    ]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - t0)


def run(*, logins: int, rounds: int, workdir: Path) -> Result:
    hashing = PasswordHashing()
    params = hashing.parameters
    res = Result(
        "login",
        f"python -m bench login --logins {logins}",
        {
            "argon2id": f"t={params.time_cost}, m={params.memory_cost} KiB, p={params.parallelism}",
            "logins per round": logins,
            "rounds": rounds,
            "audit": "ledger (each log-in waits for its entry)",
        },
    )
    store = open_store(workdir / "login", "encrypted", audit="ledger")
    clock = _Clock()
    audit = store.vault.audit
    engine, keyring = store.engine, store.vault.keyring
    accounts = Accounts(
        engine,
        clock,  # type: ignore[arg-type]
        audit,
        hashing=hashing,
        policy=PasswordPolicy(),
        throttle=LoginThrottle(
            engine,
            clock,  # type: ignore[arg-type]
            audit,
            ThrottlePolicy(address_burst=1_000_000),
        ),
        totp=TotpStore(engine, keyring, clock),  # type: ignore[arg-type]
        recovery=RecoveryCodes(engine, clock),  # type: ignore[arg-type]
        tenant=keyring.tenant,
    )
    mfa = SecondFactor(accounts)
    secrets: dict[str, str] = {}
    for i in range(2):
        user = f"bench{i:02d}"
        accounts.add(user, "Bench", f"{user}@example.org", ["nurse"], PASSWORD, by="user/bench")
        secrets[user] = accounts.totp.enrol(user).secret
        accounts.totp.confirm(user, pyotp.TOTP(secrets[user]).at(clock.now()))

    def password_only(i: int, _k: int) -> None:
        accounts.authenticate(f"bench{i:02d}", PASSWORD, f"10.0.0.{i + 1}")

    def two_factor(i: int, _k: int) -> None:
        user = f"bench{i:02d}"
        accounts.authenticate(user, PASSWORD, f"10.0.1.{i + 1}")
        clock.skip_step()
        code = pyotp.TOTP(secrets[user]).at(clock.now())
        if not mfa.verify(user, code, f"10.0.1.{i + 1}").accepted:
            raise RuntimeError("the benchmark's TOTP code was refused")

    def hash_only(_i: int, _k: int) -> None:
        hashing.verify_decoy(PASSWORD)

    rows = []
    for label, fn in (
        ("argon2id verification alone (baseline)", hash_only),
        ("password log-in", password_only),
        ("password + TOTP log-in", two_factor),
    ):
        for threads in (1, 2):
            rates = [_rate(fn, logins, threads) for _ in range(rounds)]
            rows.append((label, threads, f"{median(rates):.1f}", f"{1000 / median(rates):.0f}"))
    store.close()
    res.tables.append(
        (
            "log-ins per second (median of rounds)",
            table(["what", "threads", "per second", "ms each (wall / threads)"], rows),
        )
    )
    base = float(rows[1][2])
    full = float(rows[5][2])
    res.figures.update({"hash_2t_per_s": base, "login_2fa_2t_per_s": full})
    res.tables.append(
        (
            "two-factor log-in against bare hashing (2 threads)",
            f"{full:.1f}/s vs {base:.1f}/s: {full / base:.0%} of the argon2id floor",
        )
    )
    return res
