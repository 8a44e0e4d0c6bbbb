"""``collapse-sim discrete|gaussian|gmm``: the theory simulations, each writing metrics.json and PNGs.

The discrete and GMM modules are imported inside their commands, so that starting any
other command does not pay for scikit-learn and scipy.stats.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from collapse_sim import gaussian as gaussian_sim
from collapse_sim.cli import main
from collapse_sim.cli.options import FINITE, POSITIVE, Finite, run_options
from collapse_sim.metrics import SimulationResult
from collapse_sim.reuse import MODES, Reuse


def _common(command: str, generations: int, samples: int, runs: int, resumes: str = "",
            min_samples: int = 1) -> Callable:
    """The options every theory simulation takes, with that simulation's defaults (``min_samples``: the fewest
    samples its estimator needs)."""
    options = [
        click.option("--generations", type=click.IntRange(min=1), default=generations, show_default=True,
                     help="Generations after the original."),
        click.option("--samples", type=click.IntRange(min=min_samples), default=samples, show_default=True,
                     help="Training samples per generation (M)."),
        click.option("--runs", type=click.IntRange(min=1), default=runs, show_default=True,
                     help="Independent runs; spread over runs is reported."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--mode", type=click.Choice(MODES), default="replace", show_default=True,
                     help="replace: previous generation only; mix: a fraction of fresh original data; "
                          "accumulate: keep all data so far."),
        click.option("--real-fraction", type=Finite(0.0, 1.0), default=0.1, show_default=True,
                     help="Fraction of fresh original data per generation (--mode mix)."),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return run_options(command, resumes=resumes)(fn)

    return decorate


def _config(factory: Callable, **kwargs):
    """Build a config dataclass, turning its validation errors into a usage error."""
    try:
        return factory(**kwargs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _report(result: SimulationResult, out: Path, figures: list[Path]) -> None:
    click.echo(f"metrics: {result.save(out)}")
    for path in figures:
        click.echo(f"figure:  {path}")


@main.command()
@_common("discrete", generations=1000, samples=100, runs=1000)
@click.option("--states", type=click.IntRange(min=2), default=20, show_default=True, help="Number of states K.")
@click.option("--zipf-exponent", type=Finite(min=0.0), default=1.0, show_default=True,
              help="Original p_k proportional to k^-s (0: uniform).")
def discrete(generations, samples, runs, seed, mode, real_fraction, out, quiet, states, zipf_exponent) -> None:
    """A categorical distribution re-estimated from M samples of itself each generation."""
    from collapse_sim import discrete as discrete_sim

    cfg = _config(discrete_sim.DiscreteConfig, generations=generations, samples=samples, runs=runs, seed=seed,
                  reuse=_config(Reuse, mode=mode, real_fraction=real_fraction), states=states,
                  zipf_exponent=zipf_exponent)
    result = discrete_sim.simulate(cfg, progress=not quiet)
    _report(result, out, discrete_sim.plot(result, out))


@main.command()
@_common("gaussian", generations=1000, samples=100, runs=1000, min_samples=2)  # the unbiased variance
@click.option("--growth", type=click.Choice(gaussian_sim.GROWTHS), default="constant", show_default=True,
              help="Sample size per generation: M, M(i+1) or M(i+1)^2.")
@click.option("--mu", type=FINITE, default=0.0, show_default=True, help="Original mean.")
@click.option("--sigma", type=POSITIVE, default=1.0, show_default=True,
              help="Original standard deviation.")
def gaussian(generations, samples, runs, seed, mode, real_fraction, out, quiet, growth, mu, sigma) -> None:
    """N(mu, sigma^2) re-fitted each generation by sample mean and unbiased variance."""
    cfg = _config(gaussian_sim.GaussianConfig, generations=generations, samples=samples, runs=runs, seed=seed,
                  reuse=_config(Reuse, mode=mode, real_fraction=real_fraction), growth=growth, mu=mu, sigma=sigma)
    result = gaussian_sim.simulate(cfg, progress=not quiet)
    _report(result, out, gaussian_sim.plot(result, out))


@main.command()
@_common("gmm", generations=2000, samples=1000, runs=1, min_samples=4,  # two a component of GMMConfig's two
         resumes="finished runs are kept under OUT/checkpoints and reused by the same command")
def gmm(generations, samples, runs, seed, mode, real_fraction, out, quiet) -> None:
    """The paper's experiment: a 2-component mixture fitted by EM to samples of the previous fit.

    Defaults are the paper's settings. Finished runs are checkpointed under
    OUT/checkpoints and reused when the same command is run again.
    """
    from collapse_sim import gmm as gmm_sim

    cfg = _config(gmm_sim.GMMConfig, generations=generations, samples=samples, runs=runs, seed=seed,
                  reuse=_config(Reuse, mode=mode, real_fraction=real_fraction))
    try:
        result = gmm_sim.simulate(cfg, checkpoint_dir=out / "checkpoints", progress=not quiet)
    except gmm_sim.CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    _report(result, out, gmm_sim.plot(result, out))
