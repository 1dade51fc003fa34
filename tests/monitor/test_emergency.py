"""A break-the-glass declaration reaches the privacy officer at once, naming no one."""

from __future__ import annotations

import email
from email import policy as email_policy

import pytest
from starlette.testclient import TestClient

from phiguard.access import breakglass
from phiguard.records.context import AccessContext, Principal
from phiguard.system import System
from phiguard.web.app import create_app
from tests.support.peers import smtp_peer, webhook_peer
from tests.web.console_helpers import add_user, csrf_of, enrol

OPS = AccessContext(principal=Principal(id="ops", kind="operator"), purpose="HOPERAT")
REASON = "Quillfeather collapsed in the lobby"


def _channels(system: System, smtp_port: int, webhook_url: str) -> None:
    with (system.settings.home / "phiguard.toml").open("a") as f:
        f.write(
            "\n[monitor]\n"
            'console_url = "https://phiguard.hospital.example"\n'
            'smtp_host = "127.0.0.1"\n'
            f"smtp_port = {smtp_port}\n"
            "smtp_starttls = false\n"
            'smtp_to = ["privacy@hospital.example"]\n'
            f'webhook_url = "{webhook_url}"\n'
        )


def test_declaration_is_mailed_and_posted_with_ids_only(
    home: tuple[System, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    system, _ = home
    add_user(system, "nurse01", ["nurse"])
    pid = (
        system.vault.repository(OPS)
        .create({"resourceType": "Patient", "name": [{"family": "Quillfeather"}]})
        .id
    )
    monkeypatch.setenv("PHIGUARD_WEBHOOK_SECRET", "s" * 40)
    with smtp_peer() as (inbox, port), webhook_peer() as (hooks, url):
        _channels(system, port, url)
        with TestClient(create_app(system), follow_redirects=False) as nurse:
            assert len(breakglass.on_break_glass) == 1  # subscribed while serving
            enrol(nurse, "nurse01")
            page = nurse.get("/emergency")
            r = nurse.post(
                "/emergency", data={"csrf": csrf_of(page.text), "patient": pid, "reason": REASON}
            )
            assert r.status_code == 200 and 'id="grant"' in r.text
        assert breakglass.on_break_glass == []  # and unsubscribed when it stops
        assert system.access is not None
        grant = system.access.break_glass.list("open")[0]
        assert len(inbox.messages) == 1
        mail = email.message_from_bytes(inbox.messages[0], policy=email_policy.default)
        body = mail.get_body().get_content()  # type: ignore[union-attr]
        link = f"https://phiguard.hospital.example/privacy/break-glass/{grant.grant_id}"
        assert link in body
        posted = hooks.everything()
        assert grant.grant_id.encode() in posted and b"break-the-glass" in posted
        for channel in (body.encode(), inbox.messages[0], posted):
            assert b"Quillfeather" not in channel and b"lobby" not in channel
    system.ledger.checkpoint()
    _, entries = system.ledger.search(patient=pid, count=100)
    sent = [e for e in entries if e["action"] == "break-glass-notify"]
    assert sent and sent[0]["outcome"] == "success"


def test_no_channel_no_subscriber(home: tuple[System, str]) -> None:
    system, _ = home
    with TestClient(create_app(system)):
        assert breakglass.on_break_glass == []
