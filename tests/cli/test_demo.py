"""``phiguard demo``: seeds, and prints working sign-ins (fresh on every run) and an app token."""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from phiguard.errors import AuthenticationError
from phiguard.identity.accounts import Accounts
from phiguard.identity.tokens import TokenService
from phiguard.system import open_system
from tests.cli import cli, cli_env

LOGIN = re.compile(r"^\s+(\S+)\s+(\S+)\s+password (\S+)\s+TOTP secret ([A-Z2-7]+)$", re.M)
TOKEN = re.compile(r"^\s+(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", re.M)


def _logins(out: str) -> dict[str, tuple[str, str, str]]:
    return {m[0]: (m[1], m[2], m[3]) for m in LOGIN.findall(out)}


def test_demo_prints_working_sign_ins_and_rotates_them(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    env = cli_env()
    env.pop("PHIGUARD_PASSPHRASE")  # a demo home uses the published demo passphrase
    first = cli("demo", "--home", home, "--patients", "30", "--no-serve", env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    logins = _logins(first.stdout)
    assert "admin" in logins and logins["admin"][0] == "security_admin,privacy_officer"
    assert {"physician", "nurse"} <= {roles for roles, _, _ in logins.values()}
    token = TOKEN.search(first.stdout)
    assert token, first.stdout

    system = open_system(home)
    try:
        accounts = Accounts.from_system(system)
        _, password, secret = logins["admin"]
        result = accounts.authenticate("admin", password, "127.0.0.1")
        assert result.mfa == "verify"
        assert accounts.totp.verify("admin", pyotp.TOTP(secret).now()).accepted
        claims = TokenService.from_system(system).verify(token.group(1))
        assert claims.scopes >= {"user/*.rs"}
    finally:
        system.close()

    again = cli("demo", "--home", home, "--patients", "30", "--no-serve", env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    renewed = _logins(again.stdout)
    assert renewed["admin"][1] != password
    system = open_system(home)
    try:
        with pytest.raises(AuthenticationError):  # the old password no longer works
            Accounts.from_system(system).authenticate("admin", password, "127.0.0.2")
    finally:
        system.close()
