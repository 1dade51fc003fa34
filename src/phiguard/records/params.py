"""The search parameters phiguard serves, and how each is indexed.

``token`` parameters become blind-index tokens (exact match on a normalised or raw
value); ``date`` parameters become tokens at year, month and day precision, which
lets a date range be answered by a small set of tokens (see ``search.date_cover``).
``_id``, ``_lastUpdated`` and ``patient``/``subject`` are answered from system
metadata (resource id, write time, compartment) and need no token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Extract = Callable[[dict[str, Any]], Iterator[str]]


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # string | token | date
    extract: Extract
    normalised: bool = True  # strings fold case and accents; codes stay exact
    doc: str = ""


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _identifiers(res: dict[str, Any]) -> Iterator[str]:
    for ident in _list(res.get("identifier")):
        if not isinstance(ident, dict) or not ident.get("value"):
            continue
        value = str(ident["value"])
        yield value
        yield f"{ident.get('system', '')}|{value}"


def _codes(field: str) -> Extract:
    def extract(res: dict[str, Any]) -> Iterator[str]:
        for concept in _list(res.get(field)):
            if not isinstance(concept, dict):
                continue
            for coding in _list(concept.get("coding")):
                if isinstance(coding, dict) and coding.get("code"):
                    code = str(coding["code"])
                    yield code
                    yield f"{coding.get('system', '')}|{code}"

    return extract


def _words(value: str) -> Iterator[str]:
    """The whole value and, if it has several, each word: string parameters match whole
    words, so "Lopez" finds the family "García López" (and "garcia lopez" still does)."""
    yield value
    words = value.split()
    if len(words) > 1:
        yield from words


def _names(part: str) -> Extract:
    def extract(res: dict[str, Any]) -> Iterator[str]:
        for name in _list(res.get("name")):
            if isinstance(name, str):  # Organization.name
                if part in ("name", "text"):
                    yield name
                    yield from name.split()
                continue
            if not isinstance(name, dict):
                continue
            if part in ("family", "name") and name.get("family"):
                yield from _words(str(name["family"]))
            if part in ("given", "name"):
                for given in _list(name.get("given")):
                    yield from _words(str(given))
            if part == "name":
                if name.get("text"):
                    yield from str(name["text"]).split()
                yield from (str(p) for p in _list(name.get("prefix")))

    return extract


def _field(*paths: str) -> Extract:
    def extract(res: dict[str, Any]) -> Iterator[str]:
        for path in paths:
            node: Any = res
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            for value in _list(node):
                if isinstance(value, str | int | bool) and value != "":
                    yield str(value).lower() if isinstance(value, bool) else str(value)

    return extract


IDENTIFIER = Param("identifier", "token", _identifiers, normalised=False)

PARAMS: dict[str, dict[str, Param]] = {
    "Patient": {
        "identifier": IDENTIFIER,
        "name": Param("name", "string", _names("name")),
        "family": Param("family", "string", _names("family")),
        "given": Param("given", "string", _names("given")),
        "birthdate": Param("birthdate", "date", _field("birthDate")),
        "gender": Param("gender", "token", _field("gender"), normalised=False),
    },
    "Practitioner": {
        "identifier": IDENTIFIER,
        "name": Param("name", "string", _names("name")),
        "family": Param("family", "string", _names("family")),
        "given": Param("given", "string", _names("given")),
    },
    "Organization": {
        "identifier": IDENTIFIER,
        "name": Param("name", "string", _names("name")),
    },
    "Observation": {
        "identifier": IDENTIFIER,
        "code": Param("code", "token", _codes("code"), normalised=False),
        "date": Param(
            "date",
            "date",
            _field("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
        ),
        "status": Param("status", "token", _field("status"), normalised=False),
    },
    "Condition": {
        "identifier": IDENTIFIER,
        "code": Param("code", "token", _codes("code"), normalised=False),
        "onset-date": Param("onset-date", "date", _field("onsetDateTime", "onsetPeriod.start")),
        "recorded-date": Param("recorded-date", "date", _field("recordedDate")),
        # Not an R4 Condition parameter; served as the onset date for convenience.
        "date": Param("date", "date", _field("onsetDateTime", "onsetPeriod.start", "recordedDate")),
    },
    "Encounter": {
        "identifier": IDENTIFIER,
        "date": Param("date", "date", _field("period.start")),
        "status": Param("status", "token", _field("status"), normalised=False),
    },
}

# Answered from metadata for every type.
COMMON = ("_id", "_lastUpdated", "patient", "subject")
# Result-shaping parameters, not filters.
CONTROL = ("_count", "_offset", "_summary", "_sort", "_format", "_elements", "_total")


def params_for(resource_type: str) -> dict[str, Param]:
    return PARAMS.get(resource_type, {"identifier": IDENTIFIER})


def date_tokens(value: str) -> Iterator[str]:
    """Year, year-month and day tokens of a FHIR date or dateTime (as written).

    A date known only to the year or month also gets a ``~`` marker token, so a
    range search whose edge cuts through that year or month can find it and re-check
    it (``birthDate: 1990`` overlaps ``gt1990-02-10``).
    """
    if len(value) >= 4 and value[:4].isdigit():
        yield value[:4]
    if len(value) >= 7:
        yield value[:7]
    if len(value) >= 10:
        yield value[:10]
    if len(value) in (4, 7):
        yield "~" + value
