"""``phiguard client add|list|revoke``: the applications that may ask for tokens.

A public client (a SMART app in a browser or on a phone) is registered with its exact
redirect URIs; a backend client (a service with no user) with the public keys it
signs its assertions with (``--jwks FILE``, RS384 or ES384) and the roles its
tokens carry.  ``add`` prints the new client id on standard output and nothing
else, so scripts can capture it; the details go to standard error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from phiguard.clock import isoformat
from phiguard.errors import PhiGuardError
from phiguard.identity.clients import APP_PURPOSES, KINDS, MAX_JWKS_BYTES, Client, ClientRegistry
from phiguard.roles import ROLES

from .common import HomeOption, console, err, system
from .users import operator

app = typer.Typer(
    help="OAuth2/SMART applications: register, list and revoke clients.",
    no_args_is_help=True,
)

SOURCE = "cli"


def _read_jwks(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_JWKS_BYTES:
            raise PhiGuardError(f"{path} is larger than {MAX_JWKS_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PhiGuardError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PhiGuardError(f"{path} is not UTF-8 text") from None


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="the application's name, shown on consent pages")],
    kind: Annotated[str, typer.Option("--kind", help=f"one of: {', '.join(KINDS)}")],
    home: HomeOption = None,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option("--redirect-uri", help="an exact redirect URI (repeatable; public apps)"),
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="a scope of the client's ceiling (repeatable)"),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option("--jwks", help="JSON Web Key Set file with the public keys (backend)"),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help=f"a role its tokens carry (backend): {', '.join(ROLES)}"),
    ] = None,
    purpose: Annotated[
        list[str] | None,
        typer.Option(
            "--purpose",
            help=f"a purpose of use it may declare (repeatable; the first is its default): "
            f"{', '.join(APP_PURPOSES)}; default TREAT (public) or HOPERAT (backend)",
        ),
    ] = None,
) -> None:
    """Register an application; prints its client id."""
    key_set = _read_jwks(jwks) if jwks is not None else None
    with system(home) as sys_:
        client = ClientRegistry.from_system(sys_).add(
            name,
            kind,
            by=operator(),
            redirect_uris=redirect_uri or [],
            scopes=scope or [],
            jwks=key_set,
            roles=role or [],
            purposes=purpose or [],
            source=SOURCE,
        )
    print(client.client_id)
    err.print(
        escape(
            f"Registered {client.kind} client {client.name!r}; scopes: {' '.join(client.scopes)}; "
            f"purposes: {' '.join(client.purposes)}"
        )
    )


def _as_json(client: Client) -> dict[str, object]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "kind": client.kind,
        "redirect_uris": list(client.redirect_uris),
        "scopes": list(client.scopes),
        "roles": list(client.roles),
        "purposes": list(client.purposes),
        "key_ids": list(client.key_ids),
        "created_at": isoformat(client.created_at),
        "created_by": client.created_by,
        "revoked_at": isoformat(client.revoked_at) if client.revoked_at else None,
    }


@app.command("list")
def list_(
    home: HomeOption = None,
    format_: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """List registered applications (revoked ones too, marked)."""
    if format_ not in ("table", "json"):
        raise PhiGuardError("--format must be table or json")
    with system(home) as sys_:
        clients = ClientRegistry.from_system(sys_).list()
    if format_ == "json":
        print(json.dumps([_as_json(c) for c in clients], indent=2))
        return
    table = Table(
        "client id", "name", "kind", "scopes", "purposes", "redirect URIs / keys", "status"
    )
    for c in clients:
        where = ", ".join(c.redirect_uris) if c.kind == "public" else ", ".join(c.key_ids)
        status = f"revoked {isoformat(c.revoked_at)}" if c.revoked_at else "active"
        table.add_row(
            escape(c.client_id),
            escape(c.name),
            c.kind,
            escape(" ".join(c.scopes)),
            " ".join(c.purposes),
            escape(where),
            status,
        )
    console.print(table)
    console.print(f"{len(clients)} client(s)")


@app.command()
def revoke(
    client_id: Annotated[str, typer.Argument(help="the client id")],
    home: HomeOption = None,
) -> None:
    """Revoke a client, its refresh tokens and the access tokens issued with them."""
    with system(home) as sys_:
        client = ClientRegistry.from_system(sys_).revoke(client_id, by=operator(), source=SOURCE)
    console.print(escape(f"Revoked {client.client_id} ({client.name})."))
