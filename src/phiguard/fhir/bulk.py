"""FHIR Bulk Data export (``$export``), with every resource decided like a read.

The HL7 Bulk Data Access flow: a kick-off (``GET /fhir/$export`` for the whole
store, ``GET /fhir/Patient/$export`` for resources in patients' compartments) with
``Prefer: respond-async`` answers ``202`` and a status URL; polling it answers
``202`` with ``X-Progress`` while the export runs and then ``200`` with the
manifest; each output file (NDJSON, up to 1,000 resources of one type) is fetched
with the same bearer token; ``DELETE`` on the status URL discards the export.

What makes it phiguard's:

- the export runs through ``Repository.export``: each type is decided at kick-off
  (a caller who may not export a type gets ``403`` at once), then every resource on
  its own body with action ``export``: what the caller may not see is left out and
  masks apply, exactly as for a search.  Each batch of 500 is one ledger event
  naming every patient whose data it returned;
- output files are never on disk in the clear: each is sealed under the
  ``__export__`` data key, bound to (tenant, job, file number), in ``export_files``,
  and opened only to answer its download.  Jobs and files go an hour after the job
  completes (or when the owner deletes them);
- only the principal that started an export can poll it, download it or delete it;
  to anyone else it does not exist (``404``);
- the job's state is in the database, so any server process answers the polls and
  downloads; a job whose process stopped is reported as failed after 10 minutes
  without progress;
- the job re-checks its owner between batches: once the account is suspended or
  terminated (or the application revoked) it stops and reports why, as the owner's
  next request would be refused.

Supported parameters: ``_type`` (comma-separated), ``_since`` (a FHIR instant), and
``_outputFormat`` (NDJSON only).  Anything else is refused with ``400`` rather than
silently ignored: an export that quietly dropped a ``_typeFilter`` would hand over
more than was asked.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable
from typing import Any, Final

from fastapi import APIRouter, Request
from sqlalchemy import delete, func, insert, select, update
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.clock import isoformat
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import EXPORT_COMPARTMENT
from phiguard.errors import InvalidSearch
from phiguard.records.context import AccessContext
from phiguard.records.search import parse_date
from phiguard.records.validation import known_type
from phiguard.records.vault import Vault
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import (
    export_files,
    export_jobs,
    oauth_clients,
    resource_heads,
    users,
)

from .outcome import ApiError
from .routes import _base, _context

router = APIRouter(prefix="/fhir", tags=["FHIR Bulk Data"])

NDJSON: Final = "application/fhir+ndjson"
FORMATS: Final = frozenset({NDJSON, "application/ndjson", "ndjson"})
FILE_RESOURCES: Final = 1000
KEEP_US: Final = 3600 * 1_000_000
STALE_US: Final = 600 * 1_000_000
_PARAMS: Final = frozenset({"_type", "_since", "_outputFormat"})
_AAD_KIND: Final = "export-file"


# -- kick-off ------------------------------------------------------------------------------
def _types(vault: Vault, given: str | None, patients_only: bool) -> list[str]:
    if given is not None:
        types = [t.strip() for t in given.split(",") if t.strip()]
        if not types:
            raise ApiError(400, "invalid", "_type names no resource type")
        unknown = [t for t in types if not known_type(t)]
        if unknown:
            raise ApiError(400, "invalid", f"unknown resource type in _type: {unknown[0][:64]}")
        return list(dict.fromkeys(types))
    h = resource_heads.c
    query = select(h.rtype).where(h.tenant == vault.tenant, h.deleted.is_(False)).distinct()
    if patients_only:
        query = query.where(h.compartment.like("Patient/%"))
    with vault.engine.connect() as conn:
        return sorted(str(r[0]) for r in conn.execute(query))


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return now_us(parse_date(value.strip()).start)
    except InvalidSearch:
        raise ApiError(400, "invalid", "_since must be a FHIR instant") from None


async def _kick_off(request: Request, patients_only: bool) -> Response:
    ctx = await _context(request)
    if "respond-async" not in request.headers.get("prefer", "").lower():
        raise ApiError(400, "invalid", "a bulk export needs the header Prefer: respond-async")
    params = request.query_params
    extra = sorted(set(params) - _PARAMS)
    if extra:
        raise ApiError(400, "not-supported", f"unsupported export parameter: {extra[0][:64]}")
    output_format = params.get("_outputFormat")
    if output_format is not None and output_format not in FORMATS:
        raise ApiError(400, "not-supported", "the only output format is application/fhir+ndjson")
    vault: Vault = request.app.state.vault
    since = _since(params.get("_since"))
    types = await run_in_threadpool(_types, vault, params.get("_type"), patients_only)
    repo = vault.repository(ctx)
    await run_in_threadpool(repo.export_allowed, types)  # 403 now, not an empty export
    job_id = secrets.token_hex(16)
    now = now_us(vault.clock.now())

    def start() -> None:
        with vault.engine.begin() as conn:
            _sweep(conn, vault, now)
            conn.execute(
                insert(export_jobs).values(
                    job_id=job_id,
                    tenant=vault.tenant,
                    owner=ctx.principal.reference,
                    request_url=str(request.url)[:2000],
                    status="in-progress",
                    exported=0,
                    requested_at=now,
                    updated_at=now,
                    expires_at=None,
                    error=None,
                )
            )

    await run_in_threadpool(start)
    worker = threading.Thread(
        target=run_export,
        args=(vault, ctx, job_id, types, since, patients_only),
        name=f"phiguard-export-{job_id[:8]}",
        daemon=True,
    )
    worker.start()
    return Response(
        status_code=202,
        headers={"Content-Location": f"{_base(request)}/$export-status/{job_id}"},
    )


@router.get("/$export", summary="Bulk export of the whole store (async)")
async def export_system(request: Request) -> Response:
    return await _kick_off(request, patients_only=False)


@router.get("/Patient/$export", summary="Bulk export of patients' compartments (async)")
async def export_patients(request: Request) -> Response:
    return await _kick_off(request, patients_only=True)


# -- the job ---------------------------------------------------------------------------------
def _file_aad(vault: Vault, job_id: str, seq: int) -> bytes:
    return aad(vault.tenant, _AAD_KIND, job_id, seq, EXPORT_COMPARTMENT)


def run_export(
    vault: Vault,
    ctx: AccessContext,
    job_id: str,
    types: list[str],
    since_us: int | None,
    patients_only: bool,
) -> None:
    """Write the export's files; the job row says how far it got and how it ended."""
    seq = 0
    exported = 0
    lines: list[bytes] = []
    current = ""

    def flush() -> None:
        nonlocal seq, lines
        if not lines:
            return
        body = b"\n".join(lines) + b"\n"
        with vault.engine.begin() as conn:
            sealer = vault.keyring.current_sealer(EXPORT_COMPARTMENT, conn)
            conn.execute(
                insert(export_files).values(
                    job_id=job_id,
                    seq=seq,
                    rtype=current,
                    count=len(lines),
                    dek_version=sealer.key_version,
                    body=sealer.seal(body, _file_aad(vault, job_id, seq)),
                )
            )
            conn.execute(
                update(export_jobs)
                .where(export_jobs.c.job_id == job_id)
                .values(exported=exported, updated_at=now_us(vault.clock.now()))
            )
        seq += 1
        lines = []

    try:
        repo = vault.repository(ctx)
        for rtype, batch in repo.export(types, since_us=since_us, patients_only=patients_only):
            if rtype != current:
                flush()
                current = rtype
            stop = _why_stop(vault, job_id, ctx)
            if stop is not None:
                if stop:
                    _finish(vault, job_id, "error", exported, now_us(vault.clock.now()), stop)
                return
            for stored in batch:
                lines.append(
                    json.dumps(stored.resource, separators=(",", ":"), ensure_ascii=False).encode()
                )
                exported += 1
                if len(lines) >= FILE_RESOURCES:
                    flush()
        flush()
        now = now_us(vault.clock.now())
        _finish(vault, job_id, "complete", exported, now, None)
    except Exception as exc:  # the job reports it; the class only, a message could hold PHI
        _finish(vault, job_id, "error", exported, now_us(vault.clock.now()), type(exc).__name__)


def _why_stop(vault: Vault, job_id: str, ctx: AccessContext) -> str | None:
    """None while the export should go on; else why not: "" once the owner deleted the
    job, a reason once the owner may no longer act (an account suspended or
    terminated, an application revoked: the export stops at the next batch, as their
    next request would be refused)."""
    principal = ctx.principal
    j = export_jobs.c
    with vault.engine.connect() as conn:
        if conn.execute(select(func.count()).where(j.job_id == job_id)).scalar_one() == 0:
            return ""
        if principal.kind == "user":
            status = conn.execute(
                select(users.c.status).where(users.c.user_id == principal.id)
            ).scalar()
            if status != "active":
                return "the account that started it is no longer active"
        elif principal.kind == "client":
            app = conn.execute(
                select(oauth_clients.c.revoked_at).where(oauth_clients.c.client_id == principal.id)
            ).first()
            if app is None or app.revoked_at is not None:
                return "the application that started it is revoked"
    return None


def _finish(
    vault: Vault, job_id: str, status: str, exported: int, now: int, error: str | None
) -> None:
    with vault.engine.begin() as conn:
        conn.execute(
            update(export_jobs)
            .where(export_jobs.c.job_id == job_id)
            .values(
                status=status,
                exported=exported,
                updated_at=now,
                expires_at=now + KEEP_US,
                error=error,
            )
        )


def _sweep(conn: Any, vault: Vault, now: int) -> None:
    """Jobs past their hour go, with their files."""
    j = export_jobs.c
    old = [
        str(r[0])
        for r in conn.execute(select(j.job_id).where(j.tenant == vault.tenant, j.expires_at < now))
    ]
    _drop(conn, old)


def _drop(conn: Any, job_ids: Iterable[str]) -> None:
    ids = list(job_ids)
    if ids:
        conn.execute(delete(export_files).where(export_files.c.job_id.in_(ids)))
        conn.execute(delete(export_jobs).where(export_jobs.c.job_id.in_(ids)))


# -- status, files, delete ------------------------------------------------------------------
async def _owned_job(request: Request, job_id: str) -> tuple[Vault, Any]:
    """The caller's own job, or 404 (another's job does not exist for them)."""
    ctx = await _context(request)
    vault: Vault = request.app.state.vault
    now = now_us(vault.clock.now())

    def find() -> Any:
        with vault.engine.connect() as conn:
            job = conn.execute(
                select(export_jobs).where(
                    export_jobs.c.job_id == job_id[:32],
                    export_jobs.c.tenant == vault.tenant,
                    export_jobs.c.owner == ctx.principal.reference,
                )
            ).first()
        if job is not None and job.expires_at is not None and int(job.expires_at) < now:
            # Past its hour: it goes now (other expired jobs go at the next kick-off).
            with vault.engine.begin() as conn:
                _drop(conn, [str(job.job_id)])
            return None
        return job

    job = await run_in_threadpool(find)
    if job is None:
        raise ApiError(404, "not-found", "no such export")
    return vault, job


@router.get("/$export-status/{job_id}", summary="Status of a bulk export")
async def export_status(request: Request, job_id: str) -> Response:
    vault, job = await _owned_job(request, job_id)
    now = now_us(vault.clock.now())
    if job.status == "in-progress" and now - int(job.updated_at) > STALE_US:
        raise ApiError(500, "exception", "the export stopped (was the server restarted?)")
    if job.status == "in-progress":
        return Response(
            status_code=202,
            headers={"X-Progress": f"{int(job.exported)} resources", "Retry-After": "2"},
        )
    if job.status == "error":
        raise ApiError(500, "exception", f"the export failed ({job.error})")

    def files() -> list[Any]:
        with vault.engine.connect() as conn:
            return list(
                conn.execute(
                    select(export_files.c.seq, export_files.c.rtype, export_files.c.count)
                    .where(export_files.c.job_id == job.job_id)
                    .order_by(export_files.c.seq)
                )
            )

    base = _base(request)
    manifest = {
        "transactionTime": isoformat(from_us(int(job.requested_at))),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {
                "type": f.rtype,
                "url": f"{base}/$export-file/{job.job_id}/{f.seq}",
                "count": int(f.count),
            }
            for f in await run_in_threadpool(files)
        ],
        "error": [],
    }
    return Response(
        json.dumps(manifest, separators=(",", ":")),
        media_type="application/json",
        headers={"Expires": isoformat(from_us(int(job.expires_at)))},
    )


@router.delete("/$export-status/{job_id}", summary="Discard a bulk export")
async def export_delete(request: Request, job_id: str) -> Response:
    vault, job = await _owned_job(request, job_id)

    def drop() -> None:
        with vault.engine.begin() as conn:
            _drop(conn, [str(job.job_id)])

    await run_in_threadpool(drop)
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{seq}", summary="One file of a bulk export")
async def export_file(request: Request, job_id: str, seq: int) -> Response:
    vault, job = await _owned_job(request, job_id)
    if job.status != "complete":
        raise ApiError(404, "not-found", "no such export file")

    def opened() -> bytes | None:
        with vault.engine.connect() as conn:
            row = conn.execute(
                select(export_files.c.dek_version, export_files.c.body).where(
                    export_files.c.job_id == job.job_id, export_files.c.seq == seq
                )
            ).first()
            if row is None:
                return None
            sealer = vault.keyring.sealer(EXPORT_COMPARTMENT, int(row.dek_version), conn)
            return sealer.open(
                bytes(row.body), _file_aad(vault, str(job.job_id), seq), "export file"
            )

    body = await run_in_threadpool(opened)
    if body is None:
        raise ApiError(404, "not-found", "no such export file")
    return Response(body, media_type=NDJSON, headers={"Cache-Control": "no-store"})
