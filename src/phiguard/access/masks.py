"""Field masks: which parts of a resource a permitted caller still does not see.

Masks are data (policies/masks.yaml) attached to the permit policies, not to roles:
the permit that let a request through is the best statement of why the caller is
there, and so of what they need.  When several permits allow a request (a user with
two roles), a field stays visible if any one of them shows it; masking only what
every permit masks avoids hiding from a user what one of their roles legitimately
grants.

``apply_masks`` is pure: it returns a new resource and never touches the input,
which may be a cached or shared object.  Containers are copied only along the paths
that change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

REDACTED: Final[dict[str, str]] = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}
"""The label a masked resource carries, so a client knows it is not the whole record."""

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([A-Za-z_][A-Za-z0-9_]*)=([^\]]+)\])?")


@dataclass(frozen=True, slots=True)
class Step:
    """One element name on a mask path, optionally keeping only list items with key=value."""

    name: str
    key: str | None = None
    value: str | None = None


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[Step, ...]:
    """``identifier[system=http://...].value`` -> steps; raises ValueError if malformed.

    Dots inside a filter value (URLs) do not split the path.
    """
    steps: list[Step] = []
    pos = 0
    while True:
        match = _STEP.match(path, pos)
        if match is None:
            raise ValueError(f"mask path {path!r}: expected an element name at {pos}")
        name, key, value = match.groups()
        steps.append(Step(name, key, value))
        pos = match.end()
        if pos == len(path):
            return tuple(steps)
        if path[pos] != ".":
            raise ValueError(f"mask path {path!r}: unexpected {path[pos]!r} at {pos}")
        pos += 1


def _matches(item: Any, step: Step) -> bool:
    return isinstance(item, Mapping) and item.get(step.key) == step.value


def _empty(value: Any) -> bool:
    return isinstance(value, (dict, list)) and not value


def _strip(node: Any, steps: tuple[Step, ...]) -> tuple[Any, bool]:
    """``node`` without what ``steps`` point at, and whether anything was removed."""
    if isinstance(node, list):
        items: list[Any] = []
        changed = False
        for item in node:
            new, hit = _strip(item, steps)
            changed |= hit
            if not _empty(new):
                items.append(new)
        return (items, True) if changed else (node, False)
    if not isinstance(node, Mapping):
        return node, False
    step, rest = steps[0], steps[1:]
    if step.name not in node:
        return node, False
    value = node[step.name]
    if step.key is None:
        if not rest:
            return {k: v for k, v in node.items() if k != step.name}, True
        new_value, changed = _strip(value, rest)
    else:
        kept: list[Any] = []
        changed = False
        for item in value if isinstance(value, list) else [value]:
            if not _matches(item, step):
                kept.append(item)
            elif rest:
                new_item, hit = _strip(item, rest)
                changed |= hit
                if not _empty(new_item):
                    kept.append(new_item)
            else:
                changed = True
        # A single (non-list) element that matched the filter disappears entirely.
        new_value = kept if isinstance(value, list) else (kept[0] if kept else {})
    if not changed:
        return node, False
    out = {k: v for k, v in node.items() if k != step.name}
    if not _empty(new_value):
        out[step.name] = new_value
    return out, True


def apply_masks(
    resource: Mapping[str, Any], fields: Iterable[str], *, mark: bool = True
) -> dict[str, Any]:
    """A copy of ``resource`` without ``fields``; labelled REDACTED if anything was removed.

    Paths that are absent from the resource are ignored: masks describe what a role
    must not see, not what a resource must contain.
    """
    out: Any = dict(resource)
    removed = False
    for path in fields:
        out, hit = _strip(out, parse_path(path))
        removed |= hit
    if removed and mark:
        meta = dict(out.get("meta") or {})
        security = list(meta.get("security") or [])
        if not any(isinstance(c, Mapping) and c.get("code") == REDACTED["code"] for c in security):
            security.append(dict(REDACTED))
        meta["security"] = security
        out["meta"] = meta
    result: dict[str, Any] = out
    return result


@dataclass(frozen=True)
class MaskRule:
    """One entry of masks.yaml."""

    id: str
    why: str
    policies: frozenset[str]
    """Permit policy ids this mask is attached to."""
    types: frozenset[str]
    """Resource types it applies to; empty = every type."""
    fields: tuple[str, ...]

    def applies(self, permit: str, resource_type: str) -> bool:
        return permit in self.policies and (not self.types or resource_type in self.types)


class MaskTable:
    """The masks of one loaded policy set."""

    def __init__(self, rules: Iterable[MaskRule] = ()) -> None:
        self.rules = tuple(rules)

    @classmethod
    def from_data(cls, data: Any, permits: Iterable[str]) -> MaskTable:
        """Build from parsed masks.yaml; every mistake is collected into one ValueError.

        ``permits`` are the permit ids of the policy set: a mask attached to an id that
        is not a permit would silently never apply, so it is refused.
        """
        known = frozenset(permits)
        problems: list[str] = []
        rules: list[MaskRule] = []
        entries = data.get("masks") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("masks: expected a mapping with a 'masks' list")
        seen: set[str] = set()
        for n, entry in enumerate(entries):
            where = f"masks[{n}]"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: expected a mapping")
                continue
            mid = str(entry.get("id") or "")
            if not mid:
                problems.append(f"{where}: missing id")
            elif mid in seen:
                problems.append(f"{where}: duplicate id {mid!r}")
            seen.add(mid)
            policies = entry.get("policies")
            fields = entry.get("fields")
            types = entry.get("types") or []
            if not isinstance(policies, list) or not policies:
                problems.append(f"{where} ({mid}): 'policies' must be a non-empty list")
                policies = []
            if not isinstance(fields, list) or not fields:
                problems.append(f"{where} ({mid}): 'fields' must be a non-empty list")
                fields = []
            if not isinstance(types, list):
                problems.append(f"{where} ({mid}): 'types' must be a list")
                types = []
            for pid in policies:
                if pid not in known:
                    problems.append(f"{where} ({mid}): {pid!r} is not a permit policy id")
            for path in fields:
                try:
                    parse_path(str(path))
                except ValueError as exc:
                    problems.append(f"{where} ({mid}): {exc}")
            rules.append(
                MaskRule(
                    id=mid,
                    why=str(entry.get("why") or ""),
                    policies=frozenset(str(p) for p in policies),
                    types=frozenset(str(t) for t in types),
                    fields=tuple(str(f) for f in fields),
                )
            )
        if problems:
            raise ValueError("; ".join(problems))
        return cls(rules)

    def fields_for(self, permits: Iterable[str], resource_type: str) -> tuple[str, ...]:
        """Fields masked when ``permits`` allowed a request on ``resource_type``.

        The intersection over the permits: a field is hidden only if every permit
        that allowed the request hides it.
        """
        masked: set[str] | None = None
        for permit in permits:
            fields = {
                f for rule in self.rules if rule.applies(permit, resource_type) for f in rule.fields
            }
            masked = fields if masked is None else masked & fields
        return tuple(sorted(masked or ()))

    def rules_for(self, permit: str, resource_type: str) -> tuple[MaskRule, ...]:
        return tuple(r for r in self.rules if r.applies(permit, resource_type))
