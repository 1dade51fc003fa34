"""One loaded policy engine for the access tests (loading validates the whole set)."""

from __future__ import annotations

import pytest

from phiguard.access.engine import PolicyEngine


@pytest.fixture(scope="session")
def engine() -> PolicyEngine:
    return PolicyEngine()
