"""``phiguard init``, ``serve`` and ``demo``."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from phiguard import config
from phiguard.errors import ConfigError
from phiguard.system import System, init_home, open_system, revoke_api_tokens

from .common import HomeOption, console, err, progress, prompt


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_system(system: System, host: str, port: int) -> None:
    import uvicorn

    from phiguard.web.app import create_app

    settings = system.settings
    tls = bool(settings.tls_cert and settings.tls_key)
    if not tls and not _loopback(host):
        raise ConfigError("plain HTTP is only served on loopback: configure tls_cert and tls_key")
    settings.host, settings.port = host, port
    app = create_app(system)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        ssl_certfile=settings.path(settings.tls_cert) if tls else None,
        ssl_keyfile=settings.path(settings.tls_key) if tls else None,
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        home: HomeOption = None,
        database_url: Annotated[
            str, typer.Option(help="SQLAlchemy URL (default: SQLite in the home)")
        ] = "",
        key_provider: Annotated[str, typer.Option(help="local-file or pkcs11")] = "local-file",
        demo: Annotated[
            bool, typer.Option(help="demo mode: allows the published demo passphrase")
        ] = False,
        pkcs11_library: Annotated[
            str, typer.Option(help="PKCS#11 module (with --key-provider pkcs11)")
        ] = config.Pkcs11Settings.library,
        pkcs11_token: Annotated[
            str, typer.Option(help="PKCS#11 token label")
        ] = config.Pkcs11Settings.token_label,
        pkcs11_key_prefix: Annotated[
            str, typer.Option(help="label prefix of the KEKs on the token")
        ] = config.Pkcs11Settings.key_label_prefix,
    ) -> None:
        """Create a phiguard home: settings, key file (or HSM key), database, bootstrap token.

        The PIN of a PKCS#11 token comes from PHIGUARD_PKCS11_PIN(_FILE), never argv.
        """
        if key_provider not in ("local-file", "pkcs11"):
            raise ConfigError("--key-provider must be local-file or pkcs11")
        root = config.resolve_home(home)
        system, token = init_home(
            root,
            mode="demo" if demo else "production",
            database_url=database_url,
            key_provider=key_provider,
            prompt=prompt,
            pkcs11=config.Pkcs11Settings(pkcs11_library, pkcs11_token, pkcs11_key_prefix),
        )
        system.close()
        console.print(f"Initialised phiguard home at {root}")
        console.print("Bootstrap admin token (shown once; only its hash is stored):")
        console.print(f"  {token}")

    @app.command()
    def serve(
        home: HomeOption = None,
        host: Annotated[
            str | None, typer.Option(help="address to bind (default from settings)")
        ] = None,
        port: Annotated[int | None, typer.Option(help="port (default from settings)")] = None,
    ) -> None:
        """Serve the FHIR API: TLS when a certificate is configured, plain HTTP on loopback only."""
        system = open_system(home, prompt=prompt)
        try:
            serve_system(system, host or system.settings.host, port or system.settings.port)
        finally:
            system.close()

    @app.command()
    def demo(
        home: HomeOption = None,
        patients: Annotated[int, typer.Option(help="synthetic patients to seed")] = 500,
        seed: Annotated[int, typer.Option(help="seed of the synthetic hospital")] = 7,
        port: Annotated[int, typer.Option()] = 8000,
        serve_api: Annotated[bool, typer.Option("--serve/--no-serve")] = True,
    ) -> None:
        """Initialise a demo home, seed the synthetic hospital and serve on 127.0.0.1."""
        root = config.resolve_home(home)
        if not (root / config.CONFIG_NAME).exists():
            system, _ = init_home(root, mode="demo", port=port)
            console.print(f"Initialised demo home at {root}")
        else:
            system = open_system(root)
            if not system.settings.is_demo:
                raise ConfigError(f"{root} is not a demo home; refusing to seed it")
        try:
            from phiguard.identity.tokens import TokenService
            from phiguard.synth import demo_users, generate_hospital
            from phiguard.synth.seed import seed_hospital

            with progress() as bar:
                task = bar.add_task("Seeding synthetic hospital", total=None)

                def advance(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                report = seed_hospital(system.vault, seed=seed, patients=patients, progress=advance)
            console.print(
                f"Seeded {report.resources} resources ({report.skipped_resources} already there) "
                f"for {patients} patients."
            )
            revoke_api_tokens(system, "demo")  # demo homes of earlier versions had one
            logins = demo_users.provision(system, generate_hospital(seed=seed, patients=patients))
            base = f"http://127.0.0.1:{port}"
            console.print("\n[bold]phiguard demo[/bold]")
            console.print(f"  Console      {base}/login")
            console.print(
                "  Sign-ins     (fresh passwords and TOTP secrets on every run; add a secret to "
                "an authenticator app, or print a code with: "
                "python -c \"import pyotp; print(pyotp.TOTP('SECRET').now())\")"
            )
            for login in logins:
                console.print(
                    f"    {login.user_id:<12} {','.join(login.roles):<32} "
                    f"password {login.password}   TOTP secret {login.totp_secret}"
                )
            console.print(
                f"  FHIR API     {base}/fhir   (CapabilityStatement: {base}/fhir/metadata)"
            )
            console.print(f"  OpenAPI      {base}/openapi.json")
            clinician = next((x for x in logins if "physician" in x.roles), None)
            if clinician is not None:
                app_token = TokenService.from_system(system).issue(
                    kind="user",
                    subject=clinician.user_id,
                    client_id="phiguard-demo",
                    scopes=["user/*.rs", "openid", "fhirUser"],
                    fhir_user=f"Practitioner/{clinician.practitioner_id}",
                )
                console.print(
                    f"  App token    for {clinician.user_id} (15 minutes; a new one: "
                    f"phiguard token issue --home {root} --user {clinician.user_id})"
                )
                console.print(f"    {app_token.token}")
                console.print("  Try:")
                console.print(
                    f"    curl -H 'Authorization: Bearer {app_token.token}' "
                    f"'{base}/fhir/Patient?_count=3'"
                )
            console.print(
                f"  Home         {root}  (database: ciphertext only; "
                f"keys: {system.settings.key_file_path})"
            )
            if serve_api:
                err.print("Serving on 127.0.0.1 (Ctrl-C to stop)")
                serve_system(system, "127.0.0.1", port)
        finally:
            system.close()
