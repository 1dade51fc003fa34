"""Audit: the tamper-evident ledger of every access and security event."""
