"""OperationOutcome responses and the mapping of phiguard errors to HTTP statuses.

One table maps each domain error to a status and an issue code, so every route
reports errors the same way.  Texts come from phiguard's own messages, which never
carry PHI; unexpected errors are reported without any detail at all.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from phiguard.errors import (
    AccessDenied,
    AuditError,
    AuthenticationError,
    CryptoError,
    DecryptionError,
    Gone,
    InvalidResource,
    InvalidSearch,
    KeyShreddedError,
    NotFound,
    PhiGuardError,
    VersionConflict,
)

FHIR_JSON = "application/fhir+json"


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        if content is None:  # no body (Prefer: return=minimal), not the JSON text "null"
            return b""
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def outcome(severity: str, code: str, texts: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": t} for t in texts],
    }


class ApiError(Exception):
    """An error raised by the HTTP layer itself (bad media type, body too large, ...)."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text


def status_for(exc: BaseException) -> tuple[int, str, list[str]]:
    """(HTTP status, OperationOutcome issue code, diagnostics) for an error."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, [exc.text]
    if isinstance(exc, InvalidResource):
        return 400, "invalid", [str(exc), *[i for i in exc.issues if i != str(exc)]]
    if isinstance(exc, InvalidSearch):
        return 400, "invalid", [str(exc)]
    if isinstance(exc, AuthenticationError):
        return 401, "login", ["authentication failed"]
    if isinstance(exc, AccessDenied):
        # The message names a field or rule at most (never data): say what to change.
        text = str(exc)
        return 403, "forbidden", ["access denied", *([text] if text != "access denied" else [])]
    if isinstance(exc, NotFound):
        return 404, "not-found", [str(exc)]
    if isinstance(exc, Gone | KeyShreddedError):
        return 410, "deleted", [str(exc)]
    if isinstance(exc, VersionConflict):
        return 412, "conflict", [str(exc)]
    if isinstance(exc, DecryptionError):
        return 500, "exception", [str(exc)]
    if isinstance(exc, AuditError):
        return 503, "transient", ["the interaction could not be audited, so it was not carried out"]
    if isinstance(exc, CryptoError):
        return 503, "transient", ["the key service is unavailable"]
    if isinstance(exc, PhiGuardError):
        return 500, "exception", [type(exc).__name__]
    return 500, "exception", ["internal error"]


def error_response(exc: BaseException) -> FhirResponse:
    status, code, texts = status_for(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="phiguard"'} if status == 401 else None
    return FhirResponse(outcome("error", code, texts), status_code=status, headers=headers)
