"""Who is calling, and why: the context every repository is bound to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a workforce user, an application, or an operator token."""

    id: str
    kind: str  # user | client | operator | system
    display: str = ""
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] | None = None  # OAuth scopes; None = not a token-bound caller
    purposes: tuple[str, ...] | None = None
    """The purposes of use an application may declare, the first being its default;
    None for callers no registration limits (console users, operators)."""

    @property
    def reference(self) -> str:
        return f"{self.kind}/{self.id}"


@dataclass(frozen=True)
class AccessContext:
    """The caller, the purpose of use and the emergency state, for one request."""

    principal: Principal
    purpose: str = "TREAT"
    break_glass: bool = False
    tenant: str = "default"
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = ""  # client address or "cli"
    # SMART launch context: a ``patient/`` scoped token may reach only this patient.
    launch_patient: str | None = None


SYSTEM = Principal(id="phiguard", kind="system", display="phiguard (internal)")


def system_context(purpose: str = "HOPERAT", source: str = "cli") -> AccessContext:
    """The context of phiguard's own maintenance jobs (import, rotation, backup)."""
    return AccessContext(principal=SYSTEM, purpose=purpose, source=source)
