"""Who may search the audit trail with an OAuth token: audit readers, within their scopes."""

from __future__ import annotations

from starlette.testclient import TestClient

from phiguard.identity.tokens import TokenService
from phiguard.system import System
from phiguard.web.app import create_app
from tests.web.console_helpers import add_user


def test_audit_readers_need_a_role_and_a_covering_scope(home: tuple[System, str]) -> None:
    system, _ = home
    add_user(system, "privacy01", ["privacy_officer"])
    add_user(system, "nurse01", ["nurse"])
    tokens = TokenService.from_system(system)

    def call(user: str, scopes: list[str], patient: str | None = None) -> int:
        token = tokens.issue(
            kind="user", subject=user, client_id="app", scopes=scopes, patient=patient
        ).token
        with TestClient(create_app(system)) as http:
            r = http.get(
                "/fhir/AuditEvent",
                params={"date": "ge2000-01-01"},
                headers={"Authorization": f"Bearer {token}"},
            )
        return r.status_code

    assert call("privacy01", ["user/AuditEvent.rs"]) == 200
    assert call("privacy01", ["user/*.read"]) == 200
    assert call("privacy01", ["user/Patient.rs"]) == 403  # the scope does not cover it
    assert call("privacy01", ["patient/*.rs"], patient="p1") == 403  # a patient app
    assert call("nurse01", ["user/*.rs"]) == 403  # not an audit reader
