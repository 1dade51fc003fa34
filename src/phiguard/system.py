"""Building a running phiguard from its home: settings, key provider, store, vault.

``init_home`` creates a home (config, key file, database, bootstrap token);
``open_system`` opens one for the server and the CLI.  Both refuse unsafe settings
before touching any data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select, update

from phiguard import config
from phiguard.audit.events import AuditEvent
from phiguard.audit.ledger import Ledger
from phiguard.audit.sink import LedgerSink
from phiguard.clock import Clock, SystemClock
from phiguard.config import Pkcs11Settings, Prompt, Settings
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import KeyProvider, LocalKeyFile
from phiguard.errors import AuthenticationError, ConfigError
from phiguard.records.context import Principal
from phiguard.records.hooks import AccessPolicy, AuditSink
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine, now_us
from phiguard.store.tables import api_tokens

if TYPE_CHECKING:
    from phiguard.access.wiring import AccessServices


@dataclass
class System:
    settings: Settings
    engine: Engine
    provider: KeyProvider
    keyring: Keyring
    vault: Vault
    clock: Clock
    ledger: Ledger
    access: AccessServices | None = None
    """The Cedar policy and its services; None when a test passed its own policy."""

    def close(self) -> None:
        self.ledger.close()
        if self.ledger.engine is not self.engine:
            self.ledger.engine.dispose()
        self.engine.dispose()
        closer = getattr(self.provider, "close", None)
        if callable(closer):  # an HSM session
            closer()

    def record(
        self,
        action: str,
        *,
        outcome: str = "success",
        source: str = "cli",
        principal: str = "system/phiguard",
        purpose: str = "HOPERAT",
        patient_ids: tuple[str, ...] = (),
        **detail: object,
    ) -> None:
        """Record a security event that is not a PHI interaction (keys, backups, ...)."""
        self.vault.audit.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                principal=principal,
                purpose=purpose,
                request_id=secrets.token_hex(16),
                recorded=self.clock.now(),
                source=source,
                patient_ids=patient_ids,
                detail=dict(detail),
            )
        )


def open_provider(settings: Settings, prompt: Prompt | None = None) -> KeyProvider:
    if settings.key_provider == "pkcs11":
        from phiguard.crypto.hsm import Pkcs11Hsm

        return Pkcs11Hsm(
            settings.pkcs11.library,
            settings.pkcs11.token_label,
            config.pkcs11_pin(settings),
            key_label_prefix=settings.pkcs11.key_label_prefix,
        )
    return LocalKeyFile(settings.key_file_path, config.passphrase(settings, prompt))


def open_system(
    home: str | Path | None,
    *,
    prompt: Prompt | None = None,
    clock: Clock | None = None,
    policy: AccessPolicy | None = None,
    audit: AuditSink | None = None,
    migrate_schema: bool = True,
) -> System:
    settings = config.load(home)
    return open_with(
        settings,
        prompt=prompt,
        clock=clock,
        policy=policy,
        audit=audit,
        migrate_schema=migrate_schema,
    )


def open_with(
    settings: Settings,
    *,
    prompt: Prompt | None = None,
    clock: Clock | None = None,
    policy: AccessPolicy | None = None,
    audit: AuditSink | None = None,
    migrate_schema: bool = True,
) -> System:
    clock = clock or SystemClock()
    provider = open_provider(settings, prompt)
    engine = make_engine(settings.db_url)
    if migrate_schema:
        migrate.upgrade(engine)
    elif not migrate.is_current(engine):
        raise ConfigError("the database schema is out of date: run 'phiguard init' or migrate")
    keyring = Keyring(engine, provider, settings.tenant, clock=clock)
    if settings.audit_db_url == settings.db_url:
        ledger_engine = engine
    else:
        ledger_engine = make_engine(settings.audit_db_url)
        migrate.upgrade(ledger_engine)
    ledger = Ledger(ledger_engine, keyring, clock=clock)
    vault = Vault(
        engine,
        keyring,
        tenant=settings.tenant,
        policy=policy,
        audit=audit or LedgerSink(ledger),
        clock=clock,
    )
    access = None
    if policy is None:
        # Every interaction is decided by the Cedar policies; operators and phiguard's
        # own jobs go to its operator-only fallback (docs/access.md).
        from phiguard.access.wiring import build_access

        access = build_access(vault, window=dt.timedelta(days=settings.access_care_window_days))
    return System(settings, engine, provider, keyring, vault, clock, ledger, access)


def init_home(
    home: str | Path,
    *,
    mode: str = "production",
    database_url: str = "",
    key_provider: str = "local-file",
    prompt: Prompt | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    pkcs11: Pkcs11Settings | None = None,
) -> tuple[System, str]:
    """Create a home; returns the open system and the bootstrap token (shown once)."""
    root = Path(home).expanduser().resolve()
    if (root / config.CONFIG_NAME).exists():
        raise ConfigError(f"{root} is already a phiguard home")
    settings = Settings(
        home=root,
        pkcs11=pkcs11 or Pkcs11Settings(),
        mode=mode,
        database_url=database_url,
        key_provider=key_provider,
        host=host,
        port=port,
    )
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    if key_provider == "local-file":
        LocalKeyFile.create(
            settings.key_file_path, config.passphrase(settings, prompt, confirm=True)
        )
    elif key_provider == "pkcs11":
        from phiguard.crypto.hsm import Pkcs11Hsm

        Pkcs11Hsm.create(
            settings.pkcs11.library,
            settings.pkcs11.token_label,
            config.pkcs11_pin(settings),
            key_label_prefix=settings.pkcs11.key_label_prefix,
        )
    settings.log_path.mkdir(parents=True, exist_ok=True)
    (root / config.CONFIG_NAME).write_text(config.render(settings))
    system = open_with(settings, prompt=prompt)
    token = create_api_token(system, "bootstrap-admin")
    return system, token


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(system: System, name: str) -> str:
    """A new operator token; only its SHA-256 is stored (the token has 256 bits of entropy)."""
    token = "pg_" + secrets.token_urlsafe(32)
    with system.engine.begin() as conn:
        conn.execute(
            api_tokens.insert().values(
                token_hash=_hash(token),
                name=name,
                tenant=system.settings.tenant,
                created_at=now_us(system.clock.now()),
                revoked=False,
            )
        )
    return token


def revoke_api_tokens(system: System, name: str) -> int:
    with system.engine.begin() as conn:
        result = conn.execute(
            update(api_tokens).where(api_tokens.c.name == name).values(revoked=True)
        )
    return int(result.rowcount or 0)


def authenticate_api_token(system: System, token: str) -> Principal:
    """The operator behind ``token``, or ``AuthenticationError`` (one error for every cause)."""
    digest = _hash(token)
    with system.engine.connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest)).first()
    if row is None or row.revoked or not hmac.compare_digest(str(row.token_hash), digest):
        raise AuthenticationError()
    return Principal(
        id=str(row.name), kind="operator", display=str(row.name), roles=frozenset({"operator"})
    )
