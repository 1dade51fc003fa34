"""A key provider whose KEKs live on a PKCS#11 token (an HSM, or SoftHSM2 for tests).

Every KEK is an AES-256 secret key generated *on* the token (``CKA_TOKEN``,
``CKA_PRIVATE``, ``CKA_SENSITIVE``, not ``CKA_EXTRACTABLE``, not ``CKA_MODIFIABLE``)
and labelled ``<prefix>-v<version>``; the label is the only place the version is
recorded, so ``versions()`` is whatever the token holds.  The KEK value never leaves
the token: phiguard only asks the token to encrypt or decrypt a 32-byte data key.

Mechanism: ``CKM_AES_GCM`` with a fresh random 96-bit IV per wrap, a 128-bit tag and
the same associated data as :class:`~phiguard.crypto.providers.LocalKeyFile`
(``aad("dek", version) + associated``), so a wrapped key is bound to its KEK version
and to the row it belongs to, and the blob layout (``iv || ciphertext || tag``) is the
same as the local provider's.  GCM was chosen over ``CKM_AES_KEY_WRAP_PAD`` because
it authenticates associated data natively: key-wrap has no AAD input, so binding the
row would need a second construction (e.g. wrapping ``aad-digest || key``), which is
more code to get wrong.  SoftHSM2 2.6 supports single-part GCM through python-pkcs11;
a tag mismatch surfaces as ``CKR_GENERAL_ERROR`` (not ``CKR_ENCRYPTED_DATA_INVALID``),
which is one more reason every failure to open maps to one opaque error.  Random
96-bit IVs are safe for about 2**32 wraps per KEK; rotate long before that.

PKCS#11 logins are per application, not per session: once one session of this
process is logged in to a token, a second ``C_Login`` fails with
``CKR_USER_ALREADY_LOGGED_IN`` *without checking the PIN*, and ``C_Logout`` on any
session logs out all of them.  So every :class:`Pkcs11Hsm` on the same token in this
process shares one logged-in session (reference counted, closed with the last user),
and a later instance must present the same PIN as the one the token accepted (compared
through a keyed digest; the PIN itself is not kept by this module).  The shared
session is guarded by one lock, because python-pkcs11 sessions are not thread-safe.
The library itself must not be used across ``fork()``: open providers in the child.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    MultipleTokensReturned,
    NoSuchToken,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)

from phiguard.errors import KeyProviderError

from .envelope import KEY_LEN, NONCE_LEN, aad
from .providers import WrappedKey

if TYPE_CHECKING:
    from .providers import KeyProvider

TAG_LEN = 16
KEK_BITS = KEY_LEN * 8
_KEK_CAPABILITIES = (
    MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP
)
_KEK_TEMPLATE: dict[Attribute, Any] = {
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
}
_OPEN_FAILED = "a wrapped data key did not open under its KEK"


class _TokenKey(Protocol):
    """The part of a python-pkcs11 AES key object this module uses."""

    def encrypt(
        self, data: bytes, buffer_size: int = ..., **kwargs: Any
    ) -> bytes | Iterator[bytes]: ...

    def decrypt(
        self, data: bytes, buffer_size: int = ..., **kwargs: Any
    ) -> bytes | Iterator[bytes]: ...

    def __getitem__(self, key: Attribute) -> Any: ...


def _name(exc: BaseException) -> str:
    """The PKCS#11 error class, e.g. ``PinLocked``: diagnostic, never secret."""
    return type(exc).__name__


def _as_bytes(result: bytes | Iterator[bytes]) -> bytes:
    return result if isinstance(result, bytes) else b"".join(result)


# -- one logged-in session per (library, token) per process ---------------------------

_PIN_DIGEST_KEY = secrets.token_bytes(32)


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PIN_DIGEST_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


@dataclass(eq=False)
class _Login:
    key: tuple[str, int, bytes]
    session: Any  # pkcs11.Session
    pin_digest: bytes
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0


_LOGINS: dict[tuple[str, int, bytes], _Login] = {}
_LOGINS_LOCK = threading.Lock()


_LIBS: dict[str, Any] = {}  # by real path: one load (and C_Initialize) per library


def _load_library(library: str) -> Any:
    path = os.path.realpath(library)
    if not os.path.isfile(path):
        raise KeyProviderError(f"PKCS#11 library not found: {library}")
    with _LOGINS_LOCK:
        lib = _LIBS.get(path)
        if lib is not None:
            return lib
        try:
            # python-pkcs11 caches by the string it is given: pass the caller's spelling
            # so other code naming the library the same way shares the one load.
            lib = pkcs11.lib(library)
        except (PKCS11Error, OSError) as exc:
            raise KeyProviderError(
                f"PKCS#11 library could not be loaded or initialized: {library} ({_name(exc)})"
            ) from None
        _LIBS[path] = lib
        return lib


def _find_token(lib: Any, library: str, token_label: str) -> Any:
    try:
        return lib.get_token(token_label=token_label)
    except NoSuchToken:
        raise KeyProviderError(f"no PKCS#11 token labelled {token_label!r} in {library}") from None
    except MultipleTokensReturned:
        raise KeyProviderError(
            f"more than one PKCS#11 token labelled {token_label!r} in {library}"
        ) from None
    except PKCS11Error as exc:
        raise KeyProviderError(
            f"could not list the PKCS#11 tokens in {library} ({_name(exc)})"
        ) from None


def _acquire_login(library: str, token: Any, token_label: str, pin: str) -> _Login:
    key = (os.path.realpath(library), int(token.slot.slot_id), bytes(token.serial))
    digest = _pin_digest(pin)
    with _LOGINS_LOCK:
        login = _LOGINS.get(key)
        if login is not None:
            # The token already accepted a PIN in this process and would not check
            # this one (CKR_USER_ALREADY_LOGGED_IN), so check it against that PIN.
            if not hmac.compare_digest(login.pin_digest, digest):
                raise KeyProviderError(f"wrong PIN for PKCS#11 token {token_label!r}")
            login.users += 1
            return login
        try:
            session = token.open(rw=True, user_pin=pin)
        except (PinIncorrect, PinInvalid, PinLenRange):
            raise KeyProviderError(f"wrong PIN for PKCS#11 token {token_label!r}") from None
        except PinLocked:
            raise KeyProviderError(f"the PIN of PKCS#11 token {token_label!r} is locked") from None
        except PinExpired:
            raise KeyProviderError(
                f"the PIN of PKCS#11 token {token_label!r} has expired"
            ) from None
        except UserPinNotInitialized:
            raise KeyProviderError(
                f"PKCS#11 token {token_label!r} has no user PIN set (initialize the token)"
            ) from None
        except UserAlreadyLoggedIn:
            raise KeyProviderError(
                f"PKCS#11 token {token_label!r} is already logged in by other code in this "
                "process, so the PIN cannot be checked"
            ) from None
        except PKCS11Error as exc:
            raise KeyProviderError(
                f"PKCS#11 token {token_label!r} refused a session ({_name(exc)})"
            ) from None
        login = _Login(key=key, session=session, pin_digest=digest, users=1)
        _LOGINS[key] = login
        return login


def _release_login(login: _Login) -> None:
    with _LOGINS_LOCK:
        login.users -= 1
        if login.users > 0:
            return
        if _LOGINS.get(login.key) is login:
            del _LOGINS[login.key]
        with login.lock:
            try:
                login.session.close()  # C_Logout + C_CloseSession
            except PKCS11Error as exc:
                raise KeyProviderError(
                    f"closing the PKCS#11 session failed ({_name(exc)})"
                ) from None


# -- the provider ----------------------------------------------------------------------


class Pkcs11Hsm:
    """KEKs on a PKCS#11 token; data keys are sealed with CKM_AES_GCM on the token.

    The PIN is given by the caller (environment, file or prompt: see
    ``phiguard.config``), never from a command-line argument, and is not stored here.
    Opening a token that holds no KEK under ``key_label_prefix`` fails; use
    :meth:`create` to make version 1.
    """

    name = "pkcs11"

    def __init__(
        self,
        library: str,
        token_label: str,
        pin: str,
        key_label_prefix: str = "phiguard-kek",
    ) -> None:
        self._connect(library, token_label, pin, key_label_prefix)
        try:
            self._load_keks()
            if not self._keks:
                raise KeyProviderError(
                    f"PKCS#11 token {token_label!r} holds no KEK labelled "
                    f"'{key_label_prefix}-v<N>'; create one first (Pkcs11Hsm.create)"
                )
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(
        cls,
        library: str,
        token_label: str,
        pin: str,
        key_label_prefix: str = "phiguard-kek",
        *,
        exist_ok: bool = False,
    ) -> Pkcs11Hsm:
        """Generate KEK version 1 on the token and return the open provider.

        Like ``LocalKeyFile.create`` this refuses if the token already holds a KEK
        under this prefix, unless ``exist_ok`` (then it just opens it).
        """
        provider = cls.__new__(cls)
        provider._connect(library, token_label, pin, key_label_prefix)
        try:
            provider._load_keks()
            if provider._keks:
                if not exist_ok:
                    raise KeyProviderError(
                        f"PKCS#11 token {token_label!r} already holds a KEK labelled "
                        f"'{key_label_prefix}-v<N>'"
                    )
            else:
                provider._generate(1)
        except BaseException:
            provider.close()
            raise
        return provider

    def _connect(self, library: str, token_label: str, pin: str, prefix: str) -> None:
        if not prefix or not token_label:
            raise KeyProviderError("a PKCS#11 token label and key label prefix are required")
        self.library = library
        self.token_label = token_label
        self.key_label_prefix = prefix
        self._label_re = re.compile(rf"{re.escape(prefix)}-v([1-9][0-9]{{0,8}})")
        self._keks: dict[int, list[_TokenKey]] = {}
        self._login: _Login | None = None
        lib = _load_library(library)
        token = _find_token(lib, library, token_label)
        self._login = _acquire_login(library, token, token_label, pin)
        self._lock = self._login.lock

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Release this provider's share of the token session (logs out with the last)."""
        login, self._login = getattr(self, "_login", None), None
        self._keks = {}
        if login is not None:
            _release_login(login)

    def __enter__(self) -> Pkcs11Hsm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _session(self) -> Any:
        if self._login is None:
            raise KeyProviderError("the PKCS#11 provider is closed")
        return self._login.session

    # -- KEKs on the token -------------------------------------------------------------
    def _load_keks(self) -> None:
        """Re-read the KEK versions from the token (labels are the source of truth)."""
        with self._lock:
            session = self._session()
            found: dict[int, list[_TokenKey]] = {}
            try:
                for obj in session.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
                ):
                    match = self._label_re.fullmatch(obj[Attribute.LABEL] or "")
                    if match is None:
                        continue
                    if not (
                        isinstance(obj, pkcs11.EncryptMixin)
                        and isinstance(obj, pkcs11.DecryptMixin)
                    ):
                        raise KeyProviderError(
                            f"PKCS#11 key {match.group(0)!r} cannot encrypt and decrypt"
                        )
                    # Two keys with one label can only come from a rotation race between
                    # processes; GCM tells them apart on unwrap, so keep both.
                    found.setdefault(int(match.group(1)), []).append(cast(_TokenKey, obj))
            except PKCS11Error as exc:
                raise KeyProviderError(
                    f"could not list the KEKs on PKCS#11 token {self.token_label!r} ({_name(exc)})"
                ) from None
            self._keks = found

    def _generate(self, version: int) -> None:
        label = f"{self.key_label_prefix}-v{version}"
        with self._lock:
            try:
                kek = self._session().generate_key(
                    KeyType.AES,
                    KEK_BITS,
                    id=label.encode(),
                    label=label,
                    store=True,
                    capabilities=_KEK_CAPABILITIES,
                    template=_KEK_TEMPLATE,
                )
            except PKCS11Error as exc:
                raise KeyProviderError(
                    f"PKCS#11 token {self.token_label!r} could not generate KEK {label!r} "
                    f"({_name(exc)})"
                ) from None
            self._keks.setdefault(version, []).append(cast(_TokenKey, kek))

    def refresh(self) -> None:
        """Pick up KEK versions another process created (e.g. ``phiguard keys rotate``)."""
        self._load_keks()

    def current_version(self) -> int:
        with self._lock:
            self._session()  # raises if closed
            if not self._keks:
                raise KeyProviderError("the PKCS#11 provider holds no KEK")
            return max(self._keks)

    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._keks)

    def rotate(self) -> int:
        with self._lock:
            self._load_keks()  # another process may have rotated since we opened
            version = max(self._keks, default=0) + 1
            self._generate(version)
            return version

    # -- wrapping ----------------------------------------------------------------------
    @staticmethod
    def _params(iv: bytes, version: int, associated: bytes) -> pkcs11.GCMParams:
        return pkcs11.GCMParams(iv, aad("dek", version) + associated, TAG_LEN * 8)

    def wrap(self, key: bytes, associated: bytes) -> WrappedKey:
        iv = secrets.token_bytes(NONCE_LEN)
        with self._lock:
            version = self.current_version()
            kek = self._keks[version][0]
            try:
                sealed = _as_bytes(
                    kek.encrypt(
                        bytes(key),
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=self._params(iv, version, associated),
                    )
                )
            except PKCS11Error as exc:
                raise KeyProviderError(
                    f"PKCS#11 token {self.token_label!r} failed to wrap a data key ({_name(exc)})"
                ) from None
        return WrappedKey(version, iv + sealed)

    def unwrap(self, wrapped: WrappedKey, associated: bytes) -> bytes:
        version = wrapped.kek_version
        blob = bytes(wrapped.blob)
        with self._lock:
            candidates = self._keks.get(version)
            if candidates is None:
                self._load_keks()  # rotated by another process since we opened?
                candidates = self._keks.get(version)
            if candidates is None:
                raise KeyProviderError(f"PKCS#11 token has no KEK version {version}")
            if len(blob) < NONCE_LEN + TAG_LEN:
                raise KeyProviderError(_OPEN_FAILED)
            params = self._params(blob[:NONCE_LEN], version, associated)
            for kek in candidates:
                try:
                    return _as_bytes(
                        kek.decrypt(
                            blob[NONCE_LEN:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                        )
                    )
                except PKCS11Error:
                    continue
        raise KeyProviderError(_OPEN_FAILED)

    def describe(self) -> dict[str, str]:
        versions = self.versions()
        return {
            "provider": self.name,
            "library": self.library,
            "token": self.token_label,
            "key_label_prefix": self.key_label_prefix,
            "mechanism": "CKM_AES_GCM (AES-256 KEK on the token)",
            "kek_versions": ",".join(str(v) for v in versions),
            "current": str(max(versions)) if versions else "none",
        }


if TYPE_CHECKING:

    def _conforms(provider: Pkcs11Hsm) -> KeyProvider:
        return provider
