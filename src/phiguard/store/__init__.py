"""Storage: the engine, the tables and their migrations.

The store holds ciphertext, wrapped keys, blind-index tokens and system metadata;
it never sees plaintext PHI.  Only ``records`` and ``crypto.keyring`` read the PHI
tables.
"""
