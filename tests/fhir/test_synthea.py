"""The real Synthea Bundles, read in place: posted to a live server, and imported by the CLI.

Either way every resource of the five files must be stored (counts per type equal
the files'), and every reference of every stored resource must name a stored
resource (``urn:uuid`` references rewritten to ``Type/id``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phiguard.records.context import system_context
from phiguard.system import open_system
from tests.support.components import synthea_dir

from .helpers import FHIR_JSON, PASSPHRASE, make_home, running_api, server_env

RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
SHARED_FIRST = ("hospitalInformation", "practitionerInformation")


def bundle_files() -> list[Path]:
    """The hospital and practitioner Bundles first, then the patients'."""
    files = sorted(synthea_dir().glob("*.json"))
    return sorted(files, key=lambda f: (not f.name.startswith(SHARED_FIRST), f.name))


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def expected_counts(files: list[Path]) -> Counter[str]:
    return Counter(
        e["resource"]["resourceType"] for f in files for e in load(f)["entry"] if "resource" in e
    )


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def check_store(stored: dict[tuple[str, str], dict[str, Any]], files: list[Path]) -> None:
    """Counts per type match the files and every reference resolves inside the store."""
    assert Counter(rtype for rtype, _ in stored) == expected_counts(files)
    checked = 0
    for (rtype, rid), resource in stored.items():
        assert resource["resourceType"] == rtype
        assert resource["id"] == rid
        assert "urn:uuid:" not in json.dumps(resource), f"{rtype}/{rid} kept a urn:uuid"
        for ref in references(resource):
            if ref.startswith("#"):  # a contained resource
                continue
            m = RELATIVE.match(ref)
            assert m, f"{rtype}/{rid} has a reference that is not Type/id: {ref}"
            assert (m.group(1), m.group(2)) in stored, f"{rtype}/{rid} -> {ref} is not stored"
            checked += 1
    assert checked > 1000  # the files hold well over a thousand references

    # The patients arrived intact (their urn:uuid became their id).
    for f in files:
        for e in load(f)["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                pid = e["fullUrl"].removeprefix("urn:uuid:")
                got = stored[("Patient", pid)]
                assert got["birthDate"] == e["resource"]["birthDate"]
                assert got["name"] == e["resource"]["name"]
                assert got["identifier"] == e["resource"]["identifier"]


def test_post_synthea_bundles_to_live_server(backend_url: tuple[str, str], tmp_path: Path) -> None:
    files = bundle_files()
    backend, url = backend_url
    with running_api(backend, url, tmp_path) as api, api.client() as http:
        for f in files:
            r = http.post("", content=f.read_bytes(), headers={"Content-Type": FHIR_JSON})
            assert r.status_code == 200, f"{f.name}: {r.text[:2000]}"
            reply = r.json()
            assert reply["type"] == "batch-response"
            statuses = Counter(e["response"]["status"] for e in reply["entry"])
            assert statuses == {"201 Created": len(load(f)["entry"])}, f"{f.name}: {statuses}"

        stored: dict[tuple[str, str], dict[str, Any]] = {}
        for rtype in expected_counts(files):
            total = http.get(f"/{rtype}", params={"_summary": "count"}).json()["total"]
            page = http.get(f"/{rtype}", params={"_count": "40"}).json()
            while True:
                assert page["total"] == total
                for e in page.get("entry", []):
                    stored[(rtype, e["resource"]["id"])] = e["resource"]
                nxt = [x["url"] for x in page.get("link", []) if x["relation"] == "next"]
                if not nxt:
                    break
                page = http.get(nxt[0]).json()
            assert sum(1 for t, _ in stored if t == rtype) == total
        check_store(stored, files)

        # $everything gives each patient's compartment: all of the file but the
        # organisations and practitioners, which are shared.
        for f in files:
            entries = load(f)["entry"]
            patients = [e for e in entries if e["resource"]["resourceType"] == "Patient"]
            if not patients:
                continue
            pid = patients[0]["fullUrl"].removeprefix("urn:uuid:")
            everything = http.get(f"/Patient/{pid}/$everything").json()
            shared = {"Organization", "Practitioner"}
            mine = [e for e in entries if e["resource"]["resourceType"] not in shared]
            assert everything["total"] == len(mine)
            assert Counter(e["resource"]["resourceType"] for e in everything["entry"]) == Counter(
                e["resource"]["resourceType"] for e in mine
            )


def test_cli_import_of_the_synthea_folder(
    backend_url: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = bundle_files()
    _backend, url = backend_url
    home, _token = make_home(tmp_path, url)
    env = {**os.environ, **server_env(url)}
    done = subprocess.run(
        [sys.executable, "-m", "phiguard.cli", "import", "--home", str(home), str(synthea_dir())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    total = sum(expected_counts(files).values())
    assert f"Imported {total} resources" in done.stdout, done.stdout[-3000:]

    monkeypatch.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PHIGUARD_DATABASE_URL", server_env(url)["PHIGUARD_DATABASE_URL"])
    system = open_system(home)
    try:
        repo = system.vault.repository(system_context())
        stored: dict[tuple[str, str], dict[str, Any]] = {}
        for rtype in expected_counts(files):
            offset = 0
            while True:
                result = repo.search(rtype, [("_count", "100"), ("_offset", str(offset))])
                for s in result.entries:
                    assert s.resource is not None
                    stored[(rtype, s.id)] = s.resource
                offset += result.count
                if offset >= result.total:
                    break
        check_store(stored, files)
    finally:
        system.close()
