"""``collapse-sim vae``: VAEs trained generation after generation on their own samples."""
from __future__ import annotations

from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import RESUMES, Finite, device_option, run_options
from collapse_sim.image_data import DATASETS
from collapse_sim.reuse import MODES, Reuse

# torch and the simulation are imported inside the command, so that other commands start fast;
# the library checks these choices too (collapse_sim.vae.PIXELS).
PIXELS = ("sample", "mean")


@main.command("vae")
@click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
              help="digits: scikit-learn's 8x8 digits; mnist: 28x28 idx files (binarised).")
@click.option("--images", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="MNIST images idx(.gz) file (default: the shared t10k images).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="MNIST labels idx(.gz) file (default: the shared t10k labels).")
@click.option("--generations", type=click.IntRange(min=0), default=20, show_default=True,
              help="Generations trained on samples, after generation 0 (trained on real data).")
@click.option("--mode", type=click.Choice(MODES), default="replace", show_default=True,
              help="What each generation trains on.")
@click.option("--real-fraction", type=Finite(0.0, 1.0), default=0.1, show_default=True,
              help="Share of fresh real images in each generation's training set (--mode mix).")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--pixels", type=click.Choice(PIXELS), default="sample", show_default=True,
              help="Train the next generation on sampled pixels or on decoder means.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="VAE epochs a generation (default: 100 on digits, 30 on mnist as in the authors' notebook).")
@click.option("--latent-dim", type=click.IntRange(min=1), default=None, help="VAE latent size (default 20).")
@device_option(help="Torch device of the VAEs (default cpu).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch CPU threads; the small MLPs run fastest on one.")
@run_options("vae", resumes=RESUMES)
def vae_cmd(dataset: str, images: Path | None, labels: Path | None, generations: int, out: Path, mode: str,
            real_fraction: float, runs: int, seed: int, pixels: str, epochs: int | None, latent_dim: int | None,
            device: str | None, threads: int, quiet: bool) -> None:
    """Train a VAE on real digits, then each generation a fresh VAE on the previous one's samples."""
    import torch

    from collapse_sim.vae_collapse import config_for, simulate

    torch.set_num_threads(threads)
    try:
        cfg = config_for(
            dataset, images=images and str(images), labels=labels and str(labels), generations=generations,
            runs=runs, seed=seed, reuse=Reuse(mode, real_fraction), pixels=pixels, epochs=epochs,
            latent_dim=latent_dim, device=device,
        )
        result = simulate(cfg, out, progress=not quiet)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.summary["undertrained"]:
        click.echo(f"warning: {result.summary['undertrained']}", err=True)
    m = result.metrics
    click.echo(
        f"generation {result.generations[-1]}: recall {m['recall']['mean'][-1]:.3f} "
        f"(gen 0 {m['recall']['mean'][0]:.3f}), class entropy {m['class_entropy']['mean'][-1]:.2f} bits "
        f"(gen 0 {m['class_entropy']['mean'][0]:.2f}); written to {out}"
    )
