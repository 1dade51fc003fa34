"""Table definitions (SQLAlchemy Core: the hot paths need no ORM).

Times are stored as integer microseconds since the epoch so that SQLite and
PostgreSQL compare and sort them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    true,
)

metadata = MetaData()

# Every version of every resource, sealed.  ``body`` is NULL for a delete marker.
resources = Table(
    "resources",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("compartment", String(128), nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("body", LargeBinary, nullable=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("tenant", "rtype", "rid", "version"),
    Index("ix_resources_compartment", "tenant", "compartment"),
)

# The current version of each resource: what search and read start from.
resource_heads = Table(
    "resource_heads",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("rid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("compartment", String(128), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    PrimaryKeyConstraint("tenant", "rtype", "rid"),
    Index("ix_heads_compartment", "tenant", "compartment", "rtype"),
    Index("ix_heads_rid", "tenant", "rid"),
    Index("ix_heads_updated", "tenant", "rtype", "last_updated"),
)

# Blind-index tokens of current versions only: keyed HMACs, never values.
search_tokens = Table(
    "search_tokens",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("token", LargeBinary(16), nullable=False),
    Column("rid", String(64), nullable=False),
    PrimaryKeyConstraint("tenant", "rtype", "param", "token", "rid"),
    Index("ix_tokens_resource", "tenant", "rtype", "rid"),
)

# Data keys (DEKs), each wrapped by one KEK version of the key provider.
data_keys = Table(
    "data_keys",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("compartment", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("wrapped", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False),  # active | retired | shredded
    Column("created_at", BigInteger, nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant", "compartment", "version"),
    Index("ix_data_keys_kek", "provider", "kek_version"),
)

# API tokens that stand in for the identity layer (the bootstrap admin token).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

# Import units already committed (file digest + unit index), so a killed import resumes.
import_journal = Table(
    "import_journal",
    metadata,
    Column("source", String(64), nullable=False),
    Column("unit", Integer, nullable=False),
    Column("resources", Integer, nullable=False),
    Column("done_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("source", "unit"),
)

# --- the audit ledger (its own database under SQLite: see docs/ARCHITECTURE.md) ------

# One row per event: the canonical leaf bytes, their RFC 9162 leaf hash and a keyed
# MAC over (seq, leaf hash), so no entry can be forged or edited without the key.
audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded", BigInteger, nullable=False),
    Column("leaf", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("mac", LargeBinary(32), nullable=False),
    Index("ix_audit_entries_recorded", "recorded"),
)

# Perfect-subtree hashes (level >= 1), written as the tree grows: proofs read
# O(log^2 n) of them instead of the whole log.
audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

# Which entries name which patient, for the access report and AuditEvent search.
# Derived from the entries (rebuildable), so it is not part of the tree.
audit_patients = Table(
    "audit_patients",
    metadata,
    Column("patient", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("recorded", BigInteger, nullable=False),
    PrimaryKeyConstraint("patient", "seq"),
)

# Signed tree heads.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("signed_at", BigInteger, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# Checkpoint signing keys: public in the clear, private sealed by a keyring data key.
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("public", LargeBinary(32), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
)

# Small settings the database itself must remember (schema facts, install id).
settings = Table(
    "settings",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)


# The ledger's tables: under SQLite they live in their own database file.
AUDIT_TABLES = frozenset(
    {"audit_entries", "audit_nodes", "audit_patients", "audit_checkpoints", "audit_keys"}
)

# --- identity (workforce accounts' credentials; see src/phiguard/identity/) -----------

# TOTP shared secrets, sealed with the ``__identity__`` data key and bound to the user
# id.  ``last_step`` is the newest accepted RFC 6238 time step (replay protection).
totp_secrets = Table(
    "totp_secrets",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("confirmed", Boolean, nullable=False),
    Column("last_step", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# Single-use recovery codes: salted SHA-256 of high-entropy codes, never the codes.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("user_id", String(128), nullable=False),
    Column("code_hash", LargeBinary(32), nullable=False),
    Column("salt", LargeBinary(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("user_id", "code_hash"),
)

# Consecutive failed logins per account and the hard lock, so both survive restarts
# and are shared by every process.
account_throttle = Table(
    "account_throttle",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=True),
    Column("last_failure", BigInteger, nullable=False),
)

# Workforce accounts.  ``roles`` is a JSON array (text, so SQLite and PostgreSQL store
# it alike); ``password_hash`` is argon2id in PHC format, never a password.
# ``terminated_at`` is the effective termination date that monitoring compares access
# times with, so it may lie before the moment the account was terminated.
users = Table(
    "users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("practitioner_id", String(64), nullable=True),
    Column("roles", Text, nullable=False),
    Column("department", String(128), nullable=True),
    Column("status", String(16), nullable=False),  # active | suspended | terminated
    Column("password_hash", String(256), nullable=False),
    Column("password_changed_at", BigInteger, nullable=False),
    Column("mfa_required", Boolean, nullable=False, default=True, server_default=true()),
    Column("created_at", BigInteger, nullable=False),
    Column("suspended_at", BigInteger, nullable=True),
    Column("terminated_at", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_users_tenant_status", "tenant", "status"),
    Index("ix_users_practitioner", "tenant", "practitioner_id"),
)

# Per account, the moment before which every credential issued to it (sessions, OAuth
# tokens) is void: set on suspension, termination, password change and MFA reset.
# One row per account that was ever revoked; the time only moves forward.
revocations = Table(
    "revocations",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("revoked_before", BigInteger, nullable=False),
)

# WebAuthn (passkey / security key) credentials; several per account.  The public key
# is COSE-encoded as the authenticator sent it (public, so stored in the clear);
# ``credential_id`` is base64url.  ``sign_count`` is the authenticator's signature
# counter, and ``flagged_clone`` is set when it went backwards: the credential is then
# refused until an administrator removes it.  ``transports`` is a JSON array.
webauthn_credentials = Table(
    "webauthn_credentials",
    metadata,
    Column("credential_id", String(1400), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", Text, nullable=False),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Column("flagged_clone", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_webauthn_credentials_user", "user_id"),
)

# Server-side console sessions.  ``id_hash`` is the SHA-256 (hex) of the 256-bit random
# session id; the id itself lives only in the cookie, so a database dump opens no
# session.  ``csrf_hash`` likewise holds only the SHA-256 of the CSRF token.  ``aal``
# is 1 (password only) or 2 (password and a second factor); ``reauth_at`` is the last
# time the user proved who they are (log-in, step-up or re-authentication).
sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("aal", Integer, nullable=False),
    Column("reauth_at", BigInteger, nullable=False),
    Column("address", String(64), nullable=True),
    Column("user_agent", String(200), nullable=True),
    Column("revoked", Boolean, nullable=False, default=False, server_default=false()),
    Column("csrf_hash", String(64), nullable=False),
    Index("ix_sessions_user", "user_id"),
)
