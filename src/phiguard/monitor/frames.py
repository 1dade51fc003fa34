"""The frames every monitoring source produces and every detector reads.

One schema per kind, with Polars dtypes.  A source (CSV ingest, the ledger) must
hand over frames that pass ``check``; detectors may then rely on the column names,
the dtypes and on timestamps being UTC.  Identifiers are strings because each EHR
has its own; names and addresses are PHI and never leave the process unencrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from phiguard.errors import MonitorError

UTC_US: Final = pl.Datetime("us", "UTC")

ACTIONS: Final = ("view", "search", "create", "update", "delete", "print", "export")
CARE_KINDS: Final = ("encounter", "appointment", "care_team", "order", "consult")
AUTH_OUTCOMES: Final = ("success", "failure", "locked")

ACCESS: Final[dict[str, pl.DataType]] = {
    "timestamp": UTC_US,
    "user_id": pl.String(),
    "patient_id": pl.String(),
    "action": pl.String(),  # one of ACTIONS
    "resource_type": pl.String(),
    "workstation": pl.String(),
}
STAFF: Final[dict[str, pl.DataType]] = {
    "user_id": pl.String(),
    "family_name": pl.String(),
    "given_name": pl.String(),
    "role": pl.String(),
    "department": pl.String(),
    "address": pl.String(),
    "postal_code": pl.String(),
    "hire_date": pl.Date(),
    "termination_date": pl.Date(),  # null: still employed
    "patient_id": pl.String(),  # the staff member's own patient record, or null
}
PATIENTS: Final[dict[str, pl.DataType]] = {
    "patient_id": pl.String(),
    "mrn": pl.String(),
    "family_name": pl.String(),
    "given_name": pl.String(),
    "birth_date": pl.Date(),
    "address": pl.String(),
    "postal_code": pl.String(),
    "vip": pl.Boolean(),
}
CARE: Final[dict[str, pl.DataType]] = {
    "patient_id": pl.String(),
    "user_id": pl.String(),  # null: a department-level relationship
    "department": pl.String(),  # null: a user-level relationship
    "start": UTC_US,
    "end": UTC_US,  # null: ongoing
    "kind": pl.String(),  # one of CARE_KINDS
}
# Log-in events (phiguard's ledger, or an optional export): failed-login storms,
# credential stuffing and password spraying are found here.  ``secret_hash`` is an
# opaque keyed hash of the password tried (only phiguard's own ledger can supply it;
# null elsewhere), so spraying is seen without ever holding a password.
AUTH: Final[dict[str, pl.DataType]] = {
    "timestamp": UTC_US,
    "user_id": pl.String(),
    "source": pl.String(),  # client address
    "outcome": pl.String(),  # one of AUTH_OUTCOMES
    "secret_hash": pl.String(),
}

SCHEMAS: Final[dict[str, dict[str, pl.DataType]]] = {
    "access": ACCESS,
    "staff": STAFF,
    "patients": PATIENTS,
    "care": CARE,
    "auth": AUTH,
}


def empty(kind: str) -> pl.DataFrame:
    """A frame of ``kind`` with no rows (a source that has none of it)."""
    return pl.DataFrame(schema=SCHEMAS[kind])


def check(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the columns of ``kind``, in order; ``MonitorError`` if not."""
    schema = SCHEMAS[kind]
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise MonitorError(f"{kind} frame lacks column(s): {', '.join(missing)}")
    wrong = [name for name, dtype in schema.items() if frame.schema[name] != dtype]
    if wrong:
        raise MonitorError(f"{kind} frame has wrong type(s) for: {', '.join(wrong)}")
    return frame.select(list(schema))


@dataclass(frozen=True)
class Dataset:
    """Everything one scan looks at.  Frames a source lacks are empty, never None."""

    access: pl.DataFrame
    staff: pl.DataFrame
    patients: pl.DataFrame
    care: pl.DataFrame
    auth: pl.DataFrame

    @classmethod
    def of(
        cls,
        *,
        access: pl.DataFrame | None = None,
        staff: pl.DataFrame | None = None,
        patients: pl.DataFrame | None = None,
        care: pl.DataFrame | None = None,
        auth: pl.DataFrame | None = None,
    ) -> Dataset:
        given = {
            "access": access,
            "staff": staff,
            "patients": patients,
            "care": care,
            "auth": auth,
        }
        frames = {
            kind: empty(kind) if frame is None else check(kind, frame)
            for kind, frame in given.items()
        }
        return cls(**frames)
