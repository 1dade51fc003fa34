"""Batch and transaction Bundles, and the reference resolution they need.

POST entries get their ids before anything is written, so entries may refer to each
other in any order: a ``urn:uuid:`` fullUrl whose UUID is not yet taken becomes the
new resource's id (re-importing the same Synthea bundle is then idempotent in ids),
and every ``urn:uuid:`` reference is rewritten to ``Type/id``.  A ``urn:uuid`` that
names no entry of the bundle is looked up among existing resources (Synthea patient
bundles point at practitioners and organisations from separate bundles), and a
conditional reference ``Type?param=value`` is resolved by search and must match
exactly one resource.

A transaction is one database transaction: any failed entry rolls all back.  A
batch answers each entry on its own; the repository raises every domain error
before it writes, so a failed entry leaves nothing behind.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from phiguard.errors import (
    InvalidResource,
    PhiGuardError,
)
from phiguard.records.compartment import iter_references
from phiguard.records.repository import Repository, StoredResource
from phiguard.records.validation import known_type, valid_id

from .outcome import outcome, status_for

MAX_ENTRIES = 20_000
_UUID = re.compile(
    r"^urn:uuid:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    resource: dict[str, Any] | None
    full_url: str | None
    if_match: int | None
    rtype: str = ""
    rid: str = ""


def _status_line(code: int) -> str:
    return {200: "200 OK", 201: "201 Created", 204: "204 No Content"}.get(code, str(code))


def parse_entries(bundle: dict[str, Any]) -> list[Entry]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidResource("Bundle.entry must be a list")
    if len(entries) > MAX_ENTRIES:
        raise InvalidResource(f"a Bundle may hold at most {MAX_ENTRIES} entries")
    out = []
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise InvalidResource(f"entry {i} has no request")
        req = raw["request"]
        method = str(req.get("method", "")).upper()
        if method not in _ORDER:
            raise InvalidResource(f"entry {i}: unsupported method {method[:10]}")
        url = str(req.get("url", "")).strip().lstrip("/")
        resource = raw.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise InvalidResource(f"entry {i}: {method} needs a resource")
        if_match = None
        if req.get("ifMatch"):
            m = re.fullmatch(r'(?:W/)?"?(\d+)"?', str(req["ifMatch"]).strip())
            if not m:
                raise InvalidResource(f"entry {i}: ifMatch must be a version ETag")
            if_match = int(m.group(1))
        full_url = raw.get("fullUrl")
        out.append(Entry(i, method, url, resource, str(full_url) if full_url else None, if_match))
    return out


class BundleProcessor:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # -- id assignment and reference rewriting ---------------------------------------
    def _assign(self, entries: list[Entry]) -> dict[str, str]:
        mapping: dict[str, str] = {}
        candidates = [
            m.group(1).lower()
            for e in entries
            if e.method == "POST" and (m := _UUID.match(e.full_url or ""))
        ]
        taken: set[str] = set(self.repo.existing_ids(candidates)) if candidates else set()
        for e in entries:
            if e.method == "POST":
                rtype = e.url.split("?")[0] or str((e.resource or {}).get("resourceType", ""))
                if not known_type(rtype) or (e.resource or {}).get("resourceType") != rtype:
                    raise InvalidResource(f"entry {e.index}: the URL and resourceType disagree")
                m = _UUID.match(e.full_url or "")
                candidate = m.group(1).lower() if m else None
                rid = candidate if candidate and candidate not in taken else str(uuid.uuid4())
                taken.add(rid)
                e.rtype, e.rid = rtype, rid
            elif e.method in ("PUT", "DELETE", "GET"):
                path = e.url.split("?")[0]
                parts = path.split("/")
                if e.method != "GET" or len(parts) == 2:
                    if len(parts) != 2 or not known_type(parts[0]) or not valid_id(parts[1]):
                        raise InvalidResource(
                            f"entry {e.index}: {e.method} needs a URL of the form Type/id"
                        )
                    e.rtype, e.rid = parts
                else:
                    e.rtype = parts[0]
            if e.full_url and e.rtype and e.rid:
                mapping[e.full_url] = f"{e.rtype}/{e.rid}"
            if e.method in ("POST", "PUT") and e.rtype and e.rid:
                self.repo.note_known(e.rtype, e.rid)
        return mapping

    def _resolve(self, entry: Entry, mapping: dict[str, str], cache: dict[str, str]) -> list[str]:
        """Rewrite the entry's references in place; return them as written."""
        if entry.resource is None:
            return []
        out = []
        for holder, ref in iter_references(entry.resource):
            target = mapping.get(ref) or cache.get(ref)
            if target is None and ref.startswith("urn:uuid:"):
                found = self.repo.resolve_id(ref.removeprefix("urn:uuid:").lower())
                if found is None:
                    raise InvalidResource(
                        f"entry {entry.index}: a reference names nothing in the bundle or store",
                        [f"unresolved reference {ref[:80]}"],
                    )
                target = f"{found}/{ref.removeprefix('urn:uuid:').lower()}"
            elif target is None and "?" in ref and "://" not in ref:
                target = self._conditional(entry, ref)
            if target is not None:
                cache[ref] = target
                holder["reference"] = target
            out.append(target or ref)
        return out

    def _conditional(self, entry: Entry, ref: str) -> str:
        rtype, _, query = ref.partition("?")
        if not known_type(rtype):
            raise InvalidResource(f"entry {entry.index}: malformed conditional reference")
        result = self.repo.search(
            rtype, [*parse_qsl(query, keep_blank_values=True), ("_count", "2")]
        )
        # Counted from the entries (at most two asked for): a filtered search may not
        # give a total, and must not reveal matches the caller may not see.
        matched = len(result.entries)
        if matched != 1:
            raise InvalidResource(
                f"entry {entry.index}: a conditional reference matched "
                f"{'more than one resource' if matched > 1 else 'no resource'}"
            )
        return f"{rtype}/{result.entries[0].id}"

    # -- processing ------------------------------------------------------------------
    def _run(self, e: Entry) -> tuple[int, StoredResource | None, dict[str, Any] | None]:
        repo = self.repo
        if e.method == "POST":
            return 201, repo.create(e.resource or {}, rid=e.rid, expected_type=e.rtype), None
        if e.method == "PUT":
            stored, created = repo.update(e.rtype, e.rid, e.resource or {}, if_match=e.if_match)
            return (201 if created else 200), stored, None
        if e.method == "DELETE":
            repo.delete(e.rtype, e.rid)
            return 204, None, None
        if e.rid:
            return 200, repo.read(e.rtype, e.rid), None
        query = urlsplit(e.url).query
        result = repo.search(e.rtype, parse_qsl(query, keep_blank_values=True))
        return (
            200,
            None,
            {
                "resourceType": "Bundle",
                "type": "searchset",
                **({"total": result.total} if result.total is not None else {}),
                # FHIR JSON has no empty arrays: no visible match, no entry element.
                **(
                    {"entry": [{"resource": s.resource} for s in result.entries]}
                    if result.entries
                    else {}
                ),
            },
        )

    @staticmethod
    def _response(
        code: int, stored: StoredResource | None, body: dict[str, Any] | None, representation: bool
    ) -> dict[str, Any]:
        response: dict[str, Any] = {"status": _status_line(code)}
        entry: dict[str, Any] = {"response": response}
        if stored is not None:
            response["location"] = f"{stored.resource_type}/{stored.id}/_history/{stored.version}"
            response["etag"] = stored.etag
            response["lastModified"] = stored.last_updated
            if representation or code == 200:
                entry["resource"] = stored.resource
        if body is not None:
            entry["resource"] = body
        return entry

    def prepare_writes(
        self, bundle: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[list[str]]] | None:
        """For a Bundle of only POST/PUT entries: the resources with ids assigned and
        references rewritten (and those references), ready for
        ``Repository.put_many``; None for any other Bundle.  Must run inside
        ``repo.atomic()`` (it registers the ids the unit will create)."""
        entries = parse_entries(bundle)
        if any(e.method not in ("POST", "PUT") for e in entries):
            return None
        mapping = self._assign(entries)
        cache: dict[str, str] = {}
        items, refs = [], []
        for e in entries:
            if (e.resource or {}).get("resourceType") != e.rtype:
                raise InvalidResource(f"entry {e.index}: the URL and resourceType disagree")
            refs.append(self._resolve(e, mapping, cache))
            items.append({**(e.resource or {}), "id": e.rid})
        return items, refs

    def process(self, bundle: dict[str, Any], *, representation: bool = False) -> dict[str, Any]:
        kind = bundle.get("type")
        if bundle.get("resourceType") != "Bundle" or kind not in ("batch", "transaction"):
            raise InvalidResource("POST /fhir takes a Bundle of type batch or transaction")
        entries = parse_entries(bundle)
        order = sorted(entries, key=lambda x: (_ORDER[x.method], x.index))
        responses: dict[int, dict[str, Any]] = {}
        with self.repo.atomic():
            mapping = self._assign(entries)
            cache: dict[str, str] = {}
            for e in order:
                try:
                    self._resolve(e, mapping, cache)
                    code, stored, body = self._run(e)
                    responses[e.index] = self._response(code, stored, body, representation)
                except PhiGuardError as exc:
                    if kind == "transaction":
                        raise _EntryFailed(e.index, exc) from exc
                    status, code_, texts = status_for(exc)
                    responses[e.index] = {
                        "response": {
                            "status": str(status),
                            "outcome": outcome("error", code_, texts),
                        }
                    }
        return {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": f"{kind}-response",
            "entry": [responses[i] for i in range(len(entries))],
        }


class _EntryFailed(PhiGuardError):
    def __init__(self, index: int, cause: PhiGuardError) -> None:
        super().__init__(f"entry {index} failed")
        self.index = index
        self.cause = cause


EntryFailed = _EntryFailed
