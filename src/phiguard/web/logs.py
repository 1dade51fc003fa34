"""Request logging that cannot leak PHI.

Only the method, the path (resource types and ids, never the query string, where
FHIR search puts names and birth dates), the status, the duration and the request
id are written.  Uvicorn's own access log is switched off because it logs the full
URL.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path

LOGGER = "phiguard.access"


def configure(log_dir: Path | None) -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_dir is not None and not any(
        isinstance(h, logging.handlers.RotatingFileHandler) for h in logger.handlers
    ):
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_dir / "access.log", maxBytes=50 * 1024 * 1024, backupCount=5
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


def line(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"), default=str)
