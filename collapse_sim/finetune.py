"""Fine-tune a causal LM on a set of texts: the detector's "machine" LM.

The detector scores a text under two models with one tokenizer: the human reference
LM (``models/reference-lm``, pre-trained on pre-2022 human text) and this one, the same
model fine-tuned on machine-written text (chat-assistant answers, essays and rewrites,
base-model samples). Where the two disagree, per token, is the likelihood-ratio evidence
that the text was written in the machine register (:mod:`hygiene.scoring`).

Training is the one loop of :mod:`collapse_sim.training` (AdamW, cosine schedule,
best-validation checkpoint, a time budget); the texts are packed end to end into blocks
of the model's context, with a seeded share of them held out for validation.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from collapse_sim.pretrain import encode_documents, pack_blocks
from collapse_sim.training import TrainConfig, block_perplexity, run_summary, train_lm
from hygiene.atomic import atomic_open, write_json
from hygiene.lm import resolve_model


@dataclass
class FinetuneConfig:
    """The base model, how much text is held out, and the training budget."""

    base: str = "reference-lm"
    #: share of the texts held out for validation (whole texts, seeded)
    val_fraction: float = 0.05
    seed: int = 0
    save_dtype: str = "float16"  # halves the shipped size; loaded back as float32 on CPU
    #: a lower learning rate than pre-training: the model keeps its English and learns the register
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=1.0, lr=5e-4, batch_size=16, weight_decay=0.1, warmup_frac=0.03, evals_per_epoch=2))


def finetune_lm(texts: Sequence[str], cfg: FinetuneConfig, out_dir: str | Path, progress: bool = True,
                command: str = "", data_note: str = "") -> Path:
    """Fine-tune ``cfg.base`` on ``texts`` and save it (HF format, safetensors) with ``finetune.json`` and a card."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        raise ValueError("fine-tuning needs at least two texts")
    source = resolve_model(cfg.base)
    if not Path(source).is_dir():
        raise FileNotFoundError(f"base model {cfg.base!r} is not a model folder ({source})")
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    context = model.config.n_positions
    order = np.random.default_rng(cfg.seed).permutation(len(texts))
    n_val = max(1, int(round(cfg.val_fraction * len(texts))))
    val_blocks = pack_blocks(encode_documents(tok, [texts[i] for i in order[:n_val]]), context)
    train_blocks = pack_blocks(encode_documents(tok, [texts[i] for i in order[n_val:]]), context)
    if len(train_blocks) == 0 or len(val_blocks) == 0:
        raise ValueError(f"too little text for blocks of {context} tokens")
    before = block_perplexity(model, val_blocks)
    t0 = time.perf_counter()
    info = train_lm(model, train_blocks, cfg.train, val_blocks=val_blocks, progress=progress)
    model.to("cpu").float()
    metrics = {"texts": len(texts), "val_perplexity_before": before,
               **run_summary(info, cfg.train, train_blocks, val_blocks, time.perf_counter() - t0)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, cfg.save_dtype)).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_json(out / "finetune.json", {"config": json.loads(json.dumps(asdict(cfg))), "metrics": metrics,
                                       "history": info["history"]})
    _write_card(out, cfg, metrics, command, data_note)
    return out


def _write_card(out: Path, cfg: FinetuneConfig, m: dict, command: str, data_note: str) -> None:
    lines = [
        "# Machine language model (the detector's contrast model)",
        "",
        f"`{cfg.base}` fine-tuned on machine-written text; same architecture and tokenizer, weights stored as "
        f"{cfg.save_dtype} safetensors. The detector reads the per-token log-likelihood ratio between this "
        "model and the reference LM.",
        "",
        "## Data",
        data_note or f"{m['texts']:,} texts.",
        f"{m['train_tokens']:,} training tokens; {m['val_tokens']:,} validation tokens from "
        f"{cfg.val_fraction:.0%} of the texts, held out whole.",
        "",
        "## Training",
        f"{m['steps']:,} steps of batch {cfg.train.batch_size} ({m['epochs_seen']:.2f} epochs), AdamW lr "
        f"{cfg.train.lr}, cosine schedule, on {m['device']} in {m['train_seconds']:.0f} s "
        f"({m['train_tokens_per_s']:,.0f} tokens/s).",
        "",
        "## Figures",
        f"- validation perplexity (held-out machine text): {m['val_perplexity_before']:.1f} before, "
        f"{m['val_perplexity']:.1f} after",
        "",
        "## Remake",
        "```bash",
        command,
        "```",
    ]
    with atomic_open(out / "CARD.md") as fh:
        fh.write("\n".join(lines) + "\n")
