"""The console: the pages people use in a browser (sign-in, account, administration).

Pages are server-rendered Jinja templates under a strict CSP (no inline script);
the only script is our own static file for the WebAuthn ceremony.  Every
state-changing form carries the session's CSRF token.
"""
