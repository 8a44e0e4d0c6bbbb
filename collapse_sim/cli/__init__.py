"""The ``collapse-sim`` command line: a thin layer over the simulations."""
from __future__ import annotations

import click

from hygiene import __version__
from hygiene.errors import one_line


class _Group(click.Group):
    """Sizes past what the machine holds (``--runs``, ``--samples``, ...) end in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (MemoryError, OverflowError) as exc:
            raise click.ClickException(f"the sizes asked for are too large for this machine ({type(exc).__name__}"
                                       f"{': ' + one_line(exc) if str(exc) else ''}); use smaller values") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="collapse-sim")
def main() -> None:
    """Reproduce model collapse and write labelled generational corpora."""


# One module per command family; each registers its commands on ``main`` here.
# (keep one import line per module)
from collapse_sim.cli import pretrain  # noqa: E402,F401
from collapse_sim.cli import theory  # noqa: E402,F401
from collapse_sim.cli import vae  # noqa: E402,F401
from collapse_sim.cli import lm  # noqa: E402,F401
from collapse_sim.cli import polluted  # noqa: E402,F401
from collapse_sim.cli import finetune  # noqa: E402,F401
from collapse_sim.cli import pages  # noqa: E402,F401


if __name__ == "__main__":
    main()
