"""Token verification and the cost of authentication on a FHIR read.

Three questions, each against a baseline measured in the same run:

1. ``TokenService.verify`` in-process (target: p50 <= 50 us), against an HMAC-SHA256
   alone over the same signing input (the irreducible cryptographic cost) and the
   operator-token look-up (SHA-256 + one primary-key SELECT).
2. ``verify`` + ``live_principal`` (one SQLite round trip: revoked id, account
   status, revocation mark), which is what every FHIR request pays.
3. A FHIR read (``GET /fhir/Patient/{id}``) through the whole ASGI app in process
   (httpx ``ASGITransport``: middleware, routing, repository, decryption, audit
   ledger), authenticated by an OAuth bearer token, against the same read with an
   identity the app takes as already verified.  In process rather than over a
   socket, so that the ratio shows the authentication and not the loopback stack;
   requests alternate in blocks so load from other processes falls on both alike.

The home is a production one (``init_home``: key file, SQLite in WAL, the audit
ledger); only the access policy is replaced by one that allows the benchmark user,
because a read refused by the policy would measure a refusal, not a read.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from argon2 import Parameters, Type

from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.tokens import TokenService
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest, Decision
from phiguard.system import authenticate_api_token, init_home, open_system
from phiguard.web.app import create_app

from .common import Result, median, percentile, spread, table

DEFAULT_N = 20_000
QUICK_N = 3_000
DEFAULT_READS = 2_000
QUICK_READS = 300
BLOCK = 50
PASSPHRASE = "benchmark passphrase, not a secret"
# Account creation only; the password is never checked here.
CHEAP = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=64, parallelism=1
)


class AllowBenchUser:
    """Allows every read (benchmark only): the read path itself is what is measured."""

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        return Decision(True, ("benchmark",))

    def per_resource(self, ctx: AccessContext) -> bool:
        return False


def _per_call_us(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out


def run(*, n: int, reads: int, rounds: int, workdir: Path) -> Result:
    res = Result(
        "tokens",
        f"python -m bench tokens --n {n} --reads {reads} --rounds {rounds}",
        {"verifications per round": n, "FHIR reads per round": reads, "rounds": rounds},
    )
    os.environ["PHIGUARD_PASSPHRASE"] = PASSPHRASE
    system, operator_token = init_home(workdir / "home")
    system.close()
    system = open_system(workdir / "home", policy=AllowBenchUser())
    try:
        accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
        accounts.add(
            "bench01", "Bench User", "bench@example.org", ["physician"],
            "violet-Ferry-orbit-57", by="operator/bench",
        )  # fmt: skip
        tokens = TokenService.from_system(system)
        issued = tokens.issue(
            kind="user", subject="bench01", client_id="bench", scopes=["user/*.rs"]
        )
        token = issued.token
        signing_input = token.rsplit(".", 1)[0].encode()
        key = hashlib.sha256(b"bench key").digest()
        expected = hmac.new(key, signing_input, hashlib.sha256).digest()

        def hmac_alone() -> bool:
            mac = hmac.new(key, signing_input, hashlib.sha256).digest()
            return hmac.compare_digest(mac, expected)

        holder: Any = SimpleNamespace(engine=system.engine)

        def operator_lookup() -> object:
            return authenticate_api_token(holder, operator_token)

        def verify() -> object:
            return tokens.verify(token)

        def verify_live() -> object:
            return tokens.live_principal(tokens.verify(token))

        variants: dict[str, Callable[[], object]] = {
            "HMAC-SHA256 alone (baseline)": hmac_alone,
            "operator token: SHA-256 + SELECT (baseline)": operator_lookup,
            "TokenService.verify": verify,
            "verify + live_principal (SQLite)": verify_live,
        }
        for fn in variants.values():  # warm caches (key derivation, statements)
            for _ in range(200):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in variants}
        p50s: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                values = _per_call_us(fn, n)
                samples[name] += values
                p50s[name].append(percentile(values, 50))
        rows = [
            (
                name,
                f"{percentile(samples[name], 50):.1f}",
                f"{percentile(samples[name], 99):.1f}",
                spread(p50s[name]),
            )
            for name in variants
        ]
        res.tables.append(
            (
                "verification, in process (us per call, all rounds pooled)",
                table(["what", "p50 us", "p99 us", "p50 per round"], rows),
            )
        )
        verify_p50 = percentile(samples["TokenService.verify"], 50)
        res.targets.append(
            ("token verification p50 <= 50 us in-process", f"{verify_p50:.1f} us", verify_p50 <= 50)
        )

        # -- the cost on a FHIR read --------------------------------------------------
        patient = system.vault.repository(system_context(source="bench")).create(
            {"resourceType": "Patient", "gender": "unknown"}
        )
        pid = patient.id
        principal = Principal(
            id="bench01", kind="user", display="Bench User", roles=frozenset({"physician"})
        )

        def preverified(request: Any) -> AccessContext:
            return AccessContext(
                principal=principal,
                purpose="TREAT",
                tenant=system.settings.tenant,
                request_id=request.state.request_id,
                source="bench",
            )

        apps = {
            "OAuth bearer token (verify + live check)": create_app(system),
            "pre-verified identity (baseline)": create_app(system, authenticate=preverified),
        }
        timings = asyncio.run(_reads(apps, pid, token, reads, rounds))
        names = list(apps)
        done = (reads // BLOCK) * BLOCK
        rates = {name: [done / t for t in timings[name]] for name in names}
        read_rows = [(name, f"{median(rates[name]):,.0f}", spread(rates[name])) for name in names]
        ratio = median(rates[names[0]]) / median(rates[names[1]])
        read_rows.append(("ratio (token / pre-verified)", f"{ratio:.3f}x", ""))
        res.tables.append(
            (
                "FHIR read through the ASGI app in process (one client, sequential)",
                table(["authentication", "reads/s (median)", "rounds"], read_rows),
            )
        )
        res.targets.append(
            (
                "cost of authentication on a FHIR read (ratio, reported)",
                f"{ratio:.3f}x of the pre-verified throughput",
                True,
            )
        )
        res.figures = {"samples_p50_us": p50s, "read_rates": rates}
    finally:
        system.close()
    return res


async def _reads(
    apps: dict[str, Any], pid: str, token: str, reads: int, rounds: int
) -> dict[str, list[float]]:
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)),
            base_url="http://127.0.0.1:8000",
            headers={"Authorization": f"Bearer {token}"},
        )
        for name, app in apps.items()
    }
    url = f"/fhir/Patient/{pid}"
    try:
        for client in clients.values():  # warm up, and check the read really succeeds
            for _ in range(20):
                response = await client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"benchmark read failed: {response.status_code}")
        timings: dict[str, list[float]] = {name: [] for name in clients}
        for r in range(rounds):
            spent = dict.fromkeys(clients, 0.0)
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for _ in range(reads // BLOCK):
                for name in order:
                    client = clients[name]
                    t0 = time.perf_counter()
                    for _ in range(BLOCK):
                        await client.get(url)
                    spent[name] += time.perf_counter() - t0
                order.reverse()
            for name in clients:
                timings[name].append(spent[name])
        return timings
    finally:
        for client in clients.values():
            await client.aclose()
