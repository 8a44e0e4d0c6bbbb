"""Scoring on a GPU: every statistic beside the logits against copying the logits to the host.

Model: a GPT-2-size model built from its config (124M parameters, 50,257-token vocabulary,
12 layers of width 768; random weights: speed does not depend on them), with a word-level
tokenizer of the same vocabulary, so that each text is exactly ``--tokens`` tokens long.
Texts: ``--texts`` long texts of random tokens.

Two scorers, the same ``hygiene.scoring.Scorer`` code, timed one after the other in one run:

- ``host`` (the baseline): the scorer as it was before the statistics moved to the device:
  the full logits copied to the host as float32, every vocabulary-wide statistic computed
  there (``stats_device`` overridden to the CPU);
- ``device`` (the default): the statistics computed where the logits are, in float32; only
  per-text values leave the device.

Each in two set-ups: one model (its Fast-DetectGPT sampler the model itself, with the token
statistics), and a Binoculars pair (observer and performer, two models of that size), in
float32 and bfloat16. Prints scored tokens/s of each, their ratio (target on a GPU: at
least 10x), and the largest difference of any per-text score between the two in float32.

    python benchmarks/device_scoring.py --device cuda [--texts 64] [--tokens 512] [--out DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hygiene.lm import LanguageModel, select_dtype, wrap_lm
from hygiene.scoring import ScoringConfig, Scorer

from _gpu import gpu_to_measure  # benchmarks/_gpu.py, beside this script
from _results import save  # benchmarks/_results.py, beside this script

VOCAB = 50257


class HostStatistics(Scorer):
    """The baseline: logits copied to the host as float32, statistics computed there."""

    @property
    def stats_device(self) -> torch.device:
        return torch.device("cpu")


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per word ``w<id>``: texts of known length in a vocabulary of any size."""
    words = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def gpt2_small(seed: int, device: torch.device, dtype: torch.dtype, tokenizer: PreTrainedTokenizerFast,
               name: str) -> LanguageModel:
    """GPT-2 small's shape, randomly initialised with ``seed``."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    return wrap_lm(GPT2LMHeadModel(cfg).to(device=device, dtype=dtype), tokenizer, name=name, device=device)


def timed(scorer: Scorer, texts: list[str]) -> tuple[float, dict[str, np.ndarray]]:
    """Wall seconds of scoring ``texts`` (after a warm-up on a few), and the scores."""
    scorer.score(texts[:2])
    if scorer.lm.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = scorer.score(texts)  # ends with per-text values on the host: nothing is left in flight
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="the GPU to measure [cuda; without one, nothing to measure]")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=512, help="tokens per text")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--out", type=Path, default=None, help="folder for device_scoring.json and .md")
    args = ap.parse_args()
    device = gpu_to_measure(args.device)
    if device is None:
        return
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(1, VOCAB, args.tokens)) for _ in range(args.texts)]
    tokenizer = word_tokenizer(VOCAB)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    head = (f"device {device} ({gpu}), host threads {torch.get_num_threads()}, torch {torch.__version__}; "
            f"{args.texts} texts x {args.tokens} tokens, vocabulary {VOCAB}")
    print(head)
    lines = [head, "", "| set-up | model dtype | host statistics (tokens/s) | device statistics (tokens/s) | ratio |",
             "|---|---|---|---|---|"]
    result: dict = {"device": str(device), "gpu": gpu, "texts": args.texts, "tokens": args.tokens, "runs": []}
    for dtype_name in args.dtypes:
        dtype = select_dtype(dtype_name, device)
        lm = gpt2_small(0, device, dtype, tokenizer, "GPT-2 small shape (A)")
        other = gpt2_small(1, device, dtype, tokenizer, "GPT-2 small shape (B)")
        setups = {
            "one model, Fast-DetectGPT + token statistics": dict(lm=lm, config=ScoringConfig(token_stats=True)),
            "Binoculars pair (two models)": dict(lm=lm, observer=other, performer=lm),
        }
        for label, kw in setups.items():
            n_tokens = args.texts * (args.tokens - 1)
            host_s, host = timed(HostStatistics(**kw), texts)
            dev_s, dev = timed(Scorer(**kw), texts)
            diff = max(float(np.nanmax(np.abs(host[k] - dev[k]) / np.maximum(1.0, np.abs(host[k])))) for k in host)
            run = {"setup": label, "dtype": dtype_name, "host_tokens_per_s": n_tokens / host_s,
                   "device_tokens_per_s": n_tokens / dev_s, "ratio": host_s / dev_s, "max_rel_diff": diff}
            result["runs"].append(run)
            lines.append(f"| {label} | {dtype_name} | {run['host_tokens_per_s']:,.0f} | "
                         f"{run['device_tokens_per_s']:,.0f} | {run['ratio']:.1f}x |")
            print(lines[-1], f"(largest difference of a per-text score, relative above 1: {diff:.2e})", flush=True)
        del lm, other
    lines += ["", "target on a GPU: ratio >= 10x; largest difference of any per-text score between the two "
              f"(relative where above 1): {max(r['max_rel_diff'] for r in result['runs']):.2e}"]
    table = "\n".join(lines)
    print(lines[-1])
    if args.out:
        save(args.out, "device_scoring", result, table)


if __name__ == "__main__":
    main()
