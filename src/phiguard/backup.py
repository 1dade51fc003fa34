"""Encrypted backups: the whole database plus key material, readable only with the
recovery private key.

The payload is gzip-compressed JSON lines (settings, the passphrase-protected key
file, every table row) inside a ``crypto.archive`` stream.  Restoring writes into a
new home built in a temporary folder and moved into place only when every row is
in, so a failed restore leaves nothing behind.  Records of patients shredded before
the backup stay unreadable after a restore: their keys are not in it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import sys
import tempfile
import tomllib
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from phiguard import config
from phiguard.clock import isoformat
from phiguard.crypto.archive import ArchiveWriter, generate_recovery_keypair, read_archive
from phiguard.errors import BackupError, ConfigError
from phiguard.store import dump, migrate
from phiguard.store.engine import make_throwaway_engine
from phiguard.store.tables import AUDIT_TABLES
from phiguard.system import System

__all__ = ["BackupError", "create", "generate_recovery_keys", "recovery_passphrase", "restore"]
BATCH = 1000


def recovery_passphrase(
    prompt: Callable[[str], str] | None = None, *, confirm: bool = False
) -> str:
    value = os.environ.get("PHIGUARD_RECOVERY_PASSPHRASE")
    if value is None:
        if prompt is None or not sys.stdin.isatty():
            raise ConfigError("no recovery passphrase: set PHIGUARD_RECOVERY_PASSPHRASE")
        value = prompt("Recovery key passphrase: ")
        if confirm and prompt("Repeat it: ") != value:
            raise ConfigError("the two passphrases differ")
    if len(value) < 12:
        raise ConfigError("the recovery passphrase must have 12 characters at least")
    return value


def generate_recovery_keys(folder: Path, passphrase: str, bits: int = 4096) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pub_path, key_path = folder / "recovery.pub.pem", folder / "recovery.key.pem"
    if pub_path.exists() or key_path.exists():
        raise BackupError(f"recovery keys already exist in {folder}")
    pub, priv = generate_recovery_keypair(passphrase, bits)
    pub_path.write_bytes(pub)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv)
    return pub_path, key_path


class _GzipSink:
    """A file-like object that gzip writes into and that feeds the archive writer."""

    def __init__(self, writer: ArchiveWriter) -> None:
        self.writer = writer

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None


def _lines(system: System) -> Iterator[dict[str, Any]]:
    settings = system.settings
    yield {
        "t": "meta",
        "created": isoformat(system.clock.now()),
        "schema": migrate.current_revision(system.engine),
        "tenant": settings.tenant,
        "key_provider": settings.key_provider,
    }
    yield {"t": "config", "toml": config.render(settings)}
    if settings.key_provider == "local-file":
        yield {
            "t": "file",
            "name": "keyfile",
            "b64": base64.b64encode(settings.key_file_path.read_bytes()).decode(),
        }
    rows = 0
    separate = system.ledger.engine is not system.engine
    main_tables = [t.name for t in dump.tables() if not (separate and t.name in AUDIT_TABLES)]
    with system.engine.connect() as conn, conn.begin():  # one snapshot for every table
        for table, row in dump.dump(conn, main_tables):
            rows += 1
            yield {"t": "row", "table": table, "r": row}
    if separate:  # the ledger only grows: its copy is taken after the records'
        with system.ledger.engine.connect() as conn, conn.begin():
            for table, row in dump.dump(conn, AUDIT_TABLES):
                rows += 1
                yield {"t": "row", "table": table, "r": row}
    yield {"t": "end", "rows": rows}


def create(
    system: System, out: Path, public_key: Path, *, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    try:
        public_pem = public_key.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the recovery public key: {exc.strerror}") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".backup-", dir=out.parent)
    manifest: dict[str, Any] = {"rows": 0, "tables": set()}
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = ArchiveWriter(fh, public_pem, {"created": isoformat(system.clock.now())})
            with gzip.GzipFile(fileobj=_GzipSink(writer), mode="wb", mtime=0) as gz:
                for line in _lines(system):
                    gz.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
                    if line["t"] == "row":
                        manifest["tables"].add(line["table"])
                    elif line["t"] == "end":
                        manifest["rows"] = line["rows"]
                    if progress:
                        progress(1)
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    manifest["recipient"] = writer.recipient
    manifest["tables"] = sorted(manifest["tables"])
    return manifest


class _ChunkReader:
    """A read()-able view over decrypted chunks, for gzip."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


def _read_lines(src: IO[bytes], private_pem: bytes, passphrase: str) -> Iterator[dict[str, Any]]:
    reader = _ChunkReader(read_archive(src, private_pem, passphrase))
    try:
        with gzip.GzipFile(fileobj=reader, mode="rb") as gz:  # type: ignore[call-overload]
            for raw in gz:
                yield json.loads(raw)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError("the backup payload is damaged") from None


class _Target:
    """One database a restore writes into, in one transaction."""

    def __init__(self, url: str, tables: set[str], schema: str | None) -> None:
        self.engine = make_throwaway_engine(url)
        migrate.upgrade(self.engine)
        if schema != migrate.current_revision(self.engine):
            self.engine.dispose()
            raise BackupError("the backup's schema differs from this version's")
        self.conn = self.engine.connect()
        self.trans = self.conn.begin()
        self.tables = tables
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.rows = 0
        if dump.row_count(self.conn, tables) != 0:
            self.close()
            raise BackupError("the target database is not empty")

    def add(self, table: str, row: dict[str, Any]) -> None:
        batch = self.pending.setdefault(table, [])
        batch.append(row)
        if len(batch) >= BATCH:
            self.rows += dump.load(self.conn, table, self.pending.pop(table))

    def flush(self) -> None:
        for table in [t.name for t in dump.tables(self.tables)]:
            self.rows += dump.load(self.conn, table, self.pending.pop(table, []))

    def commit(self) -> None:
        self.trans.commit()
        self.close()

    def close(self) -> None:
        if self.trans.is_active:
            self.trans.rollback()
        self.conn.close()
        self.engine.dispose()


def restore(
    archive: Path, private_key: Path, passphrase: str, home: Path, *, database_url: str = ""
) -> dict[str, Any]:
    """Restore ``archive`` into a new home; nothing is left behind if anything fails."""
    home = Path(home).resolve()
    if (home / config.CONFIG_NAME).exists():
        raise BackupError(f"{home} is already a phiguard home; restore into a new folder")
    try:
        private_pem = private_key.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the recovery private key: {exc.strerror}") from None
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=home.parent))
    targets: dict[str, _Target] = {}
    settings: config.Settings | None = None
    meta: dict[str, Any] = {}
    expected = -1
    try:
        with open(archive, "rb") as src:
            for line in _read_lines(src, private_pem, passphrase):
                kind = line.get("t")
                if kind == "meta":
                    meta = line
                elif kind == "config":
                    settings = config.from_dict(staging, tomllib.loads(line["toml"]))
                    keep = not settings.database_url.startswith("sqlite")
                    settings.database_url = database_url or (settings.database_url if keep else "")
                    if settings.audit_database_url.startswith("sqlite") or database_url:
                        settings.audit_database_url = ""
                elif settings is None:
                    raise BackupError("the backup is out of order")
                elif kind == "file" and line.get("name") == "keyfile":
                    settings.key_file_path.parent.mkdir(parents=True, exist_ok=True)
                    settings.key_file_path.write_bytes(base64.b64decode(line["b64"]))
                    os.chmod(settings.key_file_path, 0o600)
                elif kind == "row":
                    audit = line["table"] in AUDIT_TABLES
                    url = settings.audit_db_url if audit else settings.db_url
                    if url not in targets:
                        names = {t.name for t in dump.tables()}
                        if settings.audit_db_url != settings.db_url:
                            names = names & AUDIT_TABLES if audit else names - AUDIT_TABLES
                        targets[url] = _Target(url, names, meta.get("schema"))
                    targets[url].add(line["table"], line["r"])
                elif kind == "end":
                    expected = int(line["rows"])
        if settings is None or expected < 0:
            raise BackupError("the backup holds no data or has no end")
        for target in targets.values():
            target.flush()
        rows = sum(t.rows for t in targets.values())
        if rows != expected:
            raise BackupError(f"the backup is incomplete ({rows} of {expected} rows)")
        for target in targets.values():
            target.commit()
        (staging / config.CONFIG_NAME).write_text(config.render(settings))
        _finish(staging, home)
    except BaseException:
        for target in targets.values():
            target.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"rows": rows, "created": meta.get("created")}


def _finish(staging: Path, home: Path) -> None:
    """Move the staged home into place (SQLite files move with it)."""
    if home.exists() and any(home.iterdir()):
        raise BackupError(f"{home} is not empty")
    if home.exists():
        home.rmdir()
    os.replace(staging, home)
    os.chmod(home, 0o700)
