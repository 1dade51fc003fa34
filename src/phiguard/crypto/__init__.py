"""Cryptography for phiguard: the only package that imports ``cryptography`` or ``pkcs11``.

Everything else asks for a high-level operation (seal, open, wrap, index token) and
never sees a primitive, so a review of this package is a review of all of phiguard's
cryptography.
"""
