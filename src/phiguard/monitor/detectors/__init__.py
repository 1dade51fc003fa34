"""Detector families; each module's ``detect(ctx)`` returns scored candidates.

The order is the order of the progress bar and of ``stats["timings"]``; it does not
affect results, which are sorted before they are named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from phiguard.monitor.detectors import (
    auth,
    browsing,
    employment,
    habits,
    relationship,
    surge,
    volume,
)
from phiguard.monitor.detectors.base import Candidate, Context

FAMILIES: Final[tuple[tuple[str, Callable[[Context], list[Candidate]]], ...]] = (
    ("relationship", relationship.detect),
    ("employment", employment.detect),
    ("habits", habits.detect),
    ("volume", volume.detect),
    ("browsing", browsing.detect),
    ("surge", surge.detect),
    ("auth", auth.detect),
)

__all__ = ["FAMILIES", "Candidate", "Context"]
