"""``python -m bench [COMMAND] [options]``; with no command every benchmark runs.

Commands: read, import, search, audit, tokens, login, monitor, monitor-ingest, access, all.

Examples::

    python -m bench                       # every benchmark, full size (several minutes)
    python -m bench --quick               # every benchmark, small (under a minute)
    python -m bench read --n 2000
    python -m bench import --reps 30
    python -m bench search --patients 100000 --cache
    python -m bench monitor-ingest --rows 1000000
    python -m bench monitor --accesses 10000000
    python -m bench access --quick        # access decisions (options: bench/access.py)

``access`` is handed to ``bench.access.main`` with the rest of the command line; it
seeds its own hospital (about a minute at 10,000 patients), so ``all`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import access, audit, imports, login, monitor_ingest, monitor_scan, read, search, tokens
from .common import AUDITS, OUT, Result
from .machine import describe, load_average, render

COMMANDS = (
    "all",
    "read",
    "import",
    "search",
    "audit",
    "monitor-ingest",
    "monitor",
    "tokens",
    "login",
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    common.add_argument("--rounds", type=int, help="measured rounds (default 5, quick 3)")
    common.add_argument("--seed", type=int, default=20250101, help="shuffles and synth data")
    common.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the encrypted variant even if it meets its target "
        "(a full-size run profiles every miss; quick mode only with --profile)",
    )
    common.add_argument("--workdir", type=Path, help="where temporary stores go (default: /tmp)")
    audit_opts = argparse.ArgumentParser(add_help=False)
    audit_opts.add_argument(
        "--audit",
        choices=AUDITS,
        default="none",
        help="audit sink: none = NullAuditSink as in the test fixtures (default); "
        "ledger = the production audit ledger, each call waiting for its entry",
    )

    read_opts = argparse.ArgumentParser(add_help=False)
    read_opts.add_argument(
        "--n", type=int, help=f"reads per round = resources in the store (default {read.DEFAULT_N})"
    )
    import_opts = argparse.ArgumentParser(add_help=False)
    import_opts.add_argument(
        "--reps",
        type=int,
        help=f"repetitions of the 5 Synthea bundles (default {imports.DEFAULT_REPS})",
    )
    import_opts.add_argument(
        "--workers", type=int, help="validation processes (default: the importer's own choice)"
    )
    search_opts = argparse.ArgumentParser(add_help=False)
    search_opts.add_argument(
        "--patients", type=int, help=f"patients loaded (default {search.DEFAULT_PATIENTS:,})"
    )
    search_opts.add_argument(
        "--names", type=int, help=f"family names searched (default {search.DEFAULT_NAMES})"
    )
    search_opts.add_argument(
        "--cache",
        action="store_true",
        help="keep the loaded stores under bench/out/search-cache and reuse them",
    )

    ledger_opts = argparse.ArgumentParser(add_help=False)
    ledger_opts.add_argument("--events", type=int, help="events appended per round")
    ledger_opts.add_argument("--proof-size", type=int, help="entries in the proof ledger")
    token_opts = argparse.ArgumentParser(add_help=False)
    token_opts.add_argument(
        "--n", type=int, help=f"verifications per round (default {tokens.DEFAULT_N})"
    )
    token_opts.add_argument(
        "--reads", type=int, help=f"FHIR reads per round (default {tokens.DEFAULT_READS})"
    )

    monitor_opts = argparse.ArgumentParser(add_help=False)
    monitor_opts.add_argument(
        "--rows", type=int, help=f"access rows ingested (default {monitor_ingest.DEFAULT_ROWS:,})"
    )
    monitor_opts.add_argument(
        "--alerts", type=int, help="ledger-to-alert latencies timed (default 30)"
    )

    scan_opts = argparse.ArgumentParser(add_help=False)
    scan_opts.add_argument(
        "--accesses",
        type=int,
        help=f"access events scanned (default {monitor_scan.DEFAULT_EVENTS:,})",
    )

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="phiguard benchmarks: encrypted vs plaintext in the same run. "
        "With no command (or only options) every benchmark runs: python -m bench --quick",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "all",
        parents=[
            common,
            audit_opts,
            read_opts,
            import_opts,
            search_opts,
            ledger_opts,
            monitor_opts,
            scan_opts,
        ],
        help="every benchmark",
    )
    sub.add_parser(
        "read", parents=[common, audit_opts, read_opts], help="Repository.read of random ids"
    )
    sub.add_parser("import", parents=[common, import_opts], help="bulk Importer, Synthea bundles")
    sub.add_parser("search", parents=[common, audit_opts, search_opts], help="family-name search")
    sub.add_parser(
        "audit",
        parents=[common, ledger_opts],
        help="ledger appends, verification, proofs, cost on a read",
    )
    sub.add_parser(
        "monitor-ingest",
        parents=[common, monitor_opts],
        help="monitoring CSV ingest rows/s (sealed) and ledger-to-alert latency",
    )
    sub.add_parser(
        "monitor",
        parents=[common, scan_opts],
        help="monitoring batch scan of 10 million accesses (5,000 staff, 500,000 patients)",
    )
    sub.add_parser(
        "tokens",
        parents=[common, token_opts],
        help="access-token verification, and the cost of authentication on a FHIR read",
    )
    login_opts = argparse.ArgumentParser(add_help=False)
    login_opts.add_argument(
        "--logins", type=int, help=f"log-ins per round (default {login.DEFAULT_LOGINS})"
    )
    sub.add_parser(
        "login",
        parents=[common, login_opts],
        help="console log-in throughput against bare argon2id verification",
    )
    sub.add_parser(
        "access",
        add_help=False,
        help="access decisions, a filtered 1,000-result search, read and search against "
        "policy evaluation off (python -m bench access --help)",
    )
    return parser


def _pick(value: int | None, quick: bool, quick_value: int, default: int) -> int:
    if value is not None:
        return value
    return quick_value if quick else default


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["access"]:
        return access.main(args_list[1:])
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "all")
    args = _parser().parse_args(args_list)
    quick: bool = args.quick
    rounds = _pick(args.rounds, quick, 3, 5)
    everything = (
        "read",
        "import",
        "search",
        "audit",
        "monitor-ingest",
        "monitor",
        "tokens",
        "login",
    )
    todo = everything if args.command == "all" else (args.command,)

    info = describe()
    print("# phiguard benchmarks")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {'quick' if quick else 'full'} mode")
    print("machine:")
    print(render(info))
    sys.stdout.flush()

    results: list[Result] = []
    started = time.perf_counter()
    for name in todo:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"phiguard-bench-{name}-", dir=args.workdir) as d:
            work = Path(d)
            if name == "read":
                res = read.run(
                    n=_pick(args.n, quick, read.QUICK_N, read.DEFAULT_N),
                    rounds=rounds,
                    seed=args.seed,
                    workdir=work,
                    do_profile=args.profile,
                    profile_misses=not quick,
                    audit=args.audit,
                )
            elif name == "import":
                res = imports.run(
                    reps=_pick(args.reps, quick, imports.QUICK_REPS, imports.DEFAULT_REPS),
                    rounds=rounds,
                    workers=args.workers,
                    workdir=work,
                    do_profile=args.profile,
                    profile_misses=not quick,
                )
            elif name == "monitor-ingest":
                res = monitor_ingest.run(
                    rows=_pick(
                        args.rows, quick, monitor_ingest.QUICK_ROWS, monitor_ingest.DEFAULT_ROWS
                    ),
                    alerts=_pick(
                        args.alerts,
                        quick,
                        monitor_ingest.QUICK_ALERTS,
                        monitor_ingest.DEFAULT_ALERTS,
                    ),
                    rounds=rounds,
                    seed=args.seed,
                    workdir=work,
                )
            elif name == "monitor":
                res = monitor_scan.run(
                    events=_pick(
                        args.accesses, quick, monitor_scan.QUICK_EVENTS, monitor_scan.DEFAULT_EVENTS
                    ),
                    rounds=_pick(args.rounds, quick, 1, 3),
                    seed=args.seed,
                )
            elif name == "login":
                res = login.run(
                    logins=_pick(
                        getattr(args, "logins", None),
                        quick,
                        login.QUICK_LOGINS,
                        login.DEFAULT_LOGINS,
                    ),
                    rounds=rounds,
                    workdir=work,
                )
            elif name == "tokens":
                own = args.command == "tokens"  # under "all", --n belongs to read
                res = tokens.run(
                    n=_pick(args.n if own else None, quick, tokens.QUICK_N, tokens.DEFAULT_N),
                    reads=_pick(
                        args.reads if own else None,
                        quick,
                        tokens.QUICK_READS,
                        tokens.DEFAULT_READS,
                    ),
                    rounds=rounds,
                    workdir=work,
                )
            elif name == "audit":
                res = audit.run(
                    events=_pick(args.events, quick, audit.QUICK_EVENTS, audit.DEFAULT_EVENTS),
                    proof_size=_pick(
                        args.proof_size, quick, audit.QUICK_PROOF_SIZE, audit.DEFAULT_PROOF_SIZE
                    ),
                    rounds=rounds,
                    seed=args.seed,
                    workdir=work,
                )
            else:
                res = search.run(
                    patients=_pick(
                        args.patients, quick, search.QUICK_PATIENTS, search.DEFAULT_PATIENTS
                    ),
                    names=_pick(args.names, quick, search.QUICK_NAMES, search.DEFAULT_NAMES),
                    rounds=rounds,
                    seed=args.seed,
                    workdir=work,
                    cache=args.cache,
                    do_profile=args.profile,
                    profile_misses=not quick,
                    audit=args.audit,
                )
        res.parameters["wall time"] = f"{time.perf_counter() - t0:.1f} s"
        results.append(res)
        print()
        print(res.render())
        sys.stdout.flush()

    print()
    print(f"finished in {time.perf_counter() - started:.1f} s; load average {load_average()}")
    print("\n## summary")
    for res in results:
        for target, got, ok in res.targets:
            print(f"  {res.name:<7} {'MET   ' if ok else 'MISSED'} {target}: {got}")

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {
        "machine": info,
        "mode": "quick" if quick else "full",
        "load average at end": load_average(),
        "results": [
            {
                "name": r.name,
                "command": r.command,
                "parameters": r.parameters,
                "targets": [{"target": t, "measured": g, "met": ok} for t, g, ok in r.targets],
                "figures": r.figures,
                "report": r.render(),
            }
            for r in results
        ],
    }
    path = OUT / f"run-{stamp}-{'-'.join(todo)}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"\nraw figures: {path}")
    return 0  # a missed target is a finding to report, not a failure of the run


if __name__ == "__main__":
    raise SystemExit(main())
