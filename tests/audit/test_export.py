"""SIEM export: every entry goes out, its free-text detail never does."""

from __future__ import annotations

import json

from phiguard.audit import export
from phiguard.audit.ledger import Ledger

from .helpers import event

REASON = "Found unconscious; Mrs Quillfeather says it is urgent"


def test_json_lines_keep_counts_and_drop_free_text(ledger: Ledger) -> None:
    ledger.append_many(
        [
            event(0, action="break-glass", detail={"reason": REASON, "grant": "g1", "rows": 3}),
            event(1, action="monitor-scan", detail={"alerts": 2, "btg": True, "ratio": 0.5}),
            event(2, detail={}),
        ]
    )
    # The ledger itself keeps the detail (sealed), for the access report and reviews.
    assert next(ledger.events(0, 1))["detail"]["reason"] == REASON
    lines = list(export.jsonl(ledger.events(0, 3)))
    assert REASON not in "\n".join(lines) and "Quillfeather" not in "\n".join(lines)
    docs = [json.loads(line) for line in lines]
    assert [d["seq"] for d in docs] == [0, 1, 2]
    assert docs[0]["detail"] == {"rows": 3} and docs[0]["action"] == "break-glass"
    assert docs[1]["detail"] == {"alerts": 2, "btg": True, "ratio": 0.5}


def test_syslog_carries_no_detail(ledger: Ledger) -> None:
    ledger.append_many([event(0, action="break-glass", detail={"reason": REASON, "rows": 3})])
    (line,) = export.syslog(ledger.events(0, 1), hostname="h")
    assert "break-glass" in line and REASON not in line and "rows" not in line
