"""Telling the privacy officer, at once, that someone broke the glass.

A break-the-glass declaration is recorded in the ledger and opens a review task; the
officer should also hear of it without waiting for the next scan.  The server
subscribes ``break_glass_notifier`` to ``access.breakglass.on_break_glass``: each
declaration becomes one notice over the monitoring channels (e-mail, signed
webhook) carrying the grant id and a link to its review page -- never the reason,
never a name.  Whether it went out is itself recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from phiguard.errors import MonitorError

from .notify import Notice, Notifier

if TYPE_CHECKING:
    from phiguard.access.breakglass import Grant
    from phiguard.system import System

DETECTOR = "break-the-glass"


def break_glass_notifier(system: System) -> Callable[[Grant], None] | None:
    """A subscriber for ``on_break_glass``, or None when no channel is configured."""
    try:
        notifier = Notifier.from_system(system)
    except MonitorError:  # a misconfigured channel: the watcher's scan still raises it
        return None
    if not notifier.channels:
        return None
    base = (notifier.settings.console_url or system.settings.public_base).rstrip("/")

    def notify(grant: Grant) -> None:
        notice = Notice(
            kind="break-glass",
            id=grant.grant_id,
            detector=DETECTOR,
            score=100.0,
            link=f"{base}/privacy/break-glass/{grant.grant_id}",
        )
        delivery = notifier.send([notice])
        system.record(
            "break-glass-notify",
            outcome="success" if delivery.delivered else "failure",
            patient_ids=(grant.patient_id,),
            grant=grant.grant_id,
            sent=",".join(delivery.sent),
            failed=",".join(sorted(delivery.failed)),
        )

    return notify
