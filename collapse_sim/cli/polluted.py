"""``collapse-sim polluted``: recursive training on raw, filtered and human-only crawls."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import RESUMES, Finite, run_options
from collapse_sim.generation import DECODINGS


@main.command("polluted")
@click.option("--synthetic-fraction", type=Finite(0, 1, min_open=True, max_open=True), default=None,
              help="Share of each crawl written by the chain's previous model [0.5].")
@click.option("--generations", type=click.IntRange(min=1), default=None,
              help="Model generations, generation 0 included [the preset's: 5].")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="Repetitions with their own seeds [3].")
@click.option("--policy", type=click.Choice(["drop", "resample"]), default=None,
              help="drop what the filter rejects, or resample by (1 - p_synthetic)^beta (Drayson et al. 2025) [drop].")
@click.option("--beta", type=Finite(min=0), default=None, help="Resampling exponent [1.0].")
@click.option("--crawl-docs", type=click.IntRange(min=2), default=None, help="Documents per crawl [128].")
@click.option("--preset", "preset_name", type=click.Choice(["cpu", "tiny"]), default="cpu", show_default=True,
              help="cpu: the lm cpu preset's model and budget; tiny: seconds, for tests.")
@click.option("--base-model", default=None, help="HF id or path of the base to fine-tune [the lm preset's].")
@click.option("--decoding", type=click.Choice(DECODINGS), default=None,
              help="How each chain writes its synthetic documents [the lm preset's: beam, 5 beams].")
@click.option("--temperature", type=Finite(min=0, min_open=True), default=None,
              help="Sampling temperature [1.0].")
@click.option("--top-p", type=Finite(0, 1, min_open=True), default=None, help="Nucleus sampling [1.0].")
@click.option("--detector", type=click.Path(), default=None, help="Detector directory, or a shipped one by name (detector-fast) [models/detector].")
@click.option("--threshold", type=Finite(0, 1), default=None,
              help="Flag above this detector probability [the detector's calibrated threshold].")
@click.option("--filter-config", type=click.Path(dir_okay=False), default=None,
              help="hygiene filter config (YAML/TOML), as for `hygiene filter --config` [hygiene's defaults "
                   "without Gopher's alphabetic-words rule, which WikiText-2's tokenisation fails].")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override one filter config key, e.g. --set quality.enabled=false (repeatable).")
@click.option("--only-run", type=click.IntRange(min=0), default=None,
              help="Compute only this run (for parallel processes); a last call without it collects the runs.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@click.option("--seed", type=int, default=None,
              help="Seed of run 0 [0]; run r takes seed + r, so for independent replications give seeds --runs apart.")
@run_options("polluted", resumes=RESUMES)
def polluted_cmd(out: Path, synthetic_fraction: float | None, generations: int | None, runs: int | None,
                 policy: str | None, beta: float | None, crawl_docs: int | None, preset_name: str,
                 base_model: str | None, decoding: str | None, temperature: float | None, top_p: float | None,
                 detector: str | None, threshold: float | None, filter_config: str | None,
                 assignments: tuple[str, ...], only_run: int | None, threads: int | None, seed: int | None,
                 quiet: bool) -> None:
    """Train three chains from one generation-0 model on crawls polluted by their own output:
    unfiltered, filtered by `hygiene filter`, and human documents only (oracle).

    Writes per-generation models and crawls, metrics.json, perplexity.png and report.md into OUT.
    """
    from collapse_sim.polluted import preset, run_polluted
    from hygiene.config import load_config
    from hygiene.errors import UserInputError

    overrides = {k: v for k, v in {"synthetic.model": detector, "synthetic.threshold": threshold}.items()
                 if v is not None}
    if filter_config is None:  # the simulation's default: Gopher's alphabetic-words rule off for WikiText-2
        overrides = {"quality.min_alpha_words_ratio": None, **overrides}
    top = dict(synthetic_fraction=synthetic_fraction, generations=generations, runs=runs, policy=policy, beta=beta,
               crawl_docs=crawl_docs, seed=seed)
    try:
        cfg = preset(preset_name, **{k: v for k, v in top.items() if v is not None})
        lm_cfg = cfg.lm
        if base_model is not None:
            lm_cfg = dataclasses.replace(lm_cfg, base_model=base_model)
        dec = {k: v for k, v in dict(method=decoding, temperature=temperature, top_p=top_p).items() if v is not None}
        if dec:
            lm_cfg = dataclasses.replace(lm_cfg, decoding=dataclasses.replace(lm_cfg.decoding, **dec))
        if threads is not None:
            lm_cfg = dataclasses.replace(lm_cfg, train=dataclasses.replace(lm_cfg.train, threads=threads))
        cfg = dataclasses.replace(cfg, lm=lm_cfg, filter=load_config(filter_config, overrides, assignments))
        result = run_polluted(cfg, out, progress=not quiet, only_run=only_run)
    except UserInputError as exc:
        raise click.ClickException(str(exc)) from None
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if result is None:
        click.echo(f"run {only_run} done in {out}; collect all runs with the same command without --only-run")
        return
    s = result.summary
    ppl = s["last_generation_perplexity"]
    click.echo("last generation, test perplexity: " + ", ".join(f"{c} {v:.1f}" for c, v in ppl.items())
               + f" (generation 0: {s['gen0_perplexity']:.1f})")
    closed = s["gap_closed"]
    click.echo(f"gap closed by filtering: {closed:.0%}" if closed == closed
               else "no collapse gap (unfiltered is not worse than oracle): gap closed undefined")
    click.echo(f"report: {out / 'report.md'}")
