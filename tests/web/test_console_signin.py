"""The console's front door over HTTP: sign-in, forced MFA enrolment, CSRF, fixation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest
from starlette.testclient import TestClient

from phiguard.system import System
from phiguard.web.app import create_app
from tests.web.console_helpers import PASSWORD, add_user, csrf_of, enrol


@pytest.fixture
def client(home: tuple[System, str]) -> Iterator[TestClient]:
    system, _ = home
    add_user(system, "nurse01", ["nurse"])
    with TestClient(create_app(system), follow_redirects=False) as c:
        yield c


def test_pages_require_sign_in(client: TestClient) -> None:
    for path in ("/account", "/admin/users", "/reauth"):
        r = client.get(path)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=")


def test_first_sign_in_forces_enrolment_then_reaches_account(client: TestClient) -> None:
    enrol(client, "nurse01")
    page = client.get("/account")
    assert page.status_code == 200
    assert "Nurse01 Tester" in page.text
    assert 'id="totp-status">Authenticator app: <strong>enrolled' in page.text
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    cookie = page.request.headers.get("cookie", "")
    assert "phiguard=" in cookie


def test_password_only_session_cannot_use_pages(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    assert r.headers["location"].startswith("/mfa/enrol")
    assert client.get("/account").status_code == 303  # AAL1 is not signed in


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient) -> None:
    wrong = client.post("/login", data={"user_id": "nurse01", "password": "not-the-password-1"})
    ghost = client.post("/login", data={"user_id": "nobody99", "password": "not-the-password-1"})
    assert wrong.status_code == ghost.status_code == 401
    strip = lambda t: re.sub(r'value="[^"]*"', "", t)  # noqa: E731 - the echoed user id
    assert strip(wrong.text) == strip(ghost.text)
    assert "set-cookie" not in wrong.headers and "set-cookie" not in ghost.headers


def test_login_issues_a_fresh_session_id(client: TestClient) -> None:
    """Session fixation: a planted cookie is never the one that gets privileges."""
    client.cookies.set("phiguard", "planted-by-attacker", domain="testserver.local")
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    assert r.status_code == 303
    assert client.cookies.get("phiguard") not in (None, "planted-by-attacker")


def test_mfa_step_replaces_the_session_id(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    before = client.cookies.get("phiguard")
    page = client.get(r.headers["location"])
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret
    r = client.post(
        "/mfa/enrol", data={"csrf": csrf_of(page.text), "code": pyotp.TOTP(secret.group(1)).now()}
    )
    assert r.status_code == 200
    after = client.cookies.get("phiguard")
    assert after and after != before


def test_state_changes_without_csrf_token_are_refused(client: TestClient) -> None:
    enrol(client, "nurse01")
    page = client.get("/account")
    assert page.status_code == 200
    # Ending a session without the token changes nothing.
    handle = re.search(r'name="handle" value="([0-9a-f]+)"', page.text)
    assert handle
    r = client.post("/account/sessions/revoke", data={"handle": handle.group(1)})
    assert r.status_code == 403
    assert client.get("/account").status_code == 200
    # Signing out needs it too.
    client.post("/logout", data={"csrf": "forged"})
    assert client.get("/account").status_code == 200
    client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert client.get("/account").status_code == 303


def test_wrong_totp_is_refused_generically(client: TestClient) -> None:
    secret = enrol(client, "nurse01")
    client.post("/logout", data={"csrf": csrf_of(client.get("/account").text)})
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    page = client.get(r.headers["location"])
    wrong = f"{(int(pyotp.TOTP(secret).now()) + 1) % 1_000_000:06d}"
    r = client.post("/login/mfa", data={"csrf": csrf_of(page.text), "code": wrong})
    assert r.status_code == 401
    assert "not right" in r.text
    assert client.get("/account").status_code == 303


def test_recovery_code_signs_in_once(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    page = client.get(r.headers["location"])
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret
    r = client.post(
        "/mfa/enrol", data={"csrf": csrf_of(page.text), "code": pyotp.TOTP(secret.group(1)).now()}
    )
    codes = re.findall(r"<li><code>([^<]+)</code></li>", r.text)
    assert len(codes) == 10
    client.post("/logout", data={"csrf": csrf_of(client.get("/account").text)})
    for attempt, expected in ((1, 303), (2, 401)):
        r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
        page = client.get(r.headers["location"])
        r = client.post("/login/mfa", data={"csrf": csrf_of(page.text), "code": codes[0]})
        assert r.status_code == expected, attempt
        if expected == 303:
            client.post("/logout", data={"csrf": csrf_of(client.get("/account").text)})


def test_next_is_confined_to_local_paths(client: TestClient) -> None:
    for hostile in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        page = client.get("/login", params={"next": hostile})
        assert 'name="next" value="/account"' in page.text


def test_oversized_fields_are_refused(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": "x" * 5000})
    assert r.status_code == 400
    assert "set-cookie" not in r.headers


def test_termination_ends_a_live_console_session(home: tuple[System, str]) -> None:
    system, _ = home
    add_user(system, "admin01", ["security_admin"])
    add_user(system, "clerk01", ["registration"])
    app = create_app(system)
    with (
        TestClient(app, follow_redirects=False) as admin,
        TestClient(app, follow_redirects=False) as clerk,
    ):
        enrol(admin, "admin01")
        enrol(clerk, "clerk01")
        assert clerk.get("/account").status_code == 200
        page = admin.get("/admin/users/clerk01")
        assert page.status_code == 200
        r = admin.post("/admin/users/clerk01/terminate", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303 and r.headers["location"].endswith("notice=done")
        assert clerk.get("/account").status_code == 303  # the very next request
        assert "terminated" in admin.get("/admin/users/clerk01").text


def test_admin_pages_need_the_admin_role(client: TestClient) -> None:
    enrol(client, "nurse01")
    assert client.get("/admin/users").status_code == 403
    page = client.get("/account")
    r = client.post("/admin/users/nurse01/suspend", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 403
