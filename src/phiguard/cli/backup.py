"""``phiguard backup keygen|create|restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phiguard import backup as backups
from phiguard import config

from .common import HomeOption, console, err, prompt, system

app = typer.Typer(
    help="Encrypted backups, readable only with the recovery private key.", no_args_is_help=True
)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="folder for recovery.pub.pem and recovery.key.pem")],
) -> None:
    """Create an RSA-4096 recovery key pair; keep the private key off the backup host."""
    secret = backups.recovery_passphrase(prompt, confirm=True)
    pub, key = backups.generate_recovery_keys(out, secret)
    console.print(f"Public key  {pub}  (configure as recovery_public_key)")
    console.print(f"Private key {key}  (passphrase-protected; store it offline)")


@app.command()
def create(
    out: Annotated[Path, typer.Option(help="the archive to write")],
    home: HomeOption = None,
    recovery_key: Annotated[Path | None, typer.Option(help="recovery public key (PEM)")] = None,
) -> None:
    """Write an encrypted backup of the database and key material."""
    with system(home) as sys_:
        pub = recovery_key or (
            sys_.settings.path(sys_.settings.recovery_public_key)
            if sys_.settings.recovery_public_key
            else None
        )
        if pub is None:
            raise backups.BackupError(
                "no recovery public key: pass --recovery-key or set recovery_public_key"
            )
        manifest = backups.create(sys_, out, pub, progress=lambda n: None)
        sys_.record(
            "backup-create",
            archive=str(out),
            rows=manifest["rows"],
            recipient=manifest["recipient"],
        )
    console.print(
        f"Backup written to {out}: {manifest['rows']} rows in "
        f"{len(manifest['tables'])} tables, encrypted to {manifest['recipient']}."
    )


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="the backup archive")],
    recovery_private_key: Annotated[Path, typer.Option(help="recovery private key (PEM)")],
    home: HomeOption = None,
    database_url: Annotated[str, typer.Option(help="restore into this database")] = "",
) -> None:
    """Restore a backup into a new, empty home."""
    root = config.resolve_home(home)
    secret = backups.recovery_passphrase(prompt)
    manifest = backups.restore(
        archive, recovery_private_key, secret, root, database_url=database_url
    )
    console.print(f"Restored {manifest['rows']} rows into {root}.")
    err.print("The key file is restored as it was: it opens with its original passphrase.")
