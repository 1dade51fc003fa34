"""FHIR REST routes.

Routes parse and check HTTP-level input, then hand the interaction to a
``Repository`` built for the authenticated caller.  Repository calls are blocking
(database and crypto), so they run in the thread pool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from phiguard.clock import isoformat
from phiguard.records.context import AccessContext
from phiguard.records.repository import Repository, SearchResult, StoredResource
from phiguard.records.validation import known_type

from .bundles import BundleProcessor, EntryFailed
from .capability import capability_statement
from .outcome import FHIR_JSON, ApiError, FhirResponse, outcome, status_for
from .paging import PageStore

T = TypeVar("T")
router = APIRouter(prefix="/fhir", tags=["FHIR R4"])
_TYPE = r"[A-Z][A-Za-z]{1,63}"
_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")


def _base(request: Request) -> str:
    configured: str = getattr(request.app.state, "base_url", "")
    return (configured or str(request.base_url).rstrip("/")) + "/fhir"


async def _context(request: Request) -> AccessContext:
    authenticate: Callable[[Request], AccessContext] = request.app.state.authenticate
    return await run_in_threadpool(authenticate, request)


async def _repo(request: Request) -> Repository:
    ctx = await _context(request)
    repo: Repository = request.app.state.vault.repository(ctx)
    return repo


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


async def _read_limited(request: Request) -> bytearray:
    """The raw body, refused with 413 as soon as it passes ``max_body_bytes``."""
    limit: int = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too-long", f"the body is larger than {limit} bytes")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise ApiError(413, "too-long", f"the body is larger than {limit} bytes")
    return chunks


async def _body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES:
        raise ApiError(415, "not-supported", "send application/fhir+json")
    chunks = await _read_limited(request)
    try:
        doc = json.loads(chunks)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "structure", "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "structure", "the body must be a JSON object")
    return doc


def _if_match(request: Request) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    m = _ETAG.match(value.strip())
    if not m:
        raise ApiError(400, "invalid", 'If-Match must be a version ETag such as W/"3"')
    return int(m.group(1))


def _representation(request: Request) -> bool:
    return "return=minimal" not in request.headers.get("prefer", "")


def _resource_response(
    stored: StoredResource, status: int = 200, *, body: bool = True, base: str = ""
) -> FhirResponse:
    headers = {"ETag": stored.etag, "Last-Modified": stored.last_updated}
    if status == 201 and base:
        headers["Location"] = f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
    return FhirResponse(stored.resource if body else None, status_code=status, headers=headers)


def _search_bundle(
    base: str,
    rtype: str,
    items: list[tuple[str, str]],
    result: SearchResult,
    pages_key: str | None = None,
) -> dict[str, Any]:
    if pages_key is not None:  # a POSTed search: links name the continuation only
        plain = [("_getpages", pages_key), ("_count", str(result.count))]
    else:
        plain = [(k, v) for k, v in items if k not in ("_offset",)]
    # _summary=count asks for the total only: no entries, and no paging links, which
    # would lead a client that follows ``next`` through pages that are all empty.
    summary = ("_summary", "count") in items

    def link(relation: str, offset: int) -> dict[str, str]:
        return {
            "relation": relation,
            "url": f"{base}/{rtype}?" + urlencode([*plain, ("_offset", str(offset))]),
        }

    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    # A search filtered by access control counts only what the caller may see, and
    # leaves ``total`` out when it stopped scanning before the end (docs/access.md).
    if result.total is not None:
        bundle["total"] = result.total
    if result.count and not summary:
        links = [link("self", result.offset), link("first", 0)]
        if result.more:
            links.append(link("next", result.offset + result.count))
        if result.offset > 0:
            links.append(link("previous", max(0, result.offset - result.count)))
        bundle["link"] = links
    if result.entries:  # FHIR JSON has no empty arrays: no matches means no entry element
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{s.resource_type}/{s.id}",
                "resource": s.resource,
                "search": {"mode": "match"},
            }
            for s in result.entries
        ]
    return bundle


def _history_bundle(base: str, versions: list[StoredResource]) -> dict[str, Any]:
    entries = []
    for s in versions:
        url = f"{s.resource_type}/{s.id}"
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{url}",
            "request": {
                "method": "DELETE" if s.deleted else ("POST" if s.version == 1 else "PUT"),
                "url": url if s.version != 1 else s.resource_type,
            },
            "response": {
                "status": "204" if s.deleted else ("201" if s.version == 1 else "200"),
                "etag": s.etag,
                "lastModified": s.last_updated,
            },
        }
        if s.resource is not None:
            entry["resource"] = s.resource
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}


@router.get("/metadata", summary="CapabilityStatement (no authentication needed)")
async def metadata(request: Request) -> FhirResponse:
    clock = request.app.state.vault.clock
    return FhirResponse(capability_statement(_base(request), isoformat(clock.now())))


@router.post("", summary="Batch or transaction Bundle")
@router.post("/", include_in_schema=False)
async def batch(request: Request) -> FhirResponse:
    repo = await _repo(request)
    bundle = await _body(request)
    try:
        result = await _call(
            BundleProcessor(repo).process,
            bundle,
            representation="return=representation" in request.headers.get("prefer", ""),
        )
    except EntryFailed as exc:
        # A failed transaction entry rolled everything back: answer with the status
        # of the entry's own error (400, 404, 412, ...), naming the entry.
        status, code, texts = status_for(exc.cause)
        return FhirResponse(outcome("error", code, [str(exc), *texts]), status_code=status)
    return FhirResponse(result)


@router.get("/Patient/{rid}/$everything", summary="Everything about one patient")
async def everything(request: Request, rid: str) -> FhirResponse:
    repo = await _repo(request)
    found = await _call(repo.everything, rid)
    base = _base(request)
    return FhirResponse(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {"fullUrl": f"{base}/{s.resource_type}/{s.id}", "resource": s.resource}
                for s in found
            ],
        }
    )


@router.get("/{rtype}", summary="Search")
async def search(request: Request, rtype: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    items = list(request.query_params.multi_items())
    pages_key = request.query_params.get("_getpages")
    if pages_key is not None:
        pages: PageStore = request.app.state.pages
        stored = pages.get(pages_key, repo.ctx.principal.reference, rtype)
        overrides = [(k, v) for k, v in items if k in ("_offset", "_count")]
        items = [*[(k, v) for k, v in stored if k != "_count"], *overrides]
    result = await _call(repo.search, rtype, items)
    return FhirResponse(_search_bundle(_base(request), rtype, items, result, pages_key))


@router.post(
    "/{rtype}/_search", summary="Search with form-encoded parameters (keeps PHI out of URLs)"
)
async def search_post(request: Request, rtype: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise ApiError(415, "not-supported", "send application/x-www-form-urlencoded")
    # Parsed here rather than with request.form(), which needs python-multipart (not a
    # dependency) and would not apply max_body_bytes.
    raw = await _read_limited(request)
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ApiError(400, "structure", "the form body is not valid UTF-8") from None
    items = [*request.query_params.multi_items(), *form]
    result = await _call(repo.search, rtype, items)
    pages: PageStore = request.app.state.pages
    key = pages.put(repo.ctx.principal.reference, rtype, items)
    return FhirResponse(_search_bundle(_base(request), rtype, items, result, key))


@router.post("/{rtype}", summary="Create")
async def create(request: Request, rtype: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    resource = await _body(request)
    if "id" in resource:
        resource = {k: v for k, v in resource.items() if k != "id"}  # the server assigns ids
    stored = await _call(repo.create, resource, expected_type=rtype)
    return _resource_response(stored, 201, body=_representation(request), base=_base(request))


@router.get("/{rtype}/{rid}", summary="Read")
async def read(request: Request, rtype: str, rid: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    return _resource_response(await _call(repo.read, rtype, rid))


@router.put("/{rtype}/{rid}", summary="Update (If-Match for version-aware updates)")
async def update(request: Request, rtype: str, rid: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    resource = await _body(request)
    stored, created = await _call(repo.update, rtype, rid, resource, if_match=_if_match(request))
    return _resource_response(
        stored, 201 if created else 200, body=_representation(request), base=_base(request)
    )


@router.delete("/{rtype}/{rid}", summary="Delete")
async def delete(request: Request, rtype: str, rid: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    await _call(repo.delete, rtype, rid)
    return FhirResponse(outcome("information", "informational", ["deleted"]), status_code=200)


@router.get("/{rtype}/{rid}/_history", summary="History of one resource")
async def history(request: Request, rtype: str, rid: str) -> FhirResponse:
    _check_type_path(rtype)
    repo = await _repo(request)
    return FhirResponse(_history_bundle(_base(request), await _call(repo.history, rtype, rid)))


@router.get("/{rtype}/{rid}/_history/{vid}", summary="Read one version")
async def vread(request: Request, rtype: str, rid: str, vid: str) -> FhirResponse:
    _check_type_path(rtype)
    if not vid.isdigit():
        raise ApiError(400, "invalid", "a version id is a whole number")
    repo = await _repo(request)
    return _resource_response(await _call(repo.vread, rtype, rid, int(vid)))


def _check_type_path(rtype: str) -> None:
    # FHIR (http.html): an unsupported resource type in the URL is 404 Not Found.
    if not re.fullmatch(_TYPE, rtype) or not known_type(rtype):
        raise ApiError(404, "not-supported", "unsupported resource type")


__all__ = ["FHIR_JSON", "router"]
