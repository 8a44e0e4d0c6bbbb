"""``collapse-sim finetune-lm``: the detector's machine LM, fine-tuned from the reference LM on machine text."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import POSITIVE, device_option, quiet_option


@main.command("finetune-lm")
@click.option("--recipe", "recipe_path", type=click.Path(), default="models/detector/recipe.yaml",
              show_default=True, help="Detector recipe (a file, or a shipped detector's name: detector): its "
                                      "machine_lm section and training groups say what to learn.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model directory [default: the recipe's machine_lm.out].")
@device_option(help="Training device (default: CUDA when present).")
@click.option("--time-budget", type=POSITIVE, default=None,
              help="Seconds of training [default: the recipe's].")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps of training: the same training on any machine [default: the recipe's].")
@quiet_option()
def finetune_cmd(recipe_path: str, out: Path | None, device: str | None, time_budget: float | None,
                 max_steps: int | None, quiet: bool) -> None:
    """Fine-tune the recipe's base LM on the machine side of the detector's training data."""
    from collapse_sim.finetune import FinetuneConfig, finetune_lm
    from hygiene.errors import UserInputError
    from hygiene.recipe import load_recipe, machine_lm_texts

    try:
        recipe = load_recipe(recipe_path)
        m = recipe.machine_lm
        cfg = FinetuneConfig(base=m.base, seed=recipe.seed)
        cfg.train = dataclasses.replace(cfg.train, time_budget_s=time_budget or m.time_budget_s,
                                        max_steps=max_steps or m.max_steps,
                                        **({"device": device} if device else {}))
        texts = machine_lm_texts(recipe)
        extra = [f"up to {m.corpus_max:,} synthetic texts of `{recipe.corpus}/train.jsonl`"] if m.corpus_max else []
        extra += [f"up to {m.dev_max:,} machine texts of detect-dev's training groups"] if m.dev_max else []
        note = (f"{len(texts):,} machine texts: the machine side of detect-chat's training groups"
                f"{', ' + ' and '.join(extra) if extra else ''} (recipe `{recipe_path}`, seed {recipe.seed}).")
        command = "collapse-sim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = finetune_lm(texts, cfg, out or Path(m.out), progress=not quiet, command=command, data_note=note)
    except (UserInputError, ValueError, FileNotFoundError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"model written to {path} (card: {path / 'CARD.md'})")
