"""Why a request was allowed or denied, in words a clinician or privacy officer can act on.

A bare "denied: sensitive-needs-direct-care" tells an auditor which rule fired but
not what the user had going for them; a refused physician needs to see that their
department would have sufficed but the record is labelled PSY.  So the explanation
lists every permit that matched (marking those a forbid overrode), every forbid that
matched, the masks that apply, and the facts the decision was made on.  It carries
no identities: the facts are attributes only.
"""

from __future__ import annotations

from dataclasses import dataclass

from phiguard.records.hooks import Decision

from .engine import DEFAULT_DENY, PolicyEngine, PolicyInfo
from .facts import Facts


@dataclass(frozen=True)
class RuleHit:
    """One policy that matched the request."""

    id: str
    effect: str
    description: str
    determining: bool
    """True if it decided the outcome (a forbid on a deny, a permit on an allow)."""


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    facts: Facts
    permits: tuple[RuleHit, ...]
    forbids: tuple[RuleHit, ...]
    masks: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(mask id, why, fields) of each mask attached to a determining permit."""

    @property
    def default_deny(self) -> bool:
        return not self.decision.allowed and self.decision.reasons == (DEFAULT_DENY,)

    def lines(self) -> list[str]:
        f, d = self.facts, self.decision
        verdict = "ALLOWED" if d.allowed else "DENIED"
        labels = f" labelled {', '.join(sorted(f.labels))}" if f.labels else ""
        about = "a patient's" if f.patient is not None else "no patient's (type level)"
        roles = ", ".join(sorted(f.roles)) or "no role"
        out = [
            f"{verdict}: {f.action} {f.resource_type}{labels}, {about} data,"
            f" for {roles} with purpose {f.purpose}",
            "Facts: " + "; ".join(_facts(f)),
        ]
        if self.permits:
            out.append("Permitted by:")
            for h in self.permits:
                overridden = "" if h.determining or d.allowed else " (overridden)"
                out.append(f"  + {h.id}{overridden}: {h.description}")
        if self.forbids:
            out.append("Forbidden by:")
            out += [f"  - {h.id}: {h.description}" for h in self.forbids]
        if self.default_deny:
            out.append("No policy permits this request, so it is denied (deny by default).")
        elif not d.allowed and not self.forbids:
            out.append(f"Denied: {', '.join(d.reasons)}.")
        if d.allowed and d.masked_fields:
            out.append("Masked fields: " + ", ".join(d.masked_fields))
            out += [f"  {mid}: {why}" for mid, why, _ in self.masks]
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _facts(f: Facts) -> list[str]:
    out = []
    if f.patient is not None:
        flags = [n for n, v in (("VIP", f.patient.vip), ("employee", f.patient.employee)) if v]
        out += [
            f"care team {_yes(f.on_care_team)}",
            f"recent encounter {_yes(f.recent_encounter)}",
            f"department {_yes(f.department_match)}",
            f"patient {', '.join(flags) if flags else 'not VIP, not staff'}",
            f"consent denied {_yes(f.consent_denied)}",
        ]
    out.append(f"break-the-glass {'active' if f.break_glass_active else _yes(f.break_glass)}")
    out.append(f"scopes allow {_yes(f.scopes_allow)}")
    return out


def _hit(info: PolicyInfo | None, pid: str, determining: bool) -> RuleHit:
    if info is None:
        return RuleHit(pid, "?", "(not in the loaded policy set)", determining)
    return RuleHit(info.id, info.effect, info.description, determining)


def explain(engine: PolicyEngine, facts: Facts) -> Explanation:
    """Evaluate ``facts`` and say which rules permitted or forbade, and what is masked."""
    evaluation = engine.evaluate(facts)
    decision = evaluation.decision
    determining = set(decision.reasons)
    policies = engine.policies
    masks = tuple(
        (rule.id, rule.why, rule.fields)
        for pid in (decision.reasons if decision.allowed else ())
        for rule in engine.masks.rules_for(pid, facts.resource_type)
    )
    return Explanation(
        decision=decision,
        facts=facts,
        permits=tuple(_hit(policies.get(p), p, p in determining) for p in evaluation.permits),
        forbids=tuple(_hit(policies.get(p), p, p in determining) for p in evaluation.forbids),
        masks=tuple(dict.fromkeys(masks)),
    )
