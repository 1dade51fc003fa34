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

The same file lists read-only fields: what a permit lets the caller see but not
change (a clinician updating a Patient may not rewrite the identity registration
keeps; nobody but an operator relabels a record).  ``merge_hidden`` prepares an
update: masked fields keep their stored values (a client cannot see them, so it
cannot be expected to send them back), and a changed read-only field is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from phiguard.errors import AccessDenied

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
    """The masks (and read-only fields) of one loaded policy set."""

    def __init__(self, rules: Iterable[MaskRule] = (), readonly: Iterable[MaskRule] = ()) -> None:
        self.rules = tuple(rules)
        self.readonly = tuple(readonly)

    @classmethod
    def from_data(cls, data: Any, permits: Iterable[str]) -> MaskTable:
        """Build from parsed masks.yaml; every mistake is collected into one ValueError.

        ``permits`` are the permit ids of the policy set: a mask attached to an id that
        is not a permit would silently never apply, so it is refused.
        """
        known = frozenset(permits)
        problems: list[str] = []
        entries = data.get("masks") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            raise ValueError("masks: expected a mapping with a 'masks' list")
        readonly = data.get("readonly") or []
        if not isinstance(readonly, list):
            raise ValueError("readonly: expected a list")
        seen: set[str] = set()
        rules = _rules(entries, "masks", known, seen, problems)
        fixed = _rules(readonly, "readonly", known, seen, problems)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(rules, fixed)

    def fields_for(self, permits: Iterable[str], resource_type: str) -> tuple[str, ...]:
        """Fields masked when ``permits`` allowed a request on ``resource_type``.

        The intersection over the permits: a field is hidden only if every permit
        that allowed the request hides it.
        """
        return _common(self.rules, permits, resource_type)

    def readonly_for(self, permits: Iterable[str], resource_type: str) -> tuple[str, ...]:
        """Fields the caller may not change, by the same intersection rule."""
        return _common(self.readonly, permits, resource_type)

    def rules_for(self, permit: str, resource_type: str) -> tuple[MaskRule, ...]:
        return tuple(r for r in self.rules if r.applies(permit, resource_type))


def _common(
    rules: tuple[MaskRule, ...], permits: Iterable[str], resource_type: str
) -> tuple[str, ...]:
    masked: set[str] | None = None
    for permit in permits:
        fields = {f for rule in rules if rule.applies(permit, resource_type) for f in rule.fields}
        masked = fields if masked is None else masked & fields
    return tuple(sorted(masked or ()))


def _rules(
    entries: list[Any], section: str, known: frozenset[str], seen: set[str], problems: list[str]
) -> list[MaskRule]:
    rules: list[MaskRule] = []
    for n, entry in enumerate(entries):
        where = f"{section}[{n}]"
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
    return rules


# -- updates ---------------------------------------------------------------------------


def _select(node: Any, steps: tuple[Step, ...]) -> list[Any]:
    """The values at ``steps`` (list items walked; filters applied), for comparisons."""
    if isinstance(node, list):
        return [v for item in node for v in _select(item, steps)]
    if not isinstance(node, Mapping) or steps[0].name not in node:
        return []
    step, rest = steps[0], steps[1:]
    value = node[step.name]
    items = value if isinstance(value, list) else [value]
    if step.key is not None:
        items = [i for i in items if _matches(i, step)]
    if not rest:
        return list(items)
    return [v for item in items for v in _select(item, rest)]


def _graft(new: Any, old: Any, steps: tuple[Step, ...], path: str) -> Any:
    """``new`` with the values at ``steps`` taken from ``old`` (what the caller never saw)."""
    if not isinstance(new, Mapping):
        new = {}
    step, rest = steps[0], steps[1:]
    out = dict(new)
    old_value = old.get(step.name) if isinstance(old, Mapping) else None
    if step.key is not None:
        mine = out.get(step.name)
        kept = [i for i in (mine if isinstance(mine, list) else []) if not _matches(i, step)]
        theirs = [
            i for i in (old_value if isinstance(old_value, list) else []) if _matches(i, step)
        ]
        if rest and theirs:
            raise AccessDenied(f"{path} cannot be kept on update", ["masks-unsupported"])
        merged = kept + theirs
        if merged:
            out[step.name] = merged
        else:
            out.pop(step.name, None)
        return out
    if not rest:
        if old_value is None:
            out.pop(step.name, None)
        else:
            out[step.name] = old_value
        return out
    if isinstance(old_value, list) or isinstance(out.get(step.name), list):
        raise AccessDenied(f"{path} cannot be kept on update", ["masks-unsupported"])
    if old_value is None and step.name not in out:
        return out
    out[step.name] = _graft(out.get(step.name), old_value, rest, path)
    return out


def _canonical(values: list[Any]) -> list[str]:
    """Order-free comparison form (a grafted list item may come back in another place)."""
    return sorted(json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values)


def merge_hidden(
    new: Mapping[str, Any],
    old: Mapping[str, Any],
    masked: Iterable[str],
    readonly: Iterable[str],
) -> dict[str, Any]:
    """The version to store when a caller who sees ``old`` masked sends ``new``.

    The REDACTED label a masked read carried is dropped, each masked field takes its
    stored value, and a read-only field that differs from the stored one raises
    ``AccessDenied`` naming the field (never its value).
    """
    out: Any = dict(new)
    meta = out.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("security"), list):
        security = [
            c
            for c in meta["security"]
            if not (
                isinstance(c, Mapping)
                and c.get("code") == REDACTED["code"]
                and c.get("system") == REDACTED["system"]
            )
        ]
        out["meta"] = (
            {**meta, "security": security}
            if security
            else {k: v for k, v in meta.items() if k != "security"}
        )
    hidden = tuple(masked)
    for path in hidden:
        out = _graft(out, old, parse_path(path), path)
    for path in readonly:
        steps = parse_path(path)
        if _canonical(_select(out, steps)) != _canonical(_select(old, steps)):
            raise AccessDenied(f"{path} may not be changed by this caller", ["read-only-field"])
    result: dict[str, Any] = out
    return result
