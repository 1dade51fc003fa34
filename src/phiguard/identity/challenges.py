"""Pending WebAuthn challenges, in the database so every server process shares them.

A WebAuthn ceremony has two halves: the server draws a challenge and sends the
options, the browser signs, and the server checks the answer against the challenge
it drew.  Kept in one process's memory, the second half fails whenever a balancer
sends it to another process.  So the challenge lives in ``webauthn_challenges``,
keyed by the session's handle (the stored hash of its id, never the cookie) and the
ceremony, for two minutes, and is taken with ``DELETE ... RETURNING``: of two
concurrent answers only one gets it, so a challenge is used once however many
processes race for it.  A new ceremony replaces a pending one of the same kind.
Expired rows are swept whenever a challenge is stored.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, delete, insert

from phiguard.clock import Clock
from phiguard.store.engine import now_us
from phiguard.store.tables import webauthn_challenges

CEREMONIES = frozenset({"register", "authenticate"})
TTL = dt.timedelta(minutes=2)


class ChallengeStore:
    """``put`` a ceremony's challenge, ``take`` it once (see the module docstring)."""

    def __init__(self, engine: Engine, clock: Clock, *, ttl: dt.timedelta = TTL) -> None:
        self.engine = engine
        self.clock = clock
        self.ttl = ttl

    def put(self, handle: str, ceremony: str, challenge: bytes) -> None:
        if ceremony not in CEREMONIES:
            raise ValueError(f"unknown ceremony {ceremony!r}")
        now = now_us(self.clock.now())
        t = webauthn_challenges.c
        with self.engine.begin() as conn:
            conn.execute(delete(webauthn_challenges).where(t.expires_at <= now))
            conn.execute(
                delete(webauthn_challenges).where(t.handle == handle, t.ceremony == ceremony)
            )
            conn.execute(
                insert(webauthn_challenges).values(
                    handle=handle,
                    ceremony=ceremony,
                    challenge=challenge,
                    expires_at=now + int(self.ttl.total_seconds() * 1_000_000),
                )
            )

    def take(self, handle: str, ceremony: str) -> bytes | None:
        """The pending challenge, removed; None if there is none or it expired."""
        now = now_us(self.clock.now())
        t = webauthn_challenges.c
        with self.engine.begin() as conn:
            row = conn.execute(
                delete(webauthn_challenges)
                .where(t.handle == handle, t.ceremony == ceremony)
                .returning(t.challenge, t.expires_at)
            ).first()
        if row is None or int(row.expires_at) <= now:
            return None
        return bytes(row.challenge)
