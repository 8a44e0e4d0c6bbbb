"""``hygiene report``: one self-contained page about a finished filter run."""
from __future__ import annotations

import click

from hygiene.cli import main
from hygiene.errors import UserInputError


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Page to write [RUN_DIR/report.html].")
def report_cmd(run_dir: str, out: str | None) -> None:
    """Write report.html for the filter run in RUN_DIR: the funnel by stage, every reason with examples,
    kept and rejected per group, P(machine) per group, and the estimated share of machine-written text."""
    from hygiene.report import write_report

    try:
        path = write_report(run_dir, out)
    except UserInputError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))
