"""Recursive training of a causal language model on its own output (Shumailov et al., Nature 2024).

- ``config``: the experiment's configuration, its presets and the paper's figures;
- ``data``: the human text, tokenised into blocks;
- ``models``: the base model, loading, fine-tuning, saving;
- ``simulation``: the generations of every arm (``run_lm``), resumable;
- ``report``: the figures and ``report.md``;
- ``corpus``: the labelled generational corpus a run leaves.
"""
from collapse_sim.lm.config import PAPER, PRESETS, SELECTIONS, LMConfig, preset
from collapse_sim.lm.corpus import build_corpus
from collapse_sim.lm.data import LMData, encode_blocks, load_data, read_blocks, spaced
from collapse_sim.lm.models import base_model_path, finetune, load_model, load_tokenizer, save_model
from collapse_sim.lm.simulation import run_lm

__all__ = [
    "PAPER", "PRESETS", "SELECTIONS", "LMConfig", "LMData", "base_model_path", "build_corpus", "encode_blocks", "finetune",
    "load_data", "load_model", "load_tokenizer", "preset", "read_blocks", "run_lm", "save_model", "spaced",
]
