"""Notifications with real peers: an aiosmtpd SMTP server (STARTTLS, AUTH) and a stdlib
HTTP receiver that checks the webhook signature the way a customer would."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from phiguard.clock import FixedClock
from phiguard.config import MonitorSettings
from phiguard.errors import NotificationError
from phiguard.monitor import notify
from phiguard.monitor.notify import Notice, Notifier, notify_new
from phiguard.monitor.workflow import Workflow
from phiguard.records.hooks import ListAuditSink
from phiguard.records.vault import Vault
from tests.monitor.test_workflow import A
from tests.support.components import free_port

SECRET = "webhook-secret-" + "x" * 32
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


# -- peers -------------------------------------------------------------------------------
@dataclass
class Inbox:
    messages: list[bytes] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        self.tls.append(session.ssl is not None)
        return "250 OK"


def tls_files(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    cert, key = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        inbox.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"smtp-password-for-tests")

    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield inbox, port, cert
    finally:
        controller.stop()


@dataclass
class Received:
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 204


@pytest.fixture
def receiver() -> Iterator[tuple[Received, str]]:
    got = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            got.bodies.append(self.rfile.read(length))
            got.headers.append(dict(self.headers.items()))
            self.send_response(got.status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}/hooks/phiguard"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


NOTICES = [
    Notice("alert", "a1b2", "family", 91.0, "https://phiguard.example/monitor/alerts/a1b2"),
    Notice("alert", "c3d4", "vip", 64.5, "https://phiguard.example/monitor/alerts/c3d4"),
]


# -- e-mail --------------------------------------------------------------------------------
def test_email_over_starttls_with_login(smtp: tuple[Inbox, int, Path]) -> None:
    inbox, port, cert = smtp
    settings = MonitorSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_ca_file=str(cert),
        smtp_username="phiguard",
        smtp_from="phiguard@hospital.example",
        smtp_to=["privacy@hospital.example"],
    )
    delivery = Notifier(settings, smtp_password="smtp-password-for-tests").send(NOTICES)
    assert delivery.sent == ["email"] and delivery.failed == {}
    (raw,) = inbox.messages
    assert inbox.tls == [True]
    assert inbox.logins == [(b"phiguard", b"smtp-password-for-tests")]
    message = message_from_bytes(raw)
    assert message["Subject"] == "phiguard: 2 privacy alerts to review"
    assert message["To"] == "privacy@hospital.example"
    text = message.get_payload(decode=True).decode()
    assert "a1b2 (family, score 91)" in text and "/monitor/alerts/c3d4" in text


def test_email_refuses_an_untrusted_certificate(smtp: tuple[Inbox, int, Path]) -> None:
    inbox, port, _cert = smtp
    settings = MonitorSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_to=["p@h.example"])
    delivery = Notifier(settings).send(NOTICES)  # the system CAs do not know the test CA
    assert delivery.sent == [] and "e-mail not sent" in delivery.failed["email"]
    assert inbox.messages == []


def test_email_failure_is_reported_not_raised() -> None:
    settings = MonitorSettings(smtp_host="127.0.0.1", smtp_port=free_port(), smtp_to=["x@y.z"])
    delivery = Notifier(settings).send(NOTICES)
    assert not delivery.delivered and delivery.failed["email"].startswith("e-mail not sent")


# -- webhook -------------------------------------------------------------------------------
def test_webhook_is_signed_and_verifiable(receiver: tuple[Received, str]) -> None:
    got, url = receiver
    clock = FixedClock(NOW)
    notifier = Notifier(MonitorSettings(webhook_url=url), webhook_secret=SECRET, clock=clock)
    assert notifier.send(NOTICES).sent == ["webhook"]
    (body,), (headers,) = got.bodies, got.headers
    doc = json.loads(body)
    assert doc["event"] == "phiguard.monitor.alerts"
    assert [i["id"] for i in doc["items"]] == ["a1b2", "c3d4"]
    assert set(doc["items"][0]) == {"kind", "id", "detector", "score", "link"}
    stamp, signature = headers[notify.TIMESTAMP_HEADER], headers[notify.SIGNATURE_HEADER]
    assert notify.verify(SECRET.encode(), stamp, body, signature, now=NOW)
    # The check can fail: a changed body, another secret, a replay an hour later.
    assert not notify.verify(SECRET.encode(), stamp, body.replace(b"91", b"19"), signature, now=NOW)
    assert not notify.verify(b"another secret", stamp, body, signature, now=NOW)
    later = NOW + dt.timedelta(hours=1)
    assert not notify.verify(SECRET.encode(), stamp, body, signature, now=later)


def test_webhook_error_status_is_a_failure(receiver: tuple[Received, str]) -> None:
    got, url = receiver
    got.status = 500
    delivery = Notifier(MonitorSettings(webhook_url=url), webhook_secret=SECRET).send(NOTICES)
    assert delivery.failed == {"webhook": "webhook refused the notification: HTTP 500"}


def test_webhook_needs_a_secret_and_an_http_url() -> None:
    with pytest.raises(NotificationError, match="no signing secret"):
        Notifier(MonitorSettings(webhook_url="https://hooks.example/x"))
    with pytest.raises(NotificationError, match="http or https"):
        Notifier(MonitorSettings(webhook_url="file:///etc/passwd"), webhook_secret=SECRET)


# -- from the workflow -----------------------------------------------------------------------
def test_notify_new_sends_ids_only_and_marks_alerts(
    vault: Vault,
    audit_sink: ListAuditSink,
    clock: FixedClock,
    receiver: tuple[Received, str],
    smtp: tuple[Inbox, int, Path],
) -> None:
    got, url = receiver
    inbox, port, cert = smtp
    flow = Workflow(vault.engine, vault.keyring, audit_sink, clock=clock)
    reason = "viewed the record of Canarysurname living at 1 Canary Lane"
    flow.save(
        [
            A("a-90", "family", "u1", ("patient-77",), 90.0, reason=reason),
            A("a-40", "after-hours", "u2", ("patient-78",), 40.0, reason=reason),
        ],
        by="system/monitor",
    )
    settings = MonitorSettings(
        console_url="https://phiguard.example/",
        notify_min_score=50.0,
        webhook_url=url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_ca_file=str(cert),
        smtp_to=["privacy@hospital.example"],
    )
    notifier = Notifier(settings, webhook_secret=SECRET, clock=clock)
    delivery = notify_new(flow, notifier, by="system/monitor")
    assert sorted(delivery.sent) == ["email", "webhook"] and delivery.notices == 1
    mail = message_from_bytes(inbox.messages[0]).get_payload(decode=True)
    sent = got.bodies[0] + mail
    assert b"a-90" in sent and b"a-40" not in sent  # below the score threshold
    for forbidden in (b"Canary", b"patient-77", b"u1", b"family name"):
        assert forbidden not in sent
    assert json.loads(got.bodies[0])["items"][0]["link"] == (
        "https://phiguard.example/monitor/alerts/a-90"
    )
    # Marked: a second run sends nothing.
    assert notify_new(flow, notifier, by="system/monitor").notices == 0
    assert len(got.bodies) == 1
    events = [e for e in audit_sink.events if e.action == "monitor-notify"]
    assert len(events) == 1 and events[0].detail["sent"] == "email,webhook"
