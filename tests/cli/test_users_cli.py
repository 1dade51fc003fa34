"""``phiguard user ...`` through the real command: a full round trip, the one-line error
contract, and that no password reaches the ledger, the database or the logs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select

from phiguard.errors import AuthenticationError
from phiguard.identity.accounts import Accounts
from phiguard.records.context import system_context
from phiguard.store.tables import users
from phiguard.system import System
from tests.cli import assert_one_error_line, cli, clone_home, db, make_home, opened

INITIAL = "violet-Ferry-orbit-57"
CHANGED = "another-Good-phrase-93"
WRONG = "not-the-Password-at-all-4"
ADD = (
    "user",
    "add",
    "u00042",
    "--name",
    "Jane Doe",
    "--email",
    "jane.doe@hospital.example",
    "--role",
    "nurse",
    "--role",
    "physician",
    "--department",
    "ICU",
    "--practitioner",
    "dr",
)


def _fill(system: System) -> None:
    repo = system.vault.repository(system_context())
    repo.create({"resourceType": "Practitioner", "name": [{"family": "Doe"}]}, rid="dr")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("users-template") / "home", _fill)


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    return clone_home(template, tmp_path / "home")


def run_ok(*args: str | Path, stdin: str | None = None) -> str:
    done = cli(*args, stdin=stdin)
    assert done.returncode == 0, (args[:2], done.stderr[-2000:])
    for secret in (INITIAL, CHANGED, WRONG):
        assert secret not in done.stdout and secret not in done.stderr
    return done.stdout


def every_byte(home: Path) -> bytes:
    """The home's files: databases with their WAL files, the logs, the settings."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_round_trip(home: Path) -> None:
    h = ("--home", home)
    out = run_ok(*ADD, *h, "--password-stdin", stdin=f"{INITIAL}\n")
    assert "Added: u00042 (Jane Doe)" in out

    listing = run_ok("user", "list", *h)
    row = next(line for line in listing.splitlines() if "u00042" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["u00042", "Jane Doe", "nurse, physician", "ICU", "active", "no"], row
    shown = run_ok("user", "show", "u00042", *h)
    for text in ("jane.doe@hospital.example", "Practitioner/dr", "MFA required", "yes"):
        assert text in shown
    assert "argon2" not in shown

    run_ok("user", "passwd", "u00042", *h, "--password-stdin", stdin=f"{INITIAL}\n{CHANGED}\n")
    wrong = cli("user", "passwd", "u00042", *h, "--password-stdin", stdin=f"{WRONG}\n{INITIAL}\n")
    assert_one_error_line(wrong, contains="authentication failed")

    run_ok("user", "suspend", "u00042", *h)
    assert "TOTP enrolment was not present" in run_ok("user", "reset-mfa", "u00042", *h)
    # Confirmation by typing the user id (no --yes).
    out = run_ok("user", "terminate", "u00042", "--effective", "2026-01-01", *h, stdin="u00042\n")
    assert "Terminated: u00042" in out and "2026-01-01T00:00:00.000Z" in out

    with opened(home) as system:
        accounts = Accounts.from_system(system)
        account = accounts.get("u00042")
        assert account.status == "terminated" and account.practitioner_id == "dr"
        assert account.terminated_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        assert account.roles == ("nurse", "physician")
        assert accounts.revoked_before("u00042") is not None
        with pytest.raises(AuthenticationError):
            accounts.authenticate("u00042", CHANGED, "127.0.0.1")
        entries = list(system.ledger.events())
    actions = [(e["action"], e["outcome"]) for e in entries]
    for expected in [
        ("user-add", "success"),
        ("password-change", "success"),
        ("password-change", "denied"),
        ("user-suspend", "success"),
        ("user-reset-mfa", "success"),
        ("user-terminate", "success"),
        ("login-failure", "denied"),
    ]:
        assert expected in actions, expected
    admin = {e["who"] for e in entries if str(e["action"]).startswith("user-")}
    assert len(admin) == 1 and admin.pop().startswith("operator/")
    assert {e["who"] for e in entries if e["action"] == "password-change"} == {"user/u00042"}
    denied = next(
        e for e in entries if e["action"] == "password-change" and e["outcome"] == "denied"
    )
    assert denied["detail"] == {"reason": "wrong-password"}
    # No password anywhere: not in the decoded events (details opened), not in any
    # byte of the ledger, the main database, their WAL files or the logs.
    decoded = repr(entries)
    raw = every_byte(home)
    assert (home / "audit.db").exists() and (home / "logs").is_dir()
    for secret in (INITIAL, CHANGED, WRONG):
        assert secret not in decoded
        assert secret.encode() not in raw


def test_errors_are_one_plain_line(home: Path) -> None:
    h = ("--home", home)
    refused = cli(*ADD, *h, "--password-stdin", stdin="short-1\n")
    assert_one_error_line(refused, contains="password refused: it is shorter than 12 characters")
    assert "short-1" not in refused.stderr
    assert_one_error_line(
        cli(*ADD[:-2], "--role", "surgeon", *h, "--password-stdin", stdin=f"{INITIAL}\n"),
        contains="unknown role 'surgeon'",
    )
    assert_one_error_line(
        cli(*ADD[:-1], "nobody", *h, "--password-stdin", stdin=f"{INITIAL}\n"),
        contains="there is no Practitioner/nobody",
    )
    # No terminal and no --password-stdin: refused, never read from a pipe silently.
    assert_one_error_line(cli(*ADD, *h), contains="use --password-stdin")
    assert_one_error_line(
        cli(*ADD, *h, "--password-stdin", stdin=""), contains="no initial password"
    )
    assert_one_error_line(cli("user", "show", "nobody99", *h), contains="no account nobody99")
    # A mismatched confirmation is refused before the home is even opened.
    assert_one_error_line(
        cli("user", "terminate", "nobody99", *h, stdin="nobody98\n"), contains="did not match"
    )
    # Nothing above created an account.
    engine = db(home)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_password_is_never_an_argument(home: Path) -> None:
    done = cli(*ADD, "--home", home, "--password", INITIAL)
    assert done.returncode == 2 and "No such option" in done.stderr
