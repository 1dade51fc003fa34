"""access: the cost of deciding every interaction with the Cedar policies.

``python -m bench access [--patients N] [--quick] [--rounds R] [--cache]`` (or
``python -m bench.access ...``)

A synthetic hospital (default 10,000 patients) is seeded through the importer into an
encrypted SQLite store with the relationship index observing every write, and one
``users`` row per staff member.  The clock stands in the middle of the hospital's
year.  Then, in one run:

0. **resident facts**: the time and memory of the warm-up a server does at start
   (access/resident.py) and of one background refresh pass.
1. **decisions**: ``CedarPolicy.decide`` through ``StoreAttributes`` over a traffic of
   chart reviews: a staff member opens a patient (70 % one they care for, 30 % anyone)
   and every resource of the chart is decided on its body, as the repository does.
   Reported per call: all calls, the first call about a (user, patient) pair, and
   the rest; once with facts loaded on demand (the first call does an index look-up
   and an unsealing) and once resident, as a server holds them.  Targets: p50 <= 20
   us, p99 <= 100 us.
2. **filtering a 1,000-result search**: a search whose 1,000 candidates are decided
   one by one (an HIM user: sees all but restricted records; facts loaded on demand,
   or resident), against the same search by an operator (no per-result decisions).
   Target: the filtering costs <= 50 ms.
3. **bulk export**: ``Repository.export`` (what ``$export`` runs) of the first
   20,000 Observations by HIM (each decided, facts resident) against an operator's,
   in resources per second.
4. **read and search ratio**: ``Repository.read`` and a by-patient search by a
   physician through the Cedar policy, against the same calls with policy
   evaluation off (an allow-all policy that keeps the counted fast path), interleaved
   in blocks; the ratio of medians.
5. **the write path**: ``Repository.update`` of an Encounter, and ``put_many`` of
   200 Encounters per call, with the relationship index observing the writes and
   without it (the index reads, changes and reseals each touched patient's row in the
   writing transaction), interleaved in blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import random
import shutil
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from phiguard.access.wiring import AccessServices, build_access
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.errors import PhiGuardError
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest, Decision
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine, now_us
from phiguard.store.tables import resource_heads, users
from phiguard.synth import generate_hospital
from phiguard.synth.model import Hospital
from phiguard.synth.seed import seed_hospital

from .common import FAST_SCRYPT, OUT, median, percentile, table, verdict
from .machine import describe, load_average, render

SEED = 20250101
PASSPHRASE = "benchmark passphrase, not a secret"


class AllowAll:
    """Policy evaluation off: everything allowed, searches on the counted fast path."""

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        return Decision(True, ("benchmark",))

    def per_resource(self, ctx: AccessContext) -> bool:
        return False


@dataclass
class Site:
    vault: Vault
    access: AccessServices
    hospital: Hospital
    clock: FixedClock


def _users(site: Site) -> None:
    at = now_us(site.clock.now())
    today = site.clock.now().date()
    rows = [
        {
            "user_id": s.user_id,
            "tenant": "default",
            "display_name": s.user_id,
            "email": f"{s.user_id}@example.org",
            "practitioner_id": s.practitioner_id,
            "roles": json.dumps([s.role]),
            "department": s.department_id,
            "status": "active" if s.active_on(today) else "terminated",
            "password_hash": "unused",
            "password_changed_at": at,
            "created_at": at,
            "updated_at": at,
        }
        for s in site.hospital.staff
    ]
    rows.append({**rows[0], "user_id": "him-bench", "roles": json.dumps(["him"])})
    with site.vault.engine.begin() as conn:
        if conn.execute(select(users.c.user_id).limit(1)).first() is None:
            conn.execute(insert(users), rows)


def build(root: Path, patients: int, *, reuse: bool) -> Site:
    db = root / "phiguard.db"
    fresh = not (reuse and db.exists())
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    key = root / "kek.json"
    provider = (
        LocalKeyFile(key, PASSPHRASE)
        if key.exists()
        else LocalKeyFile.create(key, PASSPHRASE, scrypt_params=FAST_SCRYPT)
    )
    hospital = generate_hospital(seed=SEED, patients=patients)
    clock = FixedClock(
        dt.datetime.combine(
            hospital.start + dt.timedelta(days=hospital.days // 2), dt.time(12), tzinfo=dt.UTC
        )
    )
    vault = Vault(engine, Keyring(engine, provider, clock=clock), clock=clock)
    access = build_access(vault)
    site = Site(vault, access, hospital, clock)
    if fresh:
        t0 = time.perf_counter()
        seed_hospital(vault, seed=SEED, patients=patients)
        print(f"seeded {patients:,} patients in {time.perf_counter() - t0:.0f} s", flush=True)
    _users(site)
    return site


def _charts(site: Site) -> dict[str, list[tuple[str, str]]]:
    """Patient id -> (type, id) of every current resource of their chart."""
    h = resource_heads.c
    out: dict[str, list[tuple[str, str]]] = {}
    with site.vault.engine.connect() as conn:
        for row in conn.execute(
            select(h.compartment, h.rtype, h.rid).where(
                h.compartment.like("Patient/%"), h.deleted.is_(False)
            )
        ):
            out.setdefault(str(row.compartment)[8:], []).append((row.rtype, row.rid))
    return out


def warm(site: Site) -> dict[str, float]:
    """The resident facts a server loads at start (access/resident.py): time, then the
    memory they hold (a second load under tracemalloc, which slows it)."""
    attrs = site.access.attributes
    attrs.invalidate()
    gc.collect()
    warmed = attrs.warm()
    attrs.invalidate()
    gc.collect()
    tracemalloc.start()
    attrs.warm()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    t0 = time.perf_counter()
    checked = attrs.keep_fresh(ahead=dt.timedelta(days=1))
    refresh = time.perf_counter() - t0
    return {
        "patients": warmed.patients,
        "users": warmed.users,
        "seconds": warmed.seconds,
        "mb": held / 1e6,
        "refresh_ms": refresh * 1000,
        "checked": checked,
    }


def decisions(
    site: Site, sessions: int, rng: random.Random, *, resident: bool = False
) -> dict[str, list[float]]:
    """Per-call latencies (us) of CedarPolicy.decide over chart-review sessions, with
    the facts loaded on demand or (``resident``) warmed first as a server does."""
    h = site.hospital
    today = site.clock.now().date()
    charts = _charts(site)
    active = [s for s in h.staff if s.active_on(today) and s.role in ("physician", "nurse")]
    cared = [(u, e.patient_id) for e in h.encounters for u in e.user_ids]
    cared += [(u, t.patient_id) for t in h.care_teams for u in t.user_ids]
    active_ids = {s.user_id for s in active}
    cared = [(u, p) for u, p in cared if u in active_ids]
    repo = site.vault.repository(system_context())
    policy = site.access.policy
    site.access.attributes.invalidate()
    if resident:
        site.access.attributes.warm()
    first: list[float] = []
    rest: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(sessions):
        if rng.random() < 0.7:
            uid, pid = rng.choice(cared)
        else:
            uid, pid = rng.choice(active).user_id, rng.choice(h.patients).patient_id
        staff = h.staff_by_user_id[uid]
        ctx = AccessContext(Principal(uid, "user", roles=frozenset({staff.role})), "TREAT")
        bodies = []
        for rtype, rid in charts.get(pid, [])[:40]:
            stored = repo.read(rtype, rid)
            bodies.append(AccessRequest("read", rtype, rid, f"Patient/{pid}", stored.resource))
        gc.disable()
        try:
            for n, request in enumerate(bodies):
                t0 = clock()
                policy.decide(ctx, request)
                (first if n == 0 else rest).append((clock() - t0) / 1000)
        finally:
            gc.enable()
    return {"first": first, "rest": rest, "all": first + rest}


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def filtering(site: Site, rounds: int) -> dict[str, list[float]]:
    """ms of a search with 1,000 candidates: decided one by one (facts loaded on demand,
    a page at a time, or resident as in a server) vs an operator's."""
    him = AccessContext(Principal("him-bench", "user", roles=frozenset({"him"})), "HOPERAT")
    ops = AccessContext(Principal("ops", "operator"), "HOPERAT")
    items = [("_count", "1000"), ("_sort", "_id")]
    out: dict[str, list[float]] = {"decided": [], "decided resident": [], "operator": []}
    for r in range(rounds):
        order = [("decided", him), ("decided resident", him), ("operator", ops)]
        if r % 2:
            order.reverse()
        for name, ctx in order:
            site.access.attributes.invalidate()
            if name == "decided resident":
                site.access.attributes.warm()
            repo = site.vault.repository(ctx)
            # Neither variant pays for a collection of the other's (or the set-up's)
            # garbage: with the synthetic hospital in memory a full collection takes
            # ~100 ms and otherwise lands on whichever search happens to trigger it.
            gc.collect()
            out[name].append(_timed(lambda repo=repo: repo.search("Observation", items)))
    return out


def export(site: Site, limit: int, rounds: int) -> dict[str, list[float]]:
    """Resources per second of ``Repository.export`` (the engine of ``$export``) over the
    first ``limit`` Observations: HIM, every resource decided on its body (facts
    resident, as in a server), against an operator's export (no per-resource
    decisions)."""
    him = AccessContext(Principal("him-bench", "user", roles=frozenset({"him"})), "HOPERAT")
    ops = AccessContext(Principal("ops", "operator"), "HOPERAT")
    out: dict[str, list[float]] = {"decided": [], "operator": []}
    site.access.attributes.warm()
    for r in range(rounds):
        order = [("decided", him), ("operator", ops)]
        if r % 2:
            order.reverse()
        for name, ctx in order:
            repo = site.vault.repository(ctx)
            gc.collect()
            t0 = time.perf_counter()
            n = 0
            for _rtype, batch in repo.export(["Observation"]):
                n += len(batch)
                if n >= limit:
                    break
            out[name].append(n / (time.perf_counter() - t0))
    return out


def ratio(site: Site, n: int, rng: random.Random) -> dict[str, list[float]]:
    """us per read and per by-patient search: Cedar vs policy evaluation off."""
    h = site.hospital
    today = site.clock.now().date()
    pairs = [
        (e.user_ids[0], e.patient_id)
        for e in h.encounters
        if h.staff_by_user_id[e.user_ids[0]].active_on(today)
    ]
    charts = _charts(site)
    off = Vault(site.vault.engine, site.vault.keyring, clock=site.clock, policy=AllowAll())
    calls = []
    for _ in range(n):
        uid, pid = rng.choice(pairs)
        rtype, rid = rng.choice(charts[pid])
        calls.append((uid, pid, rtype, rid))
    out: dict[str, list[float]] = {
        k: [] for k in ("read on", "read off", "search on", "search off")
    }
    for block in range(0, n, 50):
        chunk = calls[block : block + 50]
        variants = [("on", site.vault), ("off", off)]
        if (block // 50) % 2:
            variants.reverse()
        for name, vault in variants:
            for uid, pid, rtype, rid in chunk:
                staff = h.staff_by_user_id[uid]
                ctx = AccessContext(Principal(uid, "user", roles=frozenset({staff.role})), "TREAT")
                repo = vault.repository(ctx)
                t0 = time.perf_counter()
                with contextlib.suppress(PhiGuardError):  # a refusal walks the same path
                    repo.read(rtype, rid)
                out[f"read {name}"].append((time.perf_counter() - t0) * 1e6)
                t0 = time.perf_counter()
                repo.search("Condition", [("patient", pid)])
                out[f"search {name}"].append((time.perf_counter() - t0) * 1e6)
    return out


def writes(site: Site, n: int, rng: random.Random) -> dict[str, list[float]]:
    """us per Encounter update, and per bulk write of 200, with and without the index.

    Both vaults allow everything (no per-result decisions, the bulk path); the only
    difference is the relationship index observing the writes, which reads, changes
    and reseals the patient's row in the writing transaction.
    """
    h = site.hospital
    engine, keyring = site.vault.engine, site.vault.keyring
    plain = Vault(engine, keyring, clock=site.clock, policy=AllowAll())
    indexed = Vault(engine, keyring, clock=site.clock, policy=AllowAll())
    indexed.observers.append(site.access.index)
    ops = AccessContext(Principal("ops", "operator"), "HOPERAT")
    picked = rng.sample(h.encounters, min(n, len(h.encounters)))
    bodies = {}
    reader = plain.repository(ops)
    for enc in picked:
        body = dict(reader.read("Encounter", enc.id).resource or {})
        body.pop("meta", None)
        bodies[enc.id] = body
    names = ("update on", "update off", "bulk on", "bulk off")
    out: dict[str, list[float]] = {k: [] for k in names}
    for block in range(0, len(picked), 50):
        chunk = picked[block : block + 50]
        variants = [("on", indexed), ("off", plain)]
        if (block // 50) % 2:
            variants.reverse()
        for name, vault in variants:
            repo = vault.repository(ops)
            for enc in chunk:
                body = bodies[enc.id]
                body["status"] = "finished" if body.get("status") != "finished" else "arrived"
                t0 = time.perf_counter()
                repo.update("Encounter", enc.id, body)
                out[f"update {name}"].append((time.perf_counter() - t0) * 1e6)
    for block in range(0, len(picked), 200):
        chunk = [bodies[enc.id] for enc in picked[block : block + 200]]
        if len(chunk) < 200:
            break
        variants = [("on", indexed), ("off", plain)]
        if (block // 200) % 2:
            variants.reverse()
        for name, vault in variants:
            t0 = time.perf_counter()
            vault.repository(ops).put_many(chunk, validated=True)
            out[f"bulk {name}"].append((time.perf_counter() - t0) * 1e6 / len(chunk))
    site.access.attributes.invalidate()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench access",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 patients, fewer calls")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--cache", action="store_true", help="keep the store in bench/out")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    patients = 1000 if args.quick else args.patients
    sessions = 300 if args.quick else args.sessions
    print("# phiguard benchmark: access")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {patients:,} patients")
    print("machine:")
    print(render(describe()))
    root = (OUT if args.cache else (args.workdir or Path("/tmp"))) / f"access-{patients}"
    site = build(root, patients, reuse=args.cache)
    rng = random.Random(SEED)
    try:
        resident = warm(site)
        print("\n## resident facts: what a server loads at start (access/resident.py)")
        print(
            f"{resident['patients']:,.0f} patients and {resident['users']:,.0f} users in "
            f"{resident['seconds']:.2f} s; {resident['mb']:.1f} MB held "
            f"({resident['mb'] * 1e3 / max(resident['patients'], 1):.1f} KB per patient); "
            f"one refresh pass re-checking all {resident['checked']:,.0f} tags: "
            f"{resident['refresh_ms']:.0f} ms"
        )
        print("\n## decisions: CedarPolicy.decide through StoreAttributes (us per call)")
        rows = []
        verdicts = {}
        for mode in ("on demand", "resident"):
            # The same traffic for both: a generator per mode, seeded alike.
            lat = decisions(site, sessions, random.Random(SEED), resident=mode == "resident")
            rows += [
                [mode, name, f"{len(v):,}", f"{median(v):.1f}", f"{percentile(v, 99):.1f}"]
                for name, v in lat.items()
            ]
            p50, p99 = median(lat["all"]), percentile(lat["all"], 99)
            verdicts[mode] = verdict(p50 <= 20 and p99 <= 100)
        print(table(["facts", "calls", "n", "p50", "p99"], rows))
        for mode, said in verdicts.items():
            print(f"{mode}: target p50 <= 20 us, p99 <= 100 us: {said}")

        filt = filtering(site, args.rounds)
        cost = median(filt["decided"]) - median(filt["operator"])
        cost_resident = median(filt["decided resident"]) - median(filt["operator"])
        print("\n## filtering a 1,000-result search (ms per search, medians of rounds)")
        print(
            table(
                ["search", "median", "rounds"],
                [
                    [k, f"{median(v):.1f}", ", ".join(f"{x:.0f}" for x in v)]
                    for k, v in filt.items()
                ],
            )
        )
        print(
            f"filtering cost, facts on demand {cost:.1f} ms; target <= 50 ms: {verdict(cost <= 50)}"
        )
        print(
            f"filtering cost, facts resident {cost_resident:.1f} ms; "
            f"target <= 50 ms: {verdict(cost_resident <= 50)}"
        )

        exp = export(site, 2_000 if args.quick else 20_000, args.rounds)
        print("\n## bulk export: Repository.export of Observations (resources per second)")
        print(
            table(
                ["export", "median", "rounds"],
                [
                    [k, f"{median(v):,.0f}", ", ".join(f"{x:,.0f}" for x in v)]
                    for k, v in exp.items()
                ],
            )
        )
        share = median(exp["decided"]) / median(exp["operator"])
        print(f"export: decided / operator = {share:.2f}")

        rat = ratio(site, 400 if args.quick else 2000, rng)
        print("\n## access control on read and search (us per call, interleaved blocks)")
        print(
            table(
                ["call", "policy", "p50", "p99"],
                [
                    [k.split()[0], k.split()[1], f"{median(v):.0f}", f"{percentile(v, 99):.0f}"]
                    for k, v in rat.items()
                ],
            )
        )
        for call in ("read", "search"):
            on, off_ = median(rat[f"{call} on"]), median(rat[f"{call} off"])
            print(f"{call}: Cedar / off = {on / off_:.2f}")

        wr = writes(site, 400 if args.quick else 2000, rng)
        print("\n## the index on the write path (us per Encounter, interleaved blocks)")
        print(
            table(
                ["write", "index", "p50", "p99"],
                [
                    [k.split()[0], k.split()[1], f"{median(v):.0f}", f"{percentile(v, 99):.0f}"]
                    for k, v in wr.items()
                ],
            )
        )
        for call in ("update", "bulk"):
            on, off_ = median(wr[f"{call} on"]), median(wr[f"{call} off"])
            print(f"{call}: with index / without = {on / off_:.2f} (+{on - off_:.0f} us)")
        print(f"\nload average {load_average()}")
    finally:
        site.vault.engine.dispose()
        if not args.cache:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
