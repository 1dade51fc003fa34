"""Workforce identity: passwords (SP 800-63B), TOTP, recovery codes, login throttling.

One module per concern; nothing here speaks HTTP.  Secrets are either hashed
(passwords, recovery codes) or sealed with the ``__identity__`` data key (TOTP
secrets), and every comparison of a secret is constant-time.
"""
