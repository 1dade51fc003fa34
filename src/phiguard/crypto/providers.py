"""Key providers: where key-encryption keys (KEKs) live.

A provider wraps and unwraps data keys; the KEK itself never leaves it (for the local
key file the KEK is only ever in this process's memory, sealed under a passphrase on
disk; for a PKCS#11 HSM it never leaves the token).  Providers keep every KEK version
they ever had so that old wrapped keys open after a rotation (the newest wraps, all
unwrap), and ``rewrap`` moves old data keys forward.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from phiguard.errors import KeyProviderError, WrongPassphraseError

from .envelope import KEY_LEN, NONCE_LEN, aad, new_key


@dataclass(frozen=True)
class WrappedKey:
    """A data key sealed by one KEK version of one provider."""

    kek_version: int
    blob: bytes


class KeyProvider(Protocol):
    """What the keyring needs from a place that holds KEKs."""

    name: str

    def current_version(self) -> int: ...

    def versions(self) -> list[int]: ...

    def wrap(self, key: bytes, associated: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, associated: bytes) -> bytes: ...

    def rotate(self) -> int:
        """Create a new KEK version that wraps from now on; return its number."""
        ...

    def describe(self) -> dict[str, str]: ...


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


# OWASP's scrypt recommendation (N=2^17, r=8, p=1): ~0.3 s and 128 MiB per derivation,
# paid once per process when the key file is opened.
DEFAULT_SCRYPT = {"n": 2**17, "r": 8, "p": 1}
MAX_SCRYPT_N = 2**20
KEYFILE_FORMAT = "phiguard-keyfile/1"


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_LEN, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(passphrase.encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keyfile-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class LocalKeyFile:
    """KEKs in a file, each sealed with AES-256-GCM under a scrypt-derived passphrase key.

    The passphrase is given by the caller (from ``PHIGUARD_PASSPHRASE``, a file or a
    prompt: see ``phiguard.config``), never from a command-line argument.
    """

    name = "local-file"

    def __init__(self, path: Path, passphrase: str) -> None:
        self.path = Path(path)
        self._passphrase = passphrase
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raise KeyProviderError(f"key file not found: {self.path}") from None
        except (ValueError, OSError) as exc:
            raise KeyProviderError(f"key file unreadable: {self.path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != KEYFILE_FORMAT:
            raise KeyProviderError(f"not a phiguard key file: {self.path}")
        self._doc: dict[str, Any] = doc
        # A damaged or hand-edited file must fail as a KeyProviderError (one CLI line),
        # not as whichever KeyError/ValueError/TypeError the damage happens to cause.
        try:
            kdf = doc["kdf"]
            self._params = {k: int(kdf[k]) for k in ("n", "r", "p")}
            if not (
                2**10 <= self._params["n"] <= MAX_SCRYPT_N
                and self._params["r"] <= 32
                and self._params["p"] <= 16
            ):
                # A hand-edited cost would make every start-up hang or exhaust memory.
                raise ValueError("scrypt parameters out of range")
            self._salt = _unb64(kdf["salt"])
            entries = [(int(e["version"]), _unb64(e["sealed"])) for e in doc["keks"]]
            self._wrapping = AESGCM(_derive(passphrase, self._salt, self._params))
        except (KeyError, TypeError, ValueError):
            raise KeyProviderError(f"key file damaged: {self.path}") from None
        self._keks: dict[int, AESGCM] = {}
        for version, sealed in entries:
            if len(sealed) != NONCE_LEN + KEY_LEN + 16:
                raise KeyProviderError(f"key file damaged: {self.path}")
            try:
                raw = self._wrapping.decrypt(
                    sealed[:NONCE_LEN], sealed[NONCE_LEN:], aad("phiguard-kek", version)
                )
            except InvalidTag:
                raise WrongPassphraseError("wrong passphrase for the key file") from None
            self._keks[version] = AESGCM(raw)
        if not self._keks:
            raise KeyProviderError(f"key file holds no key: {self.path}")

    @classmethod
    def create(
        cls, path: Path, passphrase: str, *, scrypt_params: dict[str, int] | None = None
    ) -> LocalKeyFile:
        """Write a new key file with one KEK; refuses to overwrite an existing one."""
        path = Path(path)
        if path.exists():
            raise KeyProviderError(f"key file already exists: {path}")
        if not passphrase:
            raise KeyProviderError("an empty passphrase cannot protect a key file")
        params = dict(scrypt_params or DEFAULT_SCRYPT)
        salt = secrets.token_bytes(16)
        doc: dict[str, Any] = {
            "format": KEYFILE_FORMAT,
            "kdf": {"name": "scrypt", **params, "salt": _b64(salt)},
            "keks": [],
        }
        wrapping = AESGCM(_derive(passphrase, salt, params))
        doc["keks"].append(cls._seal_kek(wrapping, 1, new_key()))
        _atomic_write(path, json.dumps(doc, indent=2).encode())
        return cls(path, passphrase)

    @staticmethod
    def _seal_kek(wrapping: AESGCM, version: int, kek: bytes) -> dict[str, Any]:
        nonce = secrets.token_bytes(NONCE_LEN)
        sealed = nonce + wrapping.encrypt(nonce, kek, aad("phiguard-kek", version))
        return {
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sealed": _b64(sealed),
        }

    def current_version(self) -> int:
        return max(self._keks)

    def versions(self) -> list[int]:
        return sorted(self._keks)

    def wrap(self, key: bytes, associated: bytes) -> WrappedKey:
        version = self.current_version()
        nonce = secrets.token_bytes(NONCE_LEN)
        blob = nonce + self._keks[version].encrypt(nonce, key, aad("dek", version) + associated)
        return WrappedKey(version, blob)

    def unwrap(self, wrapped: WrappedKey, associated: bytes) -> bytes:
        kek = self._keks.get(wrapped.kek_version)
        if kek is None:
            raise KeyProviderError(f"key file has no KEK version {wrapped.kek_version}")
        blob = wrapped.blob
        try:
            return kek.decrypt(
                blob[:NONCE_LEN], blob[NONCE_LEN:], aad("dek", wrapped.kek_version) + associated
            )
        except InvalidTag:
            raise KeyProviderError("a wrapped data key did not open under its KEK") from None

    def rotate(self) -> int:
        version = self.current_version() + 1
        kek = new_key()
        doc = json.loads(json.dumps(self._doc))
        doc["keks"].append(self._seal_kek(self._wrapping, version, kek))
        _atomic_write(self.path, json.dumps(doc, indent=2).encode())
        self._doc = doc
        self._keks[version] = AESGCM(kek)
        return version

    def describe(self) -> dict[str, str]:
        return {
            "provider": self.name,
            "file": str(self.path),
            "kdf": "scrypt n={n} r={r} p={p}".format(**self._params),
            "kek_versions": ",".join(str(v) for v in self.versions()),
            "current": str(self.current_version()),
        }
