"""The console's front door under attack, over HTTP in process.

Each test plays an attacker (or a careless deployment) against one property: local
``next`` targets, second-factor bypasses, sessions that must not outlive logout or a
credential change, CSRF tokens of other sessions, other users' sessions, security
headers on every kind of response, cookie attributes behind TLS, and separation of
duties in the monitoring queue.
"""

from __future__ import annotations

import html
import logging
import logging.handlers
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from phiguard.identity.accounts import Accounts
from phiguard.identity.webauthn import WebAuthnService
from phiguard.monitor.workflow import Workflow
from phiguard.store.tables import sessions
from phiguard.system import System
from phiguard.web import logs
from phiguard.web.app import create_app
from tests.identity.test_webauthn import Authenticator, to_device, to_json
from tests.monitor.test_workflow import A
from tests.web.console_helpers import PASSWORD, SECRET, add_user, csrf_of, enrol

EVIL = "evil.example"


@pytest.fixture
def system(home: tuple[System, str]) -> System:
    system, _ = home
    add_user(system, "nurse01", ["nurse"])
    return system


@pytest.fixture
def client(system: System) -> Iterator[TestClient]:
    with TestClient(create_app(system), follow_redirects=False) as c:
        yield c


def as_browser(url: str) -> str:
    """What a browser's URL parser makes of ``url``: tabs and newlines are deleted."""
    return re.sub(r"[\t\n\r]", "", url)


def leaves_site(url: str) -> bool:
    seen = as_browser(url).lstrip(" ")
    return not seen.startswith("/") or seen.startswith("//") or seen.startswith("/\\")


def register_passkey(system: System, user_id: str) -> None:
    """A real WebAuthn registration for ``user_id`` (relying party ``localhost``)."""
    service = WebAuthnService(
        system.engine,
        system.clock,
        rp_id="localhost",
        rp_name="phiguard",
        origin="http://localhost",
    )
    options_json, challenge = service.registration_options(user_id, user_id)
    answer = Authenticator().create(to_device(options_json), "http://localhost")
    service.verify_registration(user_id, to_json(answer), expected_challenge=challenge, name="key")


# -- next: only ever a path on this site ---------------------------------------------------


@pytest.mark.parametrize("hostile", ["/\t/" + EVIL, "/\n/" + EVIL, "/\r\n/" + EVIL, "/ /" + EVIL])
def test_next_with_control_characters_is_dropped(client: TestClient, hostile: str) -> None:
    """Browsers delete tabs and newlines from URLs: ``/<TAB>/evil`` is ``//evil``."""
    page = client.get("/login", params={"next": hostile})
    value = re.search(r'name="next" value="([^"]*)"', page.text)
    assert value and value.group(1) == "/account"


def test_the_continue_link_after_enrolment_stays_on_site(client: TestClient) -> None:
    hostile = "/\t/" + EVIL
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD, "next": hostile})
    page = client.get(r.headers["location"])
    secret = SECRET.search(page.text)
    assert secret
    r = client.post(
        "/mfa/enrol",
        data={
            "csrf": csrf_of(page.text),
            "code": pyotp.TOTP(secret.group(1)).now(),
            "next": hostile,
        },
    )
    assert r.status_code == 200
    link = re.search(r'id="continue" href="([^"]*)"', r.text)
    assert link and not leaves_site(link.group(1)), link.group(1)


def test_the_passkey_button_continues_on_site(system: System) -> None:
    register_passkey(system, "nurse01")
    with TestClient(create_app(system), base_url="http://localhost", follow_redirects=False) as c:
        r = c.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
        assert r.headers["location"].startswith("/login/mfa")
        page = c.get("/login/mfa", params={"next": "/\n/" + EVIL})
        target = re.search(r'data-next="([^"]*)"', page.text)
        assert target and target.group(1) == "/account"


# -- the second factor cannot be skipped -------------------------------------------------


@pytest.mark.parametrize("base", ["http://localhost", "http://testserver"])
def test_a_passkey_account_cannot_enrol_an_app_with_the_password_alone(
    system: System, base: str
) -> None:
    """Only a security key protects this account: the password must not buy a new factor.

    Also through a host name the relying party does not accept (``testserver``),
    where the key cannot be used at all: then nothing may sign in, not a new factor.
    """
    register_passkey(system, "nurse01")
    accounts = Accounts.from_system(system)
    with TestClient(create_app(system), base_url=base, follow_redirects=False) as attacker:
        r = attacker.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
        assert r.headers["location"].startswith("/login/mfa")
        page = attacker.get("/mfa/enrol")
        assert page.status_code == 303 and page.headers["location"].startswith("/login/mfa")
        assert SECRET.search(page.text) is None
        assert attacker.get("/mfa/enrol/qr.svg").status_code == 404
        assert accounts.totp.pending_secret("nurse01") is None
        mfa = attacker.get("/login/mfa")
        r = attacker.post("/mfa/enrol", data={"csrf": csrf_of(mfa.text), "code": "123456"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login/mfa")
        assert attacker.get("/account").status_code == 303


def test_password_only_session_reaches_nothing_but_the_second_factor(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    assert r.headers["location"].startswith("/mfa/enrol")
    page = client.get(r.headers["location"])
    csrf = csrf_of(page.text)
    assert client.get("/oauth/authorize", params={"client_id": "x"}).status_code == 303
    assert client.get("/reauth").status_code == 303
    assert client.get("/emergency").status_code == 303
    r = client.post("/account/webauthn/options", headers={"x-csrf-token": csrf})
    assert r.status_code == 401
    r = client.post("/account/password", data={"csrf": csrf, "current": PASSWORD, "new": "x"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    r = client.post("/account/recovery-codes", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


# -- sessions end when they should ---------------------------------------------------------


def test_a_stolen_cookie_dies_with_logout_password_change_and_mfa_reset(
    system: System,
) -> None:
    add_user(system, "admin01", ["security_admin"])
    add_user(system, "clerk01", ["registration"])
    app = create_app(system)

    def replay(cookie: str) -> int:
        with TestClient(app, follow_redirects=False) as thief:
            thief.cookies.set("phiguard", cookie)
            return thief.get("/account").status_code

    with (
        TestClient(app, follow_redirects=False) as admin,
        TestClient(app, follow_redirects=False) as nurse,
        TestClient(app, follow_redirects=False) as clerk,
    ):
        enrol(admin, "admin01")
        enrol(nurse, "nurse01")
        enrol(clerk, "clerk01")

        stolen = str(nurse.cookies.get("phiguard"))
        assert replay(stolen) == 200
        nurse.post("/logout", data={"csrf": csrf_of(nurse.get("/account").text)})
        assert replay(stolen) == 303

        stolen = str(clerk.cookies.get("phiguard"))
        page = clerk.get("/account")
        new = "a-Different-phrase-88"
        r = clerk.post(
            "/account/password",
            data={"csrf": csrf_of(page.text), "current": PASSWORD, "new": new, "confirm": new},
        )
        assert r.status_code == 303
        assert replay(stolen) == 303

        stolen = str(admin.cookies.get("phiguard"))
        page = admin.get("/admin/users/admin01")
        r = admin.post("/admin/users/admin01/reset-mfa", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303
        assert replay(stolen) == 303


def test_another_sessions_csrf_token_is_refused(system: System) -> None:
    add_user(system, "clerk01", ["registration"])
    app = create_app(system)
    with (
        TestClient(app, follow_redirects=False) as victim,
        TestClient(app, follow_redirects=False) as attacker,
    ):
        enrol(victim, "nurse01")
        enrol(attacker, "clerk01")
        own = csrf_of(attacker.get("/account").text)
        victim.post("/logout", data={"csrf": own})
        assert victim.get("/account").status_code == 200
        r = victim.post("/account/recovery-codes", data={"csrf": own})
        assert r.status_code == 403 and 'id="recovery-codes"' not in r.text
        r = victim.post("/account/webauthn/options", headers={"x-csrf-token": own})
        assert r.status_code == 403


def test_a_user_cannot_end_another_users_session(system: System) -> None:
    add_user(system, "clerk01", ["registration"])
    app = create_app(system)
    with (
        TestClient(app, follow_redirects=False) as victim,
        TestClient(app, follow_redirects=False) as attacker,
    ):
        enrol(victim, "nurse01")
        enrol(attacker, "clerk01")
        handle = re.search(r'name="handle" value="([0-9a-f]+)"', victim.get("/account").text)
        assert handle
        page = attacker.get("/account")
        r = attacker.post(
            "/account/sessions/revoke", data={"csrf": csrf_of(page.text), "handle": handle[1]}
        )
        assert r.status_code == 200 and "No such session." in r.text
        assert victim.get("/account").status_code == 200


def test_admin_changes_need_a_recent_reauthentication(system: System) -> None:
    add_user(system, "admin01", ["security_admin"])
    with TestClient(create_app(system), follow_redirects=False) as admin:
        enrol(admin, "admin01")
        with system.engine.begin() as conn:  # the sign-in was 16 minutes ago
            conn.execute(update(sessions).values(reauth_at=sessions.c.reauth_at - 16 * 60 * 10**6))
        page = admin.get("/admin/users/nurse01")
        r = admin.post("/admin/users/nurse01/suspend", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303 and r.headers["location"].startswith("/reauth")
        assert Accounts.from_system(system).get("nurse01").status == "active"


# -- headers and cookies on every kind of response -----------------------------------------


def test_every_response_carries_the_security_headers(system: System) -> None:
    """Pages, redirects, errors, JSON, images and static files alike."""
    with TestClient(create_app(system), follow_redirects=False) as c:
        responses = {
            "home": c.get("/"),
            "login": c.get("/login"),
            "redirect": c.get("/account"),
            "not found": c.get("/no/such/page"),
            "static": c.get("/static/phiguard.css"),
            "fhir 401": c.get("/fhir/Patient"),
            "token error": c.post("/oauth/token", data={"grant_type": "password"}),
            "authorize from another site": c.get(
                "/oauth/authorize",
                params={"client_id": "x"},
                headers={"sec-fetch-site": "cross-site"},
            ),
            "authorize, not signed in": c.get("/oauth/authorize", params={"client_id": "x"}),
        }
        r = c.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
        responses["login redirect"] = r
        responses["enrolment"] = c.get(r.headers["location"])
        responses["enrolment QR code"] = c.get("/mfa/enrol/qr.svg")
    for name, response in responses.items():
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, name
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert response.headers.get("x-content-type-options") == "nosniff", name
        assert response.headers.get("referrer-policy") == "no-referrer", name
        assert response.headers.get("x-frame-options") == "DENY", name
    for name in ("login", "redirect", "login redirect", "enrolment", "enrolment QR code"):
        assert responses[name].headers.get("cache-control") == "no-store", name
    assert responses["enrolment QR code"].headers["content-type"].startswith("image/svg+xml")


@pytest.mark.parametrize(
    "settings",
    [{"tls_cert": "tls/cert.pem"}, {"base_url": "https://phiguard.example.org"}],
    ids=["tls", "https-base-url"],
)
def test_cookies_and_hsts_behind_https(system: System, settings: dict[str, str]) -> None:
    """On TLS, and behind a TLS front end named by base_url, cookies are __Host- and
    Secure and every response asks for HSTS: a plain-HTTP request must never carry the
    session, and a browser must never try plain HTTP again."""
    for key, value in settings.items():
        setattr(system.settings, key, value)
    with TestClient(
        create_app(system), base_url="https://phiguard.example.org", follow_redirects=False
    ) as c:
        r = c.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
        assert r.status_code == 303
        cookies = r.headers.get_list("set-cookie")
        assert {v.split("=", 1)[0] for v in cookies} == {"__Host-phiguard", "__Host-phiguard-csrf"}
        for value in cookies:
            attributes = {a.strip().split("=")[0].lower() for a in value.split(";")[1:]}
            assert {"secure", "httponly", "samesite", "path"} <= attributes, value
            assert "domain" not in attributes and "samesite=strict" in value.lower(), value
        for response in (r, c.get("/"), c.get("/no/such/page")):
            assert response.headers["strict-transport-security"].startswith("max-age=")


def test_plain_http_loopback_cookies_are_still_httponly_and_strict(client: TestClient) -> None:
    r = client.post("/login", data={"user_id": "nurse01", "password": PASSWORD})
    cookies = r.headers.get_list("set-cookie")
    assert {v.split("=", 1)[0] for v in cookies} == {"phiguard", "phiguard-csrf"}
    for value in cookies:
        assert "httponly" in value.lower() and "samesite=strict" in value.lower()
    assert "strict-transport-security" not in r.headers


# -- oversized input -------------------------------------------------------------------------


def test_an_oversized_key_removal_is_refused_not_an_error(client: TestClient) -> None:
    enrol(client, "nurse01")
    page = client.get("/account")
    r = client.post(
        "/account/webauthn/remove", data={"csrf": csrf_of(page.text), "credential": "k" * 5000}
    )
    assert r.status_code == 303
    assert client.get("/account").status_code == 200


# -- separation of duties in the monitoring queue ------------------------------------------


def test_an_officer_cannot_dispose_of_alerts_about_herself(system: System) -> None:
    add_user(system, "privacy01", ["privacy_officer"])
    add_user(system, "privacy02", ["privacy_officer"])
    now = system.clock.now()
    wf = Workflow.from_system(system)
    wf.save(
        [
            A("a-self", "self", "privacy01", ("p1",), 95.0, first_event_at=now, last_event_at=now),
            A("a-other", "vip", "nurse01", ("p2",), 70.0, first_event_at=now, last_event_at=now),
        ],
        [],
        by="system/phiguard",
    )
    app = create_app(system)
    with (
        TestClient(app, follow_redirects=False) as subject,
        TestClient(app, follow_redirects=False) as colleague,
    ):
        enrol(subject, "privacy01")
        enrol(colleague, "privacy02")
        csrf = csrf_of(subject.get("/account").text)
        before = wf.alert_row("a-self")
        for action, form in (
            ("close", {"disposition": "false-positive"}),
            ("suppress", {"days": "365", "reason": "noise"}),
            ("note", {"text": "looked fine to me"}),
            ("assign", {"assignee": "privacy01"}),
        ):
            r = subject.post(f"/monitor/alerts/a-self/{action}", data={"csrf": csrf, **form})
            assert r.status_code == 403, action
        row = wf.alert_row("a-self")
        assert (row.status, row.assignee) == (before.status, before.assignee) == ("open", None)
        assert wf.suppressions() == []
        # The same officer still reviews everyone else, and a colleague reviews her.
        r = subject.post(
            "/monitor/alerts/a-other/close", data={"csrf": csrf, "disposition": "false-positive"}
        )
        assert r.status_code == 303
        other = csrf_of(colleague.get("/account").text)
        r = colleague.post(
            "/monitor/alerts/a-self/close", data={"csrf": other, "disposition": "false-positive"}
        )
        assert r.status_code == 303
        assert wf.alert_row("a-self").status == "closed"


# -- no PHI in the request log ---------------------------------------------------------------


def access_log() -> str:
    """Everything the request logger has written in this process (its file is wherever
    the first app of the process configured it)."""
    files = [
        Path(h.baseFilename)
        for h in logging.getLogger(logs.LOGGER).handlers
        if isinstance(h, logging.handlers.RotatingFileHandler)
    ]
    for handler in logging.getLogger(logs.LOGGER).handlers:
        handler.flush()
    return "".join(f.read_text() for f in files if f.exists())


def test_monitored_patient_ids_stay_out_of_the_request_log(system: System) -> None:
    """An EHR export's patient id is often its MRN (``patient_id: PAT_MRN`` in the
    mapping): the drill-down must not put it into a logged path."""
    add_user(system, "privacy01", ["privacy_officer"])
    mrn = f"MRNCANARY{secrets.token_hex(4)}"
    now = system.clock.now()
    Workflow.from_system(system).save(
        [A("a-mrn", "vip", "nurse01", (mrn,), 80.0, first_event_at=now, last_event_at=now)],
        [],
        by="system/phiguard",
    )
    with TestClient(create_app(system), follow_redirects=False) as officer:
        enrol(officer, "privacy01")
        queue = officer.get("/monitor")
        links = re.findall(r'href="(/monitor/patients[^"]*)"', queue.text)
        assert links, "the queue links each alert's patients"
        for link in links:
            page = officer.get(html.unescape(link))
            assert page.status_code == 200 and "/monitor/alerts/a-mrn" in page.text
        assert officer.get("/monitor/alerts/a-mrn").status_code == 200
    written = access_log()
    assert '"path":"/monitor/patients' in written  # the drill-down was logged ...
    assert mrn not in written  # ... without the patient id


# -- login CSRF ------------------------------------------------------------------------------


def test_a_sign_in_posted_from_another_site_is_refused(client: TestClient) -> None:
    """The log-in form has no session to carry a CSRF token yet: another site's page
    could post its own credentials and plant its session in the victim's browser
    (over the victim's cookie).  Browsers say where a request comes from."""
    form = {"user_id": "nurse01", "password": PASSWORD}
    r = client.post("/login", data=form, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    for site in ("same-origin", "none", None):  # our own form; typed; an old browser
        client.cookies.clear()
        headers = {"sec-fetch-site": site} if site else {}
        r = client.post("/login", data=form, headers=headers)
        assert r.status_code == 303 and "set-cookie" in r.headers, site
