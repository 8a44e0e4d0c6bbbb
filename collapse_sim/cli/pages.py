"""``collapse-sim pages``: pages a language model writes after the openings of human documents."""
from __future__ import annotations

from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import quiet_option, refuse_overlap


@main.command("pages")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON-lines file of labelled pages (written atomically).")
@click.option("--lm", "model", default=None, help="The model that writes them [default: the shipped models/base-lm].")
@click.option("--n", type=click.IntRange(min=1), default=900, show_default=True, help="Pages in all, a third per decoding.")
@click.option("--split", type=click.Choice(["train", "calib", "eval"]), default="train", show_default=True,
              help="The human pool's split whose documents' openings are continued.")
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option()
def pages_cmd(out: Path, model: str | None, n: int, split: str, seed: int, quiet: bool) -> None:
    """Pages the simulator's LM writes after human openings (beam, sampling, nucleus; a third each), labelled
    synthetic with their domain and the opened document as group: the detector recipe's simulator pages."""
    from collapse_sim.pages import PagesConfig, write_pages
    from hygiene.errors import UserInputError
    from hygiene.paths import data_dir, local_or_shipped

    model = str(local_or_shipped(model or "base-lm"))
    if not (Path(model) / "config.json").is_file():
        raise click.ClickException(f"no model at {model}: pass --lm PATH (a causal LM directory) or a shipped "
                                   "model's name (base-lm)")
    for written in (out, Path(f"{out}.partial")):  # the file, and its interrupted run's finished decodings
        refuse_overlap(written, (model, data_dir()))
    try:
        counts = write_pages(model, out, PagesConfig(n=n, split=split, seed=seed), progress=not quiet)
    except (UserInputError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{sum(counts.values())} pages -> {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
