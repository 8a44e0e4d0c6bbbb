"""``collapse-sim lm`` (recursive training of a language model) and ``collapse-sim corpus`` (its labelled corpora)."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import FINITE, RESUMES, Finite, device_option, refuse_overlap, run_options
from collapse_sim.generation import DECODINGS
from collapse_sim.lm import PRESETS, SELECTIONS, build_corpus, preset, run_lm
from collapse_sim.reuse import MODES


@main.command("lm")
@click.option("--generations", type=click.IntRange(min=1), default=None,
              help="Model generations, generation 0 included [default: the preset's].")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="cpu", show_default=True,
              help="cpu: 2 cores, under 20 minutes; paper: the paper's sizes, for a GPU; tiny: tests.")
@click.option("--base-model", default=None,
              help="HF id or path of the base to fine-tune (the paper: facebook/opt-125m) [default: a small GPT-2 "
                   "pre-trained once on the human pool and cached].")
@click.option("--train-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Human training text [default: ../shared/data/wikitext-2/valid.txt].")
@click.option("--eval-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Human evaluation text [default: ../shared/data/wikitext-2/test.txt].")
@click.option("--mode", "modes", type=click.Choice(MODES), multiple=True,
              help="Data-reuse mode; repeat for several arms [default: replace and mix].")
@click.option("--real-fraction", type=Finite(0, 1), default=None,
              help="Share of human data in each generation's training set under mix [default 0.1].")
@click.option("--decoding", type=click.Choice(DECODINGS), default=None, help="Decoding [default: beam].")
@click.option("--sampling-arm/--no-sampling-arm", default=None,
              help="Also run a pure-sampling arm beside beam/greedy [default: on].")
@click.option("--num-beams", type=click.IntRange(min=1), default=None, help="Beams for beam search [default 5].")
@click.option("--temperature", type=Finite(min=0, min_open=True), default=None)
@click.option("--top-p", type=Finite(0, 1, min_open=True), default=None)
@click.option("--repetition-penalty", type=Finite(min=0, min_open=True), default=None,
              help="1.0 (off) by default as in the paper's text; the authors' code used 3.0.")
@click.option("--select", type=click.Choice(SELECTIONS), default=None,
              help="Checkpoint selection on held-out human blocks (real, the paper) or synthetic data.")
@click.option("--max-train-blocks", type=click.IntRange(min=2), default=None,
              help="Evenly spaced subset of the human training blocks [default: the preset's].")
@device_option(help="Training and inference device [default: CUDA when present].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast in training.")
@click.option("--seed", type=int, default=None)
@run_options("lm", resumes=RESUMES)
def lm_cmd(out: Path, generations: int | None, preset_name: str, base_model: str | None, train_file: str | None,
           eval_file: str | None, modes: tuple[str, ...], real_fraction: float | None, decoding: str | None,
           sampling_arm: bool | None, num_beams: int | None, temperature: float | None, top_p: float | None,
           repetition_penalty: float | None, select: str | None, max_train_blocks: int | None, device: str | None,
           threads: int | None, bf16: bool | None, seed: int | None, quiet: bool) -> None:
    """Fine-tune a base LM on human text, then each new generation on the previous one's output.

    Writes per-generation models and data, metrics.json, perplexity.png,
    histograms-*.png, report.md and the labelled corpus (corpus/) into OUT.
    """
    refuse_overlap(out, (train_file, eval_file, base_model))
    cfg = preset(preset_name)
    dec = {k: v for k, v in dict(method=decoding, num_beams=num_beams, temperature=temperature, top_p=top_p,
                                 repetition_penalty=repetition_penalty).items() if v is not None}
    train = {k: v for k, v in dict(device=device, threads=threads, bf16=bf16).items() if v is not None}
    top = dict(generations=generations, base_model=base_model, train_file=train_file, eval_file=eval_file,
               modes=modes or None, real_fraction=real_fraction, sampling_arm=sampling_arm, select=select,
               max_train_blocks=max_train_blocks, seed=seed)
    try:
        cfg = dataclasses.replace(
            cfg, decoding=dataclasses.replace(cfg.decoding, **dec), train=dataclasses.replace(cfg.train, **train),
            **{k: v for k, v in top.items() if v is not None},
        )
        result = run_lm(cfg, out, progress=not quiet)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for arm, a in result.summary["arms"].items():
        click.echo(f"{arm}: test perplexity {a['eval_perplexity_gen0']:.1f} -> {a['eval_perplexity_last']:.1f} "
                   f"(x{a['ratio_last_to_gen0']:.2f})")
    click.echo(f"report: {out / 'report.md'}; corpus: {out / 'corpus'}")


@main.command("corpus")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rebuild", is_flag=True, help="Rebuild RUN_DIR/corpus from the run's finished generations.")
@click.option("--split", "do_split", is_flag=True,
              help="Write train/validation/test splits by source_id (RUN_DIR/corpus/splits and <split>.jsonl).")
@click.option("--fractions", type=FINITE, nargs=3, default=(0.8, 0.1, 0.1), show_default=True,
              help="Train, validation and test shares of source ids.")
def corpus_cmd(run_dir: Path, rebuild: bool, do_split: bool, fractions: tuple[float, float, float]) -> None:
    """Show (and optionally rebuild or split) the labelled generational corpus of an lm run."""
    from collapse_sim.corpus import load_corpus, split_corpus

    corpus_dir = run_dir / "corpus"
    try:
        if rebuild or not (corpus_dir / "hf").is_dir():
            build_corpus(run_dir)
        ds = load_corpus(corpus_dir)
        counts = split_corpus(corpus_dir, fractions) if do_split else None
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    by_gen = Counter(zip(ds["generation"], ds["label"]))
    for (gen, label), n in sorted(by_gen.items()):
        click.echo(f"generation {gen} ({label}): {n} rows")
    if counts is not None:
        click.echo("splits by source_id: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                   + f" (in {corpus_dir / 'splits'})")
