"""The workforce roles: one list for accounts, the synthetic hospital and the policies.

Access policies (``access/policies``) name the same roles as Cedar groups; a role
added here needs its rules there.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Role = Literal[
    "physician",
    "nurse",
    "registration",
    "billing",
    "him",
    "researcher",
    "privacy_officer",
    "security_admin",
]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
