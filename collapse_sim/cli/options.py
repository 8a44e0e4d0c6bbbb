"""The options every simulation command takes, spelled once."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click


RESUMES = "an interrupted run resumes after its last finished generation"


def run_options(command: str, resumes: str = "") -> Callable:
    """``--out`` (default ``runs/<command>``) and ``--quiet``; ``resumes`` says what a rerun into the same
    directory keeps (e.g. :data:`RESUMES`)."""
    what = "Output directory" + (f"; {resumes}." if resumes else ".")
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs") / command,
                     show_default=True, help=what),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
