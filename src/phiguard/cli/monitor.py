"""``phiguard monitor ingest|scan|alerts|cases|show|watch|assign|note|close|reopen|suppress|...``

Privacy monitoring from the command line.  Everything printed to standard output is
ids, codes, scores and counts -- what a queue or a script needs -- except ``show``,
which opens one alert or case for its reviewer (and is audited like any review).
Notes and suppression reasons may quote PHI, so they are read from standard input,
never from an argument where ``ps`` and shell history would keep them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from phiguard.errors import MonitorError, PhiGuardError, UnknownAlert
from phiguard.monitor import frames
from phiguard.monitor.notify import Notifier, notify_new
from phiguard.monitor.pseudonyms import adopt_vault_ids
from phiguard.monitor.sources import ledger as ledger_source
from phiguard.monitor.sources.mapping import Mapping
from phiguard.monitor.store import DatasetStore, merge
from phiguard.monitor.workflow import DISPOSITIONS, STATUSES, AlertRow, Workflow
from phiguard.system import System

from . import monitor_eval
from .common import HomeOption, console, err, progress, system
from .users import operator

app = typer.Typer(
    help="Privacy monitoring: load exports, scan, review alerts and cases.",
    no_args_is_help=True,
)

monitor_eval.register(app)  # evaluate, generate: detection measured on synthetic traffic

SOURCE = "cli"
KINDS = tuple(frames.SCHEMAS)
SHOWN_BAD_ROWS = 20
IdArg = Annotated[str, typer.Argument(help="an alert or case id")]


def _store(sys_: System) -> DatasetStore:
    return DatasetStore(sys_.engine, sys_.keyring, tenant=sys_.settings.tenant, clock=sys_.clock)


def _date(value: str | None, option: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time; no zone means UTC (a bare date: its midnight)."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PhiGuardError(f"{option} must be an ISO 8601 date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _stdin_text(label: str) -> str:
    if sys.stdin.isatty():
        err.print(f"{label} (end with Ctrl-D):")
    text = sys.stdin.read().strip()
    if not text:
        raise PhiGuardError(f"no {label.lower()} on standard input")
    return text


# -- loading ------------------------------------------------------------------------------
@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="the CSV export", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help=f"what the file holds: {', '.join(KINDS)}")],
    home: HomeOption = None,
    mapping: Annotated[
        Path | None, typer.Option(help="YAML column mapping for a non-canonical export")
    ] = None,
    errors: Annotated[
        Path | None,
        typer.Option(help="write every refused row's line number and reason to this file"),
    ] = None,
) -> None:
    """Load an export (access, auth: added; staff, patients, care: replaces the last load)."""
    if kind not in KINDS:
        raise PhiGuardError(f"--kind must be one of: {', '.join(KINDS)}")
    loaded_mapping = Mapping.load(mapping) if mapping is not None else None
    if not file.is_file():
        raise PhiGuardError(f"{file} is not a file")
    started = time.perf_counter()
    with system(home) as sys_, progress() as bar:
        task = bar.add_task(f"Loading {kind}", total=file.stat().st_size or 1)
        result = _store(sys_).ingest(
            file,
            kind,
            loaded_mapping,
            by=operator(),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        sys_.record(
            "monitor-ingest",
            principal=operator(),
            kind=kind,
            rows=result.rows,
            refused=result.rejected,
            load=result.load_id or "",
            duplicate=result.duplicate,
        )
    seconds = time.perf_counter() - started
    if result.duplicate:
        console.print(f"{file.name} was already loaded (load {result.load_id}); nothing added.")
        return
    for bad in result.bad_rows[:SHOWN_BAD_ROWS]:
        err.print(f"line {bad.line}: {bad.reason}", markup=False, highlight=False)
    if result.rejected > SHOWN_BAD_ROWS:
        err.print(f"... and {result.rejected - SHOWN_BAD_ROWS:,} more refused rows")
    if errors is not None:
        with errors.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "reason"])
            writer.writerows((b.line, b.reason) for b in result.bad_rows)
    rate = result.rows / seconds if seconds > 0 else 0.0
    replaced = f", replacing {result.replaced} earlier load" if result.replaced else ""
    console.print(
        f"Loaded {result.rows:,} {kind} rows, refused {result.rejected:,}{replaced} "
        f"(load {result.load_id}, {seconds:.1f} s, {rate:,.0f} rows/s)"
    )


@app.command()
def loads(home: HomeOption = None) -> None:
    """List loaded exports (the active one of each roster kind, and every event load)."""
    with system(home) as sys_:
        found = _store(sys_).loads()
    table = Table("load", "kind", "rows", "refused", "state", "loaded at", "by")
    for info in found:
        table.add_row(
            info.load_id,
            info.kind,
            f"{info.rows:,}",
            f"{info.rejected:,}",
            info.state,
            info.loaded_at.isoformat(timespec="seconds"),
            escape(info.loaded_by),
        )
    console.print(table)


# -- scanning -----------------------------------------------------------------------------
def _dataset(
    sys_: System, source: str, since: dt.datetime | None, history_days: int
) -> frames.Dataset:
    start = None if since is None else since - dt.timedelta(days=history_days)
    parts = []
    if source in ("stored", "all"):
        parts.append(_store(sys_).dataset(since=start))
    if source in ("ledger", "all"):
        events = ledger_source.read_events(sys_.ledger, since=start)
        reference = ledger_source.reference(sys_.vault, sys_.engine, sys_.settings.tenant)
        if parts:  # a roster naming staff members' own vault records joins the ledger
            parts[0] = adopt_vault_ids(
                parts[0], reference.patients["patient_id"].to_list(), _store(sys_).pseudonymiser()
            )
        parts.append(
            frames.Dataset.of(
                access=events.access,
                auth=events.auth,
                staff=reference.staff,
                patients=reference.patients,
                care=reference.care,
            )
        )
    if source == "ledger" and not parts[0].staff.height:
        raise MonitorError("the vault has no workforce accounts to judge accesses against")
    return merge(*parts)


@app.command()
def scan(
    home: HomeOption = None,
    since: Annotated[
        str | None,
        typer.Option(help="raise alerts only for accesses from this date (ISO 8601)"),
    ] = None,
    source: Annotated[
        str, typer.Option(help="stored (loaded exports), ledger (phiguard's own), or all")
    ] = "stored",
    history_days: Annotated[
        int, typer.Option(min=0, help="days before --since read as the users' habits")
    ] = 30,
    notify: Annotated[
        bool, typer.Option(help="notify the configured channels of new alerts")
    ] = True,
) -> None:
    """Scan the stored data (and/or the ledger), store new alerts and cases, print a summary."""
    from phiguard.monitor.scan import scan as run_scan

    if source not in ("stored", "ledger", "all"):
        raise PhiGuardError("--source must be stored, ledger or all")
    start = _date(since, "--since")
    with system(home) as sys_:
        dataset = _dataset(sys_, source, start, history_days)
        if not dataset.access.height and not dataset.auth.height:
            raise MonitorError("nothing to scan: load an access export or use --source ledger")
        with progress() as bar:
            task = bar.add_task("Scanning", total=100)
            result = run_scan(
                dataset,
                since=start,
                progress=lambda stage, frac: bar.update(
                    task, completed=frac * 100, description=f"Scanning: {stage}"
                ),
            )
        flow = Workflow.from_system(sys_)
        saved = flow.save(result.alerts, result.cases, by=operator(), source=SOURCE)
        flow.record(
            "monitor-scan",
            operator(),
            source=SOURCE,
            accesses=dataset.access.height,
            alerts=len(result.alerts),
            new_alerts=len(saved.new_alerts),
            cases=len(result.cases),
        )
        delivery = None
        if notify and saved.new_alerts:
            delivery = notify_new(flow, Notifier.from_system(sys_), by=operator(), source=SOURCE)
    explained = int(result.explained.sum()) if result.explained.len() else 0
    console.print(
        f"Scanned {dataset.access.height:,} accesses and {dataset.auth.height:,} log-ins "
        f"({explained:,} accesses explained by a care relationship)."
    )
    console.print(
        f"{len(saved.new_alerts)} new alert(s), {len(saved.suppressed)} suppressed, "
        f"{saved.known_alerts} already known; {len(saved.new_cases)} new case(s)."
    )
    if delivery is not None and delivery.notices:
        sent = ", ".join(delivery.sent) or "no channel"
        console.print(f"Notified {delivery.notices} alert(s) by {sent}.")
        for channel, why in delivery.failed.items():
            err.print(f"{channel}: {why}", markup=False)


@app.command()
def watch(
    home: HomeOption = None,
    interval: Annotated[
        float, typer.Option(min=0.05, max=0.5, help="seconds between polls of the ledger")
    ] = 0.25,
    for_seconds: Annotated[
        float | None, typer.Option("--for", min=0, help="stop after this many seconds")
    ] = None,
    notify: Annotated[bool, typer.Option(help="notify the configured channels")] = True,
) -> None:
    """Follow the audit ledger: score new events within seconds, store and notify alerts."""
    from phiguard.monitor.watch import Watcher

    stop = threading.Event()
    with system(home) as sys_:
        notifier = Notifier.from_system(sys_) if notify else None

        def announce(saved: Any) -> None:
            for alert_id in saved.new_alerts:
                row = watcher.workflow.alert_row(alert_id)
                console.print(f"alert {row.alert_id} {row.detector} score {row.score:.0f}")

        watcher = Watcher(sys_, poll=interval, notifier=notifier, on_alerts=announce)
        err.print(f"Watching the ledger from entry {watcher.cursor} (Ctrl-C stops).")
        try:
            stats = watcher.run(stop, seconds=for_seconds)
        except KeyboardInterrupt:
            stats = watcher.stats
    console.print(
        f"Watched {stats.entries:,} ledger entries ({stats.accesses:,} accesses): "
        f"{len(stats.alerts)} new alert(s), {len(stats.cases)} new case(s)."
    )


# -- the queue ------------------------------------------------------------------------------
def _emit(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                ";".join(v) if isinstance(v, list) else ("" if v is None else v)
                for v in (row[c] for c in columns)
            )
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(
            *(
                escape(", ".join(v) if isinstance(v, list) else "-" if v is None else str(v))
                for v in (row[c] for c in columns)
            )
        )
    console.print(table)


def _format(value: str) -> str:
    if value not in ("table", "json", "csv"):
        raise PhiGuardError("--format must be table, json or csv")
    return value


FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv")]
ALERT_COLUMNS = [
    "alert_id",
    "score",
    "detector",
    "status",
    "user_id",
    "patient_ids",
    "assignee",
    "case_id",
    "first_event_at",
]


@app.command()
def alerts(
    home: HomeOption = None,
    fmt: FormatOption = "table",
    status: Annotated[
        str, typer.Option(help=f"queued (open and in-review), all, or: {', '.join(STATUSES)}")
    ] = "queued",
    user: Annotated[str | None, typer.Option(help="only this user's alerts")] = None,
    patient: Annotated[
        str | None,
        typer.Option(
            help="only alerts about this patient: a pseudonym, phiguard's patient id, or "
            "the other system's id (its pseudonym is computed)"
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many")] = None,
) -> None:
    """The alert queue, highest score first (ids, scores and states; patients by
    pseudonym or phiguard id, never by another system's id; no names)."""
    _format(fmt)
    if status not in (*STATUSES, "queued", "all"):
        raise PhiGuardError(f"--status must be queued, all or one of: {', '.join(STATUSES)}")
    with system(home) as sys_:
        rows: list[AlertRow] = Workflow.from_system(sys_).queue(
            status=status,  # type: ignore[arg-type]
            user_id=user,
            patient_id=patient,
            limit=limit,
        )
    _emit([r.public() for r in rows], fmt, ALERT_COLUMNS)


@app.command()
def cases(
    home: HomeOption = None,
    fmt: FormatOption = "table",
    status: Annotated[str, typer.Option(help="queued, all, or one status")] = "queued",
) -> None:
    """Cases (one user's alerts together), highest score first."""
    _format(fmt)
    if status not in (*STATUSES, "queued", "all"):
        raise PhiGuardError(f"--status must be queued, all or one of: {', '.join(STATUSES)}")
    with system(home) as sys_:
        rows = Workflow.from_system(sys_).cases(status=status)  # type: ignore[arg-type]
    columns = ["case_id", "score", "status", "user_id", "patient_ids", "assignee", "opened_at"]
    _emit([r.public() for r in rows], fmt, columns)


@app.command()
def show(target: IdArg, home: HomeOption = None) -> None:
    """Open one alert or case for review: reason, evidence, notes, timeline (audited)."""
    with system(home) as sys_:
        flow = Workflow.from_system(sys_)
        try:
            detail: Any = flow.alert(target, by=operator(), source=SOURCE)
            heading = f"Alert {target}"
        except UnknownAlert:
            try:
                detail = flow.case(target, by=operator(), source=SOURCE)
            except UnknownAlert:
                raise UnknownAlert(f"there is no alert or case {target}") from None
            heading = f"Case {target}"
    row = detail.row.public()
    console.print(f"[bold]{heading}[/bold]")
    for key, value in row.items():
        if value not in (None, []):
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            console.print(f"  {key}: {escape(shown)}")
    for pseudonym, source_id in detail.source_ids.items():
        console.print(f"  source id of {pseudonym}: {escape(source_id)}")
    console.print(f"  reason: {escape(detail.reason)}")
    for evidence in getattr(detail, "evidence", ()):
        console.print(f"  evidence ({evidence.kind}): {escape(evidence.text)}")
    for alert in getattr(detail, "alerts", ()):
        console.print(f"  alert {alert.alert_id} {alert.detector} {alert.score:.0f} {alert.status}")
    for note in detail.notes:
        console.print(f"  note by {escape(note.author)} at {note.created_at:%Y-%m-%d %H:%M}:")
        console.print(f"    {escape(note.text)}")
    for entry in detail.timeline:
        console.print(f"  {entry.at:%Y-%m-%d %H:%M:%S} {escape(entry.actor)} {entry.action}")


# -- reviewers' actions -----------------------------------------------------------------------
@app.command()
def assign(
    target: IdArg,
    to: Annotated[str, typer.Option("--to", help="the reviewer, e.g. user/u00042")],
    home: HomeOption = None,
) -> None:
    """Give an alert or case to a reviewer (it moves to in-review)."""
    with system(home) as sys_:
        Workflow.from_system(sys_).assign(target, to, by=operator(), source=SOURCE)
    console.print(f"Assigned {target} to {escape(to)}.")


@app.command()
def note(target: IdArg, home: HomeOption = None) -> None:
    """Add a note to an alert or case; the text is read from standard input (sealed)."""
    text = _stdin_text("Note")
    with system(home) as sys_:
        added = Workflow.from_system(sys_).note(target, text, by=operator(), source=SOURCE)
    console.print(f"Added note {added.note_id} to {target}.")


@app.command()
def close(
    target: IdArg,
    disposition: Annotated[str, typer.Option(help=f"the decision: {', '.join(DISPOSITIONS)}")],
    home: HomeOption = None,
) -> None:
    """Close an alert or case with a disposition (a breach is referred to incidents)."""
    with system(home) as sys_:
        Workflow.from_system(sys_).close(target, disposition, by=operator(), source=SOURCE)
    extra = " and referred it to incident management" if disposition == "breach" else ""
    console.print(f"Closed {target} as {disposition}{extra}.")


@app.command()
def reopen(target: IdArg, home: HomeOption = None) -> None:
    """Put a closed alert or case back into review."""
    with system(home) as sys_:
        Workflow.from_system(sys_).reopen(target, by=operator(), source=SOURCE)
    console.print(f"Reopened {target}.")


@app.command()
def suppress(
    detector: Annotated[str, typer.Option(help="the detector whose alerts to hold back")],
    home: HomeOption = None,
    user: Annotated[str | None, typer.Option(help="the user the rule is about")] = None,
    patient: Annotated[
        str | None,
        typer.Option(help="the patient the rule is about (kept as a pseudonym)"),
    ] = None,
    days: Annotated[int | None, typer.Option(min=1, help="the rule's lifetime in days")] = None,
    until: Annotated[str | None, typer.Option(help="the rule's expiry (ISO 8601)")] = None,
) -> None:
    """Hold back a detector's alerts about a user and/or patient until an expiry; the
    reason is read from standard input (sealed)."""
    if (days is None) == (until is None):
        raise PhiGuardError("give the rule's lifetime with exactly one of --days or --until")
    reason = _stdin_text("Reason")
    with system(home) as sys_:
        expires = _date(until, "--until") or sys_.clock.now() + dt.timedelta(days=days or 0)
        rule, taken = Workflow.from_system(sys_).suppress(
            detector,
            user_id=user,
            patient_id=patient,
            reason=reason,
            expires_at=expires,
            by=operator(),
            source=SOURCE,
        )
    console.print(
        f"Suppression {rule.rule_id} until {rule.expires_at.isoformat(timespec='seconds')}; "
        f"{len(taken)} queued alert(s) suppressed."
    )


@app.command()
def suppressions(home: HomeOption = None, fmt: FormatOption = "table") -> None:
    """Live suppression rules (their reasons stay sealed: see them in the console)."""
    _format(fmt)
    with system(home) as sys_:
        rules = Workflow.from_system(sys_).suppressions()
    rows = [
        {
            "rule_id": r.rule_id,
            "detector": r.detector,
            "user_id": r.user_id,
            "patient_id": r.patient_id,
            "expires_at": r.expires_at.isoformat(timespec="seconds"),
            "created_by": r.created_by,
        }
        for r in rules
    ]
    _emit(rows, fmt, ["rule_id", "detector", "user_id", "patient_id", "expires_at", "created_by"])


@app.command()
def unsuppress(
    rule: Annotated[str, typer.Argument(help="the rule id")], home: HomeOption = None
) -> None:
    """End a suppression rule now."""
    with system(home) as sys_:
        Workflow.from_system(sys_).revoke_suppression(rule, by=operator(), source=SOURCE)
    console.print(f"Suppression {rule} ended.")
