"""The ``hygiene`` command line: a thin layer over the library."""
from __future__ import annotations

import click

from hygiene import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hygiene")
def main() -> None:
    """Detect synthetic text and filter crawled corpora, every record accounted for."""


# One module per command family; each registers its commands on ``main`` here.
# (keep one import line per module)

from hygiene.cli import filter  # noqa: E402,F401
from hygiene.cli import detector  # noqa: E402,F401
from hygiene.cli import report  # noqa: E402,F401


if __name__ == "__main__":
    main()
