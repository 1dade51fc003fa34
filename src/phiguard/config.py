"""Settings: a home directory with ``phiguard.toml``, overridable by environment.

Secrets never come from the command line (where ``ps`` and shell history show
them): the key-file passphrase comes from ``PHIGUARD_PASSPHRASE``, from the file
named by ``PHIGUARD_PASSPHRASE_FILE`` (or ``passphrase_file`` in the config), or
from an interactive prompt.  Outside demo mode, start-up refuses the demo
passphrase and other default secrets.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiguard.errors import ConfigError

CONFIG_NAME = "phiguard.toml"
DEMO_PASSPHRASE = "phiguard-demo-passphrase"  # noqa: S105 - the published demo secret
DEFAULT_SECRETS = frozenset({DEMO_PASSPHRASE, "changeme", "password", "phiguard"})


@dataclass
class Pkcs11Settings:
    library: str = "/usr/lib/softhsm/libsofthsm2.so"
    token_label: str = "phiguard"  # noqa: S105 - a token name, not a secret
    key_label_prefix: str = "phiguard-kek"


@dataclass
class Settings:
    home: Path
    mode: str = "production"  # production | demo
    tenant: str = "default"
    database_url: str = ""
    audit_database_url: str = ""
    key_provider: str = "local-file"  # local-file | pkcs11
    key_file: str = "keys/kek.json"
    passphrase_file: str = ""
    pkcs11: Pkcs11Settings = field(default_factory=Pkcs11Settings)
    host: str = "127.0.0.1"
    port: int = 8000
    base_url: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    log_dir: str = "logs"
    recovery_public_key: str = ""
    audit_retention_days: int = 2192  # six years: 45 CFR 164.316(b)(2)
    access_resident_patients: int = 50_000  # a server's facts held in memory (0: on demand)
    access_care_window_days: int = 30  # an encounter or appointment this recent is care

    @property
    def is_demo(self) -> bool:
        return self.mode == "demo"

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.home / p

    @property
    def key_file_path(self) -> Path:
        return self.path(self.key_file)

    @property
    def log_path(self) -> Path:
        return self.path(self.log_dir)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'phiguard.db'}"

    @property
    def audit_db_url(self) -> str:
        """The ledger's database: its own SQLite file beside the main one (SQLite has one
        writer per file, and the ledger commits while record transactions are open), or
        the main PostgreSQL database."""
        if self.audit_database_url:
            return self.audit_database_url
        if self.db_url.startswith("sqlite"):
            return f"sqlite:///{self.home / 'audit.db'}"
        return self.db_url

    @property
    def public_base(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"


def resolve_home(home: str | Path | None) -> Path:
    value = home or os.environ.get("PHIGUARD_HOME")
    if not value:
        raise ConfigError("no phiguard home: pass --home or set PHIGUARD_HOME")
    return Path(value).expanduser().resolve()


def load(home: str | Path | None) -> Settings:
    root = resolve_home(home)
    cfg_path = root / CONFIG_NAME
    if not cfg_path.exists():
        raise ConfigError(f"{root} is not a phiguard home (run 'phiguard init' first)")
    try:
        doc = tomllib.loads(cfg_path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{cfg_path} is not valid TOML: {exc}") from None
    return from_dict(root, doc)


def from_dict(root: Path, doc: dict[str, Any]) -> Settings:
    section = doc.get("phiguard", {})
    pk = doc.get("pkcs11", {})
    known = set(Settings.__dataclass_fields__) - {"home", "pkcs11"}
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in [phiguard]: {', '.join(sorted(unknown))}")
    settings = Settings(home=root, **section, pkcs11=Pkcs11Settings(**pk))
    env_db = os.environ.get("PHIGUARD_DATABASE_URL")
    if env_db:
        settings.database_url = env_db
    if settings.mode not in ("production", "demo"):
        raise ConfigError("mode must be 'production' or 'demo'")
    if settings.key_provider not in ("local-file", "pkcs11"):
        raise ConfigError("key_provider must be 'local-file' or 'pkcs11'")
    resident = settings.access_resident_patients
    if isinstance(resident, bool) or not isinstance(resident, int) or resident < 0:
        raise ConfigError("access_resident_patients must be a whole number, 0 or more")
    window = settings.access_care_window_days
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= 366:
        raise ConfigError("access_care_window_days must be a whole number from 0 to 366")
    return settings


def render(settings: Settings) -> str:
    """The TOML text of ``settings`` (written by ``phiguard init``)."""
    lines = ["# phiguard settings. Secrets never go here: see docs/operations.md.", "[phiguard]"]
    for name in Settings.__dataclass_fields__:
        if name in ("home", "pkcs11"):
            continue
        value = getattr(settings, name)
        lines.append(f"{name} = {value!r}" if isinstance(value, int) else f'{name} = "{value}"')
    lines += ["", "[pkcs11]"]
    for name in Pkcs11Settings.__dataclass_fields__:
        lines.append(f'{name} = "{getattr(settings.pkcs11, name)}"')
    return "\n".join(lines) + "\n"


Prompt = Callable[[str], str]


def passphrase(settings: Settings, prompt: Prompt | None = None, *, confirm: bool = False) -> str:
    """The key-file passphrase from the environment, a file, or a prompt; checked for safety."""
    value = os.environ.get("PHIGUARD_PASSPHRASE")
    source = "PHIGUARD_PASSPHRASE"
    file_name = os.environ.get("PHIGUARD_PASSPHRASE_FILE") or settings.passphrase_file
    if value is None and file_name:
        try:
            value = Path(settings.path(file_name)).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the passphrase file: {exc.strerror}") from None
        source = "the passphrase file"
    if value is None and settings.is_demo:
        value, source = DEMO_PASSPHRASE, "the demo default"
    if value is None:
        if prompt is None or not sys.stdin.isatty():
            raise ConfigError("no passphrase: set PHIGUARD_PASSPHRASE or PHIGUARD_PASSPHRASE_FILE")
        value = prompt("Key-file passphrase: ")
        if confirm and prompt("Repeat the passphrase: ") != value:
            raise ConfigError("the two passphrases differ")
        source = "the prompt"
    check_secret(settings, value, source)
    return value


def check_secret(settings: Settings, value: str, source: str) -> None:
    if settings.is_demo:
        return
    if value in DEFAULT_SECRETS:
        raise ConfigError(f"refusing a default secret from {source} outside demo mode")
    if len(value) < 12:
        raise ConfigError(f"the passphrase from {source} is too short (12 characters at least)")


def pkcs11_pin(settings: Settings) -> str:
    pin = os.environ.get("PHIGUARD_PKCS11_PIN")
    pin_file = os.environ.get("PHIGUARD_PKCS11_PIN_FILE")
    if pin is None and pin_file:
        try:
            pin = Path(pin_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the PKCS#11 PIN file: {exc.strerror}") from None
    if not pin:
        raise ConfigError("no PKCS#11 PIN: set PHIGUARD_PKCS11_PIN or PHIGUARD_PKCS11_PIN_FILE")
    if not settings.is_demo and pin in DEFAULT_SECRETS | {"1234", "0000", "123456"}:
        raise ConfigError("refusing a default PKCS#11 PIN outside demo mode")
    return pin


# --- monitoring: notifications ([monitor] in phiguard.toml) ----------------------------
# Begin of the monitoring block.  Secrets (the SMTP password, the webhook signing
# secret) never go in the file: they come from the environment or a file it names.

MONITOR_SECTION = "monitor"


@dataclass
class MonitorSettings:
    """Where monitoring notifications go.  No channel configured: none are sent."""

    console_url: str = ""  # base of the links in notifications; default: the public base
    notify_min_score: float = 50.0
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_ca_file: str = ""  # a private CA for STARTTLS (default: the system's)
    smtp_username: str = ""  # password: PHIGUARD_SMTP_PASSWORD or PHIGUARD_SMTP_PASSWORD_FILE
    smtp_from: str = ""
    smtp_to: list[str] = field(default_factory=list)
    webhook_url: str = ""  # secret: PHIGUARD_WEBHOOK_SECRET or webhook_secret_file
    webhook_secret_file: str = ""
    timeout_seconds: float = 10.0


def monitor_settings(settings: Settings) -> MonitorSettings:
    """The ``[monitor]`` section of the home's ``phiguard.toml`` (defaults if absent)."""
    path = settings.home / CONFIG_NAME
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    section = doc.get(MONITOR_SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError("[monitor] must be a table")
    unknown = set(section) - set(MonitorSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [monitor]: {', '.join(sorted(unknown))}")
    try:
        monitor = MonitorSettings(**section)
    except TypeError as exc:
        raise ConfigError(f"[monitor] is malformed: {exc}") from None
    if isinstance(monitor.smtp_to, str):
        monitor.smtp_to = [monitor.smtp_to]
    if not monitor.console_url:
        monitor.console_url = settings.public_base
    return monitor


def monitor_secret(
    settings: Settings, env: str, file_setting: str = "", *, minimum: int = 0
) -> str | None:
    """A notification secret from ``$env``, ``$env_FILE`` or a file the settings name.

    None when none is configured.  Outside demo mode a default secret, or one shorter
    than ``minimum`` characters, is refused.
    """
    value = os.environ.get(env)
    source = env
    file_name = os.environ.get(f"{env}_FILE") or file_setting
    if value is None and file_name:
        try:
            value = Path(settings.path(file_name)).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the secret file for {env}: {exc.strerror}") from None
        source = f"the file for {env}"
    if value is None:
        return None
    if not settings.is_demo and (value in DEFAULT_SECRETS or len(value) < minimum):
        raise ConfigError(f"refusing a default or short secret from {source} outside demo mode")
    return value


# End of the monitoring block.
