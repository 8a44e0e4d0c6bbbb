"""The human text of a run, tokenised into fixed-size blocks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from collapse_sim.lm.config import LMConfig
from hygiene.errors import UserInputError
from hygiene.paths import data_dir, data_hint


def encode_blocks(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block: int) -> torch.Tensor:
    """Tokenise ``texts`` as one stream (no special tokens) and cut it into ``(N, block)`` blocks (tail dropped)."""
    if len(texts) == 0:  # a tokenizer given no texts fails with an IndexError
        return torch.empty((0, block), dtype=torch.long)
    ids = [i for chunk in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in chunk]
    n = len(ids) // block
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)


def read_blocks(path: str | Path, tokenizer: PreTrainedTokenizerBase, block: int) -> torch.Tensor:
    """The ``(N, block)`` token blocks of a text file, read as one stream; a file too short for two blocks
    (a run needs a training and a held-out block, or an evaluation block and the one after it) is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}{data_hint(path)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
                             ) from None
    if "\x00" in text:
        raise UserInputError(f"{path}: not a text file (it holds NUL bytes)")
    if not text.strip():
        raise UserInputError(f"{path}: no text to make {block}-token blocks from")
    blocks = encode_blocks(text.splitlines(keepends=True), tokenizer, block)
    if len(blocks) < 2:
        raise UserInputError(f"{path} holds fewer than two {block}-token blocks")
    return blocks


def spaced(n: int, k: int | None) -> np.ndarray:
    """``k`` evenly spaced indices into ``range(n)`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


@dataclass
class LMData:
    """The tokenised human text of a run."""

    train: torch.Tensor  # (N, block) human training blocks: gen-0 data and the prompts
    train_ids: np.ndarray  # their block indices in the training file (the corpus source ids)
    val: torch.Tensor  # held-out human blocks of the training file (checkpoint selection)
    eval: torch.Tensor  # (M, block) evaluation blocks (test perplexity)
    eval_next: torch.Tensor  # (M, block) the human block following each evaluation block
    train_name: str


def load_data(cfg: LMConfig, tokenizer: PreTrainedTokenizerBase) -> LMData:
    """Tokenise the training and evaluation files and take the configured subsets."""
    root = data_dir()
    train_path = Path(cfg.train_file) if cfg.train_file else root / "wikitext-2" / "valid.txt"
    eval_path = Path(cfg.eval_file) if cfg.eval_file else root / "wikitext-2" / "test.txt"
    blocks = read_blocks(train_path, tokenizer, cfg.block)
    n_val = max(1, int(round(cfg.val_fraction * len(blocks))))
    train_idx = spaced(len(blocks) - n_val, cfg.max_train_blocks)
    val = blocks[len(blocks) - n_val :][spaced(n_val, cfg.max_val_blocks)]
    ev = read_blocks(eval_path, tokenizer, cfg.block)
    eval_idx = spaced(len(ev) - 1, cfg.max_eval_blocks)
    return LMData(blocks[train_idx], train_idx, val, ev[eval_idx], ev[eval_idx + 1], train_path.name)
