"""Entry point of the ``phiguard`` command."""

from __future__ import annotations


def run() -> None:
    from phiguard.cli.app import main

    main()
