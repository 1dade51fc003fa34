"""Security keys in a real browser: Chromium's virtual authenticator (DevTools WebAuthn
domain) registers a passkey on the account page, signs in with it, and a cloned key
(its signature counter wound back) is refused and flagged."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyotp

from phiguard.identity.accounts import Accounts
from phiguard.system import System
from tests.conftest import TEST_PASSPHRASE
from tests.support.browser import browser_page, wait_for_path
from tests.support.server import live_server
from tests.web.console_helpers import PASSWORD, add_user


def _sign_in_password(page: Any, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#user_id", "nurse02")
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url("**/login/mfa**")


def test_register_and_sign_in_with_a_passkey_then_detect_a_clone(home: tuple[System, str]) -> None:
    system, token = home
    add_user(system, "nurse02", ["nurse"])
    accounts = Accounts.from_system(system)
    secret = accounts.totp.enrol("nurse02").secret
    previous = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    assert accounts.totp.confirm("nurse02", pyotp.TOTP(secret).at(previous)).accepted

    with (
        live_server(
            Path(system.settings.home), token, {"PHIGUARD_PASSPHRASE": TEST_PASSPHRASE}
        ) as server,
        browser_page() as page,
    ):
        base = server.base.replace("127.0.0.1", "localhost")  # WebAuthn needs a host name
        cdp = page.context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )["authenticatorId"]

        _sign_in_password(page, base)
        page.fill("#code", pyotp.TOTP(secret).now())
        page.click("#verify")
        wait_for_path(page, "/account")

        page.fill("#key-name", "Laptop passkey")
        page.click("#add-key")
        page.wait_for_selector("#keys li")
        assert "Laptop passkey" in page.inner_text("#keys")

        page.click("#sign-out")
        page.wait_for_url("**/login**")
        _sign_in_password(page, base)
        page.click("#use-key")
        wait_for_path(page, "/account")

        # Clone: the same private key with its counter wound back.
        creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
        cred = creds["credentials"][0]
        assert cred["signCount"] >= 1
        cdp.send(
            "WebAuthn.removeCredential",
            {"authenticatorId": authenticator, "credentialId": cred["credentialId"]},
        )
        cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": authenticator, "credential": {**cred, "signCount": 0}},
        )
        page.click("#sign-out")
        page.wait_for_url("**/login**")
        _sign_in_password(page, base)
        page.click("#use-key")
        page.wait_for_selector("#webauthn-status:not([hidden])")
        assert "/login/mfa" in page.url

    system.ledger.checkpoint()
    _, entries = system.ledger.search(who="user/nurse02", count=200)
    actions = [e["action"] for e in entries]
    assert "webauthn-clone-suspected" in actions
    assert [e["detail"].get("method") for e in entries if e["action"] == "mfa-success"] == [
        "totp",
        "webauthn",
    ]
