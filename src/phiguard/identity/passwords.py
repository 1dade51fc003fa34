"""Workforce passwords: what NIST SP 800-63B allows, and how they are stored.

Policy (SP 800-63B section 3.1.1.2 / 5.1.1.2): a minimum length and a generous
maximum, counted in Unicode code points after NFKC so that every script and the
space character are allowed and "é" counts once however it was typed; no
composition rules (they push people to ``Password1!``); refusal of values an
attacker tries first -- the shipped breached-password list, those values with
digits or symbols stuck on either end, repeated or sequential characters, and
words from the user's own account or the service name.  Every refusal carries a
reason the user can act on and that never quotes the password.

Storage: argon2id through argon2-cffi, with the RFC 9106 "second recommended"
(low-memory) profile: t=3 passes over m=64 MiB with p=4 lanes.  That exceeds
OWASP's argon2id floor (m=19 MiB, t=2, p=1, about 4x cheaper for an attacker) and
costs about 125 ms per hash on the 2-core reference machine -- affordable for the
handful of workforce log-ins per user per day, while the login throttle
(``identity.throttle``) keeps an attacker from turning it into a CPU or memory
(64 MiB per concurrent hash) drain.  Parameters are pinned here rather than taken
from the library's default so an upgrade never changes them silently; stored hashes
carry their own parameters, ``check_needs_rehash`` spots old ones, and the caller
re-hashes on the next successful log-in.  argon2 compares digests in constant time.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import pairwise
from typing import NoReturn

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from phiguard.errors import InvalidPasswordHash, PasswordPolicyError

from .breached import BreachedPasswords, default_list, normalize

PRODUCTION_PARAMETERS = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=3,
    memory_cost=64 * 1024,  # KiB
    parallelism=4,
)

MIN_LENGTH = 12
MAX_LENGTH = 128
SERVICE_WORDS = ("phiguard",)


@dataclass(frozen=True)
class Verification:
    """Outcome of checking a password against its stored hash."""

    ok: bool
    needs_rehash: bool = False


class PasswordHashing:
    """argon2id hashing and verification with fixed parameters.

    Tests pass cheap parameters; production uses ``PRODUCTION_PARAMETERS``.
    """

    def __init__(self, parameters: Parameters = PRODUCTION_PARAMETERS) -> None:
        if parameters.type is not Type.ID:
            raise ValueError("only argon2id is used for passwords")
        self.parameters = parameters
        self._hasher = PasswordHasher.from_parameters(parameters)
        # Verified against (result ignored) when the account does not exist, so that
        # an unknown user id costs the same time as a wrong password.
        self._decoy = self._hasher.hash("\x00phiguard decoy\x00")

    def hash_password(self, password: str) -> str:
        """The PHC-format argon2id hash of the NFKC form of ``password``."""
        return self._hasher.hash(_nfkc(password))

    def verify_password(self, stored: str, password: str) -> Verification:
        """Whether ``password`` matches ``stored``, and whether to re-hash it now.

        ``needs_rehash`` is only ever true for a correct password: that is the one
        moment the plaintext is at hand to compute the new hash.
        """
        try:
            self._hasher.verify(stored, _nfkc(password))
        except VerifyMismatchError:
            return Verification(ok=False)
        except InvalidHashError:
            raise InvalidPasswordHash(
                "the stored password hash is not a valid argon2 hash"
            ) from None
        except VerificationError:
            return Verification(ok=False)
        return Verification(ok=True, needs_rehash=self._hasher.check_needs_rehash(stored))

    def verify_decoy(self, password: str) -> Verification:
        """Spend a verification's time for an unknown account; never succeeds."""
        self.verify_password(self._decoy, password)
        return Verification(ok=False)


@dataclass(frozen=True)
class PasswordContext:
    """What an attacker who targets this user would guess from: their own account."""

    user_id: str
    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class PasswordPolicy:
    """The rules a new password must meet (defaults: NIST SP 800-63B)."""

    min_length: int = MIN_LENGTH
    max_length: int = MAX_LENGTH
    service_words: tuple[str, ...] = SERVICE_WORDS
    # Shorter words from the account (a user id "ab") would refuse innocent passwords
    # when searched for inside them; they still count when they are the whole core.
    min_context_word: int = 4

    def check(
        self,
        password: str,
        context: PasswordContext,
        breached: BreachedPasswords | None = None,
    ) -> None:
        """Raise ``PasswordPolicyError`` with the first rule ``password`` breaks."""
        length = len(_nfkc(password))
        if length < self.min_length:
            _refuse(f"it is shorter than {self.min_length} characters")
        if length > self.max_length:
            _refuse(f"it is longer than {self.max_length} characters")
        folded = normalize(password)
        core = _core(folded)
        for label, words in self._context_words(context):
            for word in words:
                if len(word) < 3:
                    continue
                if word == core or (len(word) >= self.min_context_word and word in folded):
                    _refuse(f"it contains {label}")
        common = breached if breached is not None else default_list()
        if folded in common:
            _refuse("it appears in a list of commonly used or breached passwords")
        if core != folded and len(core) >= 4 and core in common:
            _refuse("it is a commonly used password with digits or symbols added")
        if _repetitive(folded):
            _refuse("it repeats the same few characters")
        if _sequential(folded):
            _refuse("it is a run of consecutive characters")

    def _context_words(self, context: PasswordContext) -> list[tuple[str, set[str]]]:
        local = context.email.rpartition("@")[0] if "@" in context.email else context.email
        return [
            ("the name of this service", {normalize(w) for w in self.service_words}),
            ("your user id", _words(context.user_id)),
            ("your name", _words(context.name)),
            ("your email address", _words(local)),
        ]


def _refuse(reason: str) -> NoReturn:
    raise PasswordPolicyError(reason)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


_SPLIT = re.compile(r"[\s._+\-@]+")


def _words(value: str) -> set[str]:
    """The value itself and its parts (``jane.doe`` -> jane.doe, jane, doe)."""
    folded = normalize(value.strip())
    if not folded:
        return set()
    return {folded} | {part for part in _SPLIT.split(folded) if part}


def _core(folded: str) -> str:
    """The password without leading and trailing non-letters (``!!sunshine2024``)."""
    start, end = 0, len(folded)
    while start < end and not folded[start].isalpha():
        start += 1
    while end > start and not folded[end - 1].isalpha():
        end -= 1
    return folded[start:end]


def _repetitive(folded: str) -> bool:
    """Three or fewer distinct characters, or one chunk repeated (``abcabcabcabc``)."""
    if len(set(folded)) <= 3:
        return True
    n = len(folded)
    return any(
        n % size == 0 and folded == folded[:size] * (n // size) for size in range(1, n // 2 + 1)
    )


def _sequential(folded: str) -> bool:
    """Every character one step from the previous in the same direction (``abcdef...``);
    digit runs wrap around (``...7890123``)."""
    steps: set[int] = set()
    for a, b in pairwise(folded):
        diff = ord(b) - ord(a)
        if a.isdigit() and b.isdigit():
            diff = (diff + 10) % 10
            diff = -1 if diff == 9 else diff
        steps.add(diff)
    return steps in ({1}, {-1})
