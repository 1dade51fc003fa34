"""The only path to PHI.

A ``Repository`` is built per request for one caller's ``AccessContext``; every
read and write goes through it, and it decides (access), seals and opens (crypto),
indexes, versions and records (audit) each call, allowed or denied.
"""

from .context import AccessContext, Principal
from .repository import Repository, SearchResult, StoredResource
from .vault import Vault

__all__ = [
    "AccessContext",
    "Principal",
    "Repository",
    "SearchResult",
    "StoredResource",
    "Vault",
]
