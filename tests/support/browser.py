"""A real browser for console tests: Playwright driving the system's Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .components import unavailable

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    for candidate in (os.environ.get("PHIGUARD_CHROMIUM", ""), *CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    unavailable("Chromium not found (Debian package chromium)")


@contextmanager
def browser_page() -> Iterator[Any]:
    """A fresh page in a new headless Chromium (closed afterwards)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(45_000)
            yield page
        finally:
            browser.close()


def wait_for_path(page: Any, path: str) -> None:
    """Wait until the page's URL path is exactly ``path`` (a glob such as ``**/account``
    also matches ``/login/mfa?next=/account``, and would return too early)."""
    page.wait_for_url(lambda url: urlsplit(url).path == path)
