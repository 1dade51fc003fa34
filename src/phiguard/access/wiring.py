"""The access services of a running system, built once per process by ``system.py``.

``build_access`` puts the pieces together: the relationship index as a write
observer of the vault, the running policy set (the newest installed generation, else
the shipped one), break-the-glass grants, the store-backed attributes, and the
``CedarPolicy`` that the vault asks on every interaction (operators and phiguard's
own jobs keep going to ``OperatorOnlyPolicy``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phiguard.records.hooks import OperatorOnlyPolicy

from .administration import PolicyRefresher, PolicyStore
from .breakglass import BreakGlass
from .engine import PolicyEngine
from .index import RelationshipIndex
from .policy import CedarPolicy
from .store_attributes import StoreAttributes

if TYPE_CHECKING:
    from phiguard.records.vault import Vault


@dataclass
class AccessServices:
    index: RelationshipIndex
    engine: PolicyEngine
    policies: PolicyStore
    break_glass: BreakGlass
    attributes: StoreAttributes
    policy: CedarPolicy


def build_access(
    vault: Vault,
    *,
    window: dt.timedelta = dt.timedelta(days=30),
    ttl: dt.timedelta = dt.timedelta(seconds=5),
    refresh_seconds: float = 3.0,
) -> AccessServices:
    """The services, with ``vault`` already observed by the index and asking the policy."""
    index = RelationshipIndex(vault)
    vault.observers.append(index)
    store = PolicyStore(vault.engine, vault.clock, vault.audit, vault.tenant)
    current = store.current()
    engine = PolicyEngine(current.bundle if current is not None else None)
    break_glass = BreakGlass(
        vault.engine, vault.keyring, vault.clock, vault.audit, tenant=vault.tenant
    )
    attributes = StoreAttributes(
        vault,
        index,
        window=window,
        ttl=ttl,
        grants=break_glass.active_until,
        any_grant=break_glass.any_active,
    )
    break_glass.listeners.append(attributes.invalidate)
    policy = CedarPolicy(
        engine,
        attributes,
        fallback=OperatorOnlyPolicy(),
        refresh=PolicyRefresher(store, engine, current.generation if current else 0),
        refresh_seconds=refresh_seconds,
    )
    vault.policy = policy
    return AccessServices(index, engine, store, break_glass, attributes, policy)
