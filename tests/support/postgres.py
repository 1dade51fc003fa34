"""Throwaway PostgreSQL servers for tests, from Debian's ``postgresql`` package.

One server per process (per pytest-xdist worker): ``initdb`` into a fresh temporary
directory (trust authentication, locale C, superuser ``postgres``), ``pg_ctl start``
on a free loopback port with ``fsync=off``, and one new database per test.  Session
fixtures take the server with :func:`shared_postgres`, which starts it on first use
and stops it (``pg_ctl stop -m immediate``) when the last user lets go, so test
packages that each have a session fixture still share one server per worker.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres``
system user (Debian's package creates it) or else ``nobody``, and its directory is
given to that user.  If the binaries are missing the test is skipped, except under
``CI=true``, where it fails (see ``components.unavailable``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from .components import free_port, unavailable

SUPERUSER = "postgres"
START_ATTEMPTS = 3


def find_binary(name: str) -> str | None:
    """``name`` from the newest /usr/lib/postgresql/*/bin, else from PATH."""
    override = os.environ.get("PHIGUARD_TEST_PG_BIN")
    dirs = [override] if override else []
    dirs += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
        reverse=True,
    )
    for d in dirs:
        path = Path(d) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' account exists")


def _command(user: pwd.struct_passwd | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user.pw_name, "--", *argv]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [
            setpriv,
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            *argv,
        ]
    pytest.fail("running as root but neither runuser nor setpriv is available")


@dataclass
class PostgresServer:
    """A running throwaway cluster; ``url(db)`` is a SQLAlchemy URL."""

    root: Path
    port: int
    pg_ctl: str
    user: pwd.struct_passwd | None
    databases: list[str] = field(default_factory=list)
    stopped: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        )

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        subprocess.run(
            _command(self.user, [self.pg_ctl, "stop", "-D", str(self.datadir), "-m", "immediate"]),
            cwd=self.root,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start; skips (fails under CI=true) without PostgreSQL binaries."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable(
            "PostgreSQL is not installed (initdb/pg_ctl not found under "
            "/usr/lib/postgresql/*/bin or on PATH; Debian: apt-get install postgresql)"
        )
    user = _run_as()
    # As root, $TMPDIR may sit under a directory the server's account cannot enter.
    parent = "/tmp" if user is not None and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="phiguard-pg-", dir=parent))
    (root / "sock").mkdir()
    if user is not None:
        for path in (root, root / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    done = subprocess.run(
        _command(
            user,
            [
                initdb,
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--locale=C",
                "--encoding=UTF8",
                "--no-sync",
            ],
        ),
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    log = root / "postgres.log"
    last_error = ""
    for _attempt in range(START_ATTEMPTS):  # another process may take the free port first
        port = free_port()
        options = (
            f"-p {port} -k {root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            _command(
                user,
                [
                    pg_ctl,
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(root / "data"),
                    "-l",
                    str(log),
                    "-o",
                    options,
                ],
            ),
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if started.returncode == 0:
            server = PostgresServer(root=root, port=port, pg_ctl=pg_ctl, user=user)
            atexit.register(server.stop)  # if the session dies before its teardown
            return server
        last_error = log.read_text()[-2000:] if log.exists() else started.stderr[-2000:]
    shutil.rmtree(root, ignore_errors=True)
    pytest.fail(f"PostgreSQL did not start: {last_error}")


_server: PostgresServer | None = None
_users = 0


@contextlib.contextmanager
def shared_postgres() -> Iterator[PostgresServer]:
    """This process's server: started on first use, stopped when the last user is done."""
    global _server, _users
    if _server is None:
        _server = start_postgres()
    _users += 1
    try:
        yield _server
    finally:
        _users -= 1
        if _users == 0 and _server is not None:
            _server.stop()
            _server = None


@contextlib.contextmanager
def fresh_database(server: PostgresServer, prefix: str = "t") -> Iterator[str]:
    """A new database for one test, dropped afterwards."""
    url = server.create_database(prefix)
    try:
        yield url
    finally:
        server.drop_database(url)
