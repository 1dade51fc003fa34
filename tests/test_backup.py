"""Encrypted backups end to end, through the ``phiguard backup`` commands.

One source home per worker: patients are written, one is shredded, recovery keys
are made and a backup is taken, and then another patient is shredded in the live
database only.  Each test restores into a fresh home of its own.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from phiguard import backup as backups
from phiguard.crypto.archive import generate_recovery_keypair, read_archive
from phiguard.errors import BackupError, Gone, NotFound
from phiguard.records.context import system_context
from phiguard.records.maintenance import shred_patient
from phiguard.system import System
from tests.cli import RECOVERY_PASSPHRASE, assert_one_error_line, cli, cli_env, make_home, ok
from tests.cli import opened as open_home

CANARY = "Quetzalcanary"  # a family name that must never appear in the clear
PATIENTS = {
    "alice": 3,  # observations each
    "bob": 2,
    "shredded-before": 2,  # shredded before the backup
    "shredded-after": 2,  # shredded after the backup, in the live database only
}


def _fill(system: System) -> None:
    repo = system.vault.repository(system_context())
    repo.create({"resourceType": "Practitioner", "name": [{"family": "Doctor"}]}, rid="dr")
    for pid, n in PATIENTS.items():
        repo.create(
            {"resourceType": "Patient", "name": [{"family": CANARY, "given": [pid]}]}, rid=pid
        )
        for i in range(n):
            repo.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"{CANARY} note {i}"},
                    "subject": {"reference": f"Patient/{pid}"},
                },
                rid=f"{pid}-obs-{i}",
            )
    repo.update(
        "Patient", "alice", {"resourceType": "Patient", "name": [{"family": CANARY + "Two"}]}
    )
    shred_patient(system.vault, system_context(), "shredded-before")


@dataclass(frozen=True)
class Source:
    home: Path
    archive: Path
    public: Path
    private: Path
    other_private: Path
    rows: int


@contextmanager
def _built_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder shared by the xdist workers of this run, built by whichever comes first
    (the others wait on the lock): the source home and its backup are read-only after
    they are made, and making them twice would double this module's cost."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    folder.mkdir(exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    with _built_once(tmp_path_factory, "backup-source") as base:
        home, archive = base / "home", base / "phiguard.backup"
        public = base / "recovery" / "recovery.pub.pem"
        private = base / "recovery" / "recovery.key.pem"
        made = base / "made.json"
        if not made.exists():
            make_home(home, _fill)
            out = ok("backup", "keygen", "--out", base / "recovery")
            assert str(public) in out and str(private) in out
            # The same passphrase on purpose: only the key differs.
            _pub, other = generate_recovery_keypair(RECOVERY_PASSPHRASE, bits=3072)
            (base / "other.key.pem").write_bytes(other)
            out = ok("backup", "create", "--out", archive, "--home", home, "--recovery-key", public)
            rows = int(out.split(": ", 1)[1].split(" rows", 1)[0])
            ok("patient", "shred", "shredded-after", "--yes", "--home", home)
            made.write_text(json.dumps({"rows": rows}))
        rows = json.loads(made.read_text())["rows"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    return Source(home, archive, public, private, base / "other.key.pem", rows)


@pytest.fixture(scope="module")
def restored(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backup restored once, through the CLI, into a new home (read-only for tests)."""
    with _built_once(tmp_path_factory, "backup-restored") as base:
        target = base / "home"
        if not target.exists():
            done = _restore(source, target)
            assert done.returncode == 0, done.stderr
            assert f"Restored {source.rows} rows" in done.stdout
    return target


def _restore(
    source: Source, target: Path, *, private: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return cli(
        "backup",
        "restore",
        source.archive if "archive" not in env else env.pop("archive"),
        "--recovery-private-key",
        private or source.private,
        "--home",
        target,
        env=cli_env(**env),
    )


def _read_all(system: System, pid: str) -> list[dict[str, Any]]:
    repo = system.vault.repository(system_context())
    out = [repo.read("Patient", pid).resource]
    out += [repo.read("Observation", f"{pid}-obs-{i}").resource for i in range(PATIENTS[pid])]
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def _no_leftovers(target: Path) -> None:
    assert not target.exists(), "a failed restore must leave no home behind"
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".restore-")]


def test_restore_round_trip(restored: Path) -> None:
    target = restored
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE((target / "keys" / "kek.json").stat().st_mode) == 0o600
    with open_home(target) as system:
        alice = _read_all(system, "alice")
        assert alice[0]["name"][0]["family"] == CANARY + "Two"
        repo = system.vault.repository(system_context())
        assert [s.version for s in repo.history("Patient", "alice")] == [2, 1]
        assert repo.read("Practitioner", "dr").resource is not None
        assert len(_read_all(system, "bob")) == 3
        assert repo.search("Patient", [("family", CANARY)]).total >= 2  # tokens restored
    # The restored home works for the CLI too (its key file opens with the passphrase).
    assert "active data keys" in ok("keys", "status", "--home", target)


def test_backup_taken_before_a_shred_still_restores_that_patient(
    source: Source, restored: Path
) -> None:
    """Documented behaviour: shredding destroys the keys in the live database only.
    A backup taken before the shred holds the patient's wrapped key and the key file,
    so restoring it brings the patient back; completing an erasure means destroying
    (or re-taking) every earlier backup."""
    with open_home(source.home) as live:
        repo = live.vault.repository(system_context())
        with pytest.raises(Gone):
            repo.read("Patient", "shredded-after")
        with pytest.raises(Gone):
            repo.vread("Observation", "shredded-after-obs-0", 1)
    with open_home(restored) as system:
        assert len(_read_all(system, "shredded-after")) == 3


def test_patient_shredded_before_the_backup_stays_unreadable_after_restore(
    restored: Path,
) -> None:
    with open_home(restored) as system:
        repo = system.vault.repository(system_context())
        for rtype, rid in (
            ("Patient", "shredded-before"),
            ("Observation", "shredded-before-obs-1"),
        ):
            with pytest.raises(Gone):
                repo.read(rtype, rid)
            with pytest.raises(Gone):
                repo.vread(rtype, rid, 1)
        with pytest.raises(NotFound):
            repo.everything("shredded-before")
        assert system.keyring.is_shredded("Patient/shredded-before")


def test_restore_with_another_recovery_key_fails_and_leaves_nothing(
    source: Source, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    done = _restore(source, target, private=source.other_private)
    assert_one_error_line(done, contains="different recovery key")
    _no_leftovers(target)


def test_restore_with_the_wrong_recovery_passphrase_fails(source: Source, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    done = _restore(source, target, PHIGUARD_RECOVERY_PASSPHRASE="not the recovery passphrase")
    assert_one_error_line(done, contains="wrong key or passphrase")
    _no_leftovers(target)


def test_restore_refuses_an_existing_home(source: Source) -> None:
    before = (source.home / "phiguard.toml").read_bytes()
    done = _restore(source, source.home)
    assert_one_error_line(done, contains="already a phiguard home")
    assert (source.home / "phiguard.toml").read_bytes() == before


def test_tampered_archive_fails_through_the_cli(source: Source, tmp_path: Path) -> None:
    blob = bytearray(source.archive.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad = tmp_path / "tampered.backup"
    bad.write_bytes(bytes(blob))
    target = tmp_path / "restored"
    assert_one_error_line(_restore(source, target, archive=str(bad)), contains="damaged")
    _no_leftovers(target)


@hsettings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_tampered_or_truncated_archive_restores_nothing(
    data: st.DataObject, source: Source, tmp_path: Path
) -> None:
    blob = bytearray(source.archive.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1), label="cut")]
    else:
        position = data.draw(st.integers(0, len(blob) - 1), label="position")
        blob[position] ^= data.draw(st.integers(1, 255), label="mask")
    _restore_fails(bytes(blob), source, tmp_path)


@pytest.mark.parametrize("cut", [0, 10, 17, 19, 21, 200, -1, -17, -100])
def test_truncated_archive_restores_nothing(source: Source, tmp_path: Path, cut: int) -> None:
    _restore_fails(source.archive.read_bytes()[:cut], source, tmp_path)


def _restore_fails(blob: bytes, source: Source, tmp_path: Path) -> None:
    bad = tmp_path / f"bad-{os.urandom(4).hex()}.backup"
    bad.write_bytes(bytes(blob))
    target = tmp_path / f"restored-{os.urandom(4).hex()}"
    with pytest.raises(BackupError):
        backups.restore(bad, source.private, RECOVERY_PASSPHRASE, target)
    _no_leftovers(target)


def test_small_recovery_keys_are_refused(source: Source, tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = tmp_path / "small.pub.pem"
    pem.write_bytes(
        small.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    out = tmp_path / "out" / "small.backup"
    done = cli("backup", "create", "--out", out, "--home", source.home, "--recovery-key", pem)
    assert_one_error_line(done, contains="3072")
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [], "no temporary archive left behind"


def test_recovery_passphrase_rules(tmp_path: Path) -> None:
    env = cli_env(PHIGUARD_RECOVERY_PASSPHRASE="short")
    assert_one_error_line(cli("backup", "keygen", "--out", tmp_path / "k", env=env), contains="12")
    assert not (tmp_path / "k" / "recovery.key.pem").exists()


def test_no_plaintext_in_the_archive_or_on_disk(source: Source, restored: Path) -> None:
    canary = CANARY.encode()
    raw = source.archive.read_bytes()
    assert canary not in raw and canary.lower() not in raw
    # The archive is encrypted, not just compressed: no stretch of the compressed
    # stream inside it appears in the file.
    stream = b"".join(
        read_archive(io.BytesIO(raw), source.private.read_bytes(), RECOVERY_PASSPHRASE)
    )
    assert stream[:2] == b"\x1f\x8b"  # gzip inside
    windows = [stream[i : i + 24] for i in range(0, len(stream) - 24, 24)]
    assert windows and not any(w in raw for w in windows)
    # Decompressed, the payload holds rows of ciphertext: still no canary.
    payload = gzip.decompress(stream)
    assert b'"t":"row"' in payload and canary not in payload
    # Neither the live home nor a restored one holds the canary anywhere on disk.
    for root in (source.home, restored):
        for path in root.rglob("*"):
            if path.is_file():
                assert canary not in path.read_bytes(), f"plaintext PHI in {path}"
