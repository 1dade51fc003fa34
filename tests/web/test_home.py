"""The landing page: useful, and as locked down as the API."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from phiguard.system import System
from phiguard.web.app import create_app


def test_home_page_is_strict(home: tuple[System, str]) -> None:
    system, _token = home
    with TestClient(create_app(system)) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        # No inline script or style for the CSP to have to allow.
        assert not re.search(r"<script|<style|style=", page.text)
        assert 'href="/fhir/metadata"' in page.text
        css = client.get("/static/phiguard.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert client.get("/static/../config.py").status_code == 404
