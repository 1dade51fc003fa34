"""Telling people that an alert is waiting: e-mail over SMTP and a signed webhook.

A notification leaves phiguard for mail servers and chat systems that are not
built to hold PHI, so it carries only what lets a reviewer find the alert: its id,
detector, score and a link to the console -- never a name, a patient id or a
reason.  Whoever follows the link signs in to see the rest.

The webhook body is JSON, signed with HMAC-SHA256 over ``"<timestamp>." + body``;
the timestamp travels in ``X-Phiguard-Timestamp`` and the signature, as
``sha256=<hex>``, in ``X-Phiguard-Signature``.  A receiver recomputes it with the
shared secret (``verify``: constant-time, and refusing stale timestamps so a
captured request cannot be replayed later).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Final

from phiguard import config
from phiguard.clock import Clock, SystemClock
from phiguard.config import MonitorSettings
from phiguard.errors import NotificationError

if TYPE_CHECKING:
    from phiguard.monitor.workflow import Workflow
    from phiguard.system import System

SIGNATURE_HEADER: Final = "X-Phiguard-Signature"
TIMESTAMP_HEADER: Final = "X-Phiguard-Timestamp"
EVENT: Final = "phiguard.monitor.alerts"
MIN_SECRET: Final = 32
REPLAY_WINDOW: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Notice:
    """What one notification says about one alert or case."""

    kind: str  # alert | case
    id: str
    detector: str  # "case" for a case
    score: float
    link: str

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "id": self.id,
            "detector": self.detector,
            "score": round(self.score, 1),
            "link": self.link,
        }


@dataclass
class Delivery:
    """Which channels took the notices, and why the others did not (no PHI)."""

    notices: int = 0
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def delivered(self) -> bool:
        return bool(self.sent)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: dt.datetime,
    window: dt.timedelta = REPLAY_WINDOW,
) -> bool:
    """Whether a webhook request is genuine and fresh (what a receiver should run)."""
    try:
        sent = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return False
    if abs(now - sent) > window:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode())


class Notifier:
    """Sends notices over the configured channels; a channel that fails does not stop
    the others, and no failure escapes as an exception (monitoring must go on)."""

    def __init__(
        self,
        settings: MonitorSettings,
        *,
        smtp_password: str | None = None,
        webhook_secret: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.smtp_password = smtp_password
        self.webhook_secret = webhook_secret
        self.clock = clock or SystemClock()
        if settings.webhook_url:
            scheme = urllib.parse.urlsplit(settings.webhook_url).scheme
            if scheme not in ("http", "https"):
                raise NotificationError("webhook_url must be an http or https URL")
            if not webhook_secret:
                raise NotificationError(
                    "webhook_url is set but no signing secret: set PHIGUARD_WEBHOOK_SECRET"
                )

    @classmethod
    def from_system(cls, system: System) -> Notifier:
        monitor = config.monitor_settings(system.settings)
        return cls(
            monitor,
            smtp_password=config.monitor_secret(system.settings, "PHIGUARD_SMTP_PASSWORD"),
            webhook_secret=config.monitor_secret(
                system.settings,
                "PHIGUARD_WEBHOOK_SECRET",
                monitor.webhook_secret_file,
                minimum=MIN_SECRET,
            ),
            clock=system.clock,
        )

    @property
    def channels(self) -> list[str]:
        out = []
        if self.settings.smtp_host and self.settings.smtp_to:
            out.append("email")
        if self.settings.webhook_url:
            out.append("webhook")
        return out

    def link(self, kind: str, target: str) -> str:
        base = self.settings.console_url.rstrip("/")
        return f"{base}/monitor/{kind}s/{urllib.parse.quote(target, safe='')}"

    def send(self, notices: Sequence[Notice]) -> Delivery:
        delivery = Delivery(len(notices))
        if not notices:
            return delivery
        for channel in self.channels:
            try:
                if channel == "email":
                    self.email(notices)
                else:
                    self.webhook(notices)
            except NotificationError as exc:
                delivery.failed[channel] = str(exc)
            else:
                delivery.sent.append(channel)
        return delivery

    # -- e-mail ------------------------------------------------------------------------
    def email(self, notices: Sequence[Notice]) -> None:
        s = self.settings
        message = EmailMessage()
        n = len(notices)
        message["Subject"] = f"phiguard: {n} privacy alert{'s' if n != 1 else ''} to review"
        message["From"] = s.smtp_from or f"phiguard@{s.smtp_host}"
        message["To"] = ", ".join(s.smtp_to)
        lines = [
            "New privacy monitoring findings are waiting for review.",
            "Sign in to the console to see them; this message names no one on purpose.",
            "",
        ]
        lines += [
            f"- {x.kind} {x.id} ({x.detector}, score {x.score:.0f}): {x.link}" for x in notices
        ]
        message.set_content("\n".join(lines) + "\n")
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds) as smtp:
                smtp.ehlo()
                if s.smtp_starttls:
                    context = ssl.create_default_context(cafile=s.smtp_ca_file or None)
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if s.smtp_username:
                    smtp.login(s.smtp_username, self.smtp_password or "")
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise NotificationError(f"e-mail not sent: {type(exc).__name__}") from None

    # -- webhook -----------------------------------------------------------------------
    def webhook(self, notices: Sequence[Notice]) -> None:
        s = self.settings
        secret = (self.webhook_secret or "").encode()
        body = json.dumps(
            {
                "event": EVENT,
                "sent_at": self.clock.now().isoformat(timespec="seconds"),
                "items": [x.as_json() for x in notices],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(self.clock.now().timestamp()))
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            s.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "phiguard-monitor",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_seconds) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            raise NotificationError(f"webhook refused the notification: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise NotificationError(f"webhook not reached: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise NotificationError(f"webhook answered HTTP {status}")


def notify_new(workflow: Workflow, notifier: Notifier, *, by: str, source: str = "") -> Delivery:
    """Notify about queued alerts nobody was told of yet; mark them once delivered.

    The attempt is recorded in the audit ledger (counts and channels only).  Alerts
    stay unmarked while every channel fails, so the next run tries again.
    """
    if not notifier.channels:
        return Delivery()
    rows = workflow.unnotified(notifier.settings.notify_min_score)
    notices = [
        Notice("alert", r.alert_id, r.detector, r.score, notifier.link("alert", r.alert_id))
        for r in rows
    ]
    delivery = notifier.send(notices)
    if not notices:
        return delivery
    if delivery.delivered:
        workflow.mark_notified(r.alert_id for r in rows)
    workflow.record(
        "monitor-notify",
        by,
        outcome="success" if not delivery.failed else "error",
        source=source,
        notices=len(notices),
        sent=",".join(delivery.sent),
        failed=",".join(sorted(delivery.failed)),
    )
    return delivery
