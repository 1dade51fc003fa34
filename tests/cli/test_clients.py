"""``phiguard client add|list|revoke`` through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from phiguard.store.tables import oauth_clients, oauth_refresh_tokens
from tests.cli import assert_one_error_line, cli, clone_home, db, make_home, ok
from tests.support.oauth import BackendKey

REDIRECT = "https://app.example.org/callback"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("clients-template") / "home")


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    return clone_home(template, tmp_path / "home")


def test_add_list_revoke_round_trip(home: Path, tmp_path: Path) -> None:
    public_id = ok(
        "client", "add", "Ward app", "--kind", "public", "--redirect-uri", REDIRECT,
        "--scope", "openid fhirUser", "--scope", "user/*.rs", "--purpose", "treat",
        "--purpose", "HPAYMT", "--home", home,
    ).strip()  # fmt: skip
    jwks = tmp_path / "jwks.json"
    jwks.write_text(BackendKey.rsa().jwks())
    backend_id = ok(
        "client", "add", "Lab feed", "--kind", "backend", "--jwks", jwks,
        "--role", "him", "--home", home,
    ).strip()  # fmt: skip
    assert public_id != backend_id
    assert "\n" not in public_id and len(public_id) >= 16  # stdout is the id alone

    listed = json.loads(ok("client", "list", "--format", "json", "--home", home))
    by_id = {c["client_id"]: c for c in listed}
    assert by_id[public_id]["redirect_uris"] == [REDIRECT]
    assert by_id[public_id]["scopes"] == ["openid", "fhirUser", "user/*.rs"]
    assert by_id[backend_id]["scopes"] == ["system/*.rs"]
    assert by_id[backend_id]["roles"] == ["him"]
    assert by_id[public_id]["purposes"] == ["TREAT", "HPAYMT"]
    assert by_id[backend_id]["purposes"] == ["HOPERAT"]
    assert by_id[backend_id]["key_ids"] == ["k1"]
    assert by_id[backend_id]["created_by"].startswith("operator/")
    table = ok("client", "list", "--home", home)
    assert "Ward app" in table and "2 client(s)" in table

    # A refresh token of the public client, to see revoke end it.
    engine = db(home)
    with engine.begin() as conn:
        conn.execute(
            oauth_refresh_tokens.insert().values(
                token_hash="h" * 64,
                family_id="f1",
                client_id=public_id,
                user_id="u1",
                scope="user/*.rs",
                patient=None,
                issued_at=1,
                expires_at=2**62,
                rotated_at=None,
                revoked=False,
            )
        )
    ok("client", "revoke", public_id, "--home", home)
    with engine.connect() as conn:
        revoked_at = conn.execute(
            select(oauth_clients.c.revoked_at).where(oauth_clients.c.client_id == public_id)
        ).scalar_one()
        family_revoked = conn.execute(select(oauth_refresh_tokens.c.revoked)).scalar_one()
    engine.dispose()
    assert revoked_at is not None
    assert family_revoked is True
    listed = json.loads(ok("client", "list", "--format", "json", "--home", home))
    assert {c["client_id"]: c["revoked_at"] for c in listed}[backend_id] is None

    assert_one_error_line(
        cli("client", "revoke", public_id, "--home", home), contains="already revoked"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kind", "public"), "redirect-uri"),
        (("--kind", "public", "--redirect-uri", "http://app.example.org/cb"), "loopback"),
        (("--kind", "public", "--redirect-uri", REDIRECT + "#frag"), "fragment"),
        (("--kind", "public", "--redirect-uri", REDIRECT, "--scope", "system/*.rs"), "user"),
        (("--kind", "public", "--redirect-uri", REDIRECT, "--role", "him"), "role"),
        (("--kind", "backend", "--role", "him"), "jwks"),
        (
            (
                "--kind",
                "robot",
            ),
            "public or backend",
        ),
        (("--kind", "public", "--redirect-uri", REDIRECT, "--scope", "user/*.rs?x=1"), "scope"),
        (("--kind", "public", "--redirect-uri", REDIRECT, "--purpose", "BTG"), "emergency"),
        (("--kind", "public", "--redirect-uri", REDIRECT, "--purpose", "SPY"), "purpose of use"),
    ],
)
def test_bad_registrations_are_one_line_errors_and_store_nothing(
    home: Path, args: tuple[str, ...], message: str
) -> None:
    done = cli("client", "add", "App", *args, "--home", home)
    assert_one_error_line(done, contains=message)
    engine = db(home)
    with engine.connect() as conn:
        assert conn.execute(select(oauth_clients)).first() is None
    engine.dispose()


def test_private_keys_and_weak_keys_are_refused(home: Path, tmp_path: Path) -> None:
    key = BackendKey.rsa()
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [key.key.as_dict(private=True)]}))
    done = cli("client", "add", "X", "--kind", "backend", "--jwks", private, "--role", "him",
               "--home", home)  # fmt: skip
    assert_one_error_line(done, contains="private key material")

    from joserfc.jwk import RSAKey

    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({"keys": [RSAKey.generate_key(1024).as_dict(private=False)]}))
    done = cli("client", "add", "X", "--kind", "backend", "--jwks", weak, "--role", "him",
               "--home", home)  # fmt: skip
    assert_one_error_line(done, contains="2048")

    done = cli("client", "add", "X", "--kind", "backend", "--jwks", tmp_path / "missing.json",
               "--role", "him", "--home", home)  # fmt: skip
    assert_one_error_line(done, contains="cannot read")
