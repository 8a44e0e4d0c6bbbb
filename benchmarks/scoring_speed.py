"""Scoring throughput: batched, length-sorted scoring vs one text at a time, same model, same run.

Two baselines, both one text at a time in the order given (no length sorting):

- ``naive``: the published baselines' loop (the shape of the DetectGPT / Fast-DetectGPT
  ``baselines.py`` scripts): for every score a forward pass of its own, ranks found by sorting
  the vocabulary; the same features as ``Scorer`` (ll, log-rank, GLTR buckets, entropy,
  Fast-DetectGPT);
- ``Scorer`` at batch size 1: this project's single-pass feature code without batching, which
  isolates what batching itself buys.

Uses the shipped reference LM (``models/reference-lm``) when present, else a randomly
initialised GPT-2 of the same shape (~10M parameters: 6 layers, width 320, 8192-token
vocabulary; timing needs no trained weights) with a BPE tokenizer fitted on a little
human text. Texts are human documents of varied length from the pool's eval split.
Prints tokens/s of each and the ratios (target: at least 5x over the naive loop).

With ``--detector`` it times the shipped detector's whole feature pass instead (reference LM with
token statistics and hidden states, the machine LM's likelihood ratio and Binoculars, the lexical
model, text statistics) against the reference LM's features alone (what a detector without the
machine LM and lexical model computes), on the same texts in the same run.

    .venv/bin/python benchmarks/scoring_speed.py [--texts 256] [--device cuda --dtype bfloat16] [--detector]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from hygiene.human_data import iter_documents
from hygiene.lm import DEFAULT_LM, LanguageModel, load_lm, select_device, select_dtype, wrap_lm
from hygiene.paths import models_dir
from hygiene.scoring import ScoringConfig, Scorer


def sample_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` human texts of varied length (20 to 300 words) from the eval split of the pool."""
    rng = np.random.default_rng(seed)
    docs = [d.text for d in iter_documents(sources=("web", "news", "forums"), splits=("eval",))]
    picks = rng.choice(len(docs), size=n, replace=len(docs) < n)
    return [" ".join(docs[i].split()[: int(rng.integers(20, 300))]) for i in picks]


def benchmark_model(texts: list[str], device: str, dtype: str) -> LanguageModel:
    """The reference LM if shipped, else a random GPT-2 of its shape."""
    if (models_dir() / DEFAULT_LM).is_dir():
        return load_lm(device=device, dtype=dtype)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=8192, n_positions=256, n_embd=320, n_layer=6, n_head=5)
    model = GPT2LMHeadModel(cfg).to(select_dtype(dtype, select_device(device)))
    return wrap_lm(model, hf_tok, name="random GPT-2 (reference shape)", device=device)


@torch.no_grad()
def naive_scores(lm: LanguageModel, ids: list[int]) -> dict[str, float]:
    """One text's features the way the published baselines compute them: a forward pass per score."""
    x = torch.tensor([ids], device=lm.device)
    labels = x[:, 1:]

    def logits() -> torch.Tensor:
        return lm.model(input_ids=x).logits[:, :-1].float()

    out = {"ll": torch.log_softmax(logits(), -1).gather(-1, labels[..., None]).mean().item()}
    ranks = (logits().argsort(-1, descending=True) == labels[..., None]).nonzero()[:, -1].float() + 1
    out["logrank"] = ranks.log().mean().item()
    out.update({f"top{k}": (ranks <= k).float().mean().item() for k in (10, 100, 1000)})
    lp = torch.log_softmax(logits(), -1)
    out["entropy"] = -(lp.exp() * lp).sum(-1).mean().item()
    lp = torch.log_softmax(logits(), -1)
    mu = (lp.exp() * lp).sum(-1)
    var = (lp.exp() * lp.square()).sum(-1) - mu.square()
    out["fast_detectgpt"] = ((lp.gather(-1, labels[..., None]).squeeze(-1).sum() - mu.sum()) / var.sum().sqrt()).item()
    return out


def tokens_per_second(score: Callable[[], object], n_tokens: int, device: torch.device) -> tuple[float, float]:
    """Scored tokens per second and wall seconds of one call of ``score``."""
    start = time.perf_counter()
    score()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return n_tokens / wall, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto = bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--detector", action="store_true",
                    help="the shipped detector's features against the reference LM's alone")
    args = ap.parse_args()
    texts = sample_texts(args.texts)
    if args.detector:
        detector_speed(texts, args.device, args.dtype)
        return
    lm = benchmark_model(texts, args.device, args.dtype)
    params = sum(p.numel() for p in lm.model.parameters())
    print(f"model: {lm.name} ({params / 1e6:.1f}M parameters, {lm.model.dtype}) on {lm.device}, "
          f"torch threads: {torch.get_num_threads()}")
    batched = Scorer(lm)  # default batching: length-sorted, token budget by device
    single = Scorer(lm, config=ScoringConfig(batch_size=1))
    ids = [x for x in batched.tokenize(texts) if len(x) >= 2]
    n_tokens = sum(len(x) - 1 for x in ids)
    batched.score(texts[:4])  # warm-up
    fast, fast_s = tokens_per_second(lambda: batched.score(texts), n_tokens, lm.device)
    one, one_s = tokens_per_second(lambda: single.score(texts), n_tokens, lm.device)
    slow, slow_s = tokens_per_second(lambda: [naive_scores(lm, x) for x in ids], n_tokens, lm.device)
    print(f"naive, published baselines' loop      : {slow:9.0f} tokens/s ({slow_s:.1f} s)")
    print(f"Scorer, one text at a time (batch 1)  : {one:9.0f} tokens/s ({one_s:.1f} s)")
    print(f"Scorer, batched, length-sorted        : {fast:9.0f} tokens/s ({fast_s:.1f} s)")
    print(f"speed-up over the naive loop: {fast / slow:.1f}x (target >= 5x); batching alone: {fast / one:.1f}x")


def detector_speed(texts: list[str], device: str, dtype: str) -> None:
    """Tokens/s of the shipped detector's feature pass (its language models run by torch, and by the default
    backend: ONNX Runtime on a CPU where installed), and of its predictions with the cascade, against the
    reference LM's features alone under torch."""
    import dataclasses

    from hygiene.detector import load_detector
    from hygiene.features import Featurizer
    from hygiene.lm import resolve_backend

    det = load_detector(device=device, dtype=dtype)
    with_torch = load_detector(device=device, dtype=dtype, backend="torch")
    f = det.config.features
    ref = with_torch.featurizer.model(f.lm)
    alone = Featurizer(dataclasses.replace(f, contrast_lm=None, observer=None, performer=None),
                       device=device, dtype=dtype, models={f.lm: ref})
    n_tokens = sum(len(x) - 1 for x in det.featurizer.scorer.tokenize(texts) if len(x) >= 2)
    dev = ref.device
    backend = resolve_backend("auto", ref)
    det.features(texts[:4]), with_torch.features(texts[:4])  # warm-up (and the export, where there is one)
    base, base_s = tokens_per_second(lambda: alone.transform(texts), n_tokens, dev)
    full_torch, torch_s = tokens_per_second(lambda: with_torch.features(texts), n_tokens, dev)
    full, full_s = tokens_per_second(lambda: det.features(texts), n_tokens, dev)
    print(f"reference LM features alone, torch   : {base:9.0f} tokens/s ({base_s:.1f} s)")
    print(f"shipped detector, all features, torch: {full_torch:9.0f} tokens/s ({torch_s:.1f} s); "
          f"ratio {full_torch / base:.2f}x")
    print(f"the same, {backend} (default)   : {full:9.0f} tokens/s ({full_s:.1f} s); "
          f"ratio {full / base:.2f}x (target >= 0.5x)")
    if det.first_pass_ is not None:  # what predict_proba costs with its cascade (the default)
        fast, fast_s = tokens_per_second(lambda: det.predict_proba(texts), n_tokens, dev)
        print(f"the same with the cascade (default)  : {fast:9.0f} tokens/s ({fast_s:.1f} s); "
              f"{int(det.last_settled_.sum())} of {len(texts)} texts settled by the first pass; ratio {fast / base:.2f}x")


if __name__ == "__main__":
    main()
