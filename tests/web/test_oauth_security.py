"""The OAuth2 / SMART endpoints under attack, over HTTP in process.

The Host header must never choose a URL, tokens travel only in the Authorization
header, the same-site reload page cannot be turned into a redirect or markup, and a
revoked app's tokens stop at the FHIR API at once.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from phiguard.identity.clients import ClientRegistry
from phiguard.system import System
from phiguard.web.app import create_app
from tests.support.oauth import pkce_pair
from tests.web.console_helpers import add_user, enrol

REDIRECT = "https://app.example.org/callback"
EVIL = "evil.example"


@pytest.fixture
def system(home: tuple[System, str]) -> System:
    system, _ = home
    add_user(system, "doc01", ["physician"])
    return system


@pytest.fixture
def client_id(system: System) -> str:
    app = ClientRegistry.from_system(system).add(
        "Ward app", "public", by="operator/test", redirect_uris=[REDIRECT]
    )
    return app.client_id


@pytest.fixture
def browser(system: System) -> Iterator[TestClient]:
    with TestClient(create_app(system), follow_redirects=False) as c:
        enrol(c, "doc01")
        yield c


def tokens_for(browser: TestClient, client_id: str, scope: str, **headers: str) -> dict[str, str]:
    """Consent in the browser, then the app's code exchange."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = browser.get("/oauth/authorize", params=params, headers=headers)
    assert page.status_code == 200, page.text[:300]
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    csrf = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert action and csrf
    assert action.group(1).startswith("/oauth/authorize?")  # relative: never another host
    answer = browser.post(
        html.unescape(action.group(1)),
        data={"csrf": csrf.group(1), "decision": "approve"},
        headers=headers,
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    code = parse_qs(urlsplit(location).query)["code"][0]
    r = browser.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, str] = r.json()
    return body


def test_the_host_header_chooses_no_url(
    system: System, browser: TestClient, client_id: str
) -> None:
    base = system.settings.public_base
    conf = browser.get("/.well-known/smart-configuration", headers={"host": EVIL}).json()
    urls = [v for v in conf.values() if isinstance(v, str) and "://" in v]
    assert urls and all(u.startswith(base + "/") or u == base for u in urls), urls
    assert EVIL not in browser.get("/", headers={"host": EVIL}).text
    r = browser.get("/oauth/authorize", params={"client_id": client_id}, headers={"host": EVIL})
    assert EVIL not in r.headers.get("location", "") + r.text
    token = tokens_for(browser, client_id, "user/*.rs", host=EVIL)["access_token"]
    r = browser.get("/fhir/Patient/nobody", headers={"authorization": f"Bearer {token}"})
    assert r.status_code != 401  # issued for, and accepted by, the configured audience


def test_tokens_are_taken_from_the_authorization_header_only(
    browser: TestClient, client_id: str
) -> None:
    token = tokens_for(browser, client_id, "user/*.rs")["access_token"]
    assert browser.get("/fhir/Patient/nobody", params={"access_token": token}).status_code == 401
    r = browser.post("/fhir/Patient/_search", data={"access_token": token})
    assert r.status_code == 401
    r = browser.get("/fhir/Patient/nobody", headers={"authorization": f"Bearer {token}"})
    assert r.status_code != 401


def test_the_same_site_reload_page_is_inert(browser: TestClient) -> None:
    hostile = {
        "client_id": "x",
        "state": '"><script>alert(1)</script>',
        "redirect_uri": f";url=https://{EVIL}/",
        "nonce": "'\t/" + EVIL,
    }
    browser.cookies.clear()
    r = browser.get("/oauth/authorize", params=hostile, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 200
    assert "<script" not in r.text
    refresh = re.search(r'<meta http-equiv="refresh" content="0;url=([^"]*)">', r.text)
    assert refresh, r.text
    target = html.unescape(refresh.group(1))
    assert target.startswith("/oauth/authorize?") and "\t" not in target
    link = re.search(r'<a href="([^"]*)">', r.text)
    assert link and html.unescape(link.group(1)) == target
    assert "script-src" not in r.headers["content-security-policy"]


def test_a_revoked_app_is_stopped_at_the_next_request(
    system: System, browser: TestClient, client_id: str
) -> None:
    token = tokens_for(browser, client_id, "user/*.rs")["access_token"]  # no refresh token
    auth = {"authorization": f"Bearer {token}"}
    assert browser.get("/fhir/Patient/nobody", headers=auth).status_code != 401
    ClientRegistry.from_system(system).revoke(client_id, by="operator/test")
    assert browser.get("/fhir/Patient/nobody", headers=auth).status_code == 401
