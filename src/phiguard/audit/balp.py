"""Ledger entries as FHIR AuditEvents shaped after IHE Basic Audit Log Patterns.

One AuditEvent per ledger entry: the interaction as a RESTful subtype, the user as
the requesting agent with the client address, phiguard as the observer, the
purpose of use, and one entity per patient whose data was touched (the BALP
"patient" role) plus the resource itself.  The AuditEvent ``id`` is the ledger
sequence number, so anyone can ask the ledger for its inclusion proof.
"""

from __future__ import annotations

from typing import Any

from phiguard.clock import isoformat
from phiguard.store.engine import from_us

ACTION = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history": "R",
    "everything": "R",
    "update": "U",
    "delete": "D",
    "search": "E",
    "import": "C",
    "shred": "D",
}
INTERACTION = {
    "create": "create",
    "read": "read",
    "vread": "vread",
    "history": "history-instance",
    "update": "update",
    "delete": "delete",
    "search": "search-type",
    "everything": "operation",
    "import": "batch",
}
OUTCOME = {"success": "0", "denied": "4", "error": "8"}
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def to_audit_event(entry: dict[str, Any]) -> dict[str, Any]:
    action = str(entry.get("action", ""))
    rest = action in INTERACTION
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry["seq"]),
        "type": (
            {
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "Restful Operation",
            }
            if rest
            else {
                "system": "http://dicom.nema.org/resources/ontology/DCM",
                "code": "110113",
                "display": "Security Alert",
            }
        ),
        "action": ACTION.get(action, "E"),
        "recorded": isoformat(from_us(int(entry["t"]))),
        "outcome": OUTCOME.get(str(entry.get("outcome")), "8"),
        "purposeOfEvent": [
            {"coding": [{"system": PURPOSE_SYSTEM, "code": str(entry.get("purpose", "HOPERAT"))}]}
        ],
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                            "code": "humanuser"
                            if str(entry.get("who", "")).startswith("user/")
                            else "dataprocessor",
                        }
                    ]
                },
                "who": {
                    "identifier": {
                        "system": "urn:phiguard:principal",
                        "value": str(entry.get("who", "unknown")),
                    }
                },
                "requestor": True,
                **(
                    {"network": {"address": str(entry["src"]), "type": "2"}}
                    if entry.get("src") and "." in str(entry["src"])
                    else {}
                ),
            }
        ],
        "source": {
            "observer": {"display": "phiguard"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if rest:
        event["subtype"] = [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": INTERACTION[action]}
        ]
    else:
        event["subtype"] = [{"system": "urn:phiguard:event", "code": action or "unknown"}]
    if entry.get("btg"):
        event["purposeOfEvent"].append({"coding": [{"system": PURPOSE_SYSTEM, "code": "BTG"}]})
    entities = [
        {
            "what": {"reference": f"Patient/{pid}"},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "1",
                "display": "Person",
            },
            "role": {
                "system": "http://terminology.hl7.org/CodeSystem/object-role",
                "code": "1",
                "display": "Patient",
            },
        }
        for pid in entry.get("patients", [])
    ]
    if entry.get("type") and entry.get("id") and entry.get("type") != "Patient":
        entities.append(
            {
                "what": {"reference": f"{entry['type']}/{entry['id']}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "4",
                    "display": "Domain Resource",
                },
            }
        )
    elif entry.get("type") and not entry.get("patients") and not entry.get("id"):
        entities.append(
            {
                "what": {"display": str(entry["type"])},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                },
            }
        )
    if entities:
        event["entity"] = entities
    return event
