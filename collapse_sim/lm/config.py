"""What one recursive-training experiment is: its configuration, the presets, and the paper's figures
it is measured against."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from collapse_sim import pretrain as pretraining
from collapse_sim.generation import Decoding
from collapse_sim.reuse import MODES, Reuse
from collapse_sim.training import TrainConfig
from collapse_sim.presets import choose

SELECTIONS = ("real", "synthetic")


@dataclass
class LMConfig:
    """One recursive-training experiment: data, base model, arms, fine-tuning and decoding."""

    generations: int = 5  # model generations, generation 0 included
    modes: tuple[str, ...] = ("replace", "mix")  # the paper's two settings (Fig. 1b and 1c)
    real_fraction: float = 0.1  # the paper: "10% of the original data" kept in mix
    decoding: Decoding = field(default_factory=Decoding)  # the paper: beam search, 5 beams
    sampling_arm: bool = True  # also run pure sampling beside a non-sampling decoding
    select: str = "real"  # the paper selects checkpoints on the real validation set
    block: int = 64  # the paper: 64-token blocks, 64-token continuations
    epochs: dict[str, float] = field(
        default_factory=lambda: {"replace": 5.0, "mix": 10.0, "accumulate": 5.0}
    )  # the paper: 5 epochs with no data kept, 10 with 10% kept; accumulate as replace
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-4, batch_size=32))
    train_file: str | None = None  # default: <data>/wikitext-2/valid.txt (train split not offline)
    eval_file: str | None = None  # default: <data>/wikitext-2/test.txt
    val_fraction: float = 0.1  # tail of the training file held out as the real validation set
    max_train_blocks: int | None = None  # evenly spaced subset of training blocks (None: all)
    max_val_blocks: int | None = None
    max_eval_blocks: int | None = None
    base_model: str | None = None  # HF id or path; None: pre-train (once, cached) from ``base``
    base: pretraining.PretrainConfig = field(default_factory=lambda: pretraining.preset("cpu"))
    gen_batch_size: int = 64
    score_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes must be among {MODES}, got {self.modes}")
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        if self.generations < 1:
            raise ValueError("generations must be at least 1")
        Reuse("mix", self.real_fraction)  # validates the fraction

    @property
    def decodings(self) -> tuple[Decoding, ...]:
        """The decoding arms: the chosen decoding, plus pure sampling when ``sampling_arm``."""
        if self.sampling_arm and self.decoding.method != "sample":
            return (self.decoding, dataclasses.replace(self.decoding, method="sample"))
        return (self.decoding,)

    def train_config(self, mode: str, generation: int) -> TrainConfig:
        """The fine-tuning config of one generation (its own seed, the mode's epochs)."""
        return dataclasses.replace(self.train, epochs=self.epochs[mode], seed=self.seed + generation)


PRESETS: dict[str, LMConfig] = {
    # 2 CPU cores: 5 generations of replace and of mix, beam and sampling arms, in under 20 minutes
    # (on 2 idle cores 256 blocks took 24.5 minutes and 192 took 20.1: nearly all of it is training and
    # generation, which scale with the blocks). Its own 3.4M-parameter base: the 10M reference LM is ~3x slower.
    "cpu": LMConfig(
        max_train_blocks=160,  # 10k tokens per generation: sized to the time budget
        max_val_blocks=64,
        max_eval_blocks=384,
        # 2 threads: x1.58 over 1 on two idle cores; fp32: bf16 autocast ran x0.57 on this AMD host
        # (no bf16 instructions), though x1.53 on a Xeon with them (pass --bf16 there)
        train=TrainConfig(lr=5e-4, batch_size=32, threads=2),
        base=pretraining.preset("cpu"),
    ),
    # the paper's sizes: every block of the file, 5 / 10 epochs; for a GPU. The base is the
    # reference-size GPT-2 (the shipped models/reference-lm when it matches), or --base-model.
    "paper": LMConfig(
        train=TrainConfig(lr=1e-4, batch_size=32, bf16=True),  # lr, batch: not given in the paper's text
        base=pretraining.preset("reference"),
        gen_batch_size=256,
        score_batch_size=256,
    ),
    # seconds, for tests: a 2-layer model, 32-token blocks
    "tiny": LMConfig(
        generations=3,
        block=32,
        decoding=Decoding(max_new_tokens=32),
        max_train_blocks=160,
        max_val_blocks=32,
        max_eval_blocks=96,
        train=TrainConfig(lr=3e-3, batch_size=16, warmup_frac=0.0, threads=1),  # 1 thread: faster for 0.1M params
        base=pretraining.preset("tiny"),
    ),
}


def preset(name: str, **overrides: Any) -> LMConfig:
    """A copy of preset ``name`` with top-level fields replaced."""
    return choose(PRESETS, name, **overrides)



#: The paper's figures (Shumailov et al., Nature 2024, Fig. 1), OPT-125m on WikiText-2.
PAPER = {
    "zero_shot_perplexity": 115,
    "real_finetune_perplexity": 34,
    "replace_points_lost": [20, 28],  # Fig. 1b: generations lose about 20-28 perplexity points
    "replace_ratio": [(34 + 20) / 34, (34 + 28) / 34],
    "mix_axis": [32, 42],  # Fig. 1c: only minor degradation, the plot's axis spans 32-42
    "mix_ratio_max": 42 / 34,
}
