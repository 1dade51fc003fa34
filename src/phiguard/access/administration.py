"""Policy administration: the running policy set, who may change it, and its history.

The shipped policies are the first generation.  A security administrator may install
another set (one file replaced, or a whole directory); the change is:

- limited to an active account holding ``security_admin``, re-authenticated for this
  change (the CLI asks for the password and a current TOTP code);
- validated exactly as the engine loads it (``compile_bundle``): a set that does not
  load is refused, recorded as a denied ``policy-change``, and the running set stays;
- stored as a new generation in ``access_policy_sets`` (policy texts are not PHI),
  with the SHA-256 of the bundle, who installed it and why;
- recorded in the ledger as a ``policy-change`` security event naming the files that
  changed with the SHA-256 of their text before and after (the texts themselves are
  in the history table, so the ledger stays small and the diff stays reviewable).

Running processes poll ``generation()`` at most every few seconds
(``PolicyRefresher``, called from ``CedarPolicy.decide``) and load a newer set.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.errors import AccessError, AuthenticationError, PolicyLoadError
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import access_policy_sets, users

from .engine import MASKS_FILE, SCHEMA_FILE, TYPES_FILE, PolicyBundle, PolicyEngine, compile_bundle

if TYPE_CHECKING:
    import datetime as dt

    from phiguard.identity.accounts import Accounts

ADMIN_ROLE = "security_admin"


class PolicyAdminError(AccessError):
    """A policy change was refused (who, or what); the running set is unchanged."""


@dataclass(frozen=True)
class PolicySet:
    """One installed generation."""

    generation: int
    sha256: str
    installed_at: dt.datetime
    installed_by: str
    comment: str
    bundle: PolicyBundle


def bundle_json(bundle: PolicyBundle) -> str:
    return json.dumps(
        {
            "schema": bundle.schema,
            "policies": dict(sorted(bundle.policies.items())),
            "resource_types": bundle.resource_types,
            "masks": bundle.masks,
        },
        sort_keys=True,
        ensure_ascii=False,
    )


def bundle_files(bundle: PolicyBundle) -> dict[str, str]:
    """File name -> text, as an administrator sees the set."""
    return {
        SCHEMA_FILE: bundle.schema,
        **dict(sorted(bundle.policies.items())),
        TYPES_FILE: bundle.resource_types,
        MASKS_FILE: bundle.masks,
    }


def with_file(bundle: PolicyBundle, name: str, text: str) -> PolicyBundle:
    """``bundle`` with one file (policy, schema, types or masks) added or replaced."""
    if name == SCHEMA_FILE:
        return PolicyBundle(text, bundle.policies, bundle.resource_types, bundle.masks, name)
    if name == TYPES_FILE:
        return PolicyBundle(bundle.schema, bundle.policies, text, bundle.masks, name)
    if name == MASKS_FILE:
        return PolicyBundle(bundle.schema, bundle.policies, bundle.resource_types, text, name)
    if not name.endswith(".cedar") or "/" in name:
        raise PolicyAdminError(
            f"{name[:80]}: a policy file ends in .cedar (or is {SCHEMA_FILE}, {TYPES_FILE}, "
            f"{MASKS_FILE})"
        )
    return bundle.with_policy(name, text)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _row_set(row: Any) -> PolicySet:
    data = json.loads(row.bundle)
    return PolicySet(
        int(row.generation),
        str(row.sha256),
        from_us(int(row.installed_at)),
        str(row.installed_by),
        str(row.comment),
        PolicyBundle(
            data["schema"],
            data["policies"],
            data["resource_types"],
            data["masks"],
            f"generation {row.generation}",
        ),
    )


class PolicyStore:
    """The installed generations of one tenant's policy set."""

    def __init__(self, engine: Engine, clock: Clock, audit: AuditSink, tenant: str = "default"):
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.tenant = tenant

    def generation(self) -> int:
        """The newest installed generation; 0 while the shipped set has never been replaced."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(access_policy_sets.c.generation)).where(
                    access_policy_sets.c.tenant == self.tenant
                )
            ).scalar()
        return int(value or 0)

    def current(self) -> PolicySet | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(access_policy_sets)
                .where(access_policy_sets.c.tenant == self.tenant)
                .order_by(access_policy_sets.c.generation.desc())
                .limit(1)
            ).first()
        return _row_set(row) if row is not None else None

    def running_bundle(self) -> PolicyBundle:
        """The set in force: the newest installed one, else the shipped one."""
        current = self.current()
        return current.bundle if current is not None else PolicyBundle.from_directory()

    def history(self) -> list[PolicySet]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(access_policy_sets)
                .where(access_policy_sets.c.tenant == self.tenant)
                .order_by(access_policy_sets.c.generation)
            ).all()
        return [_row_set(r) for r in rows]

    # -- who may -----------------------------------------------------------------------
    def check_admin(self, user_id: str, *, reauthenticated: bool) -> None:
        """``PolicyAdminError`` unless ``user_id`` is an active security administrator who
        re-authenticated for this operation."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.roles, users.c.status).where(users.c.user_id == user_id)
            ).first()
        roles = set(json.loads(row.roles or "[]")) if row is not None else set()
        if row is None or row.status != "active" or ADMIN_ROLE not in roles:
            raise PolicyAdminError("policy administration is limited to security administrators")
        if not reauthenticated:
            raise PolicyAdminError("re-authenticate before administering policies")

    @staticmethod
    def reauthenticate(accounts: Accounts, user_id: str, password: str, totp_code: str) -> bool:
        """Password and a current TOTP code, through ``Accounts`` (throttled, audited)."""
        result = accounts.authenticate(user_id, password, "cli")
        if result.mfa != "verify" or not accounts.totp.verify(user_id, totp_code).accepted:
            raise AuthenticationError()
        return True

    # -- changing ----------------------------------------------------------------------
    def install(
        self,
        bundle: PolicyBundle,
        *,
        by: str,
        reauthenticated: bool,
        comment: str = "",
        source: str = "cli",
    ) -> PolicySet:
        """Validate ``bundle`` and make it the running set; refusals change nothing."""
        self.check_admin(by, reauthenticated=reauthenticated)
        before = self.running_bundle()
        before_files, after_files = bundle_files(before), bundle_files(bundle)
        changed = sorted(
            n
            for n in before_files.keys() | after_files.keys()
            if before_files.get(n) != after_files.get(n)
        )
        try:
            compile_bundle(bundle)
        except PolicyLoadError as exc:
            self._record("denied", by, source, changed=changed, problems=exc.problems)
            raise
        if not changed:
            raise PolicyAdminError("the new set is the same as the running one; nothing to do")
        text = bundle_json(bundle)
        digest = _sha(text)
        now = self.clock.now()
        try:
            with self.engine.begin() as conn:
                generation = 1 + int(
                    conn.execute(
                        select(func.max(access_policy_sets.c.generation)).where(
                            access_policy_sets.c.tenant == self.tenant
                        )
                    ).scalar()
                    or 0
                )
                conn.execute(
                    insert(access_policy_sets).values(
                        tenant=self.tenant,
                        generation=generation,
                        sha256=digest,
                        bundle=text,
                        installed_at=now_us(now),
                        installed_by=by,
                        comment=comment[:2000],
                    )
                )
                self._record(
                    "success",
                    by,
                    source,
                    conn=conn,
                    generation=generation,
                    sha256=digest,
                    changed={
                        n: {
                            "before": _sha(before_files[n]) if n in before_files else None,
                            "after": _sha(after_files[n]) if n in after_files else None,
                        }
                        for n in changed
                    },
                    comment=comment[:2000],
                )
        except IntegrityError:
            raise PolicyAdminError("another policy change was installed at the same time") from None
        current = self.current()
        assert current is not None
        return current

    def _record(
        self, outcome: str, by: str, source: str, conn: Any = None, **detail: object
    ) -> None:
        self.audit.record(
            AuditEvent(
                action="policy-change",
                outcome=outcome,
                principal=f"user/{by}",
                purpose="HOPERAT",
                request_id=secrets.token_hex(16),
                recorded=self.clock.now(),
                source=source,
                detail=dict(detail),
            ),
            conn,
        )


class PolicyRefresher:
    """Loads a newer stored generation into a running engine (called every few seconds)."""

    def __init__(self, store: PolicyStore, engine: PolicyEngine, loaded: int) -> None:
        self.store = store
        self.engine = engine
        self.loaded = loaded

    def __call__(self) -> bool:
        generation = self.store.generation()
        if generation <= self.loaded:
            return False
        current = self.store.current()
        if current is None:
            return False
        try:
            self.engine.load(current.bundle)
        except PolicyLoadError:
            # Validated at install; a set that no longer loads (a newer phiguard with a
            # different schema) keeps the running one in force.
            self.loaded = generation
            return False
        self.loaded = current.generation
        return True


def read_policy_path(path: Path, running: PolicyBundle) -> tuple[PolicyBundle, str]:
    """The candidate set from a file (one file replaced) or a directory (a whole set)."""
    if path.is_dir():
        return PolicyBundle.from_directory(path), str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyAdminError(f"{path}: {exc.strerror or exc}") from None
    return with_file(running, path.name, text), path.name


def files_of(bundle: PolicyBundle) -> Mapping[str, str]:
    return bundle_files(bundle)
