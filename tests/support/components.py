"""Shared helpers for tests that need outside components or fixtures."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SYNTHEA = SHARED / "fixtures" / "synthea"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """Skip with a message; under ``CI=true`` a missing component is a failure."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing component is a failure, not a skip)")
    pytest.skip(reason)


def synthea_dir() -> Path:
    if not SYNTHEA.is_dir() or not any(SYNTHEA.glob("*.json")):
        unavailable(f"Synthea fixtures not found at {SYNTHEA}")
    return SYNTHEA


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
