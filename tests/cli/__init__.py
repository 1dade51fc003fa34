"""Helpers for tests that drive the real ``phiguard`` command in a subprocess.

Homes are made with :func:`phiguard.system.init_home` (the production key file, so
each command pays one real scrypt derivation); the passphrase reaches the command
only through ``PHIGUARD_PASSPHRASE``, as in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from phiguard.records.context import system_context
from phiguard.store.engine import make_engine
from phiguard.store.tables import data_keys, resources
from phiguard.system import System, init_home, open_system

PASSPHRASE = "cli test passphrase that is long enough"
RECOVERY_PASSPHRASE = "recovery passphrase for the cli tests"


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PHIGUARD_") or k == "PHIGUARD_TEST_SOFTHSM_LIB"
    }
    env.update(
        {
            "PHIGUARD_PASSPHRASE": PASSPHRASE,
            "PHIGUARD_RECOVERY_PASSPHRASE": RECOVERY_PASSPHRASE,
            "COLUMNS": "200",  # rich wraps long lines at the terminal width
            "NO_COLOR": "1",
        }
    )
    env.update(extra)
    return env


def cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m phiguard.cli ARGS``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "phiguard.cli", *map(str, args)],
        env=env if env is not None else cli_env(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run a command that must succeed; returns its stdout."""
    done = cli(*args, env=env)
    assert done.returncode == 0, f"phiguard {args[0]} failed: {done.stderr[-2000:]}"
    return done.stdout


def assert_one_error_line(done: subprocess.CompletedProcess[str], *, contains: str = "") -> str:
    """A CLI error: exit code 1 and exactly one plain line on stderr, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {done.stderr[-2000:]!r}"
    assert lines[0].startswith("phiguard: error: "), lines[0]
    assert "Traceback" not in done.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


@contextmanager
def secrets_env(**extra: str) -> Iterator[None]:
    """This process's environment as a command would see it (for in-process opens)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("PHIGUARD_"):
                mp.delenv(name)
        mp.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
        for name, value in extra.items():
            mp.setenv(name, value)
        yield


def make_home(
    root: Path,
    fill: Callable[[System], None] | None = None,
    env: dict[str, str] | None = None,
    **kwargs: Any,
) -> Path:
    """An initialised home (``init_home``), optionally filled in-process, then closed."""
    with secrets_env(**(env or {})):
        system, _token = init_home(root, **kwargs)
        try:
            if fill is not None:
                fill(system)
        finally:
            system.close()
            close = getattr(system.provider, "close", None)
            if close is not None:  # a PKCS#11 provider: release the token session
                close()
    return root


def clone_home(template: Path, dest: Path) -> Path:
    """A copy of a closed home (settings, key file, database): cheaper than a new one."""
    shutil.copytree(template, dest)
    return dest


@contextmanager
def opened(root: Path, env: dict[str, str] | None = None) -> Iterator[System]:
    """An existing home, opened in this process (as a later command would open it)."""
    with secrets_env(**(env or {})):
        system = open_system(root)
        try:
            yield system
        finally:
            system.close()
            close = getattr(system.provider, "close", None)
            if close is not None:
                close()


def db(home: Path) -> Engine:
    """The home's SQLite database, for looking at rows (no key material needed)."""
    return make_engine(f"sqlite:///{home / 'phiguard.db'}")


def read_every_version(system: System) -> int:
    """vread every stored version outside shredded compartments; returns how many."""
    repo = system.vault.repository(system_context())
    with system.engine.connect() as conn:
        shredded = set(
            conn.execute(
                select(data_keys.c.compartment).where(data_keys.c.state == "shredded")
            ).scalars()
        )
        rows = conn.execute(
            select(resources.c.rtype, resources.c.rid, resources.c.version, resources.c.compartment)
            .where(resources.c.body.is_not(None))
            .order_by(resources.c.rtype, resources.c.rid, resources.c.version)
        ).all()
    opened = 0
    for row in rows:
        if row.compartment in shredded:
            continue
        stored = repo.vread(row.rtype, row.rid, int(row.version))
        assert stored.resource is not None and stored.resource["id"] == row.rid
        opened += 1
    return opened
