"""A deliberately leaky phiguard, for proving that the system canary can fail.

Python imports ``sitecustomize`` at start-up from the first directory on its path
that holds one, so a ``phiguard`` subprocess started with this directory first on
``PYTHONPATH`` runs with four plausible mistakes, one for each channel the canary
watches:

- sealing is switched off (``Sealer.seal`` and ``open`` pass bytes through): the
  database, its WAL and the ledger hold plaintext;
- every request's full URL, query string and all, goes to the access log and to the
  server's standard output;
- notifications "helpfully" name the patients of each alert (from the loaded
  patient roster) in their links, in e-mail and webhook bodies;
- a refused CSV row is reported with its content, on standard error and in the
  ``--errors`` file.

The test process patches ``Sealer`` the same way itself (so what it writes and what
the subprocesses read agree); nothing here is imported by the real test suite.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from phiguard.crypto import envelope
from phiguard.monitor import notify
from phiguard.monitor.sources import csv as csv_source
from phiguard.web import app as web_app
from phiguard.web import logs


def _seal(self: Any, plaintext: bytes, associated: bytes) -> bytes:
    return plaintext


def _open(self: Any, token: bytes, associated: bytes, where: str = "") -> bytes:
    return token


envelope.Sealer.seal = _seal  # type: ignore[method-assign]
envelope.Sealer.open = _open  # type: ignore[method-assign]

_create_app = web_app.create_app


def _leaky_app(system: Any, **kwargs: Any) -> Any:
    app = _create_app(system, **kwargs)
    logger = logging.getLogger(logs.LOGGER)

    @app.middleware("http")
    async def log_full_url(request: Any, call_next: Any) -> Any:
        logger.info(str(request.url))
        print(str(request.url), flush=True)
        return await call_next(request)

    return app


web_app.create_app = _leaky_app

_notify_new = notify.notify_new


def _naming_notify_new(workflow: Any, notifier: Any, **kwargs: Any) -> Any:
    from phiguard.monitor.store import DatasetStore

    store = DatasetStore(workflow.engine, workflow.keyring, tenant=workflow.tenant)
    roster = store.frame("patients")
    names = dict(zip(roster["patient_id"].to_list(), roster["family_name"].to_list(), strict=True))
    link = notifier.link

    def naming_link(kind: str, target: str) -> str:
        row = workflow.alert_row(target)
        named = " ".join(str(names.get(p, "")) for p in row.patient_ids)
        return f"{link(kind, target)} {named}"

    notifier.link = naming_link
    return _notify_new(workflow, notifier, **kwargs)


notify.notify_new = _naming_notify_new

_convert = csv_source._Converter.convert


def _quoting_convert(self: Any, raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    good, bad = _convert(self, raw)
    if bad.height:
        row = pl.concat_str(
            [pl.col(f"c{i}") for i in range(self.width)], separator=",", ignore_nulls=True
        )
        texts = raw.select("line", row.alias("row"))
        bad = bad.join(texts, on="line", how="left").select(
            "line", pl.format("{} in {}", "reason", "row").alias("reason")
        )
    return good, bad


csv_source._Converter.convert = _quoting_convert  # type: ignore[method-assign]
