"""Throwaway SoftHSM2 tokens for tests.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, in ``C_Initialize``, and only sees the tokens
that exist at that moment; python-pkcs11 loads (and initializes) a library once per
process.  So this helper points ``SOFTHSM2_CONF`` at one temporary token directory per
process (per pytest-xdist worker) and creates every token it is asked for there,
*before* the library is first loaded: call it from a session-scoped fixture and ask
for all the labels you need in one call (tests can isolate from one another with a
key label prefix each rather than a token each).

If SoftHSM2 is not installed the test is skipped, except when ``CI=true``: then it
fails, because a missing component in CI must never turn into a silent skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.components import unavailable

LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
DEFAULT_LABEL = "phiguard-test"


@dataclass(frozen=True)
class SoftHsmToken:
    library: str
    label: str
    pin: str
    so_pin: str
    conf: Path


_conf: Path | None = None
_tokens: dict[str, SoftHsmToken] = {}


def find_library(candidates: tuple[str, ...] = LIBRARY_CANDIDATES) -> str | None:
    override = os.environ.get("PHIGUARD_TEST_SOFTHSM_LIB")
    for path in ((override,) if override else ()) + candidates:
        if os.path.isfile(path):
            return path
    return None


def _library_loaded(library: str) -> bool:
    pkcs11 = sys.modules.get("pkcs11")
    loaded = getattr(pkcs11, "_loaded", None) if pkcs11 is not None else None
    if not isinstance(loaded, dict):
        return False
    return any(os.path.realpath(str(so)) == os.path.realpath(library) for so in loaded)


def softhsm_tokens(
    base_dir: Path, labels: tuple[str, ...] = (DEFAULT_LABEL,)
) -> list[SoftHsmToken]:
    """Initialized SoftHSM2 tokens with these labels, made once per process.

    ``base_dir`` is used the first time only (the config and token directory live
    there); later calls return the tokens already made and add any new labels.
    """
    global _conf
    library = find_library()
    util = shutil.which("softhsm2-util")
    if library is None or util is None:
        missing = "libsofthsm2.so" if library is None else "softhsm2-util"
        unavailable(
            f"SoftHSM2 is not installed ({missing} not found; Debian: apt-get install softhsm2)"
        )

    if _conf is None:
        tokendir = Path(base_dir) / "tokens"
        tokendir.mkdir(parents=True, exist_ok=True)
        conf = Path(base_dir) / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        if _library_loaded(library):
            pytest.fail("SoftHSM2 was loaded before its test config was written")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        _conf = conf

    out: list[SoftHsmToken] = []
    for label in labels:
        token = _tokens.get(label)
        if token is None:
            if _library_loaded(library):
                pytest.fail(
                    f"SoftHSM2 token {label!r} requested after the library was loaded; "
                    "SoftHSM2 would not see it: create every token in one early call"
                )
            pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
            env = {**os.environ, "SOFTHSM2_CONF": str(_conf)}
            # The PINs are throwaway test values; softhsm2-util takes them only on argv.
            done = subprocess.run(
                [
                    util,
                    "--init-token",
                    "--free",
                    "--label",
                    label,
                    "--so-pin",
                    so_pin,
                    "--pin",
                    pin,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"softhsm2-util could not create token {label!r}: {done.stderr.strip()}"
                )
            token = SoftHsmToken(library=library, label=label, pin=pin, so_pin=so_pin, conf=_conf)
            _tokens[label] = token
        out.append(token)
    return out


def softhsm_token(base_dir: Path, label: str = DEFAULT_LABEL) -> SoftHsmToken:
    """One token (see :func:`softhsm_tokens`)."""
    return softhsm_tokens(base_dir, (label,))[0]
