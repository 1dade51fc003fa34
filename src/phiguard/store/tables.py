"""Table definitions (SQLAlchemy Core: the hot paths need no ORM).

Times are stored as integer microseconds since the epoch so that SQLite and
PostgreSQL compare and sort them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
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

# Per client address (IPv6: per /64), a token bucket of failed log-ins
# (identity/throttle.py).  ``updated`` in epoch microseconds; rows whose bucket has
# refilled completely are swept.
address_throttle = Table(
    "address_throttle",
    metadata,
    Column("address_key", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Index("ix_address_throttle_updated", "updated"),
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

# Pending WebAuthn ceremonies (identity/challenges.py): one challenge per (session
# handle, ceremony), single use, two minutes.  In the database so that the two halves
# of a ceremony may reach different server processes.
webauthn_challenges = Table(
    "webauthn_challenges",
    metadata,
    Column("handle", String(64), nullable=False),
    Column("ceremony", String(16), nullable=False),
    Column("challenge", LargeBinary(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("handle", "ceremony"),
    Index("ix_webauthn_challenges_expiry", "expires_at"),
)

# --- OAuth2 / SMART on FHIR (see src/phiguard/identity/tokens.py, oauth.py) ---------

# Registered applications.  ``kind``: ``public`` (a browser or mobile app: PKCE, no
# secret), ``backend`` (SMART Backend Services: authenticates with a JWT signed by a
# key in ``jwks``).  ``jwks`` holds public keys only.  ``scopes`` is the space-separated
# ceiling of what the client may ever be granted; ``redirect_uris`` a JSON array.
oauth_clients = Table(
    "oauth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("redirect_uris", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("jwks", Text, nullable=True),
    Column("roles", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("purposes", Text, nullable=True),  # space-separated; NULL: the kind's default
)

# Authorization codes (single use, 60 s), kept only as SHA-256 of the code.
oauth_codes = Table(
    "oauth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("code_challenge_method", String(8), nullable=False),
    Column("nonce", String(256), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("auth_time", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False, default=False, server_default=false()),
    # What the code was exchanged for, so that presenting it again revokes those tokens.
    Column("family_id", String(64), nullable=True),
    Column("access_jti", String(64), nullable=True),
    Column("access_expires_at", BigInteger, nullable=True),
    # The console session that approved it (its handle: the hash of its id).
    Column("session_handle", String(64), nullable=True),
)

# Refresh tokens, as SHA-256.  Each use rotates the token (``rotated_at`` set, a new
# row in the same ``family_id``); presenting a rotated token again is reuse: the whole
# family is revoked.
oauth_refresh_tokens = Table(
    "oauth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient", String(64), nullable=True),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("rotated_at", BigInteger, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False, server_default=false()),
    # The access token issued with this refresh token: revoked with the family.
    Column("access_jti", String(64), nullable=True),
    Column("access_expires_at", BigInteger, nullable=True),
    # online_access only: the console session whose sign-out ends the family.
    Column("session_handle", String(64), nullable=True),
    Index("ix_oauth_refresh_family", "family_id"),
    Index("ix_oauth_refresh_client", "client_id"),
    Index("ix_oauth_refresh_user", "user_id"),
)

# Access tokens revoked before they expired (by id); rows are purged after expiry.
oauth_revoked_tokens = Table(
    "oauth_revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# Ids of client assertions (private_key_jwt) already used: each may be used once.
oauth_assertions = Table(
    "oauth_assertions",
    metadata,
    Column("key", String(64), primary_key=True),  # SHA-256 of client_id + jti
    Column("expires_at", BigInteger, nullable=False),
)

# RSA keys that sign OpenID Connect id_tokens (RS256).  The private key is sealed with
# the ``__identity__`` data key (version ``dek_version``); the public JWK is served at
# ``/.well-known/jwks.json``.  Retired keys stay listed until their tokens expire.
oauth_signing_keys = Table(
    "oauth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("public_jwk", Text, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True, server_default=true()),
)

# --- access control (see src/phiguard/access/ and docs/access.md) -------------------
# Begin of the access block: relationship index, staff roles, break-the-glass, policies.

# The relationship index: one row per patient holding the facts access decisions need
# from all of the patient's CareTeam, Encounter, Appointment, EpisodeOfCare, Consent
# and Patient resources, sealed with the patient's own data key and bound to (tenant,
# patient key, patient compartment).  ``patient_key`` is a keyed hash of the patient id
# (BLAKE2b under a key derived from the blind-index key), so the table names no
# patient, practitioner, department or date; shredding the patient's key makes the
# row unreadable.  ``change_tag`` is drawn at random at every
# rewrite, so caches see another process's change without unsealing anything (and the
# tag counts nothing).  Derived data: ``phiguard access reindex`` rebuilds it.
access_facts = Table(
    "access_facts",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("patient_key", LargeBinary(16), nullable=False),
    Column("change_tag", BigInteger, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tenant", "patient_key"),
)

# PractitionerRole -> Practitioner and department (staff directory, not PHI), so a
# participant named by its PractitionerRole is matched to the user behind it.
access_practitioner_roles = Table(
    "access_practitioner_roles",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("role_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    Column("organization_id", String(64), nullable=True),
    Column("active", Boolean, nullable=False),
    PrimaryKeyConstraint("tenant", "role_id"),
    Index("ix_access_practitioner_roles", "tenant", "practitioner_id"),
)

# Break-the-glass grants, each also the review task it opened.  ``patient_id`` is a
# resource id (in the clear like the compartments of resource_heads); the reason and
# the reviewer's note may describe the patient, so they are sealed with the
# ``__identity__`` data key (``reason``/``note``, with their key versions).
# ``review_status``: open | closed.
access_break_glass = Table(
    "access_break_glass",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("declared_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("reason_dek_version", Integer, nullable=False),
    Column("reason", LargeBinary, nullable=False),
    Column("review_status", String(16), nullable=False),
    Column("reviewed_by", String(64), nullable=True),
    Column("reviewed_at", BigInteger, nullable=True),
    Column("note_dek_version", Integer, nullable=True),
    Column("note", LargeBinary, nullable=True),
    Index("ix_access_break_glass_user", "tenant", "user_id", "expires_at"),
    Index("ix_access_break_glass_review", "tenant", "review_status"),
)

# Every policy set the security administrator installed (policies are not PHI: the
# texts are stored in the clear).  The newest generation is the running set; servers
# poll ``max(generation)`` and load a newer one.  ``bundle`` is JSON: schema, policy
# files, resource types, masks; ``sha256`` is over that JSON.
access_policy_sets = Table(
    "access_policy_sets",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("bundle", Text, nullable=False),
    Column("installed_at", BigInteger, nullable=False),
    Column("installed_by", String(64), nullable=False),
    Column("comment", Text, nullable=False),
    PrimaryKeyConstraint("tenant", "generation"),
)

# End of the access block.

# --- privacy monitoring (see src/phiguard/monitor/ and docs/monitoring.md) ------------
# Begin of the monitoring block: datasets at rest, alerts, cases, notes, suppression.

# One row per ingested file (or extraction from the ledger).  ``digest`` is a keyed
# hash (HMAC under a key derived from the ``__monitor__`` data key) of the file's
# bytes, so a reload of the same export is recognised without storing anything that
# confirms a guess about its content.  ``state``: loading | active | replaced.
monitor_loads = Table(
    "monitor_loads",
    metadata,
    Column("load_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # access | staff | patients | care | auth
    Column("digest", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("loaded_at", BigInteger, nullable=False),
    Column("loaded_by", String(200), nullable=False),
    Index("ix_monitor_loads_kind", "tenant", "kind", "state"),
)

# The rows of a load: Arrow IPC bytes of a Polars frame, sealed with the
# ``__monitor__`` data key and bound to (tenant, kind, load, chunk).  ``first_at`` and
# ``last_at`` bound the chunk's event times (access and auth only) so a scan ``since``
# a date opens only the chunks it needs.
monitor_chunks = Table(
    "monitor_chunks",
    metadata,
    Column("load_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("first_at", BigInteger, nullable=True),
    Column("last_at", BigInteger, nullable=True),
    Column("dek_version", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    PrimaryKeyConstraint("load_id", "seq"),
)

# Alerts, keyed by the detector's deterministic id (a re-scan finds the same id and
# adds nothing).  Identifiers and the score are in the clear for the queue; the
# reason, evidence and source rows may quote PHI, so they are sealed (``sealed``).
# ``status``: open | in-review | closed | suppressed.
monitor_alerts = Table(
    "monitor_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("detector", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("patient_ids", Text, nullable=False),  # JSON array
    Column("score", Float, nullable=False),
    Column("first_event_at", BigInteger, nullable=False),
    Column("last_event_at", BigInteger, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("case_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("assignee", String(200), nullable=True),
    Column("disposition", String(32), nullable=True),
    Column("suppressed_by", String(32), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("notified_at", BigInteger, nullable=True),
    Index("ix_monitor_alerts_queue", "tenant", "status", "score"),
    Index("ix_monitor_alerts_user", "tenant", "user_id"),
    Index("ix_monitor_alerts_case", "case_id"),
)

# Which alerts name which patient: the patient drill-down without parsing JSON.
monitor_alert_patients = Table(
    "monitor_alert_patients",
    metadata,
    Column("patient_id", String(64), nullable=False),
    Column("alert_id", String(64), nullable=False),
    PrimaryKeyConstraint("patient_id", "alert_id"),
    Index("ix_monitor_alert_patients_alert", "alert_id"),
)

# Cases group one user's alerts; same status vocabulary and sealing as alerts.
monitor_cases = Table(
    "monitor_cases",
    metadata,
    Column("case_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("patient_ids", Text, nullable=False),  # JSON array
    Column("score", Float, nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("assignee", String(200), nullable=True),
    Column("disposition", String(32), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("notified_at", BigInteger, nullable=True),
    Index("ix_monitor_cases_queue", "tenant", "status", "score"),
    Index("ix_monitor_cases_user", "tenant", "user_id"),
)

# Reviewers' notes on an alert or a case, sealed (they may quote PHI).
monitor_notes = Table(
    "monitor_notes",
    metadata,
    Column("note_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("target", String(64), nullable=False),  # an alert or case id
    Column("author", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Index("ix_monitor_notes_target", "target", "created_at"),
)

# Suppression rules: a detector with a user and/or a patient, until ``expires_at``.
# A new alert a live rule matches is stored with status ``suppressed``, not queued.
# The reason is sealed (it may say why a relationship is benign).
monitor_suppressions = Table(
    "monitor_suppressions",
    metadata,
    Column("rule_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("detector", String(64), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("dek_version", Integer, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Index("ix_monitor_suppressions_detector", "tenant", "detector", "expires_at"),
)

# A placeholder until incident management exists (``program/incidents``): closing an
# alert or case as ``breach`` writes one row here for that module to take over
# (it sets ``incident_id`` and ``taken_at``).  Nothing else reads it yet.
monitor_incident_referrals = Table(
    "monitor_incident_referrals",
    metadata,
    Column("referral_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("alert_id", String(64), nullable=True),
    Column("case_id", String(64), nullable=True),
    Column("referred_by", String(200), nullable=False),
    Column("referred_at", BigInteger, nullable=False),
    Column("incident_id", String(64), nullable=True),
    Column("taken_at", BigInteger, nullable=True),
    Index("ix_monitor_referrals_open", "tenant", "taken_at"),
)

# What happened to each alert and case (raised, assigned, noted, closed...): the
# timeline of the case page.  ``detail`` is JSON with ids and codes only, never note
# text or evidence; the same actions also go to the audit ledger.
monitor_events = Table(
    "monitor_events",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("target", String(64), nullable=False),  # an alert or case id
    Column("at", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_monitor_events_target", "target", "at"),
)

# Where a follower stopped (``watch``: the next ledger sequence number to read).
monitor_cursors = Table(
    "monitor_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# End of the monitoring block.


# --- FHIR Bulk Data export (fhir/bulk.py) --------------------------------------------
# A job per kick-off, owned by the principal that asked; ``request_url`` is the
# kick-off URL (types and _since, no PHI).  Its output files are NDJSON sealed under
# the ``__export__`` data key, bound to (tenant, job, seq); both go an hour after the
# job completes, or when its owner deletes it.
export_jobs = Table(
    "export_jobs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("request_url", Text, nullable=False),
    Column("status", String(16), nullable=False),  # in-progress | complete | error
    Column("exported", BigInteger, nullable=False),
    Column("requested_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
)

export_files = Table(
    "export_files",
    metadata,
    Column("job_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    Column("dek_version", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    PrimaryKeyConstraint("job_id", "seq"),
)
