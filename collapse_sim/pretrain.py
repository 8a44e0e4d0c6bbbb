"""Pre-train a small GPT-2-style base model on human text, with its own byte-level BPE tokenizer.

The base model is the starting point of every recursive-training generation and,
trained larger on a GPU, the detector's default reference LM (``models/reference-lm``).
It sees only the ``train`` split of the human pool (``hygiene.human_data``), which
excludes WikiText-2, so the simulations' fine-tuning and evaluation text is unseen.

Two steps, so the heavy one can run elsewhere: ``prepare_data`` trains the
tokenizer and writes token arrays (cached by config); ``pretrain`` trains the model
on them and saves a Hugging Face model directory (safetensors) with a card.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from collapse_sim.training import TrainConfig, block_perplexity, run_summary, train_lm
from hygiene.atomic import atomic_open, write_json
from hygiene.human_data import iter_documents
from hygiene.paths import data_dir, data_hint
from collapse_sim.presets import choose

EOS = "<|endoftext|>"


@dataclass
class PretrainConfig:
    """Base-model size, data and training budget."""

    vocab_size: int = 8192
    n_layer: int = 6
    n_embd: int = 320
    n_head: int = 5
    context: int = 256
    sources: tuple[str, ...] = ("books", "tinyshakespeare", "web", "news", "forums", "docs")
    max_words: int | None = None  # cap on training words (None: the whole train split)
    val_tokens: int = 200_000  # held-out tokens from the human pool's calib split
    tokenizer_words: int | None = 4_000_000  # BPE merges learnt on a seeded document sample of about this size
    seed: int = 0
    save_dtype: str = "float16"  # halves the shipped size; loaded back as float32 on CPU
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=1.0, lr=1e-3, batch_size=64, weight_decay=0.1, warmup_frac=0.02)
    )

    def data_key(self) -> str:
        """Hash of everything the token arrays depend on (the tokenizer and data; not the context length)."""
        key = json.dumps([self.vocab_size, list(self.sources), self.max_words, self.val_tokens,
                          self.tokenizer_words, self.seed])
        return hashlib.sha1(key.encode()).hexdigest()[:12]


PRESETS: dict[str, PretrainConfig] = {
    # ~10M parameters for one GPU; the shipped reference LM (146 s on an H100).
    "reference": PretrainConfig(
        train=TrainConfig(epochs=8.0, lr=2e-3, batch_size=256, weight_decay=0.1, warmup_frac=0.02, bf16=True,
                          evals_per_epoch=1, time_budget_s=240)
    ),
    # a small base that pre-trains on 2 CPU cores in a few minutes
    "cpu": PretrainConfig(
        n_layer=4, n_embd=192, n_head=3, context=128, max_words=3_000_000, val_tokens=50_000,
        tokenizer_words=None,  # BPE merges learnt on all of its 3M words (as the shipped base was)
        train=TrainConfig(epochs=1.0, lr=2e-3, batch_size=32, weight_decay=0.1, warmup_frac=0.02, time_budget_s=300),
    ),
    # seconds, for tests
    "tiny": PretrainConfig(
        vocab_size=512, n_layer=2, n_embd=64, n_head=2, context=64, sources=("web",),
        max_words=30_000, val_tokens=5_000, save_dtype="float32",
        train=TrainConfig(epochs=2.0, lr=3e-3, batch_size=16, weight_decay=0.0, warmup_frac=0.05),
    ),
}


def preset(name: str, **overrides) -> PretrainConfig:
    """A copy of preset ``name`` with top-level fields replaced."""
    return choose(PRESETS, name, **overrides)


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2 style) trained on ``texts``, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def encode_documents(tokenizer, texts: list[str], batch: int = 256) -> np.ndarray:
    """Token ids of ``texts``, each followed by the end-of-text id, concatenated (uint16 or int32)."""
    eos = tokenizer.eos_token_id
    dtype = np.uint16 if len(tokenizer) <= 65535 else np.int32
    parts: list[np.ndarray] = []
    for i in range(0, len(texts), batch):
        for ids in tokenizer(texts[i : i + batch], add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray(ids + [eos], dtype=dtype))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def pack_blocks(ids: np.ndarray, length: int) -> torch.Tensor:
    """Cut a token stream into contiguous ``(N, length)`` blocks (the tail is dropped)."""
    n = len(ids) // length
    return torch.from_numpy(ids[: n * length].astype(np.int64)).view(n, length)


def _human_texts(cfg: PretrainConfig, split: str, root: Path, max_words: int | None) -> list[str]:
    texts, words = [], 0
    for doc in iter_documents(root, sources=cfg.sources, splits=(split,)):
        texts.append(doc.text)
        words += len(doc.text.split())
        if max_words is not None and words >= max_words:
            break
    return texts


def _sample_texts(texts: list[str], words: int | None, seed: int) -> list[str]:
    """A seeded random sample of whole documents with about ``words`` words in all (None: every text)."""
    if words is None:
        return texts
    out, n = [], 0
    for i in np.random.default_rng(seed).permutation(len(texts)):
        out.append(texts[i])
        n += len(texts[i].split())
        if n >= words:
            break
    return out


def prepare_data(cfg: PretrainConfig, work_dir: str | Path, root: str | Path | None = None) -> Path:
    """Train the tokenizer and write ``tokens.npz`` (train, val) under ``work_dir/<data_key>``; cached."""
    root = Path(root) if root is not None else data_dir()
    out = Path(work_dir) / f"data-{cfg.data_key()}"
    if (out / "tokens.npz").exists() and (out / "tokenizer" / "tokenizer.json").exists():
        return out
    train_texts = _human_texts(cfg, "train", root, cfg.max_words)
    if not train_texts:
        raise FileNotFoundError(f"no human training text under {root}{data_hint(root)}")
    tok = train_tokenizer(_sample_texts(train_texts, cfg.tokenizer_words, cfg.seed), cfg.vocab_size)
    train_ids = encode_documents(tok, train_texts)
    val_ids = encode_documents(tok, _human_texts(cfg, "calib", root, cfg.val_tokens))[: cfg.val_tokens]
    if len(val_ids) < cfg.context:
        raise ValueError(f"too little held-out (calib) text in sources {cfg.sources} for validation")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out / "tokenizer")
    with atomic_open(out / "tokens.npz", "wb") as fh:
        np.savez_compressed(fh, train=train_ids, val=val_ids)
    write_json(out / "data.json", {"config": asdict(cfg), "train_tokens": int(len(train_ids)),
                                    "val_tokens": int(len(val_ids)), "train_documents": len(train_texts)})
    return out


def build_model(cfg: PretrainConfig, tokenizer):
    """A freshly initialised GPT-2 of the configured size."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    conf = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.context, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(conf)


def wikitext_perplexity(model, tokenizer, path: Path, context: int, max_tokens: int = 100_000) -> float | None:
    """Zero-shot perplexity on a WikiText-2 split (None when the file is absent)."""
    if not path.exists():
        return None
    ids = encode_documents(tokenizer, [path.read_text(encoding="utf-8")])[:max_tokens]
    return block_perplexity(model, pack_blocks(ids, context))


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    data: str | Path | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    command: str = "",
) -> Path:
    """Pre-train the base model and save it (HF format, safetensors) with ``pretrain.json`` and ``CARD.md``.

    ``data`` is a directory made by :func:`prepare_data` (made under ``out_dir`` when omitted).
    """
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    data = Path(data) if data is not None else prepare_data(cfg, out / ".cache", root)
    tok = PreTrainedTokenizerFast.from_pretrained(data / "tokenizer")
    arrays = np.load(data / "tokens.npz")
    train_blocks = pack_blocks(arrays["train"], cfg.context)
    val_blocks = pack_blocks(arrays["val"], cfg.context)
    model = build_model(cfg, tok)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    info = train_lm(model, train_blocks, cfg.train, val_blocks=val_blocks, progress=progress)
    model.to("cpu").float()
    root_dir = Path(root) if root is not None else data_dir()
    metrics = {
        "parameters": n_params,
        **run_summary(info, cfg.train, train_blocks, val_blocks, time.perf_counter() - t0),
        "wikitext2_test_perplexity": wikitext_perplexity(model, tok, root_dir / "wikitext-2" / "test.txt", cfg.context),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, cfg.save_dtype)).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_json(out / "pretrain.json", {"config": asdict(cfg), "metrics": metrics, "history": info["history"]})
    _write_card(out, cfg, metrics, command)
    return out


def _write_card(out: Path, cfg: PretrainConfig, m: dict, command: str) -> None:
    wt = m["wikitext2_test_perplexity"]
    lines = [
        "# Base / reference language model",
        "",
        f"GPT-2 architecture, {m['parameters'] / 1e6:.1f}M parameters ({cfg.n_layer} layers, width {cfg.n_embd}, "
        f"{cfg.n_head} heads, context {cfg.context}), byte-level BPE tokenizer with {cfg.vocab_size} tokens, "
        f"weights stored as {cfg.save_dtype} safetensors.",
        "",
        "## Data",
        f"The `train` split of the human pool (`hygiene.human_data`: sources {', '.join(cfg.sources)}; "
        "80% of documents by hash, books held out whole), "
        f"{m['train_tokens']:,} tokens. WikiText-2 is excluded (it is the simulations' fine-tuning and evaluation "
        "text). Validation: held-out tokens from the `calib` split. The `eval` split was never seen.",
        "",
        "## Training",
        f"{m['steps']:,} steps of batch {cfg.train.batch_size} ({m['epochs_seen']:.2f} epochs), AdamW lr "
        f"{cfg.train.lr}, cosine schedule, bf16={cfg.train.bf16}, on {m['device']} in {m['train_seconds']:.0f} s "
        f"({m['train_tokens_per_s']:,.0f} tokens/s).",
        "",
        "## Figures",
        f"- validation perplexity (calib split): {m['val_perplexity']:.1f}",
        f"- WikiText-2 test perplexity, zero-shot (this tokenizer): {wt:.1f}" if wt else "- WikiText-2 absent",
        "",
        "## Remake",
        "```bash",
        command or "collapse-sim pretrain --preset reference --out models/reference-lm",
        "```",
    ]
    with atomic_open(out / "CARD.md") as fh:
        fh.write("\n".join(lines) + "\n")
