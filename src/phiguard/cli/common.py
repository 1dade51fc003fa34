"""Helpers shared by the command modules: options, the system, progress bars."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from phiguard.system import System, open_system

console = Console(stderr=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

HomeOption = Annotated[
    str | None,
    typer.Option(
        "--home", help="phiguard home directory (default: $PHIGUARD_HOME)", show_default=False
    ),
]


def prompt(text: str) -> str:
    return getpass.getpass(text)


@contextmanager
def system(home: str | None) -> Iterator[System]:
    sys_ = open_system(home, prompt=prompt)
    try:
        yield sys_
    finally:
        sys_.close()


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        # Bars are for people: a log or a pipe gets only the results and errors.
        disable=not err.is_terminal,
    )
