"""The exception hierarchy.

One base per domain so callers can catch a whole domain (``except CryptoError``)
without knowing its internals, and so the API layer can map each domain to one
HTTP status and one OperationOutcome code in a single place.  Messages never carry
PHI: they name resources by type and id only.
"""

from __future__ import annotations


class PhiGuardError(Exception):
    """Base of every error phiguard raises on purpose."""


class ConfigError(PhiGuardError):
    """Settings are missing, malformed or unsafe (e.g. default secrets outside demo)."""


class CryptoError(PhiGuardError):
    """Key or cipher failure."""


class DecryptionError(CryptoError):
    """The one opaque error for every failure to open a ciphertext.

    Whether the tag was wrong, the key was shredded, the data was moved to another
    row or the header was damaged, the caller learns only that it did not open.
    """

    def __init__(self, where: str = "") -> None:
        super().__init__(f"ciphertext could not be opened{': ' + where if where else ''}")
        self.where = where


class KeyProviderError(CryptoError):
    """The key provider is missing, locked, misconfigured or refused an operation."""


class WrongPassphraseError(KeyProviderError):
    """The passphrase does not open the key file."""


class KeyShreddedError(CryptoError):
    """The data key of a compartment was destroyed on purpose (crypto-shredding)."""


class StoreError(PhiGuardError):
    """Database-level failure."""


class RecordsError(PhiGuardError):
    """Base of the records domain (the FHIR store semantics)."""


class NotFound(RecordsError):
    """The resource does not exist, or the caller may not know that it exists."""


class Gone(RecordsError):
    """The resource was deleted (or its compartment shredded)."""


class VersionConflict(RecordsError):
    """``If-Match`` named a version that is not current."""


class InvalidResource(RecordsError):
    """The resource failed validation; ``issues`` lists each problem."""

    def __init__(self, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.issues = issues or [message]


class InvalidSearch(RecordsError):
    """A search parameter is unknown or malformed."""


class AccessDenied(PhiGuardError):
    """The access layer refused the interaction."""

    def __init__(self, message: str = "access denied", reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


class AuthenticationError(PhiGuardError):
    """The caller could not be authenticated (one generic message for every cause)."""

    def __init__(self) -> None:
        super().__init__("authentication failed")


class AuditError(PhiGuardError):
    """An audit event could not be recorded; the interaction that caused it must fail."""


class BackupError(PhiGuardError):
    """A backup could not be created, opened or restored."""


class ImportFailed(PhiGuardError):
    """An import input could not be read."""


class IdentityError(PhiGuardError):
    """Base of the identity domain: workforce accounts, passwords, second factors."""


class PasswordPolicyError(IdentityError):
    """A chosen password was refused; ``reason`` tells the user what to change.

    The reason describes the rule that failed and never quotes the password, so the
    message is safe to show, log or put in an OperationOutcome.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"password refused: {reason}")
        self.reason = reason


class InvalidPasswordHash(IdentityError):
    """A stored password hash cannot be parsed: corruption or a foreign format."""


class EnrolmentError(IdentityError):
    """A second factor is not in the state the operation needs (missing, already set)."""


class AccessError(PhiGuardError):
    """Base of the access domain: the policy engine and its configuration."""


class PolicyLoadError(AccessError):
    """A policy set was refused at load; the set loaded before it stays in force.

    ``problems`` lists each reason (syntax, schema validation, missing ``@id``, a mask
    naming an unknown policy...), naming files and policy ids, never request data.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("policy set refused: " + "; ".join(problems))
        self.problems = problems


class MonitorError(PhiGuardError):
    """A monitoring source, mapping, scan or alert action could not be carried out."""


# -- monitoring: sources, workflow, notifications ---------------------------------------


class MappingError(MonitorError):
    """A column mapping file is malformed or names a column that does not exist."""


class UnknownAlert(MonitorError):
    """No alert, case or suppression rule has the id that was given."""


class WorkflowError(MonitorError):
    """An alert or case is not in a state that allows the requested action."""


class NotificationError(MonitorError):
    """A notification could not be delivered (the message says which channel, never PHI)."""
