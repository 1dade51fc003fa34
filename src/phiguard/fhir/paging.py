"""Paging continuations for POSTed searches.

``POST /fhir/{type}/_search`` exists to keep search values (names, birth dates)
out of URLs, but FHIR paging links are GET URLs.  So a POSTed search's parameters
stay in this process's memory under a random id, and its links say only
``_getpages=<id>&_offset=n``.  A continuation belongs to the caller who made it
and expires after a few minutes; nothing of it is written anywhere.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from phiguard.errors import InvalidSearch

TTL_SECONDS = 600
MAX_ENTRIES = 10_000


class PageStore:
    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, str, str, list[tuple[str, str]]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, owner: str, rtype: str, items: list[tuple[str, str]]) -> str:
        key = secrets.token_urlsafe(16)
        kept = [(k, v) for k, v in items if k not in ("_offset", "_getpages")]
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, owner, rtype, kept)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return key

    def get(self, key: str, owner: str, rtype: str) -> list[tuple[str, str]]:
        with self._lock:
            found = self._items.get(key)
            if found is not None and found[0] < time.monotonic():
                del self._items[key]
                found = None
        if found is None or found[1] != owner or found[2] != rtype:
            # The same answer for unknown, expired and someone else's continuation.
            raise InvalidSearch("the paging link has expired: repeat the search")
        return list(found[3])
