"""Reading security labels and patient flags out of a FHIR resource's ``meta.security``.

Only codes from the two HL7 code systems the policies speak about become labels, so
a code that happens to read ``R`` in some other system cannot switch a guard on or
off.  Every ActCode and Confidentiality code is passed through (not only the ones
guards.cedar lists today) so a new guard needs no code change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
FLAGS_SYSTEM: Final = "urn:phiguard:flags"
LABEL_SYSTEMS: Final[frozenset[str]] = frozenset({ACT_CODE, CONFIDENTIALITY})


def _security(resource: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not resource:
        return []
    meta = resource.get("meta")
    if not isinstance(meta, Mapping):
        return []
    security = meta.get("security")
    if not isinstance(security, list):
        return []
    return [c for c in security if isinstance(c, Mapping)]


def security_labels(resource: Mapping[str, Any] | None) -> frozenset[str]:
    """The ActCode and Confidentiality codes in ``meta.security`` (e.g. ``PSY``, ``R``)."""
    return frozenset(
        str(c["code"])
        for c in _security(resource)
        if c.get("system") in LABEL_SYSTEMS and isinstance(c.get("code"), str)
    )


def has_flag(resource: Mapping[str, Any] | None, flag: str) -> bool:
    """Whether ``meta.security`` carries ``urn:phiguard:flags|<flag>`` (e.g. ``vip``)."""
    return any(
        c.get("system") == FLAGS_SYSTEM and c.get("code") == flag for c in _security(resource)
    )


_NO_LABELS: Final[frozenset[str]] = frozenset()


def labels_and_flag(resource: Mapping[str, Any] | None, flag: str) -> tuple[frozenset[str], bool]:
    """``security_labels(resource)`` and ``has_flag(resource, flag)`` in one pass (every
    decision asks for both; most resources carry no ``meta.security`` at all)."""
    meta = resource.get("meta") if resource else None
    security = meta.get("security") if isinstance(meta, Mapping) else None
    if not isinstance(security, list) or not security:
        return _NO_LABELS, False
    labels: set[str] = set()
    flagged = False
    for c in security:
        if not isinstance(c, Mapping):
            continue
        system, code = c.get("system"), c.get("code")
        if system in LABEL_SYSTEMS and isinstance(code, str):
            labels.add(code)
        elif system == FLAGS_SYSTEM and code == flag:
            flagged = True
    return frozenset(labels), flagged
