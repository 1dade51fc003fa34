"""phiguard: one system that protects patient data end to end."""

__version__ = "0.1.0"
