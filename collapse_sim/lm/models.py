"""The language models of a run: the base (shipped, cached or pre-trained once), loading, fine-tuning
and saving, and the train-or-load step that lets a run resume."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from collapse_sim import pretrain as pretraining
from collapse_sim.lm.config import LMConfig
from collapse_sim.metrics import config_dict
from collapse_sim.resume import read_record, reading
from collapse_sim.training import TrainConfig, resolve_device, train_lm
from hygiene.atomic import write_json
from hygiene.errors import UserInputError
from hygiene.paths import models_dir


def default_cache_dir() -> Path:
    """Where pre-trained base models are cached: ``$COLLAPSE_HYGIENE_CACHE`` or ``~/.cache/collapse-hygiene``."""
    return Path(os.environ.get("COLLAPSE_HYGIENE_CACHE", Path.home() / ".cache" / "collapse-hygiene"))



def base_model_path(cfg: LMConfig, progress: bool = True) -> str:
    """``cfg.base_model``; else a shipped model (``models/base-lm``, ``models/reference-lm``) pre-trained
    with ``cfg.base``; else the base pre-trained from ``cfg.base`` (trained once, then cached)."""
    if cfg.base_model:
        path = Path(cfg.base_model).expanduser()
        if not path.is_dir() and (path.is_absolute() or cfg.base_model.startswith((".", "~")) or path.exists()
                                  or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", cfg.base_model)):
            raise UserInputError(f"no model at {cfg.base_model}: give a causal LM folder or a Hub model id")
        return cfg.base_model
    wanted = _without_unset(json.loads(json.dumps(config_dict(cfg.base))))
    for name in ("base-lm", "reference-lm"):  # the cpu and the reference preset's base, both shipped
        card = models_dir() / name / "pretrain.json"
        if card.is_file() and _without_unset(read_record(card, "config", fix="restore the shipped models")["config"]) == wanted:
            return str(card.parent)
    key = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
    out = default_cache_dir() / f"base-{key}"
    if not (out / "pretrain.json").is_file():
        pretraining.pretrain(cfg.base, out, progress=progress)
    return str(out)


def _without_unset(config: Any) -> Any:
    """A configuration without its unset (None) options: an option added since a model was trained, unset,
    leaves that model the same base."""
    if isinstance(config, dict):
        return {k: _without_unset(v) for k, v in config.items() if v is not None}
    return config


def load_model(path: str | Path, device: torch.device | str = "cpu") -> PreTrainedModel:
    """A causal LM from an HF id or directory, in float32 on ``device`` (remote code off)."""
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).to(device)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token (the end-of-text token when it has none)."""
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def finetune(
    base: str | Path,
    blocks: torch.Tensor,
    train: TrainConfig,
    val_blocks: torch.Tensor | None = None,
    progress: bool = True,
    full_batches: bool = False,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Fine-tune a fresh copy of ``base`` on token ``blocks``; with ``val_blocks`` keep the best checkpoint
    (``full_batches``: see :func:`collapse_sim.training.train_lm`)."""
    model = load_model(base, resolve_device(train.device))
    info = train_lm(model, blocks, train, val_blocks=val_blocks, progress=progress, full_batches=full_batches)
    return model, info


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save model (safetensors) and tokenizer into ``out`` atomically (a temporary directory renamed)."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)



def gen_dir(out: Path, mode: str, method: str, generation: int) -> Path:
    """Where one generation of one arm keeps its files: ``<out>/<mode>/<decoding>/gen-NN``."""
    return out / mode / method / f"gen-{generation:02d}"


def model_dir(out: Path, mode: str, method: str, generation: int) -> Path:
    """Where one generation of one arm keeps its model."""
    # generation 0 depends on the mode only (its epochs), so the mode's decodings share it
    return out / mode / "gen-00" / "model" if generation == 0 else gen_dir(out, mode, method, generation) / "model"


#: what a fine-tune's record holds (:func:`collapse_sim.training.train_lm`) and the simulations read
TRAINING_RECORD = ("best_step", "best_val_loss", "tokens_per_s")


def train_or_load(
    model_dir: Path, info_path: Path, train: Callable[[], tuple[PreTrainedModel, dict[str, Any]]],
    tokenizer: PreTrainedTokenizerBase, device: str | None = None,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The model saved in ``model_dir`` with its training record ``info_path`` (an earlier, interrupted
    session trained it); else ``train()``'s model, saved there with its record (written last)."""
    if (model_dir / "config.json").is_file() and info_path.is_file():
        info = read_record(info_path, *TRAINING_RECORD)
        with reading(model_dir):
            return load_model(model_dir, resolve_device(device)), info
    model, info = train()
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, tokenizer, model_dir)
    write_json(info_path, info)
    return model, info
