"""A phiguard home whose KEKs live on a PKCS#11 token (SoftHSM2), used by the CLI.

SoftHSM2 and python-pkcs11 quirks (see tests/support/softhsm.py): tokens must exist
before the library is first loaded in a process, so this module asks for the same
labels, in the same single call, as tests/crypto/test_hsm.py (whichever runs first in
a worker makes both; homes isolate by key label prefix); and every subprocess gets
``SOFTHSM2_CONF`` so it sees the same token directory.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from phiguard import config
from phiguard.store.tables import data_keys
from tests.cli import assert_one_error_line, cli, cli_env, db, make_home, ok
from tests.support.components import synthea_dir
from tests.support.softhsm import SoftHsmToken, softhsm_tokens

pytestmark = pytest.mark.softhsm

MAIN, SPARE = "phiguard-test", "phiguard-test-spare"  # the labels test_hsm.py uses


@pytest.fixture(scope="session")
def hsm_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    main, _spare = softhsm_tokens(tmp_path_factory.mktemp("softhsm"), (MAIN, SPARE))
    return main


def _env(token: SoftHsmToken, pin: str | None = None) -> dict[str, str]:
    return cli_env(PHIGUARD_PKCS11_PIN=pin or token.pin, SOFTHSM2_CONF=str(token.conf))


# A separate process that opens the home and opens every stored version.
READER = """
import json, sys
from sqlalchemy import select
from phiguard.records.context import system_context
from phiguard.store.tables import resources
from phiguard.system import open_system

system = open_system(sys.argv[1])
repo = system.vault.repository(system_context())
with system.engine.connect() as conn:
    rows = conn.execute(select(resources.c.rtype, resources.c.rid, resources.c.version)
                        .where(resources.c.body.is_not(None))).all()
by_type = {}
for r in rows:
    stored = repo.vread(r.rtype, r.rid, r.version)
    assert stored.resource is not None and stored.resource["id"] == r.rid
    by_type[r.rtype] = by_type.get(r.rtype, 0) + 1
print(json.dumps({"by_type": by_type, "keys": system.keyring.status().by_kek_version,
                  "provider": system.provider.describe()}))
system.close()
system.provider.close()
"""


def _read_in_new_process(home: Path, token: SoftHsmToken) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", READER, str(home)],
        env=_env(token),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.fixture
def hsm_home(hsm_token: SoftHsmToken, tmp_path: Path) -> Path:
    """``init_home(key_provider="pkcs11")`` on the test token, with a KEK prefix of its own;
    the settings are written to phiguard.toml and every later command reads them there."""
    pkcs11 = config.Pkcs11Settings(
        library=hsm_token.library,
        token_label=hsm_token.label,
        key_label_prefix=f"home-kek-{secrets.token_hex(4)}",
    )
    home = make_home(
        tmp_path / "home",
        key_provider="pkcs11",
        pkcs11=pkcs11,
        env={"PHIGUARD_PKCS11_PIN": hsm_token.pin},
    )
    saved = config.load(home)
    assert saved.key_provider == "pkcs11"
    assert (saved.pkcs11.token_label, saved.pkcs11.library) == (MAIN, hsm_token.library)
    assert not (home / "keys").exists(), "no key file: the KEK is on the token"
    return home


def test_hsm_home_import_read_rotate_rewrap(hsm_home: Path, hsm_token: SoftHsmToken) -> None:
    synthea = synthea_dir()
    patient = sorted(synthea.glob("Cris921_*.json")) or sorted(
        p for p in synthea.glob("*.json") if "Information" not in p.name
    )
    files = [*sorted(synthea.glob("*Information*.json")), patient[0]]
    env = _env(hsm_token)
    out = ok("import", *files, "--home", hsm_home, env=env)
    imported = int(out.split("Imported ", 1)[1].split(" ", 1)[0])
    assert imported > 50

    first = _read_in_new_process(hsm_home, hsm_token)
    assert first["provider"]["provider"] == "pkcs11"  # type: ignore[index]
    assert sum(first["by_type"].values()) == imported  # type: ignore[attr-defined]
    n_keys = sum(first["keys"].values())  # type: ignore[attr-defined]
    assert first["keys"] == {"1": n_keys}

    status = ok("keys", "status", "--home", hsm_home, env=env)
    assert "pkcs11" in status and "CKM_AES_GCM" in status
    assert "KEK version 2 created" in ok("keys", "rotate", "--home", hsm_home, env=env)
    out = ok("keys", "rewrap", "--home", hsm_home, env=env)
    assert f"Rewrapped {n_keys} data keys under KEK v2" in out

    second = _read_in_new_process(hsm_home, hsm_token)
    assert second["by_type"] == first["by_type"]
    assert second["keys"] == {"2": n_keys}
    engine = db(hsm_home)
    try:
        with engine.connect() as conn:
            rows = conn.execute(data_keys.select()).all()
        assert {r.provider for r in rows} == {"pkcs11"}
        assert {r.kek_version for r in rows} == {2}
    finally:
        engine.dispose()

    # The patient's name is nowhere on disk in the clear.
    name = json.loads(patient[0].read_text())["entry"][0]["resource"]["name"][0]["family"]
    for path in hsm_home.rglob("*"):
        if path.is_file():
            assert name.encode() not in path.read_bytes(), f"plaintext PHI in {path.name}"


def test_hsm_home_wrong_pin_is_one_line(hsm_home: Path, hsm_token: SoftHsmToken) -> None:
    wrong = "0" + hsm_token.pin[1:] if hsm_token.pin[0] != "0" else "1" + hsm_token.pin[1:]
    done = cli("keys", "status", "--home", hsm_home, env=_env(hsm_token, wrong))
    line = assert_one_error_line(done, contains="wrong PIN")
    assert hsm_token.pin not in line and wrong not in line
    env = _env(hsm_token)
    del env["PHIGUARD_PKCS11_PIN"]
    assert_one_error_line(
        cli("keys", "status", "--home", hsm_home, env=env), contains="PHIGUARD_PKCS11_PIN"
    )
