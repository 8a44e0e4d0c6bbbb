"""``collapse-sim pretrain``: the base / reference language model."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import click

from collapse_sim.cli import main
from collapse_sim.cli.options import POSITIVE, device_option


@main.command("pretrain")
@click.option("--preset", "preset_name", type=click.Choice(["reference", "cpu", "tiny"]), default="reference", show_default=True,
              help="Model size and budget: reference (~10M params, one GPU; the shipped models/reference-lm), cpu (3.4M params; the shipped models/base-lm, base of the lm simulation), tiny (tests).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output model directory.")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Prepared token data (from --prepare-only); made and cached under OUT/.cache when omitted.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Human text root (default ../shared/data).")
@click.option("--prepare-only", is_flag=True, help="Only train the tokenizer and write token arrays into OUT.")
@device_option(help="Training device (default: CUDA when present).")
@click.option("--time-budget", type=POSITIVE, default=None,
              help="Seconds of training; the schedule is fitted to it.")
@click.option("--seed", type=int, default=None)
def pretrain_cmd(preset_name: str, out: Path, data: Path | None, data_dir: Path | None, prepare_only: bool,
                 device: str | None, time_budget: float | None, seed: int | None) -> None:
    """Pre-train a GPT-2-style base model and byte-level BPE tokenizer on the human pool's train split."""
    from collapse_sim.pretrain import prepare_data, preset, pretrain  # torch loads only when needed

    cfg = preset(preset_name, **({"seed": seed} if seed is not None else {}))
    train = cfg.train
    if device:
        train = dataclasses.replace(train, device=device)
    if time_budget:
        train = dataclasses.replace(train, time_budget_s=time_budget)
    cfg = dataclasses.replace(cfg, train=train)
    if prepare_only:
        click.echo(prepare_data(cfg, out, data_dir))
        return
    command = "collapse-sim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = pretrain(cfg, out, data=data, root=data_dir, command=command)
    click.echo(f"model written to {path} (card: {path / 'CARD.md'})")
