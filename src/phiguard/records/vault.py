"""The process-wide services behind every repository.

A ``Vault`` is built once at start-up (engine, keyring, blind indexer, access
policy, audit sink, clock) and hands out a ``Repository`` per request.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from phiguard.clock import Clock, SystemClock
from phiguard.crypto.blind_index import BlindIndexer
from phiguard.crypto.keyring import INDEX_COMPARTMENT, Keyring
from phiguard.errors import KeyProviderError

from .context import AccessContext
from .hooks import AccessPolicy, AuditSink, NullAuditSink, OperatorOnlyPolicy, WriteObserver
from .repository import Repository


class Cipher(Protocol):
    """How record bodies are sealed: by compartment key, inside the caller's transaction."""

    def seal(
        self, compartment: str, plaintext: bytes, associated: bytes, conn: Connection
    ) -> tuple[int, bytes]: ...

    def open(
        self,
        compartment: str,
        key_version: int,
        token: bytes,
        associated: bytes,
        where: str,
        conn: Connection,
    ) -> bytes: ...


class KeyringCipher:
    """AES-256-GCM under the compartment's data key (the only mode outside benchmarks)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def seal(
        self, compartment: str, plaintext: bytes, associated: bytes, conn: Connection
    ) -> tuple[int, bytes]:
        sealer = self.keyring.current_sealer(compartment, conn)
        return sealer.key_version, sealer.seal(plaintext, associated)

    def open(
        self,
        compartment: str,
        key_version: int,
        token: bytes,
        associated: bytes,
        where: str,
        conn: Connection,
    ) -> bytes:
        return self.keyring.sealer(compartment, key_version, conn).open(token, associated, where)


class PlaintextCipherForBenchmarks:
    """Stores bodies in the clear. Exists only as the baseline that benchmarks compare
    encryption against; nothing in phiguard's configuration can select it."""

    def seal(
        self, compartment: str, plaintext: bytes, associated: bytes, conn: Connection
    ) -> tuple[int, bytes]:
        return 0, plaintext

    def open(
        self,
        compartment: str,
        key_version: int,
        token: bytes,
        associated: bytes,
        where: str,
        conn: Connection,
    ) -> bytes:
        return token


class Vault:
    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        *,
        tenant: str = "default",
        policy: AccessPolicy | None = None,
        audit: AuditSink | None = None,
        clock: Clock | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.tenant = tenant
        self.policy: AccessPolicy = policy or OperatorOnlyPolicy()
        self.audit: AuditSink = audit or NullAuditSink()
        self.clock: Clock = clock or keyring.clock or SystemClock()
        self.cipher: Cipher = cipher or KeyringCipher(keyring)
        self.indexer = self._open_indexer()
        # Derived indexes kept in step with every write (the access relationship index).
        self.observers: list[WriteObserver] = []

    def _open_indexer(self) -> BlindIndexer:
        """The blind indexer, keyed from the tenant's index data key (created on first use).

        Deriving the root from a data key puts it under the same wrapping, rewrap and
        backup rules as every other key.
        """
        for _attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    root = self.keyring.current_sealer(INDEX_COMPARTMENT, conn)
                break
            except IntegrityError:  # another process created it first
                self.keyring.forget(INDEX_COMPARTMENT)
        else:
            raise KeyProviderError("the blind-index key could not be created")
        return BlindIndexer(root.derive(b"phiguard/blind-index-root"), self.tenant)

    def repository(self, ctx: AccessContext) -> Repository:
        return Repository(self, ctx)
