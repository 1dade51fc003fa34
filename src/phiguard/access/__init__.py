"""Access control: who may do what to which patient's data, and why.

The decision core is a set of Cedar policies (``policies/``) validated against a
schema at load and evaluated in process by ``PolicyEngine``.  ``CedarPolicy`` adapts
it to the records layer's ``AccessPolicy`` seam; an ``AttributeProvider`` supplies
care relationships, consent and patient flags.  Field masks are data next to the
policies and are applied with ``apply_masks``.  See docs/access.md.
"""

from __future__ import annotations

from .attributes import (
    NO_RELATIONSHIP,
    AttributeProvider,
    HospitalAttributes,
    Relationship,
    UserFacts,
)
from .engine import (
    DEFAULT_DENY,
    POLICY_DIR,
    POLICY_ERROR,
    UNKNOWN_ACTION,
    Evaluation,
    PolicyBundle,
    PolicyEngine,
    PolicyInfo,
)
from .explain import Explanation, RuleHit, explain
from .facts import ACTIONS, PURPOSES, SENSITIVE_LABELS, Facts, PatientFacts
from .labels import has_flag, security_labels
from .masks import MaskRule, MaskTable, apply_masks
from .policy import CedarPolicy, patient_id_of
from .scopes import scopes_allow

__all__ = [
    "ACTIONS",
    "DEFAULT_DENY",
    "NO_RELATIONSHIP",
    "POLICY_DIR",
    "POLICY_ERROR",
    "PURPOSES",
    "SENSITIVE_LABELS",
    "UNKNOWN_ACTION",
    "AttributeProvider",
    "CedarPolicy",
    "Evaluation",
    "Explanation",
    "Facts",
    "HospitalAttributes",
    "MaskRule",
    "MaskTable",
    "PatientFacts",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyInfo",
    "Relationship",
    "RuleHit",
    "UserFacts",
    "apply_masks",
    "explain",
    "has_flag",
    "patient_id_of",
    "scopes_allow",
    "security_labels",
]
