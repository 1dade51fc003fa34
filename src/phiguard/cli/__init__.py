"""The ``phiguard`` command: one module per command group."""
