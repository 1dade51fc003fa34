"""Single-use recovery codes: the way back in when the authenticator phone is lost.

Each code is 80 random bits written as 16 characters of Crockford's base32 in four
groups (``7KQ2-M9XD-...``): no I, L, O or U, so nothing is misread, and input is
forgiving about case, hyphens, spaces and the look-alikes (O->0, I/L->1).

Codes are stored as SHA-256(per-user random salt | code), not with argon2.  A work
factor is what rescues low-entropy secrets such as passwords; an 80-bit code already
costs an attacker with a stolen database about 2^79 hashes -- centuries at 10^12
hashes a second -- and argon2's cost would instead be paid ten times (once per
stored code) on every recovery attempt, a lever for denial of service.  The salt
stops one precomputation serving every account.

Using a code compares the candidate's hash with every stored hash of the user,
used or not, without stopping at a match, and consumes it in a conditional UPDATE:
two concurrent uses of one code cannot both succeed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, func, insert, select, update

from phiguard.clock import Clock
from phiguard.store.engine import now_us
from phiguard.store.tables import recovery_codes

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
CODE_COUNT = 10
CODE_BYTES = 10  # 80 bits -> 16 characters
GROUP = 4
SALT_BYTES = 16
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True)
class GeneratedCodes:
    """Fresh codes, to show the user once; ``repr`` leaves them out."""

    user_id: str
    codes: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class RecoveryResult:
    """Whether a code was accepted, and how many unused codes are left."""

    accepted: bool
    remaining: int


class RecoveryCodes:
    """Issues and consumes recovery codes in ``recovery_codes``."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        count: int = CODE_COUNT,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.count = count
        self._random_bytes = random_bytes

    def generate(self, user_id: str) -> GeneratedCodes:
        """Replace every code of ``user_id`` with ``count`` new ones (returned only here)."""
        salt = self._random(SALT_BYTES)
        codes = tuple(_format(self._random(CODE_BYTES)) for _ in range(self.count))
        if len(set(codes)) != len(codes):
            raise ValueError("the random source repeated itself")
        now = now_us(self.clock.now())
        with self.engine.begin() as conn:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
            conn.execute(
                insert(recovery_codes),
                [
                    {
                        "user_id": user_id,
                        "code_hash": _digest(salt, _canonical(code)),
                        "salt": salt,
                        "created_at": now,
                        "used_at": None,
                    }
                    for code in codes
                ],
            )
        return GeneratedCodes(user_id=user_id, codes=codes)

    def use(self, user_id: str, code: str) -> RecoveryResult:
        """Consume ``code`` if it is one of the user's unused codes."""
        canonical = _canonical(code)
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(
                    recovery_codes.c.code_hash, recovery_codes.c.salt, recovery_codes.c.used_at
                ).where(recovery_codes.c.user_id == user_id)
            ).all()
            unused = sum(1 for r in rows if r.used_at is None)
            match: bytes | None = None
            for r in rows:
                stored = bytes(r.code_hash)
                # Every stored hash is compared; the match (if any) is only noted.
                if hmac.compare_digest(stored, _digest(bytes(r.salt), canonical)):
                    match = stored if r.used_at is None else match
            if match is None:
                return RecoveryResult(False, unused)
            consumed = conn.execute(
                update(recovery_codes)
                .where(
                    recovery_codes.c.user_id == user_id,
                    recovery_codes.c.code_hash == match,
                    recovery_codes.c.used_at.is_(None),
                )
                .values(used_at=now_us(self.clock.now()))
            )
            if consumed.rowcount != 1:
                return RecoveryResult(False, unused)
        return RecoveryResult(True, unused - 1)

    def remaining(self, user_id: str) -> int:
        """How many unused codes ``user_id`` has (prompt a new set when it runs low)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None)
                    )
                ).scalar_one()
            )

    def revoke(self, user_id: str) -> int:
        """Delete every code of ``user_id``; returns how many there were."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
        return int(result.rowcount or 0)

    def _random(self, n: int) -> bytes:
        raw = self._random_bytes(n)
        if len(raw) != n:
            raise ValueError("the random source returned the wrong number of bytes")
        return raw


def _format(raw: bytes) -> str:
    value = int.from_bytes(raw, "big")
    chars = [ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(len(raw) * 8 // 5))]
    text = "".join(chars)
    return "-".join(text[i : i + GROUP] for i in range(0, len(text), GROUP))


def _canonical(code: str) -> str:
    """Upper case, no separators, look-alike letters read as the digits they resemble."""
    return "".join(c for c in code.upper() if c not in "- \t").translate(_LOOKALIKES)


def _digest(salt: bytes, canonical: str) -> bytes:
    return hashlib.sha256(salt + canonical.encode("utf-8")).digest()
