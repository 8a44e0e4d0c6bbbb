"""Batched continuation of prompts by a causal language model.

The recursive-training simulation asks a model for "the next 64 tokens" after each
human training block (Shumailov et al., Nature 2024). This module does that with
Hugging Face ``generate``: prompts are bucketed by length, left-padded (so every
row's last prompt token sits at the right edge and new tokens follow at once),
decoded with the KV cache, and each continuation is exactly ``max_new_tokens`` long
(end-of-text is suppressed) so the result is a block the next generation can train on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

DECODINGS = ("beam", "sample", "greedy")


@dataclass(frozen=True)
class Decoding:
    """How continuations are decoded."""

    method: str = "beam"  # the paper decodes with beam search
    num_beams: int = 5  # the paper: 5 beams
    temperature: float = 1.0  # sampling only; 1.0 = the model's own distribution
    top_p: float = 1.0  # sampling only; 1.0 = no nucleus truncation
    # The paper's text uses none; the authors' released code used 3.0, which the paper
    # says doubles perplexity. 1.0 = off.
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64  # the paper: "the next 64 tokens" per 64-token block

    def __post_init__(self) -> None:
        if self.method not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.method!r}")
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError("num_beams and max_new_tokens must be positive")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")

    def generation_config(self, pad_token_id: int, use_cache: bool = True) -> GenerationConfig:
        """The ``GenerationConfig`` for this decoding (fixed-length output, KV cache on by default)."""
        common = dict(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            pad_token_id=pad_token_id,
            use_cache=use_cache,
        )
        if self.method == "sample":
            return GenerationConfig(
                do_sample=True, num_beams=1, temperature=self.temperature, top_p=self.top_p, top_k=0, **common
            )
        beams = self.num_beams if self.method == "beam" else 1
        return GenerationConfig(do_sample=False, num_beams=beams, early_stopping=False, **common)

    def to_dict(self) -> dict:
        return asdict(self)


def _left_pad(rows: Sequence[torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length 1-D id tensors, padding on the left; return ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return ids, mask


def generate_continuations(
    model: PreTrainedModel,
    prompts: torch.Tensor | Sequence[Sequence[int]],
    decoding: Decoding,
    *,
    pad_token_id: int,
    batch_size: int = 64,
    seed: int = 0,
    use_cache: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Continue every prompt by ``decoding.max_new_tokens`` tokens; return ``(N, max_new_tokens)`` ids.

    Prompts (token ids, any lengths) are sorted by length and batched so each batch
    pads little; row ``i`` of the result continues ``prompts[i]``. Sampling is seeded
    per batch from ``seed`` without touching the global RNG, so the same seed and
    batch size give the same output.
    """
    rows = [torch.as_tensor(p, dtype=torch.long) for p in prompts]
    if not rows:
        return torch.empty((0, decoding.max_new_tokens), dtype=torch.long)
    if min(len(r) for r in rows) == 0:
        raise ValueError("every prompt needs at least one token")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    gen_cfg = decoding.generation_config(pad_token_id, use_cache=use_cache)
    device = next(model.parameters()).device
    out = torch.empty((len(rows), decoding.max_new_tokens), dtype=torch.long)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(rows), desc=f"generate ({decoding.method})", unit="seq", disable=not progress)
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for b, start in enumerate(range(0, len(rows), batch_size)):
                idx = order[start : start + batch_size]
                ids, mask = _left_pad([rows[i] for i in idx], pad_token_id)
                torch.manual_seed(seed * 1_000_003 + b)
                gen = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg
                )
                out[idx] = gen[:, ids.shape[1] :].cpu()
                bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return out


def continue_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    decoding: Decoding,
    *,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Text in, text out: the continuation of each text, decoded (prompt not included)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an end-of-text token")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    gen = generate_continuations(
        model, ids, decoding, pad_token_id=pad, batch_size=batch_size, seed=seed, progress=progress
    )
    return tokenizer.batch_decode(gen, skip_special_tokens=True)
