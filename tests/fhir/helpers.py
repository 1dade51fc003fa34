"""Helpers for the FHIR API tests: homes, live servers, database fingerprints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirclient import client
from sqlalchemy import Engine, func, select

from phiguard.store.engine import make_throwaway_engine
from phiguard.store.tables import AUDIT_TABLES, metadata, resource_heads, resources
from phiguard.system import init_home
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.server import LiveServer, live_server

PASSPHRASE = "fhir api test passphrase, long enough"
FHIR_JSON = "application/fhir+json"
# Small enough to test 413 cheaply, large enough for every bundle the shared server gets.
SHARED_MAX_BODY = 256 * 1024


@contextmanager
def database(backend: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL for ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'db' / 'phiguard.db'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    with fresh_database(server, "fhir") as url:
        yield url


def server_env(database_url: str) -> dict[str, str]:
    return {
        "PHIGUARD_PASSPHRASE": PASSPHRASE,
        "PHIGUARD_DATABASE_URL": "" if database_url.startswith("sqlite") else database_url,
        "PHIGUARD_HOME": "",
    }


def make_home(root: Path, database_url: str, **settings: int) -> tuple[Path, str]:
    """``init_home`` as an operator would run it; returns (home, bootstrap token).

    ``settings`` overwrite integer settings in the home's phiguard.toml.
    """
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
        mp.delenv("PHIGUARD_DATABASE_URL", raising=False)
        system, token = init_home(home, database_url=database_url)
        system.close()
    if settings:
        cfg = home / "phiguard.toml"
        text = cfg.read_text()
        for name, value in settings.items():
            text, n = re.subn(rf"(?m)^{name} = .*$", f"{name} = {value}", text)
            assert n == 1, f"{name} is not a setting in phiguard.toml"
        cfg.write_text(text)
    return home, token


@dataclass
class Api:
    """A live server, its database and its home, with helpers for the tests."""

    backend: str
    server: LiveServer
    database_url: str
    engine: Engine

    @property
    def fhir(self) -> str:
        return self.server.fhir

    def client(self, *, auth: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.fhir,
            headers=self.server.headers if auth else {},
            timeout=60,
        )

    def fingerprint(self) -> dict[str, Any]:
        """Row counts of every table plus version and time marks: any write changes it.

        The audit ledger is left out: recording attempts, refused ones included, is
        its job (in PostgreSQL it shares the database).
        """
        with self.engine.connect() as conn:
            out: dict[str, Any] = {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables
                if t.name not in AUDIT_TABLES
            }
            out["head_versions"] = conn.execute(
                select(func.coalesce(func.sum(resource_heads.c.version), 0))
            ).scalar_one()
            out["last_write"] = conn.execute(select(func.max(resources.c.last_updated))).scalar()
        return out

    def logs(self) -> str:
        """Everything the server wrote: its access log and its console output."""
        home = self.server.home
        parts = [p.read_text(errors="replace") for p in (home / "logs").glob("access.log*")]
        serve_out = home / "serve.out"
        if serve_out.exists():
            parts.append(serve_out.read_text(errors="replace"))
        return "\n".join(parts)

    def access_log(self) -> str:
        return (self.server.home / "logs" / "access.log").read_text()


@contextmanager
def running_api(backend: str, database_url: str, root: Path, **settings: int) -> Iterator[Api]:
    home, token = make_home(root, database_url, **settings)
    engine = make_throwaway_engine(database_url)
    try:
        with live_server(home, token, server_env(database_url)) as server:
            yield Api(backend, server, database_url, engine)
    finally:
        engine.dispose()


def outcome_of(response: httpx.Response) -> dict[str, Any]:
    """The OperationOutcome of an error response (and checks that it is one)."""
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    for issue in body["issue"]:
        assert issue["severity"] in ("fatal", "error", "warning", "information")
        assert issue["code"]
    return body


def ids_of(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def fhir_client(api: Api) -> client.FHIRClient:
    """fhirclient pointed at the live server, with the bearer token on its session."""
    smart = client.FHIRClient(settings={"app_id": "phiguard-tests", "api_base": api.fhir})
    smart.server.session.headers["Authorization"] = f"Bearer {api.server.token}"
    return smart
