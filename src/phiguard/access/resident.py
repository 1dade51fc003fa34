"""Resident access facts: a server holds its patients' facts in memory, kept current.

On demand, the first decision about a patient waits on one index query and one
unsealing (about 100 us on a busy 2-core machine, right after the chart was read),
and every decision about a patient whose facts are ``ttl`` old waits on a re-check
of its tag.  A FHIR server answers many patients all day, so it does both ahead of
time instead, in one background thread:

- at start, ``StoreAttributes.warm`` loads the facts of up to ``limit`` patients
  (the most recently changed first) and of every user, 500 rows a query;
- then every half ``ttl`` it re-checks, by tag, whatever would go stale before the
  next pass, and reloads what another process changed.

Decisions never wait for it: until the warm-up reaches a patient, deciding about
them loads that one patient as before, and a decision that finds its facts stale
re-checks them itself.  So residency changes how fast decisions are, never what they
decide or how soon a change counts (``ttl``, as documented in docs/access.md).

Memory: about 4 KB per patient with typical charts (41 MB for 10,000 patients,
bench/RESULTS.md), plus each patient's unwrapped data key, which the keyring
caches anyway once a chart is read.  ``access_resident_patients = 0`` in
``phiguard.toml`` turns this off.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from .store_attributes import StoreAttributes

LOG: Final = logging.getLogger("phiguard.access")


class ResidentFacts:
    """The background thread that warms and refreshes a ``StoreAttributes``."""

    def __init__(
        self,
        attributes: StoreAttributes,
        *,
        limit: int,
        interval: float | None = None,
    ) -> None:
        self.attributes = attributes
        self.limit = limit
        self.interval = (
            max(attributes.ttl.total_seconds() / 2, 0.05) if interval is None else interval
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warmed = threading.Event()
        """Set once the warm-up has finished (or failed)."""
        self.passes = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="phiguard-access-facts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        attributes = self.attributes
        try:
            try:
                warmed = attributes.warm(limit=self.limit)
                LOG.info(
                    "access facts resident: %d patients, %d users in %.1f s",
                    warmed.patients,
                    warmed.users,
                    warmed.seconds,
                )
            except Exception as exc:
                # The class only: a message could carry a value.
                LOG.warning(
                    "access facts warm-up failed (%s); loading on demand", type(exc).__name__
                )
            finally:
                self.warmed.set()
            while not self._stop.wait(self.interval):
                try:
                    attributes.keep_fresh()
                    self.passes += 1
                except Exception as exc:
                    LOG.warning("access facts refresh failed (%s)", type(exc).__name__)
        finally:
            attributes.index.reader.close()
