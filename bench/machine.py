"""What the numbers were measured on: CPU, cores, memory, library versions, load."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cryptography_openssl() -> str:
    # Only to name the OpenSSL that does the AES-GCM work; phiguard itself keeps all
    # use of cryptography inside phiguard.crypto.
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        return str(backend.openssl_version_text())
    except Exception:  # pragma: no cover - informational only
        return "unknown"


def source_state() -> str:
    """Which phiguard code was measured: git HEAD, files changed since, and a digest
    of every source file as it was (other work may be changing the tree)."""
    root = Path(__file__).resolve().parent.parent
    src = root / "src" / "phiguard"
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"src digest {digest.hexdigest()[:12]}"
    return (
        f"git {head} + {len(changed)} changed file(s) in src; src digest {digest.hexdigest()[:12]}"
    )


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe() -> dict[str, str]:
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count() or "unknown"),
        "memory": _memory(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "OpenSSL (cryptography)": _cryptography_openssl(),
        "OpenSSL (Python ssl)": ssl.OPENSSL_VERSION,
        "cryptography": _version("cryptography"),
        "SQLAlchemy": _version("sqlalchemy"),
        "fhir.resources": _version("fhir.resources"),
        "phiguard source": source_state(),
        "load average at start": load_average(),
    }


def render(info: dict[str, str]) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in info.items())
