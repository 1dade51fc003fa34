"""Password hashing (argon2id) and the SP 800-63B policy."""

from __future__ import annotations

import secrets
import string
import time

import pytest
from argon2 import Parameters, Type

from phiguard.errors import IdentityError, InvalidPasswordHash, PasswordPolicyError
from phiguard.identity.passwords import (
    PRODUCTION_PARAMETERS,
    PasswordContext,
    PasswordHashing,
    PasswordPolicy,
)

from .conftest import CHEAP

POLICY = PasswordPolicy()
CYRILLIC = "\u0412\u0415\u041b\u042c\u0412\u0415\u0422 \u0422\u0420\u0410\u041a\u0422\u041e\u0420"
ALICE = PasswordContext(
    user_id="mthompson7", name="Margaret Thompson", email="night.owl@hospital.example"
)


def reason(password: str, context: PasswordContext = ALICE) -> str:
    with pytest.raises(PasswordPolicyError) as refused:
        POLICY.check(password, context)
    err = refused.value
    assert isinstance(err, IdentityError)
    # The message and the reason never quote the password.
    assert password not in str(err) and password.lower() not in err.reason.lower()
    return err.reason


# -- hashing ---------------------------------------------------------------------------


def test_production_parameters_are_argon2id_rfc9106_low_memory() -> None:
    p = PRODUCTION_PARAMETERS
    assert (p.type, p.version, p.time_cost, p.memory_cost, p.parallelism) == (
        Type.ID,
        19,
        3,
        65536,
        4,
    )
    assert p.salt_len >= 16 and p.hash_len >= 32
    hashing = PasswordHashing()
    started = time.perf_counter()
    stored = hashing.hash_password("velvet tractor orbit lantern")
    elapsed = time.perf_counter() - started
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert elapsed > 0.01  # a real memory-hard hash, not a no-op
    assert hashing.verify_password(stored, "velvet tractor orbit lantern").ok
    assert not hashing.verify_password(stored, "velvet tractor orbit lanterns").ok


def test_verify_accepts_only_the_password(hashing: PasswordHashing) -> None:
    stored = hashing.hash_password("velvet tractor orbit lantern")
    assert "velvet" not in stored
    assert hashing.verify_password(stored, "velvet tractor orbit lantern").ok
    for wrong in ("Velvet tractor orbit lantern", "velvet tractor orbit lantern ", ""):
        result = hashing.verify_password(stored, wrong)
        assert not result.ok and not result.needs_rehash
    # Fresh salt every time.
    assert hashing.hash_password("velvet tractor orbit lantern") != stored


def test_passwords_are_compared_after_nfkc(hashing: PasswordHashing) -> None:
    composed = "caf\u00e9 au lait s'il vous pla\u00eet"
    decomposed = "cafe\u0301 au lait s'il vous plai\u0302t"
    fullwidth = "\uff56\uff45\uff4c\uff56\uff45\uff54 tractor orbit lantern"  # "velvet"
    assert hashing.verify_password(hashing.hash_password(composed), decomposed).ok
    assert hashing.verify_password(
        hashing.hash_password("velvet tractor orbit lantern"), fullwidth
    ).ok


def test_needs_rehash_when_parameters_change(hashing: PasswordHashing) -> None:
    stronger = PasswordHashing(
        Parameters(
            type=Type.ID,
            version=19,
            salt_len=16,
            hash_len=32,
            time_cost=2,
            memory_cost=128,
            parallelism=1,
        )
    )
    old = hashing.hash_password("velvet tractor orbit lantern")
    result = stronger.verify_password(old, "velvet tractor orbit lantern")
    assert result.ok and result.needs_rehash
    # A wrong password never asks for a re-hash (there is nothing to re-hash with).
    assert not stronger.verify_password(old, "wrong horse").needs_rehash
    current = stronger.hash_password("velvet tractor orbit lantern")
    assert not stronger.verify_password(current, "velvet tractor orbit lantern").needs_rehash


def test_unreadable_stored_hash_is_an_error_not_a_mismatch(hashing: PasswordHashing) -> None:
    with pytest.raises(InvalidPasswordHash) as err:
        hashing.verify_password("not-a-hash", "velvet tractor orbit lantern")
    assert "velvet" not in str(err.value)


def test_decoy_verification_never_succeeds(hashing: PasswordHashing) -> None:
    assert not hashing.verify_decoy("velvet tractor orbit lantern").ok
    assert not hashing.verify_decoy("").ok


def test_only_argon2id_is_accepted() -> None:
    with pytest.raises(ValueError):
        PasswordHashing(
            Parameters(
                type=Type.I,
                version=19,
                salt_len=16,
                hash_len=32,
                time_cost=1,
                memory_cost=64,
                parallelism=1,
            )
        )
    assert CHEAP.type is Type.ID


# -- policy ----------------------------------------------------------------------------


def test_length_counts_code_points_after_nfkc() -> None:
    assert reason("short pass1") == "it is shorter than 12 characters"  # 11
    POLICY.check("violet storm", ALICE)  # exactly 12
    # Typed with combining accents: 14 code points raw, 10 after NFKC.
    decomposed = "e\u0301te\u0301 brule\u0301e\u0301"
    assert len(decomposed) >= 12
    assert reason(decomposed).startswith("it is shorter than 12")
    # 12 non-Latin letters are 12 characters, not 24 or 36 bytes.
    POLICY.check("Καλημέρα κόσ", ALICE)


def test_long_passwords_allowed_up_to_128() -> None:
    long_ok = " ".join(["quiet", "harbor", "violet", "engine"] * 7)[:128]
    assert len(long_ok) == 128
    POLICY.check(long_ok, ALICE)
    assert reason(long_ok + "x") == "it is longer than 128 characters"


def test_no_composition_rules() -> None:
    for password in (
        "velvet tractor orbit lantern",  # lower case letters and spaces only
        CYRILLIC,  # "VELVET TRACTOR" in Cyrillic capitals
        "483920175530",  # digits only (random, not a run)
        "🐢🦒🐙🦔🐝🦋🐞🦂🐸🦜🐠🦩",  # emoji
    ):
        POLICY.check(password, ALICE)


@pytest.mark.parametrize(
    "password",
    ["qwertyuiop12", "QWERTYUIOP12", "1qaz2wsx3edc", "iloveyou1234", "aaaaaaaaaaaa"],
)
def test_breached_passwords_refused(password: str) -> None:
    assert reason(password) == "it appears in a list of commonly used or breached passwords"


@pytest.mark.parametrize(
    "password", ["password123!", "Password123!", "P@ssw0rd2024", "sunshine2024!!", "!!!dragon!!!!"]
)
def test_common_passwords_with_decorations_refused(password: str) -> None:
    assert reason(password) == "it is a commonly used password with digits or symbols added"


def test_context_specific_words_refused() -> None:
    assert reason("MThompson7 rocks!") == "it contains your user id"
    assert reason("margaret likes tea") == "it contains your name"
    assert reason("go THOMPSON go 2024") == "it contains your name"
    assert reason("the night shift again") == "it contains your email address"
    assert reason("my PhiGuard login") == "it contains the name of this service"
    # A short user id counts only as the whole core of the password.
    short = PasswordContext(user_id="zed")
    assert reason("2024zed!!!!!!!", short) == "it contains your user id"
    POLICY.check("zed's dead baby zed's dead", short)


def test_repetitive_and_sequential_refused() -> None:
    assert reason("zqxzqxzqxzqx") == "it repeats the same few characters"
    assert reason("ab12ab12ab12ab12") == "it repeats the same few characters"
    assert reason("abcdefghijklm") == "it is a run of consecutive characters"
    assert reason("zyxwvutsrqpo") == "it is a run of consecutive characters"
    assert reason("7890123456789") == "it is a run of consecutive characters"


def test_random_passwords_accepted() -> None:
    alphabet = string.ascii_letters + string.digits + string.punctuation
    for _ in range(20):
        POLICY.check("".join(secrets.choice(alphabet) for _ in range(20)), ALICE)
