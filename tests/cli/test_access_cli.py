"""``phiguard access explain|test|validate`` through the real command."""

from __future__ import annotations

import shutil
from pathlib import Path

from phiguard.access.engine import POLICY_DIR
from tests.cli import assert_one_error_line, cli, ok

SHIPPED_TABLE = POLICY_DIR / "cases.yaml"


def test_explain_allow_names_the_permit() -> None:
    out = ok(
        "access",
        "explain",
        "--role",
        "nurse",
        "--action",
        "read",
        "--type",
        "Observation",
        "--relationship",
        "care_team",
        "--label",
        "PSY",
        "--label",
        "R",
    )
    assert "Decision: ALLOW" in out
    assert "Decided by: clinician-direct-care" in out
    assert "Masked fields: none" in out
    assert "ALLOWED: read Observation labelled PSY, R" in out
    assert "care team yes" in out


def test_explain_allow_with_masks() -> None:
    out = ok(
        "access",
        "explain",
        "--role",
        "billing",
        "--action",
        "read",
        "--type",
        "Claim",
        "--purpose",
        "HPAYMT",
    )
    assert "Decision: ALLOW" in out
    assert "Decided by: billing-payment" in out
    assert "Masked fields: note, text" in out
    assert "narrative-hidden-from-billing" in out


def test_explain_deny_names_the_guard_and_the_overridden_permit() -> None:
    out = ok(
        "access",
        "explain",
        "--role",
        "physician",
        "--action",
        "read",
        "--type",
        "Condition",
        "--relationship",
        "department",
        "--label",
        "HIV",
    )
    assert "Decision: DENY" in out
    assert "Decided by: sensitive-needs-direct-care" in out
    assert "clinician-department (overridden)" in out
    assert "Forbidden by:" in out


def test_explain_deny_by_default_and_scopes() -> None:
    out = ok(
        "access",
        "explain",
        "--role",
        "physician",
        "--action",
        "read",
        "--type",
        "Observation",
        "--relationship",
        "department",
        "--vip",
    )
    assert "Decision: DENY" in out
    assert "Decided by: default-deny" in out
    assert "deny by default" in out
    out = ok(
        "access",
        "explain",
        "--role",
        "physician",
        "--action",
        "read",
        "--type",
        "Observation",
        "--relationship",
        "care_team",
        "--scope",
        "user/Condition.read",
    )
    assert "Decided by: scopes-narrow" in out


def test_explain_type_level_break_glass_and_consent() -> None:
    out = ok(
        "access",
        "explain",
        "--role",
        "nurse",
        "--action",
        "search",
        "--type",
        "Observation",
        "--type-level",
    )
    assert "Decided by: clinician-search" in out
    out = ok(
        "access",
        "explain",
        "--role",
        "physician",
        "--action",
        "read",
        "--type",
        "Observation",
        "--consent-denied",
        "--break-glass",
        "--purpose",
        "BTG",
    )
    assert "Decided by: clinician-break-glass" in out
    out = ok(
        "access",
        "explain",
        "--role",
        "physician",
        "--action",
        "read",
        "--type",
        "Observation",
        "--relationship",
        "care_team",
        "--consent-denied",
    )
    assert "Decided by: consent-denied" in out


def test_explain_rejects_bad_input_in_one_line() -> None:
    assert_one_error_line(
        cli("access", "explain", "--role", "nurse", "--action", "frob", "--type", "Observation"),
        contains="unknown action 'frob'",
    )
    assert_one_error_line(
        cli(
            "access",
            "explain",
            "--role",
            "nurse",
            "--action",
            "read",
            "--type",
            "Observation",
            "--relationship",
            "friend",
        ),
        contains="unknown relationship 'friend'",
    )


def test_shipped_table_passes() -> None:
    out = ok("access", "test")
    assert " 0 failed" in out
    assert "FAIL" not in out
    assert int(out.split(" cases:")[0].split()[-1]) >= 40


def test_table_with_a_wrong_expectation_fails_and_names_the_case(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(
        "cases:\n"
        "  - {name: nurse reads without relationship, roles: [nurse], action: read,"
        " type: Observation, expect: allow}\n"
        "  - {name: care team reads, roles: [nurse], action: read, type: Observation,"
        " rel: care_team, expect: allow, reasons: [clinician-direct-care]}\n"
        "  - {name: wrong reason, roles: [billing], action: read, type: Claim,"
        " purpose: HPAYMT, expect: allow, reasons: [him-operations]}\n",
        encoding="utf-8",
    )
    done = cli("access", "test", table)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "FAIL nurse reads without relationship: expected ALLOW, got DENY (default-deny)"
        in done.stdout
    )
    assert (
        "FAIL wrong reason: expected ALLOW (him-operations), got ALLOW (billing-payment)"
        in done.stdout
    )
    assert "care team reads" not in done.stdout
    assert "3 cases: 1 passed, 2 failed" in done.stdout


def test_malformed_table_is_one_error_line(tmp_path: Path) -> None:
    table = tmp_path / "cases.yaml"
    table.write_text(
        "cases:\n  - {name: no role, action: read, type: Observation, expect: allow}\n"
    )
    assert_one_error_line(cli("access", "test", table), contains="role or roles is required")
    assert_one_error_line(cli("access", "test", tmp_path / "missing.yaml"), contains="missing.yaml")


def test_validate_shipped_policies() -> None:
    out = ok("access", "validate")
    assert "valid: 10 permits, 5 forbids" in out


def _policy_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, copy)
    return copy


def test_validate_broken_policy_reports_each_problem(tmp_path: Path) -> None:
    policies = _policy_copy(tmp_path)
    clinical = policies / "clinical.cedar"
    clinical.write_text(
        clinical.read_text().replace("context.on_care_team", "context.on_kare_team"),
        encoding="utf-8",
    )
    done = cli("access", "validate", policies)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) >= 2  # one per problem: the misspelt attribute, per action
    for line in lines:
        assert line.startswith(f"phiguard: error: {policies}: clinical.cedar:"), line
        assert "on_kare_team" in line
    assert done.stdout == ""

    # The engine refuses the same directory when asked to decide from it.
    assert_one_error_line(cli("access", "test", "--policies", policies), contains="do not load")


def test_validate_reports_annotation_problems_one_line_each(tmp_path: Path) -> None:
    policies = _policy_copy(tmp_path)
    (policies / "extra.cedar").write_text(
        "permit (principal, action, resource);\n", encoding="utf-8"
    )
    done = cli("access", "validate", policies)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"phiguard: error: {policies}: extra.cedar: a permit policy has no @id",
        f"phiguard: error: {policies}: extra.cedar: policy ? has no @description",
    ]


def test_validate_missing_directory(tmp_path: Path) -> None:
    assert_one_error_line(cli("access", "validate", tmp_path / "nope"), contains="nope")
