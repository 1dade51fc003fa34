"""SMART on FHIR scopes as a narrowing filter.

Scopes never grant anything: a token's scopes can only take away from what the
user's roles allow (guards.cedar, ``scopes-narrow``).  So this module answers one
question, "do these scopes cover this action on this type?", and anything it cannot
read is treated as not covering.

Both scope syntaxes are read: SMART v1 (``user/Observation.read``, ``.write``,
``.*``) and v2 (``patient/Observation.rs``, letters from ``cruds``).  A v2 scope with
a query (``patient/Observation.rs?category=laboratory``) covers only the matching
resources; the query cannot be checked here, so such a scope covers nothing (fail
closed).  A ``patient/`` scope binds the token to its launch patient: given the
patient a request is about (``patient``) and the token's launch context
(``launch_patient``), it covers only that patient's data (and data about no patient);
without a launch patient it covers no patient's data at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# The permission letter each action needs (SMART v2 ``cruds``).
ACTION_LETTER: Final[dict[str, str]] = {
    "create": "c",
    "read": "r",
    "vread": "r",
    "history": "r",
    "everything": "r",
    "export": "r",
    "update": "u",
    "delete": "d",
    "search": "s",
}
_V1: Final[dict[str, str]] = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")
_V2_LETTERS = re.compile(r"^c?r?u?d?s?$")


def _letters(permission: str) -> str:
    if permission in _V1:
        return _V1[permission]
    if permission and _V2_LETTERS.match(permission):
        return permission
    return ""


def scopes_allow(
    scopes: Iterable[str] | None,
    action: str,
    resource_type: str,
    *,
    patient: str | None = None,
    launch_patient: str | None = None,
    bind_patient: bool = False,
) -> bool:
    """Whether ``scopes`` cover ``action`` on ``resource_type``; ``None`` = no token, no limit.

    With ``bind_patient`` a ``patient/`` scope covers a request about ``patient`` only
    when that is the token's ``launch_patient``.
    """
    if scopes is None:
        return True
    letter = ACTION_LETTER.get(action)
    if letter is None:
        return False
    for scope in scopes:
        match = _SCOPE.match(scope)
        if match is None:  # openid, fhirUser, launch, offline_access, v2 queries...
            continue
        context, rtype, permission = match.groups()
        if rtype not in ("*", resource_type) or letter not in _letters(permission):
            continue
        elsewhere = launch_patient is None or (patient is not None and patient != launch_patient)
        if bind_patient and context == "patient" and elsewhere:
            continue
        return True
    return False
