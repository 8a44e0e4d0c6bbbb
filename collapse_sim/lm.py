"""Recursive training of a causal language model on its own output (Shumailov et al., Nature 2024).

The procedure, as in the paper and the authors' code:

1. A **base** model (the paper: pre-trained OPT-125m; here by default a small GPT-2
   the project pre-trains on human text disjoint from WikiText-2) is fine-tuned on
   the human training blocks (64 tokens each) to give **generation 0**.
2. Generation ``n`` continues every human training block by 64 tokens (beam search
   with 5 beams in the paper). Those continuations, one per human block and so a
   set the same size as the human one, are generation ``n``'s data.
3. Generation ``n + 1`` is the **same base** fine-tuned on a training set composed
   from that data by the reuse mode (``collapse_sim.reuse``): ``replace`` trains on
   the continuations alone (5 epochs), ``mix`` replaces ``real_fraction`` of them by
   human blocks resampled each generation (10 epochs), ``accumulate`` trains on the
   human blocks plus every generation's continuations so far. The human prompts are
   never part of a synthetic training block: the model trains on the 64 tokens it wrote.
4. Each fine-tune keeps the checkpoint with the lowest validation loss: on held-out
   human blocks (``select="real"``, the paper) or, from generation 1 on, on the
   previous generation's continuations of those held-out blocks (``select="synthetic"``).

Each arm (mode x decoding) writes ``<out>/<mode>/<decoding>/gen-NN/`` with the
generation's model (safetensors), the blocks it trained on, the continuations it
wrote and their scores; ``gen.json`` marks a generation done, so an interrupted run
resumes at the last finished generation. Generation 0 of a mode is shared by its
decodings (``<out>/<mode>/gen-00/model``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from collapse_sim import pretrain as pretraining
from collapse_sim.generation import Decoding, generate_continuations
from collapse_sim.metrics import SimulationResult, config_dict
from collapse_sim.reuse import MODES, Reuse
from collapse_sim.text_metrics import perplexity_profile, sample_perplexities, token_metrics
from collapse_sim.training import TrainConfig, block_perplexity, resolve_device, train_lm
from hygiene.atomic import write_json
from hygiene.paths import data_dir, models_dir

SELECTIONS = ("real", "synthetic")


def default_cache_dir() -> Path:
    """Where pre-trained base models are cached: ``$COLLAPSE_HYGIENE_CACHE`` or ``~/.cache/collapse-hygiene``."""
    return Path(os.environ.get("COLLAPSE_HYGIENE_CACHE", Path.home() / ".cache" / "collapse-hygiene"))


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
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------- data


def encode_blocks(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, block: int) -> torch.Tensor:
    """Tokenise ``texts`` as one stream (no special tokens) and cut it into ``(N, block)`` blocks (tail dropped)."""
    ids = [i for chunk in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in chunk]
    n = len(ids) // block
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)


def read_blocks(path: str | Path, tokenizer: PreTrainedTokenizerBase, block: int) -> torch.Tensor:
    """The ``(N, block)`` token blocks of a text file, read as one stream."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    blocks = encode_blocks(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True), tokenizer,
                           block)
    if len(blocks) < 2:
        raise ValueError(f"{path} holds fewer than two {block}-token blocks")
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


# --------------------------------------------------------------------------- models


def base_model_path(cfg: LMConfig, progress: bool = True) -> str:
    """``cfg.base_model``; else a shipped model (``models/base-lm``, ``models/reference-lm``) pre-trained
    with ``cfg.base``; else the base pre-trained from ``cfg.base`` (trained once, then cached)."""
    if cfg.base_model:
        return cfg.base_model
    wanted = json.loads(json.dumps(config_dict(cfg.base)))
    for name in ("base-lm", "reference-lm"):  # the cpu and the reference preset's base, both shipped
        card = models_dir() / name / "pretrain.json"
        if card.is_file() and json.loads(card.read_text())["config"] == wanted:
            return str(card.parent)
    key = hashlib.sha1(json.dumps(config_dict(cfg.base), sort_keys=True).encode()).hexdigest()[:12]
    out = default_cache_dir() / f"base-{key}"
    if not (out / "pretrain.json").is_file():
        pretraining.pretrain(cfg.base, out, progress=progress)
    return str(out)


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
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Fine-tune a fresh copy of ``base`` on token ``blocks``; with ``val_blocks`` keep the best checkpoint."""
    model = load_model(base, resolve_device(train.device))
    info = train_lm(model, blocks, train, val_blocks=val_blocks, progress=progress)
    return model, info


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save model (safetensors) and tokenizer into ``out`` atomically (a temporary directory renamed)."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the simulation


def arms(cfg: LMConfig) -> Iterator[tuple[str, Decoding]]:
    """Every (mode, decoding) chain of the run, in order."""
    for mode in cfg.modes:
        for dec in cfg.decodings:
            yield mode, dec


def gen_dir(out: Path, mode: str, method: str, generation: int) -> Path:
    return out / mode / method / f"gen-{generation:02d}"


def _model_dir(out: Path, mode: str, method: str, generation: int) -> Path:
    # generation 0 depends on the mode only (its epochs), so the mode's decodings share it
    return out / mode / "gen-00" / "model" if generation == 0 else gen_dir(out, mode, method, generation) / "model"


def _compose(
    cfg: LMConfig, mode: str, generation: int, human: torch.Tensor, continuations: list[torch.Tensor]
) -> torch.Tensor:
    """What generation ``generation`` trains on, from the human blocks and earlier generations' data."""
    if generation == 0:
        return human
    rng = np.random.default_rng([cfg.seed, generation, MODES.index(mode)])
    reuse = Reuse(mode, cfg.real_fraction)
    composed = reuse.compose(
        rng, human.numpy(), continuations[-1].numpy(), history=[human.numpy(), *(c.numpy() for c in continuations[:-1])]
    )
    return torch.from_numpy(np.ascontiguousarray(composed))


def trained_on(cfg: LMConfig, mode: str, generation: int) -> str:
    """In words, exactly what generation ``generation`` of ``mode`` trains on."""
    if generation == 0:
        return "the human training blocks"
    wrote = (f"the {cfg.block}-token continuations generation {generation - 1} wrote after each human training "
             "block (prompts not included)")
    if mode == "replace":
        return wrote
    if mode == "mix":
        return (f"{wrote}, {cfg.real_fraction:.0%} of them replaced by human training blocks drawn afresh "
                "this generation")
    return (f"the human training blocks plus the {cfg.block}-token continuations generations 0 to {generation - 1} "
            "wrote after each human training block (prompts not included)")


def _train_generation(
    cfg: LMConfig, base: str, mode: str, generation: int, blocks: torch.Tensor, val: torch.Tensor,
    model_dir: Path, tokenizer: PreTrainedTokenizerBase, progress: bool,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Train (or, when its model is saved, load) one generation's model."""
    info_path = model_dir.parent / f"{model_dir.name}.json"
    if (model_dir / "config.json").is_file() and info_path.is_file():
        return load_model(model_dir, resolve_device(cfg.train.device)), json.loads(info_path.read_text())
    model, info = finetune(base, blocks, cfg.train_config(mode, generation), val_blocks=val, progress=progress)
    save_model(model, tokenizer, model_dir)
    write_json(info_path, info)
    return model, info


def run_lm(cfg: LMConfig, out_dir: str | Path, progress: bool = True) -> SimulationResult:
    """Run every arm for ``cfg.generations`` generations (resuming finished ones), then write
    ``metrics.json``, the corpus, plots and ``report.md`` into ``out_dir``."""
    from collapse_sim.lm_report import plot_histograms, plot_perplexity, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(cfg, out)
    threads = torch.get_num_threads()
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        result, human_ppl = _run_arms(cfg, out, progress)
    finally:
        torch.set_num_threads(threads)
    plot_perplexity(result, out / "perplexity.png")
    for mode, method in (k.split("/") for k in result.summary["arms"]):
        hists = [load_file(str(gen_dir(out, mode, method, g) / "data.safetensors"))["sample_perplexity"].numpy()
                 for g in range(cfg.generations)]
        plot_histograms(hists, human_ppl[mode], out / f"histograms-{mode}-{method}.png", title=f"{mode} / {method}")
    build_corpus(out)
    write_report(out, result)
    return result


def _run_arms(cfg: LMConfig, out: Path, progress: bool) -> tuple[SimulationResult, dict[str, np.ndarray]]:
    """Every arm's generations (finished ones loaded), saved as ``metrics.json``; plus the human
    evaluation text's per-sample perplexities under each mode's generation 0."""
    base = base_model_path(cfg, progress)
    tokenizer = load_tokenizer(base)
    data = load_data(cfg, tokenizer)
    write_json(out / "run.json", {"config": config_dict(cfg), "base_model": base, "train_file": data.train_name,
                                  "n_train_blocks": len(data.train), "n_val_blocks": len(data.val),
                                  "n_eval_blocks": len(data.eval)})
    _save_tensors({"train": data.train, "train_ids": torch.from_numpy(data.train_ids)}, out / "human.safetensors")
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    gen0: dict[str, tuple[PreTrainedModel, dict[str, Any]]] = {}
    human_ppl: dict[str, np.ndarray] = {}
    for mode, dec in arms(cfg):
        if mode not in gen0:
            gen0[mode] = _train_generation(
                cfg, base, mode, 0, data.train, data.val, _model_dir(out, mode, dec.method, 0), tokenizer, progress
            )
            human_ppl[mode] = sample_perplexities(
                gen0[mode][0], data.eval, data.eval_next, batch_size=cfg.score_batch_size, progress=False
            )
        continuations: list[torch.Tensor] = []
        val_continuations: torch.Tensor | None = None
        recs: list[dict[str, Any]] = []
        bar = tqdm(range(cfg.generations), desc=f"{mode}/{dec.method}", unit="gen", disable=not progress)
        for g in bar:
            gdir = gen_dir(out, mode, dec.method, g)
            if (gdir / "gen.json").is_file():  # finished earlier: resume after it
                saved = load_file(str(gdir / "data.safetensors"))
                continuations.append(saved["continuations"].long())
                val_continuations = saved["val_continuations"].long() if "val_continuations" in saved else None
                recs.append(json.loads((gdir / "gen.json").read_text()))
                continue
            blocks = _compose(cfg, mode, g, data.train, continuations)
            val = val_continuations if (cfg.select == "synthetic" and g > 0) else data.val
            rec, cont, val_continuations = _generation(
                cfg, base, tokenizer, data, mode, dec, g, blocks, val, gen0[mode], human_ppl[mode], out, progress
            )
            recs.append(rec)
            continuations.append(cont)
            bar.set_postfix(eval_ppl=round(rec["eval_perplexity"], 1))
        records[(mode, dec.method)] = recs
    human = {
        **token_metrics(data.eval_next.numpy(), data.train.numpy(), len(tokenizer)),
        **{f"{mode}/{k}": v for mode in human_ppl for k, v in perplexity_profile(human_ppl[mode], human_ppl[mode]).items()},
    }
    result = _result(cfg, records, human, base)
    result.save(out)
    return result, human_ppl


def _generation(
    cfg: LMConfig, base: str, tokenizer: PreTrainedTokenizerBase, data: LMData, mode: str, dec: Decoding,
    g: int, blocks: torch.Tensor, val: torch.Tensor, gen0: tuple[PreTrainedModel, dict[str, Any]],
    human_ppl: np.ndarray, out: Path, progress: bool,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
    """One generation of one arm: train on ``blocks`` (generation 0 is ``gen0``), evaluate, continue
    every human training block, score the continuations under generation 0, save; return its
    record, its continuations and (``select="synthetic"``) its continuations of the validation blocks."""
    t0 = time.perf_counter()
    pad = tokenizer.pad_token_id
    gdir = gen_dir(out, mode, dec.method, g)
    if g == 0:
        model, info = gen0
    else:
        model, info = _train_generation(cfg, base, mode, g, blocks, val, _model_dir(out, mode, dec.method, g),
                                        tokenizer, progress)
    eval_ppl = block_perplexity(model, data.eval, batch_size=cfg.score_batch_size)
    cont = generate_continuations(model, data.train, dec, pad_token_id=pad, batch_size=cfg.gen_batch_size,
                                  seed=cfg.seed + g, progress=progress)
    tensors = {"train_blocks": blocks.to(torch.int32), "continuations": cont.to(torch.int32)}
    val_cont = None
    if cfg.select == "synthetic":
        val_cont = generate_continuations(model, data.val, dec, pad_token_id=pad, batch_size=cfg.gen_batch_size,
                                          seed=cfg.seed + g, progress=False)
        tensors["val_continuations"] = val_cont.to(torch.int32)
    ppl = sample_perplexities(gen0[0], data.train, cont, batch_size=cfg.score_batch_size, progress=False)
    tensors["sample_perplexity"] = torch.from_numpy(ppl)
    gdir.mkdir(parents=True, exist_ok=True)
    _save_tensors(tensors, gdir / "data.safetensors")
    rec = {
        "generation": g, "mode": mode, "decoding": dec.to_dict(), "eval_perplexity": eval_ppl,
        "trained_on": trained_on(cfg, mode, g), "n_train_blocks": len(blocks),
        "selected_on": "human validation blocks" if val is data.val else "synthetic validation continuations",
        "best_step": info["best_step"], "best_val_loss": info["best_val_loss"],
        "train_tokens_per_s": info["tokens_per_s"],
        **token_metrics(cont.numpy(), data.train.numpy(), len(tokenizer)),
        **perplexity_profile(ppl, human_ppl),
        "seconds": time.perf_counter() - t0,
    }
    write_json(gdir / "gen.json", rec)  # written last: marks the generation finished
    return rec, cont, val_cont


def _check_resumable(cfg: LMConfig, out: Path) -> None:
    """Refuse to resume a run directory written with a different configuration."""
    path = out / "run.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())["config"]
    new = json.loads(json.dumps(config_dict(cfg)))
    for c in (old, new):  # how many generations, and where they run, may change between sessions
        c.pop("generations", None)
        c["train"].pop("device", None), c["train"].pop("threads", None)
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new.get(k))
        raise ValueError(f"{out} holds a run with a different configuration ({', '.join(diff)}); use another --out")


METRICS = (
    "eval_perplexity", "distinct_1", "distinct_2", "distinct_3", "vocabulary_size", "unigram_kl",
    "repeated_4gram_share", "ppl_q05", "ppl_q25", "ppl_q50", "ppl_q75", "ppl_q95",
    "share_below_human_p05", "share_above_human_p95",
)


def _result(
    cfg: LMConfig, records: dict[tuple[str, str], list[dict[str, Any]]], human: dict[str, float], base: str
) -> SimulationResult:
    """The shared-schema result: one metric per arm and measure (``<mode>/<decoding>/<measure>``)."""
    result = SimulationResult("lm", config_dict(cfg), list(range(cfg.generations)))
    arms_summary = {}
    for (mode, method), recs in records.items():
        for name in METRICS:
            result.add(f"{mode}/{method}/{name}", np.array([[r[name] for r in recs]]))
        ppl = [r["eval_perplexity"] for r in recs]
        arms_summary[f"{mode}/{method}"] = {
            "eval_perplexity_gen0": ppl[0],
            "eval_perplexity_last": ppl[-1],
            "ratio_last_to_gen0": ppl[-1] / ppl[0],
            "max_ratio_to_gen0": max(ppl) / ppl[0],
            "trained_on": trained_on(cfg, mode, 1) if cfg.generations > 1 else trained_on(cfg, mode, 0),
            "selected_on": recs[-1]["selected_on"],
        }
    result.summary = {"base_model": base, "human": human, "arms": arms_summary, "paper": PAPER}
    return result


#: The paper's figures (Shumailov et al., Nature 2024, Fig. 1), OPT-125m on WikiText-2.
PAPER = {
    "zero_shot_perplexity": 115,
    "real_finetune_perplexity": 34,
    "replace_points_lost": [20, 28],  # Fig. 1b: generations lose about 20-28 perplexity points
    "replace_ratio": [(34 + 20) / 34, (34 + 28) / 34],
    "mix_axis": [32, 42],  # Fig. 1c: only minor degradation, the plot's axis spans 32-42
    "mix_ratio_max": 42 / 34,
}


# --------------------------------------------------------------------------- corpus


def build_corpus(run_dir: str | Path) -> Path:
    """Write ``run_dir/corpus`` from the run's saved generations: the human training blocks
    (generation 0) and every finished generation's continuations (generation ``g + 1`` is
    what model generation ``g`` wrote). Returns the corpus directory."""
    from collapse_sim.corpus import CorpusRow, write_corpus  # imports `datasets`, slow: only when needed

    run = Path(run_dir)
    info_path = run / "run.json"
    if not info_path.is_file() or not (run / "human.safetensors").is_file():
        raise FileNotFoundError(f"{run} is not an lm run directory (no run.json / human.safetensors)")
    info = json.loads(info_path.read_text())
    seed = info["config"]["seed"]
    tokenizer = load_tokenizer(info["base_model"])
    human = load_file(str(run / "human.safetensors"))
    prompts = tokenizer.batch_decode(human["train"].tolist())
    source_ids = [f"{info['train_file']}:{i}" for i in human["train_ids"].tolist()]
    rows = [
        CorpusRow(text=text, generation=0, label="human", generator="human", decoding="", mode="", seed=seed,
                  prompt="", source_id=sid)
        for text, sid in zip(prompts, source_ids)
    ]
    for mode in info["config"]["modes"]:
        for gdir in sorted(run.glob(f"{mode}/*/gen-*")):
            if not (gdir / "gen.json").is_file():
                continue
            g, method = int(gdir.name.split("-")[1]), gdir.parent.name
            texts = tokenizer.batch_decode(load_file(str(gdir / "data.safetensors"))["continuations"].tolist())
            generator = f"{_model_dir(run, mode, method, g)} (generation {g})"
            rows.extend(
                CorpusRow(text=text, generation=g + 1, label="synthetic", generator=generator, decoding=method,
                          mode=mode, seed=seed, prompt=prompt, source_id=sid)
                for text, prompt, sid in zip(texts, prompts, source_ids)
            )
    write_corpus(rows, run / "corpus")
    return run / "corpus"
