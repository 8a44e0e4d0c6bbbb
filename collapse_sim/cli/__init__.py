"""The ``collapse-sim`` command line: a thin layer over the simulations."""
from __future__ import annotations

import click

from hygiene import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
