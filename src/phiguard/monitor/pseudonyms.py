"""Keyed pseudonyms for other EHRs' patient identifiers.

An export's ``patient_id`` is whatever the other system keys patients by, very often
the MRN: an identifier, so PHI.  Monitoring needs patient ids in the clear (the
alert queue, the patient drill-down, the ledger's patient index when an alert is
opened), so a foreign id is replaced, before anything is stored, by

    "x" + base32(HMAC-SHA256(key, tenant | source id))[:26]      (lower case)

and the id itself is kept only sealed (``store.DatasetStore``'s source-id map).  The
mapping is deterministic, so re-ingesting an export gives the same pseudonyms, alert
ids stay stable and a re-scan adds nothing; the same key serves the four kinds that
name patients (access, patients, care, and the staff roster's own ``patient_id``), so
they still join.  An officer who types a source id gets its pseudonym computed here.

**The key.**  HKDF (purpose ``phiguard/monitor-patient-pseudonym/v1``) of the data key
of the ``__blind-index__`` compartment, the same key the vault derives its blind-index
root from.  Pseudonyms must outlive every key rotation (a changed key would change
every alert id and orphan every stored alert from its patient), and that key is the
one whose stability the system already depends on: blind tokens would be lost if it
changed, so it is a reserved compartment that data-key rotation refuses, and KEK
rotation or rewrapping only re-wraps it.  The ``__monitor__`` key, which seals the
monitoring data, is deliberately not used: re-sealing that data under a new key is a
reasonable thing to want, and must not rename every patient.  A distinct HKDF purpose
keeps pseudonyms unrelated to any search token.

phiguard's own patient ids (the ledger source) are random UUIDs that reveal nothing,
so they are left as they are.  A staff roster naming staff members' own vault records
by those ids is pseudonymised like any export; ``adopt_vault_ids`` gives them back
when the roster is read with the ledger.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Final

import polars as pl
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import INDEX_COMPARTMENT, Keyring
from phiguard.errors import KeyProviderError

from . import frames

PURPOSE: Final = b"phiguard/monitor-patient-pseudonym/v1"
PREFIX: Final = "x"
LENGTH: Final = 26  # base32 characters: 130 bits of the MAC
ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
BUCKETS: Final = len(ALPHABET)  # the source-id map is split by the first character
PATIENT_KINDS: Final = ("access", "staff", "patients", "care")  # each has ``patient_id``
_PATTERN: Final = re.compile(rf"{PREFIX}[{ALPHABET}]{{{LENGTH}}}")


_PAIRS: Final = tuple(a + b for a in ALPHABET for b in ALPHABET)  # 10 bits -> 2 characters
_SHIFTS: Final = tuple(range(10 * (LENGTH // 2 - 1), -1, -10))


def _base32(mac: bytes) -> str:
    """``base32(mac)[:26]`` in lower case (the standard library's encoder is pure
    Python and would cost more than the HMAC itself)."""
    bits = int.from_bytes(mac[:17], "big") >> (17 * 8 - 5 * LENGTH)
    return "".join([_PAIRS[(bits >> shift) & 0x3FF] for shift in _SHIFTS])


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` has the form of a pseudonym (not whether it was issued)."""
    return _PATTERN.fullmatch(value) is not None


def bucket(pseudonym: str) -> int:
    """Which part of the source-id map holds ``pseudonym``."""
    return ALPHABET.index(pseudonym[len(PREFIX)])


def pseudonym_key(keyring: Keyring, conn: Connection | None = None) -> bytes:
    """The tenant's pseudonym key (see the module docstring for why this key)."""
    if conn is not None:
        return keyring.current_sealer(INDEX_COMPARTMENT, conn).derive(PURPOSE)
    for _attempt in range(3):
        try:
            with keyring.engine.begin() as c:
                return keyring.current_sealer(INDEX_COMPARTMENT, c).derive(PURPOSE)
        except IntegrityError:  # another process created the index key first
            keyring.forget(INDEX_COMPARTMENT)
    raise KeyProviderError("the pseudonym key could not be derived")


class Pseudonymiser:
    """Computes pseudonyms under one key; remembers those it computed (one export's
    patients, or one look-up), so each distinct id costs one HMAC.  Frames are
    matched against what is remembered with a vectorised join: in an export of
    millions of rows the same patients recur block after block."""

    def __init__(self, key: bytes, tenant: str = "default") -> None:
        if len(key) < 32:
            raise ValueError("the pseudonym key must be at least 256 bits")
        # HMAC(key, aad(tenant, id)): the keyed state after the tenant is kept and
        # copied per id, which halves the cost of an export with a million patients.
        self._keyed = hmac.new(key, aad(tenant), hashlib.sha256)
        self._memo: dict[str, str] = {}
        self._seen = pl.DataFrame(schema={"source": pl.String(), "pseudonym": pl.String()})

    @classmethod
    def for_tenant(cls, keyring: Keyring, tenant: str | None = None) -> Pseudonymiser:
        return cls(pseudonym_key(keyring), tenant or keyring.tenant)

    def pseudonym(self, source_id: str) -> str:
        found = self._memo.get(source_id)
        if found is None:
            found = self._compute(source_id)
            self._memo[source_id] = found
        return found

    def _compute(self, source_id: str) -> str:
        raw = source_id.encode("utf-8")
        mac = self._keyed.copy()
        mac.update(len(raw).to_bytes(4, "big") + raw)
        return PREFIX + _base32(mac.digest())

    def canonical(self, patient_id: str) -> str:
        """A pseudonym as it is, anything else pseudonymised: the form rules compare."""
        return patient_id if is_pseudonym(patient_id) else self.pseudonym(patient_id)

    def candidates(self, patient_id: str) -> tuple[str, ...]:
        """Every stored id a patient id typed by an officer may stand for: the id itself
        (a pseudonym, or phiguard's own patient id) and its pseudonym (a source id)."""
        return tuple(dict.fromkeys((patient_id, self.canonical(patient_id))))

    def frame(self, kind: str, frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str]]:
        """``frame`` with its patient ids replaced, and ``{pseudonym: source id}`` of
        the ids this pseudonymiser had not met before (the earlier ones it returned
        with an earlier frame).

        Empty ids stay empty (a staff member with no patient record of their own).
        """
        if kind not in PATIENT_KINDS or not frame.height:
            return frame, {}
        column = frame.get_column("patient_id")
        sources = column.drop_nulls().unique().to_frame("source")
        if not sources.height:
            return frame, {}
        new = sources.join(self._seen, on="source", how="anti").get_column("source").to_list()
        names = [self._compute(str(source)) for source in new]
        if new:
            added = pl.DataFrame({"source": new, "pseudonym": names}, schema=self._seen.schema)
            self._seen = pl.concat([self._seen, added], rechunk=False)
        known = self._seen.join(sources, on="source", how="semi")
        replaced = column.replace_strict(
            known.get_column("source"),
            known.get_column("pseudonym"),
            default=None,
            return_dtype=pl.String(),
        )
        pairs = dict(zip(names, new, strict=True))
        return frame.with_columns(replaced.alias("patient_id")), pairs

    def dataset(self, dataset: frames.Dataset) -> frames.Dataset:
        """Every patient id of ``dataset`` pseudonymised (as the store would keep it)."""
        parts = {kind: getattr(dataset, kind) for kind in frames.SCHEMAS}
        for kind in PATIENT_KINDS:
            parts[kind] = self.frame(kind, parts[kind])[0]
        return frames.Dataset.of(**parts)


def adopt_vault_ids(
    dataset: frames.Dataset, vault_ids: Iterable[str], pseudonymiser: Pseudonymiser
) -> frames.Dataset:
    """The staff roster's own-record ids that are phiguard patient ids, given back.

    The roster is the one export loaded *for* the ledger: it supplies each staff
    member's own record in the vault (the ledger knows no such link), so the ``self``
    detector works on phiguard's own accesses.  Pseudonymised at ingest like every
    foreign id, those ids must become the vault's again to join the ledger's rows;
    a phiguard id is already pseudonymous, so nothing is revealed.  The other kinds
    describe the other system's patients in its own ids and keep their pseudonyms.
    """
    back = {pseudonymiser.pseudonym(v): v for v in dict.fromkeys(vault_ids)}
    staff = dataset.staff
    if not back or not staff.height:
        return dataset
    return dataclasses.replace(
        dataset, staff=staff.with_columns(pl.col("patient_id").replace(back))
    )
