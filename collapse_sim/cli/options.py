"""The options every simulation command takes, spelled once."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from hygiene.progress import hide_library_bars


RESUMES = "an interrupted run resumes after its last finished generation"


class Finite(click.FloatRange):
    """A float in a range that is also finite: ``inf`` and ``nan`` pass ``click.FloatRange`` (``nan`` fails no
    comparison) and would run a whole simulation into NaN metrics."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def _describe_range(self) -> str:
        """The help's range: "finite" alone where no bound is set (click would print ``x<=None``)."""
        return "finite" if self.min is None and self.max is None else super()._describe_range()


#: any finite float
FINITE = Finite()
#: a finite float above 0
POSITIVE = Finite(min=0.0, min_open=True)


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a device this machine lacks before any work (``hygiene.lm.select_device`` says why)."""
    if value is not None:
        from hygiene.errors import UserInputError
        from hygiene.lm import select_device

        try:
            select_device(value)
        except UserInputError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def device_option(help: str) -> Callable:
    """``--device``, checked as it is parsed."""
    return click.option("--device", default=None, callback=_device, help=help)


def _out_dir(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Make the output directory before any work, so that one that cannot be made fails at once, in one line."""
    try:
        value.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {value}: {exc.strerror or exc}", ctx, param) from None
    return value


def refuse_overlap(out: Path, inputs: Iterable[str | Path | None]) -> None:
    """An output never writes over an input: refuse ``--out`` where it is an input, holds one, or lies inside
    an input folder (a model directory)."""
    here = out.resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        there = Path(given).resolve()
        if here == there or here in there.parents or there in here.parents:
            raise click.BadParameter(f"{out} overlaps the input {given}: choose another --out", param_hint="--out")


def _quiet(ctx: click.Context, param: click.Parameter, quiet: bool) -> bool:
    """With ``--quiet``, the loading and saving bars of the Hugging Face libraries go too."""
    if quiet:
        hide_library_bars()
    return quiet


def quiet_option() -> Callable:
    """``--quiet``: no progress bars, ours or the libraries'."""
    return click.option("--quiet", is_flag=True, callback=_quiet, help="No progress bars.")


def run_options(command: str, resumes: str = "") -> Callable:
    """``--out`` (default ``runs/<command>``) and ``--quiet``; ``resumes`` says what a rerun into the same
    directory keeps (e.g. :data:`RESUMES`)."""
    what = "Output directory" + (f"; {resumes}." if resumes else ".")
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs") / command,
                     show_default=True, callback=_out_dir, help=what),
        quiet_option(),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate
