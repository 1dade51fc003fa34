"""The canary test: no plaintext PHI in anything phiguard writes.

Unique strings are seeded into names, identifiers, addresses and free text, then
the whole flow runs (create, update, search by GET and POST, a transaction, a
rejected write, CLI import, backup) against a live server, and every byte under
the home (database, WAL, logs, key file, backup, server output) is scanned.

A scanner that finds nothing proves nothing unless it can find something: the
same scan runs against a store whose cipher is switched off and must hit.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from phiguard.records.context import system_context
from phiguard.records.vault import PlaintextCipherForBenchmarks, Vault
from phiguard.system import System
from tests.conftest import TEST_PASSPHRASE
from tests.support.server import live_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def canaries() -> dict[str, str]:
    tag = secrets.token_hex(4)
    return {
        "family": f"Qzvfamily{tag}",
        "given": f"Wxkgiven{tag}",
        "mrn": f"MRNCANARY{tag}",
        "street": f"{tag} Canary Lane",
        "note": f"patient disclosed canary-secret-{tag}",
        "family2": f"Pjrsecond{tag}",
        "imported": f"Ndjsoncanary{tag}",
        "bundled": f"Bundlecanary{tag}",
        "rejected": f"Rejectedcanary{tag}",
    }


def forms(value: str) -> list[bytes]:
    return [
        value.encode(),
        value.lower().encode(),
        value.upper().encode(),
        value.encode("utf-16-le"),
    ]


def scan(root: Path, values: dict[str, str]) -> list[str]:
    """Every (file, canary) pair where a canary appears in a file under ``root``."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, value in values.items():
            if any(f in data for f in forms(value)):
                hits.append(f"{path.relative_to(root)}: {name}")
    return hits


def patient(c: dict[str, str], family: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:phiguard:mrn", "value": c["mrn"]}],
        "name": [{"family": family, "given": [c["given"]]}],
        "address": [{"line": [c["street"]], "city": "Springfield"}],
        "birthDate": "1971-03-04",
    }


def run_flow(base: str, headers: dict[str, str], c: dict[str, str]) -> str:
    h = {**headers, **FHIR_JSON}
    r = httpx.post(f"{base}/fhir/Patient", json=patient(c, c["family"]), headers=h)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    updated = {**patient(c, c["family2"]), "id": pid}
    r = httpx.put(f"{base}/fhir/Patient/{pid}", json=updated, headers={**h, "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-01-05T10:00:00Z",
        "note": [{"text": c["note"]}],
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    assert httpx.post(f"{base}/fhir/Observation", json=obs, headers=h).status_code == 201
    # Searches put PHI in the query string and in the form body.
    r = httpx.get(f"{base}/fhir/Patient", params={"family": c["family2"]}, headers=headers)
    assert r.json()["total"] == 1
    r = httpx.get(f"{base}/fhir/Patient", params={"identifier": c["mrn"]}, headers=headers)
    assert r.json()["total"] == 1
    r = httpx.post(f"{base}/fhir/Patient/_search", data={"given": c["given"]}, headers=headers)
    assert r.json()["total"] == 1
    # An old-version search term must not match, and must not leak either.
    r = httpx.get(f"{base}/fhir/Patient", params={"family": c["family"]}, headers=headers)
    assert r.json()["total"] == 0
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4f1a2b3c-0000-4000-8000-000000000001",
                "resource": patient(c, c["bundled"]),
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    assert httpx.post(f"{base}/fhir", json=bundle, headers=h).status_code == 200
    # A rejected write must not echo its content into the error or the log.
    bad = {**patient(c, c["rejected"]), "birthDate": f"not-a-date-{c['rejected']}"}
    r = httpx.post(f"{base}/fhir/Patient", json=bad, headers=h)
    assert r.status_code == 400
    assert c["rejected"] not in r.text
    return pid


def test_no_plaintext_phi_anywhere(home: tuple[System, str], tmp_path: Path) -> None:
    system, token = home
    root = system.settings.home
    c = canaries()
    env = {
        "PHIGUARD_PASSPHRASE": TEST_PASSPHRASE,
        "PHIGUARD_RECOVERY_PASSPHRASE": "recovery passphrase 123",
    }
    with live_server(root, token, env) as server:
        run_flow(server.base, server.headers, c)
        # Scan while the server runs too: the WAL holds the newest pages then.
        assert scan(root, c) == []
    # CLI import of an NDJSON file (the input lives outside the home).
    source = tmp_path / "input" / "patients.ndjson"
    source.parent.mkdir()
    source.write_text(json.dumps(patient(c, c["imported"])) + "\n")
    cli_env = {**os.environ, **env}
    cli = [sys.executable, "-m", "phiguard.cli"]
    out = subprocess.run(
        [*cli, "import", "--home", str(root), str(source)],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Imported 1 resources" in out.stdout
    keys = tmp_path / "recovery"
    subprocess.run(
        [*cli, "backup", "keygen", "--out", str(keys)], env=cli_env, check=True, capture_output=True
    )
    subprocess.run(
        [
            *cli,
            "backup",
            "create",
            "--home",
            str(root),
            "--out",
            str(root / "backups" / "b1.pgbk"),
            "--recovery-key",
            str(keys / "recovery.pub.pem"),
        ],
        env=cli_env,
        check=True,
        capture_output=True,
    )
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert any(w.endswith("phiguard.db") for w in written)
    assert any(w.startswith("logs/") for w in written)
    assert any(w.startswith("backups/") for w in written)
    assert scan(root, c) == [], "plaintext PHI found on disk"
    # The scanner does find canaries where they are: in the import's input file.
    assert "patients.ndjson: imported" in scan(source.parent, c)


def test_the_scan_finds_plaintext_when_encryption_is_off(vault: Vault, tmp_path: Path) -> None:
    """The deliberately broken variant: the same store with its cipher switched off."""
    broken = Vault(vault.engine, vault.keyring, cipher=PlaintextCipherForBenchmarks())
    c = canaries()
    broken.repository(system_context()).create(patient(c, c["family"]))
    vault.engine.dispose()
    db_dir = Path(str(vault.engine.url.database)).parent
    assert any(hit.endswith(": family") for hit in scan(db_dir, c))


@pytest.mark.parametrize("field", ["family", "mrn"])
def test_tokens_are_not_values(vault: Vault, field: str) -> None:
    """Blind-index rows hold HMACs: the normalised value is not among them."""
    c = canaries()
    vault.repository(system_context()).create(patient(c, c["family"]))
    with vault.engine.connect() as conn:
        tokens = [bytes(t) for (t,) in conn.exec_driver_sql("SELECT token FROM search_tokens")]
    assert tokens
    assert all(c[field].lower().encode()[:16] != t for t in tokens)
