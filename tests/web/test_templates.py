"""No page template carries inline script, inline style or event-handler attributes:
the CSP forbids them, so one slipping in would be a broken page, or a loosened CSP."""

from __future__ import annotations

import re
from pathlib import Path

import phiguard.web

TEMPLATES = Path(phiguard.web.__file__).parent / "templates"
# The patient's access report is a stand-alone file (saved, mailed, printed): it
# carries its own stylesheet because it is never served under the console's CSP.
STANDALONE = {"access_report.html"}


def test_console_templates_have_no_inline_code() -> None:
    checked = 0
    for path in sorted(TEMPLATES.glob("*.html")):
        if path.name in STANDALONE:
            continue
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert not re.search(r"<style|\sstyle=", text), path.name
        assert not re.search(r"\son[a-z]+=", text), path.name
        assert "javascript:" not in text, path.name
        checked += 1
    assert checked >= 10
