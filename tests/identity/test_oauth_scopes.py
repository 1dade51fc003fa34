"""Scope narrowing: the intersection never covers anything either side does not."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phiguard.access.scopes import ACTION_LETTER, scopes_allow
from phiguard.identity import oauth_scopes as sc

CONTEXTS = ("patient", "user", "system")
TYPES = ("*", "Patient", "Observation")
LETTER_SETS = ["".join(c) for n in range(1, 6) for c in itertools.combinations("cruds", n)]
V1 = ("read", "write", "*")

scope = st.builds(
    lambda ctx, rtype, perm: f"{ctx}/{rtype}.{perm}",
    st.sampled_from(CONTEXTS),
    st.sampled_from(TYPES),
    st.sampled_from(LETTER_SETS + list(V1)),
)
scopes = st.lists(scope, max_size=5)


@given(scopes, scopes)
def test_narrowing_covers_only_what_both_sides_cover(asked: list[str], ceiling: list[str]) -> None:
    granted = sc.narrow(asked, ceiling)
    for context, rtype, action in itertools.product(CONTEXTS, TYPES[1:], ACTION_LETTER):
        in_context = [s for s in granted if s.startswith(context + "/")]
        if scopes_allow(in_context, action, rtype):
            assert scopes_allow([s for s in asked if s.startswith(context + "/")], action, rtype)
            assert scopes_allow([s for s in ceiling if s.startswith(context + "/")], action, rtype)


@given(scopes)
def test_narrowing_by_itself_keeps_everything(asked: list[str]) -> None:
    granted = sc.narrow(asked, asked)
    for action, rtype in itertools.product(ACTION_LETTER, TYPES[1:]):
        assert scopes_allow(granted, action, rtype) == scopes_allow(asked, action, rtype)


def test_examples() -> None:
    assert sc.narrow(["user/*.cruds"], ["user/*.rs"]) == ["user/*.rs"]
    assert sc.narrow(["user/*.cruds"], ["user/Observation.rs"]) == ["user/Observation.rs"]
    assert sc.narrow(["user/Patient.read"], ["user/*.cruds"]) == ["user/Patient.read"]
    assert sc.narrow(["user/Patient.write"], ["user/*.rs"]) == []
    assert sc.narrow(["patient/*.rs"], ["user/*.rs"]) == []  # contexts never mix
    assert sc.narrow(["openid", "launch/patient"], ["openid"]) == ["openid"]
    assert sc.role_ceiling(["security_admin"])[-1] == "user/*.rs"
    assert sc.role_ceiling(["physician", "registration"])[-1] == "user/*.crus"  # no delete


@pytest.mark.parametrize(
    "bad",
    [
        "user/Observation.rs?category=laboratory",
        "user/observation.rs",
        "user/*.x",
        "launch",
        "profile",
        "a" * 200,
        " ".join(f"user/T{i}x.rs" for i in range(70)),
        "user/*.rs " * 300,
    ],
)
def test_malformed_or_unsupported_scopes_are_refused(bad: str) -> None:
    with pytest.raises(sc.ScopeError):
        sc.split(bad)
