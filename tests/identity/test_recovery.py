"""Single-use recovery codes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from phiguard.clock import FixedClock
from phiguard.identity.recovery import ALPHABET, RecoveryCodes
from phiguard.records.vault import Vault
from phiguard.store.engine import now_us
from phiguard.store.tables import recovery_codes

FORMAT = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


@pytest.fixture
def codes(vault: Vault, clock: FixedClock) -> RecoveryCodes:
    return RecoveryCodes(vault.engine, clock)


def counter_bytes() -> Callable[[int], bytes]:
    """A deterministic random source: SHA-256 of a counter."""
    counter: Iterator[int] = iter(range(10**9))

    def draw(n: int) -> bytes:
        return hashlib.sha256(str(next(counter)).encode()).digest()[:n]

    return draw


def database_bytes(vault: Vault) -> bytes:
    db = Path(str(vault.engine.url.database))
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())


def test_ten_codes_of_80_bits(codes: RecoveryCodes) -> None:
    issued = codes.generate("alice")
    assert len(issued.codes) == 10 and len(set(issued.codes)) == 10
    for code in issued.codes:
        assert FORMAT.match(code), code
    # 16 symbols of a 32-letter alphabet: 80 bits each.
    assert len(ALPHABET) == 32 and len(set(ALPHABET)) == 32
    assert all(len(c.replace("-", "")) == 16 for c in issued.codes)
    assert not any(c in repr(issued) for c in issued.codes)
    assert codes.remaining("alice") == 10


def test_encoding_covers_the_whole_alphabet(vault: Vault, clock: FixedClock) -> None:
    zero = RecoveryCodes(vault.engine, clock, count=1, random_bytes=lambda n: b"\x00" * n)
    ones = RecoveryCodes(vault.engine, clock, count=1, random_bytes=lambda n: b"\xff" * n)
    assert zero.generate("a").codes == ("0000-0000-0000-0000",)
    assert ones.generate("b").codes == ("ZZZZ-ZZZZ-ZZZZ-ZZZZ",)
    repeating = RecoveryCodes(vault.engine, clock, random_bytes=lambda n: b"\x07" * n)
    with pytest.raises(ValueError):
        repeating.generate("c")  # ten identical "random" codes are refused


def test_each_code_works_once(codes: RecoveryCodes) -> None:
    issued = codes.generate("alice")
    for left, code in zip(range(9, -1, -1), issued.codes, strict=True):
        result = codes.use("alice", code)
        assert result.accepted and result.remaining == left
    for code in issued.codes:
        result = codes.use("alice", code)
        assert not result.accepted and result.remaining == 0


def test_wrong_code_and_other_users_code_refused(codes: RecoveryCodes) -> None:
    alice = codes.generate("alice")
    bob = codes.generate("bob")
    assert not codes.use("alice", bob.codes[0]).accepted
    assert not codes.use("alice", "0000-0000-0000-0000").accepted
    assert not codes.use("alice", "").accepted
    assert not codes.use("carol", alice.codes[0]).accepted
    assert codes.remaining("alice") == 10 and codes.remaining("bob") == 10
    assert codes.use("bob", bob.codes[0]).accepted


def test_input_is_forgiving(vault: Vault, clock: FixedClock) -> None:
    codes = RecoveryCodes(vault.engine, clock, random_bytes=counter_bytes())
    issued = codes.generate("alice").codes
    with_zero = next(c for c in issued if "0" in c)
    with_one = next(c for c in issued if "1" in c and c != with_zero)
    assert codes.use("alice", with_zero.replace("0", "O").lower()).accepted
    assert codes.use("alice", " " + with_one.replace("-", "").replace("1", "l") + " ").accepted


def test_regenerating_invalidates_old_codes(codes: RecoveryCodes) -> None:
    old = codes.generate("alice")
    codes.use("alice", old.codes[0])
    new = codes.generate("alice")
    assert not set(old.codes) & set(new.codes)
    for code in old.codes:
        assert not codes.use("alice", code).accepted
    assert codes.remaining("alice") == 10
    assert codes.use("alice", new.codes[3]).accepted


def test_codes_are_stored_hashed(codes: RecoveryCodes, vault: Vault, clock: FixedClock) -> None:
    issued = codes.generate("alice")
    codes.use("alice", issued.codes[0])
    stored = database_bytes(vault)
    assert stored
    for code in issued.codes:
        assert code.encode() not in stored and code.replace("-", "").encode() not in stored
    with vault.engine.connect() as conn:
        rows = conn.execute(select(recovery_codes)).all()
    assert len(rows) == 10
    assert len({bytes(r.salt) for r in rows}) == 1 and len(bytes(rows[0].salt)) == 16
    assert all(len(bytes(r.code_hash)) == 32 for r in rows)
    assert [r.used_at for r in rows if r.used_at is not None] == [now_us(clock.now())]
    # A new set gets a new salt.
    codes.generate("alice")
    with vault.engine.connect() as conn:
        salts = {bytes(r.salt) for r in conn.execute(select(recovery_codes.c.salt))}
    assert salts.isdisjoint({bytes(rows[0].salt)})


def test_revoke(codes: RecoveryCodes) -> None:
    issued = codes.generate("alice")
    assert codes.revoke("alice") == 10
    assert codes.remaining("alice") == 0
    assert not codes.use("alice", issued.codes[1]).accepted
