"""Loading is all-or-nothing: a set that fails validation is refused, the old one stays."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phiguard.access.engine import PolicyBundle, PolicyEngine
from phiguard.access.facts import Facts, PatientFacts
from phiguard.errors import AccessError, PolicyLoadError

# A billing clerk reading a clinical note: denied by default under the packaged set.
REQUEST = Facts(
    "read", "Observation", frozenset({"billing"}), patient=PatientFacts(), purpose="HPAYMT"
)

OPEN_DOOR = """
@id("open-door")
@description("A careless permit with a typo in it.")
permit (principal, action, resource) when { context.purpos == "HPAYMT" };
"""


@pytest.fixture
def fresh() -> PolicyEngine:
    return PolicyEngine()


@pytest.fixture
def bundle() -> PolicyBundle:
    return PolicyBundle.from_directory()


def refused(engine: PolicyEngine, bundle: PolicyBundle) -> PolicyLoadError:
    before = (engine.generation, engine.decide(REQUEST), dict(engine.policies))
    with pytest.raises(PolicyLoadError) as info:
        engine.load(bundle)
    assert isinstance(info.value, AccessError)
    assert (engine.generation, engine.decide(REQUEST), dict(engine.policies)) == before
    assert engine.decide_uncached(REQUEST) == before[1]
    return info.value


def test_policy_failing_schema_validation_is_refused(
    fresh: PolicyEngine, bundle: PolicyBundle
) -> None:
    error = refused(fresh, bundle.with_policy("zz-open.cedar", OPEN_DOOR))
    assert "zz-open.cedar: open-door" in str(error)
    assert "purpos" in str(error)
    assert not fresh.decide(REQUEST).allowed


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("permit (principal, action, resource) when {", "broken.cedar"),
        ('@description("x")\npermit (principal, action, resource);', "has no @id"),
        ('@id("y")\npermit (principal, action, resource);', "has no @description"),
        (
            '@id("billing-payment")\n@description("dup")\npermit (principal, action, resource);',
            "already used",
        ),
        (
            '@id("t")\n@description("template")\n'
            "permit (principal == ?principal, action, resource);",
            "templates",
        ),
        (
            '@id("n")\n@description("unknown action")\n'
            'permit (principal, action == Action::"destroy", resource);',
            "destroy",
        ),
    ],
)
def test_malformed_policies_are_refused(
    fresh: PolicyEngine, bundle: PolicyBundle, text: str, needle: str
) -> None:
    assert needle in str(refused(fresh, bundle.with_policy("broken.cedar", text)))


def test_broken_schema_types_or_masks_are_refused(
    fresh: PolicyEngine, bundle: PolicyBundle
) -> None:
    refused(fresh, replace(bundle, schema="entity User = {"))
    # Removing a context attribute the policies use fails validation.
    refused(fresh, replace(bundle, schema=bundle.schema.replace("scopes_allow: Bool,", "")))
    error = refused(fresh, replace(bundle, resource_types="classes: {a: x}\ntypes: {Patient: [b]}"))
    assert "unknown classes" in str(error)
    error = refused(
        fresh, replace(bundle, masks="masks:\n  - {id: m, policies: [nope], fields: [text]}")
    )
    assert "'nope' is not a permit policy id" in str(error)
    error = refused(
        fresh,
        replace(bundle, masks="masks:\n  - {id: m, policies: [billing-payment], fields: ['a..b']}"),
    )
    assert "mask path" in str(error)
    refused(fresh, replace(bundle, masks=": : :"))
    refused(fresh, replace(bundle, policies={}))


def test_missing_directory_is_a_load_error(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(PolicyLoadError):
        PolicyBundle.from_directory(Path(str(tmp_path)) / "nowhere")


def test_valid_set_replaces_the_old_and_its_cache(
    fresh: PolicyEngine, bundle: PolicyBundle
) -> None:
    assert not fresh.decide(REQUEST).allowed  # now cached under generation 1
    notes = """
@id("billing-reads-observations")
@description("Test only: billing may read observations for payment.")
permit (principal in Role::"billing", action == Action::"read", resource is Resource)
when { context.purpose == "HPAYMT" && resource.type == "Observation" };
"""
    fresh.load(bundle.with_policy("zz-extra.cedar", notes))
    assert fresh.generation == 2
    decision = fresh.decide(REQUEST)
    assert decision.allowed and decision.reasons == ("billing-reads-observations",)
    assert fresh.policies["billing-reads-observations"].source == "zz-extra.cedar"
    fresh.load()  # back to the packaged set
    assert fresh.generation == 3 and not fresh.decide(REQUEST).allowed
