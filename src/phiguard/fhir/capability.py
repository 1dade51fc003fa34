"""The CapabilityStatement: what this server does, generated from the search tables."""

from __future__ import annotations

from typing import Any

from phiguard import __version__
from phiguard.records.params import PARAMS

SEARCH_TYPES = {"string": "string", "token": "token", "date": "date"}
# The types phiguard lists explicitly; any other R4 type is still stored and read.
LISTED = sorted(
    {
        *PARAMS,
        "AllergyIntolerance",
        "Appointment",
        "CarePlan",
        "CareTeam",
        "Claim",
        "Consent",
        "Coverage",
        "DiagnosticReport",
        "DocumentReference",
        "ExplanationOfBenefit",
        "Immunization",
        "MedicationRequest",
        "PractitionerRole",
        "Procedure",
        "Provenance",
    }
)


def capability_statement(base: str, now: str) -> dict[str, Any]:
    resources = []
    for rtype in LISTED:
        params = [
            {"name": "_id", "type": "token"},
            {"name": "_lastUpdated", "type": "date"},
        ]
        if rtype != "Patient":
            params += [
                {"name": "patient", "type": "reference"},
                {"name": "subject", "type": "reference"},
            ]
        for name, p in PARAMS.get(rtype, {"identifier": None}).items():
            kind = p.kind if p is not None else "token"
            params.append({"name": name, "type": SEARCH_TYPES[kind]})
        entry: dict[str, Any] = {
            "type": rtype,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "interaction": [
                {"code": c}
                for c in (
                    "read",
                    "vread",
                    "update",
                    "delete",
                    "history-instance",
                    "create",
                    "search-type",
                )
            ],
            "searchParam": params,
        }
        if rtype == "Patient":
            entry["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                },
                {
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                },
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "publisher": "phiguard",
        "kind": "instance",
        "software": {"name": "phiguard", "version": __version__},
        "implementation": {"description": "phiguard encrypted FHIR vault", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every resource is sealed with AES-256-GCM under its patient's data key. "
                    "Search runs on keyed blind-index tokens: string parameters match whole "
                    "words exactly after case and accent folding (no prefix match)."
                ),
                "security": _security(base),
                "resource": resources,
                "interaction": [{"code": "batch"}, {"code": "transaction"}],
                "operation": [
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                    }
                ],
            }
        ],
    }


def _security(base: str) -> dict[str, Any]:
    """SMART on FHIR: the OAuth endpoints beside the FHIR base (discovery is also at
    ``/.well-known/smart-configuration``)."""
    root = base.removesuffix("/fhir")
    uris = {
        "authorize": "/oauth/authorize",
        "token": "/oauth/token",
        "revoke": "/oauth/revoke",
        "introspect": "/oauth/introspect",
    }
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": k, "valueUri": root + v} for k, v in uris.items()],
            }
        ],
        "description": (
            "Bearer tokens required on every call but this one: OAuth2 access tokens "
            "(SMART App Launch, Backend Services) or operator tokens."
        ),
    }
