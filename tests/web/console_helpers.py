"""Helpers of the console tests: a signed-in browser-like client without a browser."""

from __future__ import annotations

import re

import pyotp
from starlette.testclient import TestClient

from phiguard.identity.accounts import Accounts
from phiguard.system import System

PASSWORD = "violet-Ferry-orbit-57"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')
SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def add_user(system: System, user_id: str, roles: list[str], password: str = PASSWORD) -> None:
    Accounts.from_system(system).add(
        user_id,
        f"{user_id.title()} Tester",
        f"{user_id}@example.org",
        roles,
        password,
        by="user/setup",
    )


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def enrol(client: TestClient, user_id: str, password: str = PASSWORD) -> str:
    """Sign in for the first time and enrol TOTP; returns the base32 secret."""
    r = client.post("/login", data={"user_id": user_id, "password": password, "next": "/account"})
    assert r.status_code == 303 and r.headers["location"].startswith("/mfa/enrol")
    page = client.get(r.headers["location"])
    secret_match = SECRET.search(page.text)
    assert secret_match
    secret = secret_match.group(1)
    r = client.post(
        "/mfa/enrol",
        data={"csrf": csrf_of(page.text), "code": pyotp.TOTP(secret).now(), "next": "/account"},
    )
    assert r.status_code == 200 and "recovery-codes" in r.text
    return secret
