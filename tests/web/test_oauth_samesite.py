"""Arriving at /oauth/authorize from an app's site: the SameSite=Strict session cookie is
withheld on that cross-site navigation, so the page reloads itself same-site once
(then the cookie comes along) instead of asking a signed-in user to sign in again."""

from __future__ import annotations

from starlette.testclient import TestClient

from phiguard.system import System
from phiguard.web.app import create_app

QUERY = {"response_type": "code", "client_id": "app", "state": "s<1>"}


def test_cross_site_arrival_reloads_same_site(home: tuple[System, str]) -> None:
    system, _ = home
    with TestClient(create_app(system), follow_redirects=False) as http:
        cross = http.get("/oauth/authorize", params=QUERY, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 200
        assert '<meta http-equiv="refresh" content="0;url=/oauth/authorize?' in cross.text
        assert "<1>" not in cross.text
        assert cross.headers["cache-control"] == "no-store"
        # The reload itself is same-origin: without a session it goes to sign-in.
        same = http.get("/oauth/authorize", params=QUERY, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 303
        assert same.headers["location"].startswith("/login?next=")
