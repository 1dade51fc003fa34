"""The whole front door in a real browser: Chromium, driven by Playwright, against a live
server.  An administrator creates an account; the new user is forced through TOTP
enrolment, signs out, signs in again with a code, lets an app act for them (OAuth2
authorization code + PKCE, consent in the browser, token fetched by Authlib's client),
the app reads /fhir, and a termination takes effect at the very next request of both
the browser and the app."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pyotp
import requests
from authlib.integrations.requests_client import OAuth2Session

from phiguard.identity.accounts import Accounts
from phiguard.identity.clients import ClientRegistry
from phiguard.system import System
from tests.conftest import TEST_PASSPHRASE
from tests.support.browser import browser_page, wait_for_path
from tests.support.server import live_server
from tests.web.console_helpers import PASSWORD, add_user

NEW_PASSWORD = "amber-Lantern-river-84"
REDIRECT = "https://ward-app.example.org/callback"


def _next_code(secret: str) -> str:
    """The code of the next time step: valid now (±1 step drift), and not yet used."""
    return pyotp.TOTP(secret).at(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))


def test_create_enrol_sign_in_sign_out_terminate(home: tuple[System, str]) -> None:
    system, token = home
    add_user(system, "admin01", ["security_admin"])
    accounts = Accounts.from_system(system)
    admin_secret = accounts.totp.enrol("admin01").secret
    assert accounts.totp.confirm("admin01", pyotp.TOTP(admin_secret).now()).accepted
    root = Path(system.settings.home)
    app_id = (
        ClientRegistry.from_system(system)
        .add(
            "Ward app",
            "public",
            by="user/admin01",
            redirect_uris=[REDIRECT],
            scopes=["openid", "fhirUser", "user/*.rs"],
        )
        .client_id
    )

    with (
        live_server(root, token, {"PHIGUARD_PASSPHRASE": TEST_PASSPHRASE}) as server,
        browser_page() as page,
    ):
        # The administrator signs in with password and code ...
        page.goto(f"{server.base}/account")
        assert "/login" in page.url
        page.fill("#user_id", "admin01")
        page.fill("#password", PASSWORD)
        page.click("#sign-in")
        page.wait_for_url("**/login/mfa**")
        page.fill("#code", _next_code(admin_secret))
        page.click("#verify")
        wait_for_path(page, "/account")
        # ... and creates an account for a new nurse.
        page.goto(f"{server.base}/admin/users")
        page.fill("input[name=user_id]", "nurse07")
        page.fill("input[name=display_name]", "Nora Seven")
        page.fill("input[name=email]", "nora@example.org")
        page.check("input[name=roles][value=nurse]")
        page.fill("input[name=password]", NEW_PASSWORD)
        page.click("text=Create account")
        page.wait_for_url("**/admin/users/nurse07**")
        assert "Nora Seven" in page.content()
        page.click("#sign-out")
        page.wait_for_url("**/login**")

        # The new user's first sign-in goes straight to enrolment.
        page.fill("#user_id", "nurse07")
        page.fill("#password", NEW_PASSWORD)
        page.click("#sign-in")
        page.wait_for_url("**/mfa/enrol**")
        page.wait_for_load_state("load")
        qr = page.locator("img.qr")
        assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
        secret = page.inner_text("#totp-secret")
        page.fill("#code", pyotp.TOTP(secret).now())
        page.click("#confirm")
        codes = page.locator("#recovery-codes li")
        assert codes.count() == 10
        page.click("#continue")
        wait_for_path(page, "/account")
        assert "enrolled" in page.inner_text("#totp-status")
        assert page.locator("#sessions tbody tr").count() == 1

        # Sign out; the account page is gone until the next sign-in.
        page.click("#sign-out")
        page.wait_for_url("**/login**")
        page.goto(f"{server.base}/account")
        assert "/login" in page.url

        # Sign in again: password, then a fresh code.
        page.fill("#user_id", "nurse07")
        page.fill("#password", NEW_PASSWORD)
        page.click("#sign-in")
        page.wait_for_url("**/login/mfa**")
        page.fill("#code", _next_code(secret))
        page.click("#verify")
        wait_for_path(page, "/account")

        # An app asks to act for her: consent in the browser, the code comes back to
        # the app's redirect URI (answered here, as no such site exists).
        app = OAuth2Session(
            app_id,
            redirect_uri=REDIRECT,
            scope="openid fhirUser user/*.rs",
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        )
        verifier = secrets.token_urlsafe(48)
        url, _state = app.create_authorization_url(
            f"{server.base}/oauth/authorize", code_verifier=verifier, aud=server.fhir
        )
        landed: list[str] = []

        def catch(route: object) -> None:
            landed.append(route.request.url)  # type: ignore[attr-defined]
            route.fulfill(status=200, body="app")  # type: ignore[attr-defined]

        page.route("https://ward-app.example.org/**", catch)
        page.goto(url)
        assert "Ward app" in page.content()
        page.click("button[value=approve]")
        page.wait_for_url(f"{REDIRECT}**")
        token = app.fetch_token(
            f"{server.base}/oauth/token", authorization_response=landed[-1], code_verifier=verifier
        )
        assert token["expires_in"] <= 900
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        found = requests.get(f"{server.fhir}/Patient?_count=5", headers=bearer, timeout=30)
        assert found.status_code == 200, found.text[:300]
        assert found.json()["resourceType"] == "Bundle"

        # Terminated elsewhere: the very next page load is the sign-in page, and the
        # app's next call is refused.
        accounts.terminate("nurse07", by="user/admin01")
        page.goto(f"{server.base}/account")
        assert "/login" in page.url
        refused = requests.get(f"{server.fhir}/Patient?_count=5", headers=bearer, timeout=30)
        assert refused.status_code == 401
