"""Recursive training on polluted crawls: raw, filtered by ``hygiene``, and human-only.

Each generation's "web" mixes human documents with documents the previous model
wrote. Three chains start from the same generation-0 model and run side by side:

- ``unfiltered`` trains on the whole crawl, a share ``synthetic_fraction`` of which
  its own previous model wrote;
- ``filtered`` trains on the same kind of crawl after the ``hygiene`` filter (exact
  and near dedup, Gopher quality, the synthetic-text detector). With ``policy="drop"``
  it keeps what the filter keeps; with ``policy="resample"`` (Drayson et al. 2025,
  arXiv 2502.15654) the hard stages drop, the detector only scores, and the survivors
  are resampled with replacement, weights ``(1 - p_synthetic) ** beta``;
- ``oracle`` trains on the human documents of the crawl only: the best a filter can do.

The human text (WikiText-2 ``valid``, outside the pool the base model saw) is split
once, by position, into three disjoint parts: the tail (``lm.val_fraction``) selects
checkpoints, the first ``gen0_fraction`` of the rest trains generation 0, and the
remainder, cut into documents of ``doc_blocks`` consecutive blocks, is the **crawl
pool** every crawl draws its human documents from. Perplexity is measured on
WikiText-2 ``test``. A crawl of generation ``g`` holds the same human documents for
all three chains (drawn afresh each generation) and, per chain, the continuations its
generation ``g - 1`` wrote after human prompts drawn from the pool.

Every chain takes the same number of optimiser steps per generation (``epochs`` over a
full crawl), so the chains differ in their data, not their compute. Fine-tunes start
from the same base each generation and keep the checkpoint with the lowest loss on the
human validation blocks, as in :mod:`collapse_sim.lm`.

Output: ``<out>/run-RR/gen-00/`` (the shared generation 0) and
``<out>/run-RR/<chain>/gen-GG/`` (model, ``crawl.jsonl`` with labels and filter
decisions, ``data.safetensors``, ``gen.json``); ``gen.json`` marks a generation done, so
an interrupted run resumes after it. Then ``metrics.json`` (shared schema),
``perplexity.png`` and ``report.md``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from collapse_sim.lm.config import LMConfig, preset as lm_preset
from collapse_sim.lm.data import read_blocks, spaced
from collapse_sim.lm.models import base_model_path, finetune, load_tokenizer, train_or_load
from collapse_sim.generation import Decoding, generate_continuations
from collapse_sim.metrics import SimulationResult, config_dict
from collapse_sim.polluted_report import plot_chains, write_report
from collapse_sim.resume import (check_resumable, check_same_data, load_tensors, read_record, redo, save_tensors,
                                  tensor_digest)
from collapse_sim.text_metrics import perplexity_profile, sample_perplexities
from collapse_sim.training import TrainConfig, block_perplexity, resolve_device
from hygiene.atomic import atomic_open, write_json
from hygiene.config import FilterConfig, QualityConfig
from hygiene.filtering import filter_records
from hygiene.paths import data_dir
from hygiene.stages.synthetic import Detector, load_default_detector
from collapse_sim.presets import choose

CHAINS = ("unfiltered", "filtered", "oracle")
POLICIES = ("drop", "resample")
#: per chain and generation, besides the crawl statistics of the filtered chain
MEASURES = (
    "eval_perplexity", "ppl_q05", "ppl_q25", "ppl_q50", "ppl_q75", "ppl_q95",
    "share_below_human_p05", "share_above_human_p95",
    "train_docs", "train_blocks", "train_human_docs", "train_synthetic_docs",
)
#: the filtered chain's view of its crawl (NaN at generation 0, which has no crawl)
FILTER_MEASURES = (
    "detector_recall", "detector_human_flagged", "human_kept", "synthetic_removed", "train_synthetic_share",
)
#: what every chain's gen.json holds (generation 0's, shared, and the other chains' too hold the filter's NaNs)
RECORDED = MEASURES + FILTER_MEASURES


def wikitext_filter_config() -> FilterConfig:
    """The hygiene filter's defaults, less Gopher's "80% of words alphabetic" rule: WikiText-2 is
    pre-tokenised (punctuation stands alone as a word, numbers read ``1 @,@ 000``), so that rule alone
    rejects about 75% of its human 128-token documents; with it off the quality stage keeps about 85%."""
    return FilterConfig(quality=QualityConfig(min_alpha_words_ratio=None))


@dataclass
class PollutedConfig:
    """One polluted-crawl experiment: crawl composition, filter policy, and the LM set-up it runs on."""

    synthetic_fraction: float = 0.5  # half of each crawl machine-written
    generations: int = 5  # model generations, generation 0 included
    runs: int = 3  # independent repetitions (own seed each) for the spread over runs
    policy: str = "drop"  # "drop" what the filter rejects, or "resample" by detector weights
    beta: float = 1.0  # resample weight exponent: (1 - p)^beta (Drayson et al. 2025); 0 = uniform
    crawl_docs: int = 128  # documents per crawl: 128 x 128 tokens, 16k tokens per generation
    doc_blocks: int = 2  # blocks per document: 128 tokens, ~100 words, above Gopher's 50-word minimum
    gen0_fraction: float = 0.5  # share of the non-validation human blocks kept for generation 0
    epochs: float = 5.0  # over a full crawl; the paper fine-tunes 5 epochs when no original data is kept
    # base, block, decoding, training, eval: the lm cpu preset, with a generation 0 of 256 blocks (16k tokens,
    # a crawl's size)
    lm: LMConfig = field(default_factory=lambda: lm_preset("cpu", max_train_blocks=256))
    filter: FilterConfig = field(default_factory=wikitext_filter_config)  # detector: filter.synthetic
    seed: int = 0
    #: every fine-tune's batches full (the chains' training sets differ in size, and a short last batch would
    #: tell them apart by more than their data does); False: an epoch ends with a short batch, as runs made
    #: before this option did
    full_batches: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.synthetic_fraction < 1.0:
            raise ValueError(f"synthetic_fraction must be in (0, 1), got {self.synthetic_fraction}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.generations < 1 or self.runs < 1 or self.doc_blocks < 1:
            raise ValueError("generations, runs and doc_blocks must be at least 1")
        if self.n_human < 1:
            raise ValueError(f"a crawl of {self.crawl_docs} documents leaves no human document at this fraction")
        if self.n_synthetic < 1:  # nothing to filter: the three chains would be one
            raise ValueError(f"a crawl of {self.crawl_docs} documents holds no machine-written document at "
                             f"synthetic_fraction {self.synthetic_fraction}: raise it to at least "
                             f"{0.5 / self.crawl_docs:.3g}")
        if not 0.0 < self.gen0_fraction < 1.0:
            raise ValueError(f"gen0_fraction must be in (0, 1), got {self.gen0_fraction}")

    @property
    def n_synthetic(self) -> int:
        """Machine-written documents per crawl."""
        return int(round(self.synthetic_fraction * self.crawl_docs))

    @property
    def n_human(self) -> int:
        """Human documents per crawl."""
        return self.crawl_docs - self.n_synthetic

    @property
    def doc_tokens(self) -> int:
        """Tokens per document (human documents and continuations alike)."""
        return self.doc_blocks * self.lm.block

    @property
    def steps(self) -> int:
        """Optimiser steps of every fine-tune: ``epochs`` over a full crawl."""
        return max(1, int(round(self.epochs * self.crawl_docs * self.doc_blocks / self.lm.train.batch_size)))

    def train_config(self, n_blocks: int, seed: int) -> TrainConfig:
        """Fine-tuning config for a training set of ``n_blocks`` blocks: exactly :attr:`steps` optimiser steps
        whatever its size, full batches (``full_batches``) or not. Without full batches ``train_lm`` counts an
        epoch's last, short batch as a step, so the epochs are set from the batches an epoch holds; a set of
        130 blocks then trains 8 of its 40 steps on 2 blocks each, which cost its model 8 perplexity points
        against 128 blocks (docs/collapse_sim.md)."""
        train = self.lm.train
        per_epoch = n_blocks / train.batch_size if self.full_batches else math.ceil(n_blocks / train.batch_size)
        return dataclasses.replace(train, epochs=self.steps / per_epoch, seed=seed)


PRESETS: dict[str, PollutedConfig] = {
    # 2 CPU cores: the lm cpu preset's base, block and fine-tuning; about 15 minutes a run on idle cores
    "cpu": PollutedConfig(),
    # seconds, for tests: the lm tiny preset, small crawls
    "tiny": PollutedConfig(generations=3, runs=1, crawl_docs=24, epochs=2.0, lm=lm_preset("tiny")),
}


def preset(name: str, **overrides: Any) -> PollutedConfig:
    """A copy of preset ``name`` with top-level fields replaced."""
    return choose(PRESETS, name, **overrides)


# --------------------------------------------------------------------------- human text


@dataclass
class CrawlData:
    """The tokenised human text of an experiment, split as the module docstring says."""

    gen0: torch.Tensor  # (N0, block) generation-0 training blocks
    pool: torch.Tensor  # (P, doc_tokens) the crawl pool's human documents
    val: torch.Tensor  # (V, block) checkpoint-selection blocks
    eval: torch.Tensor  # (M, block) evaluation blocks (test perplexity; prompts of the human reference)
    eval_next: torch.Tensor  # (M, doc_tokens) the human text after each evaluation block
    split: dict[str, Any]  # the split in numbers, for run.json


def load_crawl_data(cfg: PollutedConfig, tokenizer: PreTrainedTokenizerBase) -> CrawlData:
    """Tokenise the human files and split them into generation-0 blocks, crawl pool, validation and evaluation."""
    root = data_dir()
    c = cfg.lm
    train_path = Path(c.train_file) if c.train_file else root / "wikitext-2" / "valid.txt"
    eval_path = Path(c.eval_file) if c.eval_file else root / "wikitext-2" / "test.txt"
    blocks = read_blocks(train_path, tokenizer, c.block)
    n_val = max(1, int(round(c.val_fraction * len(blocks))))
    region = blocks[: len(blocks) - n_val]
    cut = int(cfg.gen0_fraction * len(region))
    n_docs = (len(region) - cut) // cfg.doc_blocks
    if cut < 2 or n_docs < cfg.n_human:
        raise ValueError(f"{train_path} is too short: {cut} generation-0 blocks and {n_docs} pool documents "
                         f"for crawls of {cfg.n_human} human documents")
    gen0 = region[:cut][spaced(cut, c.max_train_blocks)]
    pool = region[cut : cut + n_docs * cfg.doc_blocks].reshape(n_docs, cfg.doc_tokens)
    val = blocks[len(blocks) - n_val :][spaced(n_val, c.max_val_blocks)]
    ev = read_blocks(eval_path, tokenizer, c.block)
    idx = torch.from_numpy(spaced(len(ev) - cfg.doc_blocks, c.max_eval_blocks))
    eval_next = torch.cat([ev[idx + k] for k in range(1, cfg.doc_blocks + 1)], dim=1)
    split = {
        "file": str(train_path), "blocks": len(blocks), "block_tokens": c.block,
        "validation": f"last {n_val} blocks ({len(val)} used)",
        "generation_0": f"blocks 0-{cut - 1} ({len(gen0)} used, evenly spaced)",
        "crawl_pool": f"blocks {cut}-{cut + n_docs * cfg.doc_blocks - 1} as {n_docs} documents of "
                      f"{cfg.doc_blocks} blocks",
        "evaluation": f"{eval_path} ({len(idx)} blocks)",
    }
    return CrawlData(gen0, pool, val, ev[idx], eval_next, split)


def crawl_draw(cfg: PollutedConfig, pool_size: int, run_seed: int, generation: int) -> dict[str, np.ndarray]:
    """The random choices of one crawl, shared by the three chains: which pool documents are its human
    part, which pool documents' first blocks prompt its synthetic part, and the crawl's order."""
    rng = np.random.default_rng([run_seed, generation])
    return {
        "human": rng.choice(pool_size, size=cfg.n_human, replace=False),
        "prompts": rng.choice(pool_size, size=cfg.n_synthetic, replace=cfg.n_synthetic > pool_size),
        "order": rng.permutation(cfg.crawl_docs),
    }


# --------------------------------------------------------------------------- documents a model writes


def write_documents(
    model: PreTrainedModel, prompts: torch.Tensor, decoding: Decoding, doc_blocks: int, *, pad_token_id: int,
    batch_size: int = 64, seed: int = 0,
) -> torch.Tensor:
    """Documents of ``doc_blocks`` blocks the model writes after ``(N, block)`` prompts, one block at a time,
    each block continuing the previous one: the model never attends to more than two blocks, so a
    document longer than its context window is still written with the lm simulation's decoding."""
    block = prompts.shape[1]
    step = dataclasses.replace(decoding, max_new_tokens=block)
    context, parts = prompts, []
    for k in range(doc_blocks):
        context = generate_continuations(model, context, step, pad_token_id=pad_token_id, batch_size=batch_size,
                                         seed=seed * 100 + k, progress=False)
        parts.append(context)
    return torch.cat(parts, dim=1)


def document_perplexities(
    model: PreTrainedModel, prompts: torch.Tensor, documents: torch.Tensor, batch_size: int = 64
) -> np.ndarray:
    """Perplexity of each document given its prompt, scored block by block with the previous block as
    context (as :func:`write_documents` wrote it): ``exp`` of the mean token NLL, shape ``(N,)``."""
    block = prompts.shape[1]
    context, log_ppl = prompts, []
    for k in range(documents.shape[1] // block):
        part = documents[:, k * block : (k + 1) * block]
        log_ppl.append(np.log(sample_perplexities(model, context, part, batch_size=batch_size, progress=False)))
        context = part
    return np.exp(np.mean(log_ppl, axis=0))


# --------------------------------------------------------------------------- the filtered chain's training set


def resample_weights(p_synthetic: np.ndarray, beta: float) -> np.ndarray:
    """Normalised resampling weights ``(1 - p) ** beta`` (Drayson et al. 2025); uniform when all are zero."""
    w = np.clip(1.0 - np.asarray(p_synthetic, dtype=float), 0.0, 1.0) ** beta
    total = w.sum()
    return w / total if total > 0 else np.full(len(w), 1.0 / max(len(w), 1))


def select_filtered(
    cfg: PollutedConfig, texts: Sequence[str], labels: np.ndarray, detector: Detector | None, threshold: float | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices into the crawl of the filtered chain's training set (with repeats under resampling),
    the per-document decisions, and the detector's recall and false alarms on this crawl."""
    fcfg = cfg.filter
    if cfg.policy == "resample" and fcfg.synthetic.enabled:  # the detector scores, the weights decide
        fcfg = dataclasses.replace(fcfg, synthetic=dataclasses.replace(fcfg.synthetic, threshold=1.0))
    decisions = list(filter_records(list(texts), fcfg, detector))
    kept = np.array([d.kept for d in decisions])
    p = np.array([d.scores.get("synthetic_p", np.nan) for d in decisions], dtype=float)
    if cfg.policy == "resample" and kept.any():
        survivors = np.flatnonzero(kept)
        scores = np.nan_to_num(p[survivors], nan=0.0)
        chosen = np.sort(rng.choice(survivors, size=len(survivors), p=resample_weights(scores, cfg.beta)))
    else:
        chosen = np.flatnonzero(kept)
    scored = ~np.isnan(p)
    flagged = scored & (p > threshold) if threshold is not None else np.zeros(len(p), bool)
    human, synth = labels == 0, labels == 1
    stats = {
        "detector_recall": _share(flagged & synth, scored & synth),
        "detector_human_flagged": _share(flagged & human, scored & human),
        "human_kept": float(len(np.unique(chosen[human[chosen]])) / max(human.sum(), 1)),
        "synthetic_removed": (1.0 - float(len(np.unique(chosen[synth[chosen]])) / synth.sum())
                              if synth.any() else float("nan")),
        "train_synthetic_share": float(synth[chosen].mean()) if len(chosen) else float("nan"),
    }
    rows = [{"stage": d.stage, "reason": d.reason, "synthetic_p": None if np.isnan(q) else float(q)}
            for d, q in zip(decisions, p)]
    return chosen, {"stats": stats, "rows": rows}


def _share(hit: np.ndarray, of: np.ndarray) -> float:
    return float(hit.sum() / of.sum()) if of.any() else float("nan")


# --------------------------------------------------------------------------- the simulation


def run_polluted(
    cfg: PollutedConfig, out_dir: str | Path, detector: Detector | None = None, progress: bool = True,
    only_run: int | None = None,
) -> SimulationResult | None:
    """Run every run's three chains for ``cfg.generations`` generations (resuming finished ones); write
    ``metrics.json``, ``perplexity.png`` and ``report.md`` into ``out_dir`` and return the result.

    ``detector`` replaces the one the filter config names (default ``models/detector``). With
    ``only_run`` only that run is computed and nothing is summarised (returns None): runs can go to
    parallel processes, and a last call without it collects them.
    """
    if only_run is not None and not 0 <= only_run < cfg.runs:
        raise ValueError(f"only_run must be in [0, {cfg.runs}), got {only_run}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_resumable(_saved_config(out), config_dict(cfg), out, MAY_CHANGE)
    if detector is None and cfg.filter.synthetic.enabled:
        detector = load_default_detector(cfg.filter.synthetic.model)
    threshold = None
    if cfg.filter.synthetic.enabled:
        threshold = cfg.filter.synthetic.threshold
        if threshold is None:
            threshold = float(detector.threshold_)
    threads = torch.get_num_threads()
    try:
        if cfg.lm.train.threads:
            torch.set_num_threads(cfg.lm.train.threads)
        base = base_model_path(cfg.lm, progress)
        tokenizer = load_tokenizer(base)
        data = load_crawl_data(cfg, tokenizer)
        digest = tensor_digest(data.gen0, data.pool, data.val, data.eval, data.eval_next)
        check_same_data(out, digest, "the training and evaluation files")
        write_json(out / "run.json", {"config": config_dict(cfg), "base_model": base, "split": data.split,
                                      "synthetic_threshold": threshold, "data_sha256": digest})
        todo = range(cfg.runs) if only_run is None else [only_run]
        records = [_run_one(cfg, out / f"run-{r:02d}", cfg.seed + r, base, tokenizer, data, detector, threshold,
                            progress) for r in todo]
    finally:
        torch.set_num_threads(threads)
    if only_run is not None:
        return None
    result = _result(cfg, records, base, threshold)
    result.save(out)
    plot_chains(result, out / "perplexity.png")
    write_report(out, result)
    return result


def _run_one(
    cfg: PollutedConfig, out: Path, run_seed: int, base: str, tokenizer: PreTrainedTokenizerBase, data: CrawlData,
    detector: Detector | None, threshold: float | None, progress: bool,
) -> dict[str, list[dict[str, Any]]]:
    """One run: the shared generation 0, then the three chains generation by generation."""
    device = resolve_device(cfg.lm.train.device)
    pad = tokenizer.pad_token_id

    def prompts(generation: int) -> torch.Tensor:  # first blocks of the drawn pool documents
        return data.pool[crawl_draw(cfg, len(data.pool), run_seed, generation)["prompts"], : cfg.lm.block]

    def measure(model: PreTrainedModel, generation: int, info: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """What ``model`` writes for the next crawl (the same prompts and seed in every chain), and its scores."""
        prompt = prompts(generation + 1)
        samples = write_documents(model, prompt, cfg.lm.decoding, cfg.doc_blocks, pad_token_id=pad,
                                  batch_size=cfg.lm.gen_batch_size, seed=run_seed * 1000 + generation)
        ppl = document_perplexities(gen0, prompt, samples, batch_size=cfg.lm.score_batch_size)
        rec = {"generation": generation, "eval_perplexity": block_perplexity(model, data.eval, cfg.lm.score_batch_size),
               "best_step": info["best_step"], "best_val_loss": info["best_val_loss"],
               **perplexity_profile(ppl, human_ppl)}
        return samples, {**rec, "sample_perplexity": ppl}

    g0 = out / "gen-00"
    gen0, info0 = _fine_tune(cfg, base, data.gen0, data.val, run_seed * 1000, g0 / "model", tokenizer, progress)
    gen0.to(device)
    human_ppl = document_perplexities(gen0, data.eval, data.eval_next, batch_size=cfg.lm.score_batch_size)
    if (g0 / "gen.json").is_file():
        rec0 = read_record(g0 / "gen.json", *RECORDED)
        samples0 = load_tensors(g0 / "data.safetensors", "samples", fix=redo(g0 / "gen.json"))["samples"].long()
    else:
        samples0, rec0 = measure(gen0, 0, info0)
        n0 = len(data.gen0)
        rec0.update(train_docs=n0 / cfg.doc_blocks, train_blocks=n0, train_human_docs=n0 / cfg.doc_blocks,
                    train_synthetic_docs=0, **{k: float("nan") for k in FILTER_MEASURES})
        save_tensors({"samples": samples0.to(torch.int32),
                          "sample_perplexity": torch.from_numpy(rec0.pop("sample_perplexity"))},
                         g0 / "data.safetensors")
        write_json(g0 / "gen.json", rec0)
    records = {chain: [rec0] for chain in CHAINS}
    previous = {chain: samples0 for chain in CHAINS}
    bar = tqdm(range(1, cfg.generations), desc=f"{out.name}", unit="gen", disable=not progress)
    for g in bar:
        draw = crawl_draw(cfg, len(data.pool), run_seed, g)
        for chain in CHAINS:
            gdir = out / chain / f"gen-{g:02d}"
            if (gdir / "gen.json").is_file():  # finished earlier: resume after it
                records[chain].append(read_record(gdir / "gen.json", *RECORDED))
                previous[chain] = load_tensors(gdir / "data.safetensors", "samples",
                                               fix=redo(gdir / "gen.json"))["samples"].long()
                continue
            t0 = time.perf_counter()
            ids = torch.cat([data.pool[draw["human"]], previous[chain]])[draw["order"]]
            labels = np.r_[np.zeros(cfg.n_human, int), np.ones(cfg.n_synthetic, int)][draw["order"]]
            texts = tokenizer.batch_decode(ids.tolist())
            rows: list[dict[str, Any]] = [{} for _ in texts]
            crawl_stats = {k: float("nan") for k in FILTER_MEASURES}
            if chain == "unfiltered":
                chosen = np.arange(len(ids))
            elif chain == "oracle":
                chosen = np.flatnonzero(labels == 0)
            else:
                chosen, found = select_filtered(cfg, texts, labels, detector, threshold,
                                                np.random.default_rng([run_seed, g, 1]))
                rows, crawl_stats = found["rows"], found["stats"]
            if len(chosen) == 0:
                raise ValueError(f"the filter kept no document of crawl {g} ({out.name}); check the filter config")
            blocks = ids[torch.from_numpy(chosen)].reshape(-1, cfg.lm.block)
            model, info = _fine_tune(cfg, base, blocks, data.val, run_seed * 1000 + g, gdir / "model", tokenizer,
                                     progress)
            samples, rec = measure(model, g, info)
            rec.update(chain=chain, train_docs=len(chosen), train_blocks=len(blocks),
                       train_human_docs=int((labels[chosen] == 0).sum()),
                       train_synthetic_docs=int((labels[chosen] == 1).sum()), **crawl_stats,
                       seconds=time.perf_counter() - t0)
            _write_crawl(gdir / "crawl.jsonl", texts, labels, rows, chosen)
            save_tensors({"train_docs": torch.from_numpy(chosen), "samples": samples.to(torch.int32),
                              "sample_perplexity": torch.from_numpy(rec.pop("sample_perplexity"))},
                             gdir / "data.safetensors")
            write_json(gdir / "gen.json", rec)
            records[chain].append(rec)
            previous[chain] = samples
        bar.set_postfix({c[:5]: round(records[c][-1]["eval_perplexity"], 1) for c in CHAINS})
    return records


def _fine_tune(
    cfg: PollutedConfig, base: str, blocks: torch.Tensor, val: torch.Tensor, seed: int, model_dir: Path,
    tokenizer: PreTrainedTokenizerBase, progress: bool,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Fine-tune the base on ``blocks`` (or load the model an earlier, interrupted session saved)."""
    return train_or_load(
        model_dir, model_dir.parent / "model.json",
        lambda: finetune(base, blocks, cfg.train_config(len(blocks), seed), val_blocks=val, progress=progress,
                         full_batches=cfg.full_batches),
        tokenizer, cfg.lm.train.device,
    )


def _write_crawl(path: Path, texts: Sequence[str], labels: np.ndarray, rows: Sequence[dict[str, Any]],
                 chosen: np.ndarray) -> None:
    """``crawl.jsonl``: every document of a chain's crawl with its label, filter decision and use in training."""
    counts = np.bincount(chosen, minlength=len(texts))
    with atomic_open(path) as fh:
        for i, text in enumerate(texts):
            row = {"text": text, "label": "synthetic" if labels[i] else "human", "times_trained": int(counts[i]),
                   **rows[i]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


#: what may change when a run resumes: how many generations and runs, and where they run
MAY_CHANGE = ("generations", "runs", "lm.train.device", "lm.train.threads")


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The configuration of the run already in ``out`` (None: none there)."""
    path = out / "run.json"
    return read_record(path, "config")["config"] if path.is_file() else None


# --------------------------------------------------------------------------- results


def gap_closed(ppl_unfiltered: np.ndarray, ppl_filtered: np.ndarray, ppl_oracle: np.ndarray) -> np.ndarray:
    """Share of the collapse gap filtering closes: ``(unf - filt) / (unf - oracle)`` (NaN where there is no gap)."""
    gap = np.asarray(ppl_unfiltered, float) - np.asarray(ppl_oracle, float)
    closed = np.asarray(ppl_unfiltered, float) - np.asarray(ppl_filtered, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, closed / gap, np.nan)


def _result(cfg: PollutedConfig, records: list[dict[str, list[dict[str, Any]]]], base: str,
            threshold: float | None) -> SimulationResult:
    """Shared-schema result: ``<chain>/<measure>`` per generation over runs, and the headline in ``summary``."""
    result = SimulationResult("polluted", config_dict(cfg), list(range(cfg.generations)))
    arrays = {}
    for chain in CHAINS:
        names = MEASURES + (FILTER_MEASURES if chain == "filtered" else ())
        for name in names:
            arrays[chain, name] = np.array([[rec[name] for rec in run[chain]] for run in records], dtype=float)
            result.add(f"{chain}/{name}", arrays[chain, name])
    last = {c: arrays[c, "eval_perplexity"][:, -1] for c in CHAINS}
    per_run = gap_closed(last["unfiltered"], last["filtered"], last["oracle"])
    mean = {c: float(v.mean()) for c, v in last.items()}
    finite = per_run[np.isfinite(per_run)]
    result.summary = {
        "gap_closed": float(gap_closed(mean["unfiltered"], mean["filtered"], mean["oracle"])),
        "gap_closed_per_run": [None if not np.isfinite(v) else float(v) for v in per_run],
        "gap_closed_spread": ({"mean": float(finite.mean()), "min": float(finite.min()), "max": float(finite.max()),
                               "p10": float(np.percentile(finite, 10)), "p90": float(np.percentile(finite, 90))}
                              if len(finite) else None),
        "collapse_gap_ppl": mean["unfiltered"] - mean["oracle"],
        "last_generation_perplexity": mean,
        "gen0_perplexity": float(arrays["oracle", "eval_perplexity"][:, 0].mean()),
        "policy": cfg.policy, "beta": cfg.beta, "synthetic_fraction": cfg.synthetic_fraction, "runs": cfg.runs,
        "synthetic_threshold": threshold, "base_model": base,
        "detector": (cfg.filter.synthetic.model or "models/detector") if cfg.filter.synthetic.enabled else None,
        "target": "filtered closes >= 80% of the collapse gap at the last generation",
    }
    return result
