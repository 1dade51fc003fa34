"""Streaming export of the ledger for a SIEM: JSON lines or RFC 5424 syslog.

Exports are resumable: each line carries the entry's sequence number, and a cursor
file keeps the next one to send, so a collector that died re-reads nothing twice
and misses nothing.

A SIEM is not built to hold PHI, and an entry's detail is sealed in the ledger
because it may quote some: a break-the-glass reason, a review note, a disclosure's
description.  So neither format carries free text: JSON lines keep only the detail's
numbers and flags (counts, sizes), syslog none of it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from phiguard.clock import isoformat
from phiguard.store.engine import from_us

FACILITY_AUDIT = 13  # "log audit"
SEVERITY = {"success": 6, "denied": 4, "error": 3}  # informational, warning, error
SD_ID = "phiguard@32473"


def jsonl(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    for e in events:
        out = {**e, "time": isoformat(from_us(int(e["t"])))}
        if isinstance(e.get("detail"), dict):
            out["detail"] = {
                k: v for k, v in e["detail"].items() if isinstance(v, int | float | bool)
            }
        else:
            out.pop("detail", None)
        yield json.dumps(out, sort_keys=True, separators=(",", ":"))


def _sd_value(value: object) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog(events: Iterator[dict[str, Any]], hostname: str | None = None) -> Iterator[str]:
    """RFC 5424 lines; the event's fields as structured data, no free text."""
    host = (hostname or socket.gethostname() or "-")[:255]
    for e in events:
        pri = FACILITY_AUDIT * 8 + SEVERITY.get(str(e.get("outcome")), 5)
        params = {
            k: e[k]
            for k in (
                "seq",
                "action",
                "outcome",
                "who",
                "purpose",
                "type",
                "id",
                "ver",
                "patients",
                "btg",
                "src",
                "req",
            )
            if k in e and e[k] not in (None, [], "")
        }
        sd = " ".join(f'{k}="{_sd_value(v)}"' for k, v in params.items())
        ts = isoformat(from_us(int(e["t"])))
        yield f"<{pri}>1 {ts} {host} phiguard - {e.get('action', '-')} [{SD_ID} {sd}]"
