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

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from collapse_sim.generation import Decoding, generate_continuations
from collapse_sim.lm.config import PAPER, LMConfig
from collapse_sim.lm.corpus import build_corpus
from collapse_sim.lm.data import LMData, load_data
from collapse_sim.lm.models import base_model_path, finetune, gen_dir, load_tokenizer, model_dir, train_or_load
from collapse_sim.lm.report import plot_histograms, plot_perplexity, write_report
from collapse_sim.metrics import SimulationResult, config_dict
from collapse_sim.resume import (check_resumable, check_same_data, load_tensors, read_record, redo, save_tensors,
                                  tensor_digest)
from collapse_sim.reuse import MODES, Reuse
from collapse_sim.text_metrics import perplexity_profile, sample_perplexities, token_metrics
from collapse_sim.training import block_perplexity
from hygiene.atomic import write_json


def arms(cfg: LMConfig) -> Iterator[tuple[str, Decoding]]:
    """Every (mode, decoding) chain of the run, in order."""
    for mode in cfg.modes:
        for dec in cfg.decodings:
            yield mode, dec


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
    model_path: Path, tokenizer: PreTrainedTokenizerBase, progress: bool,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Train (or, when its model is saved, load) one generation's model."""
    return train_or_load(
        model_path, model_path.parent / f"{model_path.name}.json",
        lambda: finetune(base, blocks, cfg.train_config(mode, generation), val_blocks=val, progress=progress),
        tokenizer, cfg.train.device,
    )


def run_lm(cfg: LMConfig, out_dir: str | Path, progress: bool = True) -> SimulationResult:
    """Run every arm for ``cfg.generations`` generations (resuming finished ones), then write
    ``metrics.json``, the corpus, plots and ``report.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_resumable(_saved_config(out), config_dict(cfg), out, MAY_CHANGE)
    threads = torch.get_num_threads()
    try:
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        result, human_ppl = _run_arms(cfg, out, progress)
    finally:
        torch.set_num_threads(threads)
    plot_perplexity(result, out / "perplexity.png")
    for mode, method in (k.split("/") for k in result.summary["arms"]):
        hists = [load_tensors(gen_dir(out, mode, method, g) / "data.safetensors", "sample_perplexity")
                 ["sample_perplexity"].numpy() for g in range(cfg.generations)]
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
    digest = tensor_digest(data.train, data.train_ids, data.val, data.eval, data.eval_next)
    check_same_data(out, digest, f"the training and evaluation files ({data.train_name}, ...)")
    write_json(out / "run.json", {"config": config_dict(cfg), "base_model": base, "train_file": data.train_name,
                                  "n_train_blocks": len(data.train), "n_val_blocks": len(data.val),
                                  "n_eval_blocks": len(data.eval), "data_sha256": digest})
    save_tensors({"train": data.train, "train_ids": torch.from_numpy(data.train_ids)}, out / "human.safetensors")
    records: dict[tuple[str, str], list[dict[str, Any]]] = {}
    gen0: dict[str, tuple[PreTrainedModel, dict[str, Any]]] = {}
    human_ppl: dict[str, np.ndarray] = {}
    for mode, dec in arms(cfg):
        if mode not in gen0:
            gen0[mode] = _train_generation(
                cfg, base, mode, 0, data.train, data.val, model_dir(out, mode, dec.method, 0), tokenizer, progress
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
                saved = load_tensors(gdir / "data.safetensors", "continuations", fix=redo(gdir / "gen.json"))
                continuations.append(saved["continuations"].long())
                val_continuations = saved["val_continuations"].long() if "val_continuations" in saved else None
                recs.append(read_record(gdir / "gen.json", *METRICS, "selected_on"))
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
        model, info = _train_generation(cfg, base, mode, g, blocks, val, model_dir(out, mode, dec.method, g),
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
    save_tensors(tensors, gdir / "data.safetensors")
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


#: what may change when a run resumes: how many generations, and where they run
MAY_CHANGE = ("generations", "train.device", "train.threads")


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The configuration of the run already in ``out`` (None: none there)."""
    path = out / "run.json"
    return read_record(path, "config")["config"] if path.is_file() else None


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

