"""Injected time.

Behaviour that depends on time (key rotation dates, token expiry, timestamps in
records) asks a ``Clock``; tests pass a ``FixedClock`` and move it.  Nothing in
phiguard calls ``datetime.now()`` directly.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, **kwargs: float) -> None:
        self._now += dt.timedelta(**kwargs)

    def set(self, when: dt.datetime) -> None:
        self._now = when


def isoformat(when: dt.datetime) -> str:
    """FHIR instant format: UTC, millisecond precision, trailing Z."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
