"""SMART scopes at the authorization server: parse, bound, and narrow.

A granted scope is the intersection of three sets: what the app asked for, the
ceiling registered for the app (``oauth_clients.scopes``), and what the user's roles
could ever be allowed by the access policy.  Intersection works per resource scope:
``user/*.cruds`` against a ceiling of ``user/Observation.rs`` gives
``user/Observation.rs``.  Nothing here grants access: at request time the Cedar
policy decides, and the token's scopes can only take away (``access/scopes.py``).

The role ceiling is coarse on purpose (permission letters per role, no resource
types): types are the policy's business, and a second, finer copy of the policy here
would drift from it.  No role is ever allowed to delete, so ``d`` never survives.

Scopes with a v2 query (``patient/Observation.rs?category=laboratory``) are refused:
the enforcement point cannot evaluate the query yet, and a scope that cannot be
enforced must not be granted as if it could.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from phiguard.roles import ROLES

# Identity and launch scopes phiguard understands (SMART App Launch 2).
OPENID: Final = "openid"
FHIR_USER: Final = "fhirUser"
LAUNCH_PATIENT: Final = "launch/patient"
OFFLINE: Final = "offline_access"
ONLINE: Final = "online_access"
NON_RESOURCE: Final = frozenset({OPENID, FHIR_USER, LAUNCH_PATIENT, OFFLINE, ONLINE})

LETTERS: Final = "cruds"
_V1: Final[dict[str, str]] = {"read": "rs", "write": "cud", "*": "cruds"}
_RESOURCE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]{1,63})\.([a-z*]{1,5})$")
_V2 = re.compile(r"^c?r?u?d?s?$")

MAX_SCOPES: Final = 64
MAX_SCOPE_CHARS: Final = 128
MAX_SCOPE_PARAM: Final = 2048

# What each role could ever be allowed (see access/policies): clinicians and
# registration create, read, update and search; everyone else reads and searches
# (reference data at least).  Delete is granted to no role.
ROLE_LETTERS: Final[dict[str, str]] = {
    "physician": "crus",
    "nurse": "crus",
    "registration": "crus",
    "billing": "rs",
    "him": "rs",
    "researcher": "rs",
    "privacy_officer": "rs",
    "security_admin": "rs",
}
if set(ROLE_LETTERS) != set(ROLES):  # pragma: no cover - a role added without its ceiling
    raise RuntimeError("every workforce role needs a scope ceiling in oauth_scopes")

# Offered in /.well-known/smart-configuration.
SUPPORTED: Final = (
    OPENID,
    FHIR_USER,
    LAUNCH_PATIENT,
    OFFLINE,
    ONLINE,
    "patient/*.rs",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
)


class ScopeError(ValueError):
    """A scope string is malformed, too long, or of a kind phiguard does not grant."""


@dataclass(frozen=True, order=True)
class ResourceScope:
    """``context/type.letters``, with v1 permissions read as their v2 letters."""

    context: str  # patient | user | system
    rtype: str  # a resource type or "*"
    letters: str  # subset of "cruds", in that order
    text: str  # as written (kept when narrowing changes nothing)

    def __str__(self) -> str:
        return self.text


def _ordered(letters: Iterable[str]) -> str:
    chosen = set(letters)
    return "".join(c for c in LETTERS if c in chosen)


def parse_resource(scope: str) -> ResourceScope | None:
    """The resource scope ``scope`` names, or None when it is not a resource scope."""
    match = _RESOURCE.match(scope)
    if match is None:
        return None
    context, rtype, permission = match.groups()
    if permission in _V1:
        letters = _V1[permission]
    elif _V2.match(permission):
        letters = permission
    else:
        return None
    if not letters:
        return None
    return ResourceScope(context, rtype, letters, scope)


def split(scope: str | None) -> list[str]:
    """The scopes of a space-separated parameter, bounded and in their given order.

    Raises ``ScopeError`` for an oversized parameter, too many scopes, an overlong
    scope, or a scope that is neither a known identity/launch scope nor a resource
    scope (including v2 scopes with a query).
    """
    if scope is None:
        return []
    if len(scope) > MAX_SCOPE_PARAM:
        raise ScopeError("scope parameter too long")
    items = scope.split()
    if len(items) > MAX_SCOPES:
        raise ScopeError("too many scopes")
    out: list[str] = []
    for item in items:
        if len(item) > MAX_SCOPE_CHARS:
            raise ScopeError("scope too long")
        if item not in NON_RESOURCE and parse_resource(item) is None:
            raise ScopeError("unsupported scope")
        if item not in out:
            out.append(item)
    return out


def _meet(asked: ResourceScope, limit: ResourceScope) -> ResourceScope | None:
    if asked.context != limit.context:
        return None
    if asked.rtype == "*":
        rtype = limit.rtype
    elif limit.rtype in ("*", asked.rtype):
        rtype = asked.rtype
    else:
        return None
    letters = _ordered(set(asked.letters) & set(limit.letters))
    if not letters:
        return None
    if rtype == asked.rtype and letters == asked.letters:
        return asked  # unchanged: keep the app's own spelling (v1 stays v1)
    text = f"{asked.context}/{rtype}.{letters}"
    return ResourceScope(asked.context, rtype, letters, text)


def narrow(requested: Iterable[str], ceiling: Iterable[str]) -> list[str]:
    """The part of ``requested`` that ``ceiling`` covers, scope by scope.

    Identity and launch scopes pass when the ceiling lists them; each resource scope
    is intersected with every ceiling resource scope of the same context.  The result
    never covers anything that either side does not.
    """
    limits = list(ceiling)
    limit_set = set(limits)
    limit_resources = [r for r in (parse_resource(s) for s in limits) if r is not None]
    out: list[str] = []
    for scope in requested:
        if scope in NON_RESOURCE:
            if scope in limit_set and scope not in out:
                out.append(scope)
            continue
        asked = parse_resource(scope)
        if asked is None:
            continue
        for limit in limit_resources:
            met = _meet(asked, limit)
            if met is not None and met.text not in out:
                out.append(met.text)
    return out


def role_ceiling(roles: Iterable[str]) -> list[str]:
    """The most a user with ``roles`` could use: patient/ and user/ scopes, no system/."""
    letters = _ordered("".join(ROLE_LETTERS.get(r, "") for r in roles))
    identity = [OPENID, FHIR_USER, LAUNCH_PATIENT, OFFLINE, ONLINE]
    if not letters:
        return identity
    return [*identity, f"patient/*.{letters}", f"user/*.{letters}"]


def user_scopes(scopes: Iterable[str]) -> bool:
    """Whether every resource scope is a ``patient/`` or ``user/`` one (no ``system/``)."""
    return all((r := parse_resource(s)) is None or r.context in ("patient", "user") for s in scopes)


def join(scopes: Iterable[str]) -> str:
    return " ".join(scopes)
