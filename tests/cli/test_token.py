"""``phiguard token issue``: only the token on stdout, a live user, audited, capped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phiguard.identity.accounts import Accounts
from phiguard.identity.tokens import TokenService
from phiguard.system import System
from tests.cli import assert_one_error_line, cli, clone_home, make_home, ok, opened
from tests.identity.conftest import CHEAP

PASSWORD = "violet-Ferry-orbit-57"


def _fill(system: System) -> None:
    from phiguard.identity.passwords import PasswordHashing

    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    accounts.add("doc01", "D. Doc", "d@example.org", ["physician"], PASSWORD, by="operator/t")
    accounts.add("gone01", "G. One", "g@example.org", ["nurse"], PASSWORD, by="operator/t")
    accounts.terminate("gone01", by="operator/t")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("token-template") / "home", _fill)


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    return clone_home(template, tmp_path / "home")


def test_issue_prints_only_a_working_token(home: Path) -> None:
    out = ok("token", "issue", "--user", "doc01", "--scope", "user/*.cruds", "--minutes", "5",
             "--home", home)  # fmt: skip
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2
    with opened(home) as system:
        service = TokenService.from_system(system)
        claims = service.verify(token)
        principal = service.live_principal(claims)
        assert claims.subject == "doc01"
        assert claims.scopes == {"user/*.crus"}  # no role may delete
        assert (claims.expires_at - claims.issued_at).total_seconds() == 300
        assert principal.roles == {"physician"}
        actions = [e for e in _events(system) if e["action"] == "oauth-token-issue"]
    assert len(actions) == 1
    assert actions[0]["principal"].startswith("operator/")
    assert token not in json.dumps(actions)


def _events(system: System) -> list[dict[str, Any]]:
    return [
        {"action": e.get("action"), "principal": e.get("who"), **e.get("detail", {})}
        for e in system.ledger.events()
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user", "gone01"), "terminated"),
        (("--user", "nobody"), "no account"),
        (("--user", "doc01", "--minutes", "16"), "between 1 and 15"),
        (("--user", "doc01", "--minutes", "0"), "between 1 and 15"),
        (("--user", "doc01", "--scope", "system/*.rs"), "system/"),
        (("--user", "doc01", "--scope", "bogus"), "scope"),
    ],
)
def test_refusals_are_one_line_and_print_no_token(
    home: Path, args: tuple[str, ...], message: str
) -> None:
    done = cli("token", "issue", *args, "--home", home)
    assert_one_error_line(done, contains=message)
    assert done.stdout == ""
