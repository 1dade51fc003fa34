"""``python -m phiguard.cli``: the same as the ``phiguard`` command."""

from phiguard.cli.main import run

run()
