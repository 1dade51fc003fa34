"""Blind-index tokens: normalised, separated per parameter and per key, opaque."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from phiguard.crypto.blind_index import TOKEN_LEN, BlindIndexer, normalise
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault

ROOT = bytes(range(32))
OTHER_ROOT = bytes(range(1, 33))


@pytest.fixture
def indexer() -> BlindIndexer:
    return BlindIndexer(ROOT)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Müller", "MULLER"),
        ("Müller", "muller"),
        ("  Anne   Marie ", "anne marie"),
        ("anne\tmarie\n", "Anne Marie"),
        ("José", "jose"),
        ("Ångström", "angstrom"),
        ("Straße", "STRASSE"),  # case folding, not just lower()
        ("ﬁsh", "fish"),  # NFKD compatibility forms
        ("Zoë", "ZOE"),
    ],
)
def test_equivalent_spellings_meet(indexer: BlindIndexer, a: str, b: str) -> None:
    assert normalise(a) == normalise(b)
    assert indexer.token("Patient.family", a) == indexer.token("Patient.family", b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("Muller", "Mueller"), ("Anne Marie", "Annemarie"), ("Smith", "Smyth"), ("a", "b")],
)
def test_different_values_differ(indexer: BlindIndexer, a: str, b: str) -> None:
    assert indexer.token("Patient.family", a) != indexer.token("Patient.family", b)


def test_raw_tokens_keep_case(indexer: BlindIndexer) -> None:
    assert indexer.raw_token("Patient.identifier", "AbC") != indexer.raw_token(
        "Patient.identifier", "abc"
    )
    assert indexer.raw_token("Patient.identifier", "AbC") == indexer.raw_token(
        "Patient.identifier", "AbC"
    )


def test_same_value_in_different_parameters_gives_unrelated_tokens(indexer: BlindIndexer) -> None:
    params = ["Patient.family", "Patient.address-city", "Practitioner.family", "Patient.given"]
    tokens = {indexer.token(p, "Smith") for p in params}
    assert len(tokens) == len(params)


def test_same_parameter_in_different_tenants_gives_different_tokens() -> None:
    a = BlindIndexer(ROOT, tenant="a").token("Patient.family", "Smith")
    b = BlindIndexer(ROOT, tenant="b").token("Patient.family", "Smith")
    assert a != b


def test_different_root_keys_give_different_tokens() -> None:
    a, b = BlindIndexer(ROOT), BlindIndexer(OTHER_ROOT)
    assert a.token("Patient.family", "Smith") != b.token("Patient.family", "Smith")
    assert BlindIndexer(ROOT).token("Patient.family", "Smith") == a.token(
        "Patient.family", "Smith"
    ), "deterministic for one key"


def test_short_root_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        BlindIndexer(b"\0" * 16)


@hsettings(max_examples=200, deadline=None)
@given(value=st.text(min_size=1, max_size=40))
def test_tokens_are_16_bytes_and_reveal_nothing_of_the_value(value: str) -> None:
    indexer = BlindIndexer(ROOT)
    token = indexer.token("Patient.family", value)
    assert isinstance(token, bytes) and len(token) == TOKEN_LEN == 16
    for form in (value, normalise(value)):
        encoded = form.encode()
        if len(encoded) >= 4:
            assert encoded not in token
        # Not an unkeyed hash of the value either: a dictionary attack needs the key.
        assert token != hashlib.sha256(encoded).digest()[:16]
        assert token != hmac.new(b"", encoded, hashlib.sha256).digest()[:16]
        assert token != hmac.new(ROOT, encoded, hashlib.sha256).digest()[:16]


def test_repository_tokens_come_from_the_vault_key(vault: Vault, repo: Repository) -> None:
    """The stored tokens are the indexer's over the normalised value, per parameter."""
    stored = repo.create(
        {"resourceType": "Patient", "name": [{"family": "Müller"}], "gender": "female"}
    )
    assert stored.resource is not None
    tokens = repo.tokens(stored.resource)
    assert ("family", vault.indexer.token("Patient.family", "MULLER")) in tokens
    assert all(len(t) == TOKEN_LEN for _p, t in tokens)
    assert repo.search("Patient", [("family", "muller")]).total == 1
    assert repo.search("Patient", [("family", "Mueller")]).total == 0
