"""``phiguard access policy|btg|explain --user`` through the real command, on a real home.

Policy administration: only an active security administrator who re-authenticates
(password, then a current TOTP code, one per line with ``--password-stdin``) lists,
shows, reviews the history of, or changes the running set; a set that does not
validate is refused and the running one stays.  Break-the-glass reviews: listed
without reasons, reviewed and closed by a privacy officer who re-authenticates and
is not the user who declared the emergency.  Live explanations: the real account and
the real patient's relationships, labels and consent, from the home's store.

A TOTP code works once and a later code must be newer, so each re-authentication of
one account uses the next code in a fresh copy of the template home.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import pyotp
import pytest

from phiguard.access.engine import POLICY_DIR
from phiguard.access.labels import ACT_CODE
from phiguard.identity.accounts import Accounts
from phiguard.records.context import system_context
from phiguard.system import System
from tests.cli import assert_one_error_line, cli, clone_home, make_home, opened

Done = subprocess.CompletedProcess[str]
PASSWORD = "violet-Ferry-orbit-57"
REASON = "unconscious on arrival, no history available"
USERS = {
    # user id: (roles, practitioner, department)
    "sec1": (["security_admin"], None, None),
    "sec2": (["security_admin"], None, None),
    "nurse1": (["nurse"], None, None),
    "po1": (["privacy_officer"], None, None),
    "po2": (["privacy_officer"], None, None),
    "drpo": (["physician", "privacy_officer"], "pr-9", "dept-b"),
    "u00042": (["nurse"], "pr-1", "dept-b"),
    "u00043": (["nurse"], "pr-2", "dept-a"),
}


def _fill(system: System) -> None:
    repo = system.vault.repository(system_context())
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    for body in (
        {"resourceType": "Organization", "id": "dept-a", "name": "Ward A"},
        {"resourceType": "Organization", "id": "dept-b", "name": "Ward B"},
        *(
            {"resourceType": "Practitioner", "id": pr, "name": [{"family": pr}]}
            for pr in ("pr-1", "pr-2", "pr-9")
        ),
        {"resourceType": "Patient", "id": "abc", "name": [{"family": "Abbot"}]},
        {"resourceType": "Patient", "id": "xyz", "name": [{"family": "Xavier"}]},
        {
            "resourceType": "Encounter",
            "id": "enc-1",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "Patient/abc"},
            "participant": [{"individual": {"reference": "Practitioner/pr-1"}}],
            "period": {"start": started},
            "serviceProvider": {"reference": "Organization/dept-a"},
        },
        {
            "resourceType": "Condition",
            "id": "psy-1",
            "meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]},
            "code": {"text": "a mental health condition"},
            "subject": {"reference": "Patient/abc"},
        },
    ):
        repo.update(str(body["resourceType"]), str(body["id"]), body)
    accounts = Accounts.from_system(system)
    for user_id, (roles, practitioner, department) in USERS.items():
        accounts.add(
            user_id,
            user_id,
            f"{user_id}@hospital.example",
            roles,
            PASSWORD,
            by="test",
            practitioner_id=practitioner,
            department=department,
        )
        secret = accounts.totp.enrol(user_id).secret
        assert accounts.totp.confirm(user_id, pyotp.TOTP(secret).now()).accepted
        (system.settings.home / f"{user_id}.totp").write_text(secret)
    assert system.access is not None
    system.access.break_glass.declare("drpo", "xyz", REASON, reauthenticated=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("access-admin") / "home", _fill)


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    return clone_home(template, tmp_path / "home")


def _credentials(home: Path, user_id: str, *, code: str | None = None) -> str:
    """Password and the next TOTP code (newer than any used in the template)."""
    secret = (home / f"{user_id}.totp").read_text()
    return f"{PASSWORD}\n{code or pyotp.TOTP(secret).at(time.time() + 30)}\n"


def _as(home: Path, user_id: str, *args: str | Path, flag: str = "--admin") -> list[str | Path]:
    return ["access", *args, flag, user_id, "--home", home, "--password-stdin"]


def _run(
    home: Path, user_id: str, *args: str | Path, flag: str = "--admin", code: str | None = None
) -> Done:
    return cli(*_as(home, user_id, *args, flag=flag), stdin=_credentials(home, user_id, code=code))


def _succeeds(done: Done) -> str:
    assert done.returncode == 0, done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    return done.stdout


# -- policy administration -------------------------------------------------------------


def test_policy_list_and_show_for_a_security_admin(home: Path) -> None:
    out = _succeeds(_run(home, "sec1", "policy", "list"))
    assert "Running: the shipped set (never replaced)" in out
    assert "file guards.cedar" in out
    assert "forbid sensitive-needs-direct-care (guards.cedar)" in out
    assert "permit clinician-direct-care" in out
    shown = _succeeds(_run(home, "sec2", "policy", "show", "guards.cedar"))
    assert shown == (POLICY_DIR / "guards.cedar").read_text()


def test_policy_commands_are_refused_to_other_roles(home: Path) -> None:
    for user_id, command in (("nurse1", "list"), ("po1", "history")):
        done = _run(home, user_id, "policy", command)
        assert_one_error_line(done, contains="limited to security administrators")
        assert "guards.cedar" not in done.stdout
    # Wrong second factor: refused before anything is shown.
    done = _run(home, "sec1", "policy", "show", "guards.cedar", code="000000")
    assert_one_error_line(done, contains="re-authentication failed")
    assert "forbid" not in done.stdout


def test_policy_set_installs_a_generation_and_history_shows_it(home: Path, tmp_path: Path) -> None:
    changed = tmp_path / "research.cedar"
    text = (POLICY_DIR / "research.cedar").read_text()
    changed.write_text(text.replace('@description("', '@description("Reviewed 2025: ', 1))
    out = _succeeds(_run(home, "sec1", "policy", "set", changed, "--comment", "annual review"))
    assert "Installed generation 1 (research.cedar)" in out
    history = _succeeds(_run(home, "sec2", "policy", "history"))
    assert "annual review" in history and "sec1" in history
    assert history.splitlines()[0].startswith("1  ")
    with opened(home) as system:
        assert system.access is not None
        running = system.access.policies.running_bundle()
        assert "Reviewed 2025: " in running.policies["research.cedar"]


def test_a_policy_that_fails_validation_is_refused_and_the_set_stays(
    home: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "guards.cedar"
    broken.write_text(
        '@id("typo")\n@description("misspelt attribute")\n'
        'forbid (principal, action, resource) when { context.purpos == "TREAT" };\n'
    )
    done = _run(home, "sec1", "policy", "set", broken, "--comment", "oops")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("phiguard: error: ") for line in lines)
    assert "refused" in lines[-1] and "the running set is unchanged" in lines[-1]
    assert "Traceback" not in done.stderr
    with opened(home) as system:
        assert system.access is not None
        store = system.access.policies
        assert store.generation() == 0
        assert (
            store.running_bundle().policies["guards.cedar"]
            == (POLICY_DIR / "guards.cedar").read_text()
        )


# -- break-the-glass reviews -----------------------------------------------------------


def _grant(home: Path) -> str:
    done = cli("access", "btg", "list", "--home", home)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "user drpo" in line]
    assert len(rows) == 1 and "open" in rows[0] and "patient xyz" in rows[0]
    assert REASON not in done.stdout  # the list never shows reasons
    return rows[0].split()[0]


def test_btg_review_shows_the_reason_to_a_privacy_officer_only(home: Path) -> None:
    grant = _grant(home)
    out = _succeeds(_run(home, "po1", "btg", "review", grant, flag="--reviewer"))
    assert f"Grant {grant} (open)" in out
    assert f"Reason: {REASON}" in out
    assert "User: drpo  Patient: xyz  Purpose: BTG" in out
    refused = _run(home, "nurse1", "btg", "review", grant, flag="--reviewer")
    assert_one_error_line(refused, contains="only a privacy officer")
    assert REASON not in refused.stdout + refused.stderr


def _close(home: Path, user_id: str, grant: str, note: str) -> Done:
    """``btg close`` with the password, the TOTP code and then the note on stdin."""
    return cli(
        *_as(home, user_id, "btg", "close", grant, flag="--reviewer"),
        stdin=_credentials(home, user_id) + note + "\n",
    )


def test_btg_close_only_by_someone_other_than_the_declaring_user(home: Path) -> None:
    grant = _grant(home)
    own = _close(home, "drpo", grant, "fine")
    assert_one_error_line(own, contains="closed by someone else")
    assert "open" in cli("access", "btg", "list", "--home", home).stdout
    out = _succeeds(_close(home, "po1", grant, "confirmed by the ED log"))
    assert f"Closed the review of {grant} (user drpo)" in out
    listing = cli("access", "btg", "list", "--status", "closed", "--home", home).stdout
    assert grant in listing and "closed by po1" in listing
    assert "No open break-the-glass reviews." in cli("access", "btg", "list", "--home", home).stdout
    shown = _succeeds(_run(home, "po2", "btg", "review", grant, flag="--reviewer"))
    assert "Review note (po1): confirmed by the ED log" in shown


def test_btg_close_takes_the_note_from_stdin_only(home: Path) -> None:
    grant = _grant(home)
    empty = _close(home, "po1", grant, "   ")
    assert_one_error_line(empty, contains="on standard input")
    argv = cli(
        *_as(home, "po1", "btg", "close", grant, "--note", "x", flag="--reviewer"),
        stdin=_credentials(home, "po1") + "fine\n",
    )
    assert argv.returncode != 0 and "--note" in argv.stderr
    assert "open" in cli("access", "btg", "list", "--home", home).stdout  # nothing changed


# -- live explanations -----------------------------------------------------------------


def _explain(home: Path, user_id: str, resource: str, *extra: str) -> Done:
    return cli(
        "access",
        "explain",
        "--user",
        user_id,
        "--action",
        "read",
        "--resource",
        resource,
        "--home",
        home,
        *extra,
    )


def test_explain_asks_the_store_about_a_real_user_and_patient(template: Path) -> None:
    out = _succeeds(_explain(template, "u00042", "Patient/abc"))
    assert "User: u00042 (nurse; active; department dept-b)" in out
    assert "Patient: abc (indexed:" in out and '"Encounter": 1' in out
    assert "Decision: ALLOW" in out
    assert "Decided by: clinician-direct-care" in out
    assert "recent encounter yes" in out

    # No relationship with another patient: nothing permits it.
    other = _succeeds(_explain(template, "u00042", "Patient/xyz"))
    assert "Decision: DENY" in other and "Decided by: default-deny" in other

    # The ward's other nurse: the department reaches the patient, not a PSY record.
    ward = _succeeds(_explain(template, "u00043", "Patient/abc"))
    assert "Decided by: clinician-department" in ward
    psy = _succeeds(_explain(template, "u00043", "Condition/psy-1"))
    assert "Decision: DENY" in psy
    assert "Decided by: sensitive-needs-direct-care" in psy
    assert "clinician-department (overridden)" in psy
    assert "labelled PSY" in psy
    direct = _succeeds(_explain(template, "u00042", "Condition/psy-1", "--purpose", "HPAYMT"))
    assert "Decision: DENY" in direct and "purpose HPAYMT" in direct


def test_explain_live_refuses_bad_input_in_one_line(template: Path) -> None:
    assert_one_error_line(_explain(template, "nobody", "Patient/abc"), contains="no account")
    assert_one_error_line(
        _explain(template, "u00042", "Condition/missing"), contains="is not stored"
    )
    assert_one_error_line(_explain(template, "u00042", "abc"), contains="Type/id")
    assert_one_error_line(
        _explain(template, "u00042", "Patient/abc", "--role", "physician"),
        contains="come from the store",
    )
    assert_one_error_line(
        cli("access", "explain", "--action", "read", "--user", "u00042", "--home", template),
        contains="both --user and --resource",
    )
