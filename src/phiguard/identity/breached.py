"""The list of commonly used and breached passwords that new passwords are checked against.

NIST SP 800-63B asks verifiers to refuse passwords "obtained from previous breach
corpuses" and other commonly used values, because attackers try exactly those
first (online guessing and offline cracking alike).  The list ships with phiguard
(``data/common-passwords.txt.gz``, provenance in ``data/README``): checking it
needs no network, so a password never leaves the process.

The list is held as a sorted ``array`` of 64-bit BLAKE2b prefixes of the normalised
entries plus a 2^16-bucket index over their top bits: about 5 MB for 600,000
entries instead of the ~60 MB a ``set`` of strings would take, and a look-up reads
one bucket of a handful of entries (constant time on average).  A false positive
needs a 64-bit collision (probability about n / 2^64).  It is loaded lazily, once
per process, because building it costs most of a second.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import unicodedata
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from importlib import resources

DATA_FILE = "common-passwords.txt.gz"

_BUCKET_BITS = 16
_SHIFT = 64 - _BUCKET_BITS


def normalize(text: str) -> str:
    """NFKC and case folding: the form passwords are compared (and hashed) in.

    NFKC first so compatibility forms (full-width letters, ligatures) compare equal
    to their plain forms; again after folding because folding can leave text that
    is not NFKC.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _fingerprint(normalized: str) -> int:
    return int.from_bytes(hashlib.blake2b(normalized.encode(), digest_size=8).digest(), "big")


class BreachedPasswords:
    """A set of passwords, compared case-insensitively after NFKC normalisation."""

    __slots__ = ("_buckets", "_keys")

    def __init__(self, entries: Iterable[str], *, normalized: bool = False) -> None:
        """``normalized=True`` skips normalising entries that already are (the shipped
        file is), which saves a fifth of the load time."""
        fold = (lambda e: e) if normalized else normalize
        self._keys = array("Q", sorted({_fingerprint(fold(e)) for e in entries if e}))
        # _buckets[b] is the index of the first key whose top bits are >= b, so the
        # keys of bucket b are _keys[_buckets[b]:_buckets[b + 1]].
        self._buckets = array(
            "L", (bisect_left(self._keys, b << _SHIFT) for b in range(1 << _BUCKET_BITS))
        )
        self._buckets.append(len(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, password: object) -> bool:
        if not isinstance(password, str) or not password:
            return False
        key = _fingerprint(normalize(password))
        bucket = key >> _SHIFT
        lo, hi = self._buckets[bucket], self._buckets[bucket + 1]
        i = bisect_left(self._keys, key, lo, hi)
        return i < hi and self._keys[i] == key

    def largest_bucket(self) -> int:
        """The most entries any look-up has to search (for tests and capacity checks)."""
        return max(self._buckets[b + 1] - self._buckets[b] for b in range(1 << _BUCKET_BITS))

    @classmethod
    def from_gzip(cls, raw: bytes, *, normalized: bool = False) -> BreachedPasswords:
        """Build from a gzip-compressed UTF-8 list, one password a line."""
        return cls(gzip.decompress(raw).decode("utf-8").split("\n"), normalized=normalized)


_default: BreachedPasswords | None = None
_default_lock = threading.Lock()


def default_list() -> BreachedPasswords:
    """The list shipped with phiguard, built on first use and shared by every caller."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                raw = (resources.files("phiguard.identity") / "data" / DATA_FILE).read_bytes()
                _default = BreachedPasswords.from_gzip(raw, normalized=True)
    return _default
